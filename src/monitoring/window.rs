//! Bin counts over sliding windows: a ring of time buckets per window, summed when a report is
//! asked for (a few dozen buckets of a few hundred counters: cheaper than keeping running sums
//! right when buckets expire).

use std::time::Duration;

/// Counts of one time bucket: every bin of every tracked value, laid out flat.
#[derive(Debug, Clone)]
struct Bucket {
    /// Which bucket of time this is (elapsed / bucket length); `u64::MAX` while unused.
    id: u64,
    rows: u64,
    counts: Vec<u64>,
}

/// One sliding window: `buckets` buckets of `bucket` each; the current one fills while the
/// oldest expire, so the window spans between `buckets - 1` and `buckets` bucket lengths.
#[derive(Debug, Clone)]
pub struct Window {
    /// Its name in metrics and reports (`10m`, `24h`).
    pub name: &'static str,
    bucket: Duration,
    ring: Vec<Bucket>,
}

impl Window {
    /// A window of `buckets` buckets of `bucket`, each holding `width` counters.
    pub fn new(name: &'static str, bucket: Duration, buckets: usize, width: usize) -> Self {
        Window {
            name,
            bucket,
            ring: vec![
                Bucket {
                    id: u64::MAX,
                    rows: 0,
                    counts: vec![0; width],
                };
                buckets.max(1)
            ],
        }
    }

    fn id(&self, elapsed: Duration) -> u64 {
        (elapsed.as_nanos() / self.bucket.as_nanos().max(1)) as u64
    }

    /// The bucket for `elapsed` (time since the monitor started), emptied if it held older rows.
    pub fn current(&mut self, elapsed: Duration) -> (&mut u64, &mut [u64]) {
        let id = self.id(elapsed);
        let n = self.ring.len() as u64;
        let b = &mut self.ring[(id % n) as usize];
        if b.id != id {
            b.id = id;
            b.rows = 0;
            b.counts.iter_mut().for_each(|c| *c = 0);
        }
        (&mut b.rows, &mut b.counts)
    }

    /// Rows and counts of the buckets still inside the window at `elapsed`.
    pub fn sum(&self, elapsed: Duration) -> (u64, Vec<u64>) {
        let now = self.id(elapsed);
        let n = self.ring.len() as u64;
        let width = self.ring.first().map_or(0, |b| b.counts.len());
        let mut rows = 0;
        let mut counts = vec![0; width];
        for b in self
            .ring
            .iter()
            .filter(|b| b.id != u64::MAX && b.id <= now && now - b.id < n)
        {
            rows += b.rows;
            for (total, c) in counts.iter_mut().zip(&b.counts) {
                *total += c;
            }
        }
        (rows, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(w: &mut Window, at_s: u64, bin: usize) {
        let (rows, counts) = w.current(Duration::from_secs(at_s));
        *rows += 1;
        counts[bin] += 1;
    }

    #[test]
    fn rows_leave_the_window_when_their_bucket_expires() {
        // Three buckets of 60 s.
        let mut w = Window::new("3m", Duration::from_secs(60), 3, 2);
        add(&mut w, 0, 0);
        add(&mut w, 59, 0);
        add(&mut w, 60, 1);
        add(&mut w, 150, 1);
        assert_eq!(w.sum(Duration::from_secs(150)), (4, vec![2, 2]));
        // At 180 s the bucket of [0, 60) has left the window.
        assert_eq!(w.sum(Duration::from_secs(180)), (2, vec![0, 2]));
        // A row at 200 s reuses that bucket's slot, emptied first.
        add(&mut w, 200, 0);
        assert_eq!(w.sum(Duration::from_secs(200)), (3, vec![1, 2]));
        // Long after, nothing is left.
        assert_eq!(w.sum(Duration::from_secs(10_000)), (0, vec![0, 0]));
    }

    #[test]
    fn one_bucket_of_unbounded_length_keeps_every_row() {
        let mut all = Window::new("all", Duration::MAX, 1, 2);
        add(&mut all, 0, 0);
        add(&mut all, 10_000_000, 1);
        assert_eq!(all.sum(Duration::from_secs(10_000_000)), (2, vec![1, 1]));
    }
}
