//! One large request's per-row work — parsing, validation, features, rendering the answer — spread
//! over the front end's cores, so a 1,000-transaction request is not ~2 ms of one core while
//! others idle (issue 19). Rows are independent, so a request is cut into contiguous chunks and
//! the results are put back in order; the outcome is the same as doing it on one thread.
//!
//! The pool is process-wide, like rayon's own: `serve` installs it with `server.parse_threads`
//! threads; everywhere else (the CLI, `pixguard stream`, tests) the work stays on the caller's
//! thread. A caller blocks while the pool works — it would have been busy for as long doing the
//! work itself — so the pool's threads replace the callers' rather than adding to them.

use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

/// Fewest rows a chunk gets: below this the hand-off to another thread (a wake-up, ~5–20 µs)
/// costs more than the rows' work (~1.5 µs each to parse, validate and extract).
pub const MIN_CHUNK_ROWS: usize = 64;

/// A pool for one request's rows, or none (then everything runs on the caller's thread).
pub struct Parallel {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    /// Threads that requests' parts hold now.
    busy: AtomicUsize,
}

static GLOBAL: OnceLock<Parallel> = OnceLock::new();

impl Parallel {
    /// `threads` threads named `pixguard-rows-N`; with fewer than two, no pool.
    pub fn new(threads: usize) -> Result<Parallel, rayon::ThreadPoolBuildError> {
        Parallel::niced(threads, 0)
    }

    /// As [`Parallel::new`], its threads `nice` below the engine's like the rest of the front end.
    pub fn niced(threads: usize, nice: u8) -> Result<Parallel, rayon::ThreadPoolBuildError> {
        if threads < 2 {
            return Ok(Parallel::serial());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pixguard-rows-{i}"))
            .start_handler(move |_| crate::threads::lower_priority(nice))
            .build()?;
        Ok(Parallel {
            pool: Some(pool),
            threads,
            busy: AtomicUsize::new(0),
        })
    }

    /// Everything on the caller's thread.
    pub const fn serial() -> Parallel {
        Parallel {
            pool: None,
            threads: 1,
            busy: AtomicUsize::new(0),
        }
    }

    /// The threads work is spread over (1: the caller's own).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How many rows each chunk of a `rows`-row request gets: `rows` itself (one chunk, no
    /// hand-off) when there is no pool, no thread free or too few rows for two chunks.
    pub fn chunk_rows(&self, rows: usize) -> usize {
        rows.div_ceil(self.parts(rows, MIN_CHUNK_ROWS)).max(1)
    }

    /// `0..rows` cut into contiguous ranges of [`Parallel::chunk_rows`] rows, in order.
    pub fn row_ranges(&self, rows: usize) -> Vec<Range<usize>> {
        let chunk = self.chunk_rows(rows);
        (0..rows)
            .step_by(chunk)
            .map(|start| start..(start + chunk).min(rows))
            .collect()
    }

    /// How many parts to cut `len` units of work into, each at least `min` units, over the pool's
    /// threads that other requests are not using: one (the caller's thread) when there is no
    /// pool, no thread free, or too little work for two. Two large requests at once on two
    /// threads then each parse on their own thread rather than both waking both (on the 2-core
    /// machine, cutting both cost 15 % of the throughput at concurrency 2: docs/benchmarks.md).
    pub fn parts(&self, len: usize, min: usize) -> usize {
        match self.pool {
            Some(_) => {
                let free = self
                    .threads
                    .saturating_sub(self.busy.load(Ordering::Relaxed));
                (len / min.max(1)).clamp(1, free.max(1))
            }
            None => 1,
        }
    }

    /// `f` over each part, results in the parts' order: on the pool when there is more than one
    /// part, else on the caller's thread.
    pub fn map<I, R, F>(&self, parts: Vec<I>, f: F) -> Vec<R>
    where
        I: Send,
        R: Send,
        F: Fn(I) -> R + Sync + Send,
    {
        match &self.pool {
            Some(pool) if parts.len() > 1 => {
                let _busy = Busy::take(&self.busy, parts.len().min(self.threads));
                pool.install(|| parts.into_par_iter().map(f).collect())
            }
            _ => parts.into_iter().map(f).collect(),
        }
    }
}

/// Threads counted busy for as long as it lives (a panic in `f` included).
struct Busy<'a>(&'a AtomicUsize, usize);

