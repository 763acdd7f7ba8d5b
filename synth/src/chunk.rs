//! One chunk of persons and all their rows, generated from its own random stream.

use datafusion::arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::SynthError;
use crate::claims::{push_claims, push_dispensings};
use crate::hospital::push_stays;
use crate::model::Model;
use crate::population::draw_person;
use crate::rows::{AldRows, BeneficiaryRows, ClaimRows, DispensingRows, StayRows};

/// Persons per chunk. Part of the output format: changing it changes every file for a given seed.
pub(crate) const CHUNK_PERSONS: u64 = 4096;

/// The batches of one chunk for the six private tables, in the order of [`crate::TABLES`].
pub(crate) struct ChunkBatches {
    pub(crate) persons: u64,
    pub(crate) batches: [RecordBatch; 6],
}

/// The random stream of a chunk: ChaCha keyed by the seed, one stream per chunk, so that each
/// chunk is reproducible on its own, whichever thread generates it and in whatever order.
fn chunk_rng(seed: u64, chunk: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(chunk);
    rng
}

/// Generates chunk number `chunk`: the persons from `chunk * CHUNK_PERSONS` up to the next
/// chunk or `total_persons`.
pub(crate) fn generate_chunk(
    model: &Model,
    seed: u64,
    chunk: u64,
    total_persons: u64,
) -> Result<ChunkBatches, SynthError> {
    let first = chunk * CHUNK_PERSONS;
    let end = (first + CHUNK_PERSONS).min(total_persons);
    let mut rng = chunk_rng(seed, chunk);
    let mut beneficiaries = BeneficiaryRows::default();
    let mut claims = ClaimRows::default();
    let mut dispensings = DispensingRows::default();
    let mut alds = AldRows::default();
    let mut stays = StayRows::default();
    let mut dates = Vec::new();
    for index in first..end {
        let person = draw_person(model, &mut rng, index);
        beneficiaries.push(&person, &model.communes[person.departement].codes);
        alds.push(&person);
        push_claims(model, &mut rng, &person, &mut claims, &mut dates);
        push_dispensings(model, &mut rng, &person, &mut dispensings, &mut dates);
        push_stays(model, &mut rng, &person, &mut stays);
    }
    let (t_mco_b, t_mco_c) = stays.finish()?;
    Ok(ChunkBatches {
        persons: end.saturating_sub(first),
        batches: [
            beneficiaries.finish()?,
            claims.finish()?,
            dispensings.finish()?,
            alds.finish()?,
            t_mco_b,
            t_mco_c,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk depends only on `(seed, chunk)`: generating chunks out of order, as two worker
    /// threads do, gives the same batches.
    #[test]
    fn chunks_do_not_depend_on_generation_order() {
        let model = Model::new(9);
        let total = CHUNK_PERSONS + 100;
        let in_order = [
            generate_chunk(&model, 9, 0, total).unwrap(),
            generate_chunk(&model, 9, 1, total).unwrap(),
        ];
        let second = generate_chunk(&model, 9, 1, total).unwrap();
        let first = generate_chunk(&model, 9, 0, total).unwrap();
        assert_eq!(in_order[0].batches, first.batches);
        assert_eq!(in_order[1].batches, second.batches);
        assert_eq!((first.persons, second.persons), (CHUNK_PERSONS, 100));
        assert_ne!(first.batches[0], second.batches[0]);
    }
}
