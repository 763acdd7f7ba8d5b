//! The run: chunks generated on worker threads, written in chunk order by the calling thread.
//!
//! Output bytes never depend on the number of threads: chunk `i` always comes from its own random
//! stream, and the writer consumes chunks strictly in order `0, 1, 2, ...`, taking chunk `i` from
//! worker `i % workers`. Bounded channels keep at most a few chunks in memory, whatever `persons`.

use std::fs;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread;

use crate::chunk::{CHUNK_PERSONS, ChunkBatches, generate_chunk};
use crate::ids::MAX_PERSONS;
use crate::model::Model;
use crate::reference::{ref_atc, ref_cim10, ref_dpt};
use crate::writer::TableWriter;
use crate::{GenConfig, GenSummary, SynthError, TABLES, table_schemas};

/// Generator threads; the calling thread encodes Parquet meanwhile. Two match the target machine,
/// and more would not change the output, only the memory held by chunks in flight.
const MAX_WORKERS: u64 = 2;
/// Chunks each worker may have finished ahead of the writer.
const CHUNKS_AHEAD: usize = 2;
/// Number of private tables, which come first in [`TABLES`].
const PRIVATE_TABLES: usize = 6;

type ChunkResult = Result<ChunkBatches, SynthError>;

pub(crate) fn run(
    config: &GenConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenSummary, SynthError> {
    if config.persons > MAX_PERSONS {
        return Err(SynthError::TooManyPersons {
            persons: config.persons,
            max: MAX_PERSONS,
        });
    }
    fs::create_dir_all(&config.out_dir).map_err(|source| SynthError::CreateDir {
        path: config.out_dir.clone(),
        source,
    })?;
    if !config.out_dir.is_dir() {
        return Err(SynthError::CreateDir {
            path: config.out_dir.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ),
        });
    }

    let model = Model::new(config.seed);
    let mut writers = table_schemas()
        .into_iter()
        .map(|(table, schema)| TableWriter::create(&config.out_dir, table, schema))
        .collect::<Result<Vec<_>, _>>()?;

    let chunks = config.persons.div_ceil(CHUNK_PERSONS);
    let workers = thread::available_parallelism()
        .map_or(1, |n| n.get() as u64)
        .clamp(1, MAX_WORKERS)
        .min(chunks.max(1));
    thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for worker in 0..workers {
            let (sender, receiver) = sync_channel::<ChunkResult>(CHUNKS_AHEAD);
            receivers.push(receiver);
            let model = &model;
            let (seed, persons) = (config.seed, config.persons);
            handles.push(scope.spawn(move || {
                for chunk in (worker..chunks).step_by(workers as usize) {
                    let result = generate_chunk(model, seed, chunk, persons);
                    let failed = result.is_err();
                    // A closed channel means the writer gave up; stop quietly.
                    if sender.send(result).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        let written = write_in_order(receivers, &mut writers[..PRIVATE_TABLES], chunks, progress);
        // Joining explicitly turns a worker panic into an error instead of a panic of the scope.
        let joined = handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| SynthError::WorkerFailed));
        written.and(joined)
    })?;

    let references = [ref_cim10()?, ref_atc()?, ref_dpt()?];
    for (writer, batch) in writers[PRIVATE_TABLES..].iter_mut().zip(&references) {
        writer.write(batch)?;
    }
    for writer in &mut writers {
        writer.finish()?;
    }
    // Every file is complete and synced before the first one takes its real name.
    let tables = writers
        .into_iter()
        .map(TableWriter::publish)
        .collect::<Result<Vec<_>, _>>()?;
    debug_assert_eq!(tables.len(), TABLES.len());
    Ok(GenSummary { tables })
}

/// Writes chunk after chunk, in order. Dropping the receivers on return (error or not) stops the
/// workers.
fn write_in_order(
    receivers: Vec<Receiver<ChunkResult>>,
    writers: &mut [TableWriter],
    chunks: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), SynthError> {
    let mut persons_done = 0;
    for chunk in 0..chunks {
        let receiver = &receivers[(chunk % receivers.len() as u64) as usize];
        let chunk = receiver.recv().map_err(|_| SynthError::WorkerFailed)??;
        for (writer, batch) in writers.iter_mut().zip(&chunk.batches) {
            writer.write(batch)?;
        }
        persons_done += chunk.persons;
        progress(persons_done);
    }
    Ok(())
}
