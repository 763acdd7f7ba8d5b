//! Small, infallible samplers. Parameters are fixed by the generator, so these never fail at run
//! time, unlike the `Result`-returning constructors of `rand_distr`.

use rand::Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};

/// Draws an index with probability proportional to a fixed weight (inverse CDF by binary search).
#[derive(Debug, Clone)]
pub(crate) struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    /// Builds a sampler over `weights`; non-finite or negative weights count as zero. If every
    /// weight is zero, the first index is always drawn.
    pub(crate) fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                if w.is_finite() && w > 0.0 {
                    total += w;
                }
                total
            })
            .collect();
        Weighted { cumulative }
    }

    /// Zipf weights `1 / (rank + 1)^exponent` over `n` ranks: rank 0 is the most frequent, and
    /// the tail holds the rare values that make small cells.
    pub(crate) fn zipf(n: usize, exponent: f64) -> Self {
        Self::new((0..n).map(|rank| (rank as f64 + 1.0).powf(-exponent)))
    }

    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        let index = self.cumulative.partition_point(|&c| c <= u);
        index.min(self.cumulative.len().saturating_sub(1))
    }
}

/// A log-normal draw given its median and the standard deviation of its logarithm.
pub(crate) fn log_normal<R: Rng + ?Sized>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    median * (sigma * z).exp()
}

/// A Poisson count; a non-positive or non-finite mean gives 0.
pub(crate) fn poisson<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> u64 {
    match Poisson::new(mean) {
        Ok(distribution) => {
            let n: f64 = distribution.sample(rng);
            n as u64
        }
        Err(_) => 0,
    }
}

/// A uniform day in `first..=last` (`first` when the range is empty).
pub(crate) fn day_between<R: Rng + ?Sized>(rng: &mut R, first: i32, last: i32) -> i32 {
    if last <= first {
        first
    } else {
        rng.random_range(first..=last)
    }
}

/// Rounds a positive amount to cents, never below one cent.
pub(crate) fn to_cents(amount: f64) -> f64 {
    ((amount * 100.0).round() / 100.0).max(0.01)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn weighted_respects_zero_weights() {
        let w = Weighted::new([0.0, 1.0, 0.0, 3.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[w.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[2], 0);
        assert!(counts[3] > 2 * counts[1]);
    }

    #[test]
    fn cents() {
        assert_eq!(to_cents(12.345_6), 12.35);
        assert_eq!(to_cents(0.0001), 0.01);
    }
}
