//! Which offsets may be committed: per partition, the contiguous watermark of finished messages.
//! The micro-batcher and the producer finish messages out of order; committing the highest
//! finished offset would skip an unfinished one on a crash. The commit position of a partition is
//! its lowest unfinished offset, or one past the highest received when none is unfinished.

use std::collections::{BTreeSet, HashMap, HashSet};

/// A topic partition.
pub type Key = (String, i32);

#[derive(Debug, Default)]
struct Partition {
    /// Received and not yet finished (acknowledged output or dead-letter record).
    pending: BTreeSet<i64>,
    /// One past the highest offset received.
    next: Option<i64>,
    /// The last position committed (or handed out to commit).
    committed: Option<i64>,
}

impl Partition {
    fn position(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
}

/// Offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct Offsets {
    /// By topic, then partition: looked up with the message's `&str` topic, no allocation per
    /// message (a stream has one input topic, so the outer map holds one entry).
    partitions: HashMap<String, HashMap<i32, Partition>>,
    /// Partitions this member owns now. A message of another — prefetched before its partition was
    /// revoked — belongs to the new owner, which starts from the committed position.
    assigned: HashMap<String, HashSet<i32>>,
}

impl Offsets {
    /// These partitions are ours from now on.
    pub fn assign(&mut self, keys: &[Key]) {
        for (topic, partition) in keys {
            self.assigned
                .entry(topic.clone())
                .or_default()
                .insert(*partition);
        }
    }

    /// Whether a message of this partition is ours to score.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.assigned
            .get(topic)
            .is_some_and(|p| p.contains(&partition))
    }

    /// A message at `offset` was received and its work started.
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) {
        let partitions = match self.partitions.get_mut(topic) {
            Some(p) => p,
            None => self.partitions.entry(topic.to_string()).or_default(),
        };
        let p = partitions.entry(partition).or_default();
        p.pending.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The message at `offset` is finished: its output (or dead-letter record) is acknowledged.
    /// Offsets of a partition given up meanwhile are ignored.
    pub fn finished(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.get_mut(topic, partition) {
            p.pending.remove(&offset);
        }
    }

    fn get(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.partitions.get(topic)?.get(&partition)
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.partitions.get_mut(topic)?.get_mut(&partition)
    }

    /// Positions to commit that moved since the last call: (topic, partition, next offset to read).
    pub fn committable(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for (topic, partitions) in &mut self.partitions {
            for (partition, p) in partitions {
                if let Some(position) = p.position()
                    && p.committed.is_none_or(|c| position > c)
                {
                    p.committed = Some(position);
                    out.push((topic.clone(), *partition, position));
                }
            }
        }
        out.sort();
        out
    }

    /// Positions to commit for `keys` (moved or not), for a commit before giving them up.
    pub fn positions(&self, keys: &[Key]) -> Vec<(String, i32, i64)> {
        keys.iter()
            .filter_map(|(topic, partition)| {
                let p = self.get(topic, *partition)?;
                Some((topic.clone(), *partition, p.position()?))
            })
            .collect()
    }

    /// Messages of `keys` still unfinished.
    pub fn pending_in(&self, keys: &[Key]) -> usize {
        keys.iter()
            .filter_map(|(topic, partition)| self.get(topic, *partition))
            .map(|p| p.pending.len())
            .sum()
    }

    /// Messages still unfinished, all partitions.
    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .flat_map(HashMap::values)
            .map(|p| p.pending.len())
            .sum()
    }

    /// How many partitions this member owns now.
    pub fn assigned(&self) -> usize {
        self.assigned.values().map(HashSet::len).sum()
    }

    /// Forgets partitions given up: their late completions change nothing.
    pub fn forget(&mut self, keys: &[Key]) {
        for (topic, partition) in keys {
            if let Some(p) = self.partitions.get_mut(topic.as_str()) {
                p.remove(partition);
            }
            if let Some(p) = self.assigned.get_mut(topic.as_str()) {
                p.remove(partition);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_position_never_passes_an_unfinished_message() {
        let mut o = Offsets::default();
        for offset in 10..15 {
            o.received("t", 0, offset);
        }
        o.received("t", 1, 3);
        // 11 and 13 finish first: the position stays at 10, the lowest unfinished.
        o.finished("t", 0, 11);
        o.finished("t", 0, 13);
        let mut fresh = Offsets::default();
        fresh.received("t", 0, 10);
        assert_eq!(fresh.committable(), vec![("t".to_string(), 0, 10)]);
        o.finished("t", 0, 10);
        assert_eq!(
            o.positions(&[("t".into(), 0)]),
            vec![("t".to_string(), 0, 12)]
        );
        o.finished("t", 0, 12);
        o.finished("t", 0, 14);
        assert_eq!(
            o.positions(&[("t".into(), 0)]),
            vec![("t".to_string(), 0, 15)]
        );
        assert_eq!(o.pending(), 1);
        assert_eq!(o.pending_in(&[("t".into(), 1)]), 1);
        o.finished("t", 1, 3);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn committable_reports_each_position_once_and_only_forward() {
        let mut o = Offsets::default();
        o.received("t", 0, 0);
        o.received("t", 0, 1);
        // Position 0: nothing finished yet, but committing 0 is harmless and moves nothing later.
        assert_eq!(o.committable(), vec![("t".to_string(), 0, 0)]);
        assert!(o.committable().is_empty());
        o.finished("t", 0, 1);
        assert!(o.committable().is_empty(), "0 is still unfinished");
        o.finished("t", 0, 0);
        assert_eq!(o.committable(), vec![("t".to_string(), 0, 2)]);
        assert!(o.committable().is_empty());
    }

    #[test]
    fn a_forgotten_partition_ignores_late_completions() {
        let mut o = Offsets::default();
        o.assign(&[("t".into(), 2), ("t".into(), 0)]);
        assert!(o.owns("t", 2));
        assert_eq!(o.assigned(), 2);
        o.received("t", 2, 7);
        o.forget(&[("t".into(), 2)]);
        assert!(
            !o.owns("t", 2),
            "a revoked partition's prefetched messages are not ours"
        );
        assert_eq!(o.assigned(), 1);
        o.finished("t", 2, 7);
        assert_eq!(o.pending(), 0);
        assert!(o.committable().is_empty());
    }
}
