//! The persons at the edges of the partitions of a [`super::BoundContributions`]
//! pass: a scan split into byte ranges may cut a person's rows in two, so
//! each partition hands its first and its last person here, with their
//! unbounded partials, and the last partition to end merges them, each
//! person once with all its rows, and bounds them as it bounds the others.
//!
//! That is exact only if no person other than a partition's first or last
//! is in two partitions. Each partition's persons come in order (the pass
//! checks it), so a partition holds no person outside the range from its
//! first to its last; the ranges of the partitions may then touch but not
//! overlap, and a query whose ranges overlap fails here, before its cells
//! are complete, rather than count a person twice.

use std::sync::Mutex;

use datafusion::common::{HashMap, Result, exec_err, internal_err};

use super::running::Running;

/// A person's place in the order of the keyed tables: by number, the rows
/// without a person last.
pub(super) fn person_order(person: Option<u32>) -> u64 {
    person.map_or(u64::MAX, u64::from)
}

/// One person's cells (Arrow row format) and unbounded partials, from one
/// partition.
#[derive(Debug, Clone)]
pub(super) struct PersonRecord {
    pub(super) person: Option<u32>,
    pub(super) cells: Vec<(Vec<u8>, Vec<Running>)>,
}

impl PersonRecord {
    /// Adds the rest of the same person's rows, from another partition.
    fn absorb(&mut self, other: PersonRecord) {
        let mut known: HashMap<Vec<u8>, usize> = self
            .cells
            .iter()
            .enumerate()
            .map(|(i, (row, _))| (row.clone(), i))
            .collect();
        for (row, running) in other.cells {
            match known.get(&row) {
                Some(&i) => {
                    for (mine, theirs) in self.cells[i].1.iter_mut().zip(&running) {
                        mine.absorb(theirs);
                    }
                }
                None => {
                    known.insert(row.clone(), self.cells.len());
                    self.cells.push((row, running));
                }
            }
        }
    }
}

/// What the partitions of one execution hand over.
#[derive(Debug, Default)]
struct Handed {
    ended: usize,
    /// (first, last) person of each partition with rows, by [`person_order`].
    ranges: Vec<(u64, u64)>,
    edges: Vec<PersonRecord>,
}

/// The merger shared by the partitions of one execution.
#[derive(Debug)]
pub(super) struct Boundary {
    partitions: usize,
    handed: Mutex<Handed>,
}

impl Boundary {
    pub(super) fn new(partitions: usize) -> Self {
        Self {
            partitions,
            handed: Mutex::new(Handed::default()),
        }
    }

    /// A partition has ended, with its range of persons (none without rows)
    /// and its edge persons. To the last partition to end, the merged edge
    /// persons of all.
    pub(super) fn finish(
        &self,
        range: Option<(u64, u64)>,
        edges: Vec<PersonRecord>,
    ) -> Result<Option<Vec<PersonRecord>>> {
        let (ranges, edges) = {
            let Ok(mut handed) = self.handed.lock() else {
                return internal_err!("a partition of a bounded aggregate failed");
            };
            handed.ended += 1;
            handed.ranges.extend(range);
            handed.edges.extend(edges);
            if handed.ended < self.partitions {
                return Ok(None);
            }
            // The next execution of the same plan starts afresh.
            let handed = std::mem::take(&mut *handed);
            (handed.ranges, handed.edges)
        };
        let mut ranges = ranges;
        ranges.sort_unstable();
        if ranges.windows(2).any(|pair| pair[1].0 < pair[0].1) {
            return exec_err!(
                "the persons of a bounded aggregate are spread over its partitions; \
                 it cannot bound them"
            );
        }
        let mut edges = edges;
        edges.sort_by_key(|record| person_order(record.person));
        let mut merged: Vec<PersonRecord> = Vec::with_capacity(edges.len());
        for record in edges {
            match merged.last_mut() {
                Some(last) if last.person == record.person => last.absorb(record),
                _ => merged.push(record),
            }
        }
        Ok(Some(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(person: Option<u32>, cells: &[(&[u8], u64)]) -> PersonRecord {
        PersonRecord {
            person,
            cells: cells
                .iter()
                .map(|(row, n)| (row.to_vec(), vec![Running::Count(*n)]))
                .collect(),
        }
    }

    fn counts(record: &PersonRecord) -> Vec<(Vec<u8>, u64)> {
        record
            .cells
            .iter()
            .map(|(row, running)| match running[0] {
                Running::Count(n) => (row.clone(), n),
                Running::Sum(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_person_cut_between_partitions_is_merged_once() {
        let boundary = Boundary::new(3);
        // Person 7 ends partition 0, is all of partition 1, and starts
        // partition 2.
        let first = boundary
            .finish(
                Some((1, 7)),
                vec![record(Some(1), &[(b"a", 1)]), record(Some(7), &[(b"a", 2)])],
            )
            .unwrap();
        assert!(first.is_none());
        let second = boundary
            .finish(Some((7, 7)), vec![record(Some(7), &[(b"b", 1)])])
            .unwrap();
        assert!(second.is_none());
        let merged = boundary
            .finish(
                Some((7, 9)),
                vec![
                    record(Some(7), &[(b"a", 3), (b"b", 1)]),
                    record(Some(9), &[(b"c", 1)]),
                ],
            )
            .unwrap()
            .expect("the last partition merges");
        let persons: Vec<_> = merged.iter().map(|r| r.person).collect();
        assert_eq!(persons, vec![Some(1), Some(7), Some(9)]);
        assert_eq!(
            counts(&merged[1]),
            vec![(b"a".to_vec(), 5), (b"b".to_vec(), 2)]
        );
    }

    #[test]
    fn overlapping_partitions_fail_rather_than_count_a_person_twice() {
        let boundary = Boundary::new(2);
        boundary
            .finish(Some((1, 10)), vec![record(Some(1), &[(b"a", 1)])])
            .unwrap();
        let error = boundary
            .finish(Some((5, 5)), vec![record(Some(5), &[(b"a", 1)])])
            .unwrap_err();
        assert!(error.to_string().contains("spread over its partitions"));
    }

    #[test]
    fn rows_without_a_person_come_last() {
        assert!(person_order(None) > person_order(Some(u32::MAX)));
    }
}
