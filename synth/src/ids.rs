//! Pseudonymous identifiers that look like hashes yet are unique by construction.
//!
//! Every identifier is a keyed *bijection* of a global counter (person index, source-id index,
//! stay index), never a random draw: two chunks generated on different threads can therefore
//! never collide, and no table of issued ids has to be kept. The keys come from the seed, so a
//! different seed gives different identifiers for the same counters.

use std::fmt::Write as _;

/// Largest number of persons whose stay numbers still fit in ten decimal digits (see [`StayIds`]).
pub(crate) const MAX_PERSONS: u64 = 1_000_000_000;
/// Stays per person are capped so that `person * MAX_STAYS_PER_PERSON + ordinal` stays injective.
pub(crate) const MAX_STAYS_PER_PERSON: u64 = 8;

/// SplitMix64's output function: a bijection on `u64` with good avalanche.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed bijection on `u64`: adding a key and mixing are both invertible.
fn keyed(x: u64, key: u64) -> u64 {
    mix64(mix64(x.wrapping_add(key)) ^ key.rotate_left(17))
}

/// Derives an independent 64-bit key from the seed for one purpose.
pub(crate) fn derive_key(seed: u64, purpose: u64) -> u64 {
    mix64(mix64(seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(purpose))
}

/// The keys for every kind of identifier of one run.
#[derive(Debug, Clone)]
pub(crate) struct IdKeys {
    psa: u64,
    psa_prefix: u64,
    ano_high: u64,
    ano_low: u64,
    stay: [u64; 4],
}

impl IdKeys {
    pub(crate) fn new(seed: u64) -> Self {
        IdKeys {
            psa: derive_key(seed, 1),
            psa_prefix: derive_key(seed, 2),
            ano_high: derive_key(seed, 3),
            ano_low: derive_key(seed, 4),
            stay: [
                derive_key(seed, 5),
                derive_key(seed, 6),
                derive_key(seed, 7),
                derive_key(seed, 8),
            ],
        }
    }

    /// `ben_nir_psa` (17 hex digits) of a person's `ordinal`-th source id (0 or 1).
    ///
    /// The last 16 digits are a bijection of `2 * person + ordinal`, hence unique; the first digit
    /// only makes the id look like the 17-character SNDS one.
    pub(crate) fn ben_nir_psa(&self, person: u64, ordinal: u64) -> String {
        let n = person * 2 + ordinal;
        let mut s = String::with_capacity(17);
        let _ = write!(
            s,
            "{:x}{:016x}",
            keyed(n, self.psa_prefix) & 0xf,
            keyed(n, self.psa)
        );
        s
    }

    /// `ben_nir_ano` (32 hex digits) of a person. Its length alone keeps it distinct from every
    /// `ben_nir_psa`; its first half is a bijection of the person index, hence unique.
    pub(crate) fn ben_nir_ano(&self, person: u64) -> String {
        let mut s = String::with_capacity(32);
        let _ = write!(
            s,
            "{:016x}{:016x}",
            keyed(person, self.ano_high),
            keyed(person, self.ano_low)
        );
        s
    }

    /// `rsa_num` (10 decimal digits) of a person's `ordinal`-th stay, unique over the whole run.
    pub(crate) fn rsa_num(&self, person: u64, ordinal: u64) -> String {
        let n = person * MAX_STAYS_PER_PERSON + ordinal;
        format!("{:010}", StayIds { keys: &self.stay }.permute(n))
    }
}

/// A permutation of `0..10^10` built from a balanced Feistel network on 34 bits with cycle
/// walking: any Feistel network is a permutation of its domain, and walking the cycle until the
/// value falls back below 10^10 restricts it to a permutation of the decimal range.
struct StayIds<'a> {
    keys: &'a [u64; 4],
}

impl StayIds<'_> {
    const DOMAIN: u64 = 10_000_000_000;
    const HALF_BITS: u32 = 17;
    const HALF_MASK: u64 = (1 << Self::HALF_BITS) - 1;

    fn feistel(&self, x: u64) -> u64 {
        let mut left = x >> Self::HALF_BITS;
        let mut right = x & Self::HALF_MASK;
        for key in self.keys {
            let next = left ^ (mix64(right ^ key) & Self::HALF_MASK);
            left = right;
            right = next;
        }
        (left << Self::HALF_BITS) | right
    }

    fn permute(&self, x: u64) -> u64 {
        debug_assert!(x < Self::DOMAIN);
        let mut y = self.feistel(x);
        while y >= Self::DOMAIN {
            y = self.feistel(y);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn formats_and_uniqueness() {
        let keys = IdKeys::new(42);
        let mut seen = HashSet::new();
        for person in 0..20_000 {
            let ano = keys.ben_nir_ano(person);
            assert_eq!(ano.len(), 32);
            assert!(seen.insert(ano));
            for ordinal in 0..2 {
                let psa = keys.ben_nir_psa(person, ordinal);
                assert_eq!(psa.len(), 17);
                assert!(seen.insert(psa));
            }
            for ordinal in 0..MAX_STAYS_PER_PERSON {
                let rsa = keys.rsa_num(person, ordinal);
                assert_eq!(rsa.len(), 10);
                assert!(rsa.bytes().all(|b| b.is_ascii_digit()));
                assert!(seen.insert(rsa));
            }
        }
    }

    #[test]
    fn seed_changes_ids() {
        assert_ne!(
            IdKeys::new(1).ben_nir_psa(0, 0),
            IdKeys::new(2).ben_nir_psa(0, 0)
        );
    }
}