impl<'a> Busy<'a> {
    fn take(busy: &'a AtomicUsize, threads: usize) -> Self {
        busy.fetch_add(threads, Ordering::Relaxed);
        Busy(busy, threads)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Installs the process's pool once (later calls keep the first), its threads `nice` below the
/// engine's; `serve` calls it at start.
pub fn install(threads: usize, nice: u8) -> Result<(), rayon::ThreadPoolBuildError> {
    if GLOBAL.get().is_none() {
        // A race between two first calls builds a pool too many, dropped at once: harmless.
        let _ = GLOBAL.set(Parallel::niced(threads, nice)?);
    }
    Ok(())
}

/// The process's pool: the installed one, or serial.
pub fn global() -> &'static Parallel {
    static SERIAL: Parallel = Parallel::serial();
    GLOBAL.get().unwrap_or(&SERIAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_rows_and_keep_their_order() {
        let parallel = Parallel::new(3).expect("pool");
        let rows: Vec<usize> = (0..1_000).collect();
        let chunk = parallel.chunk_rows(rows.len());
        assert_eq!(chunk, 334, "1,000 rows over 3 threads");
        assert_eq!(
            parallel.row_ranges(1_000),
            vec![0..334, 334..668, 668..1_000]
        );
        assert!(parallel.row_ranges(0).is_empty(), "no rows, no ranges");
        let parts: Vec<&[usize]> = rows.chunks(chunk).collect();
        assert_eq!(parts.len(), 3);
        let names = parallel.map(parts.clone(), |_| {
            std::thread::current().name().map(str::to_owned)
        });
        assert!(
            names.iter().all(|n| n
                .as_deref()
                .is_some_and(|n| n.starts_with("pixguard-rows-"))),
            "the pool's threads did the work: {names:?}"
        );
        let sums = parallel.map(parts, |p| p.iter().sum::<usize>());
        let want: Vec<usize> = rows.chunks(chunk).map(|c| c.iter().sum()).collect();
        assert_eq!(sums, want);
    }

    #[test]
    fn small_requests_and_no_pool_stay_on_the_callers_thread() {
        let parallel = Parallel::new(4).expect("pool");
        assert_eq!(
            parallel.chunk_rows(2 * MIN_CHUNK_ROWS - 1),
            2 * MIN_CHUNK_ROWS - 1
        );
        assert_eq!(parallel.chunk_rows(2 * MIN_CHUNK_ROWS), MIN_CHUNK_ROWS);
        assert_eq!(parallel.chunk_rows(0), 1, "a chunk size is never 0");
        assert_eq!(parallel.parts(100, 30), 3);
        assert_eq!(parallel.parts(1_000, 30), 4, "no more parts than threads");
        assert_eq!(parallel.parts(59, 30), 1, "too little work for two");
        let serial = Parallel::new(1).expect("no pool");
        assert_eq!(serial.parts(1_000, 30), 1);
        assert_eq!(serial.chunk_rows(10_000), 10_000);
        let here = std::thread::current().id();
        let ran_on = serial.map(vec![1, 2], |_| std::thread::current().id());
        assert_eq!(ran_on, vec![here, here]);
        let one_part = parallel.map(vec![1], |_| std::thread::current().id());
        assert_eq!(one_part, vec![here], "one part: no hand-off");
    }

    #[test]
    fn a_request_gets_the_threads_others_leave() {
        let parallel = Parallel::new(4).expect("pool");
        let seen = parallel.map(vec![0; 3], |_| parallel.parts(1_000, 10));
        assert_eq!(seen, vec![1; 3], "3 of 4 held: one free, so one part");
        assert_eq!(parallel.parts(1_000, 10), 4, "all free again");
        let seen = parallel.map(vec![0; 2], |_| parallel.chunk_rows(1_000));
        assert_eq!(seen, vec![500; 2], "2 of 4 held: two chunks");
    }
}
