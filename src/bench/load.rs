//! The two load shapes. Open loop: scheduler threads release requests at their intended send
//! times (constant or Poisson) and latency is measured from that intended time, so time spent
//! waiting for a free connection counts (coordinated-omission correction). Each scheduler releases
//! its share of the rate to its own share of the connections and records into its own recorder, so
//! a generator with several threads scales without a shared queue or lock. Closed loop: N tasks,
//! each sending its next request when the previous answer arrived.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use super::client::{Answered, Target};
use crate::synth::Rng;

/// How requests are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps (a Poisson process), as independent payers produce.
    Poisson,
    /// The transactions' own `accepted_at` times, in order, their gaps divided by `--speed`:
    /// recorded traffic's bursts and lulls as they came (perf_analyzer's --request-intervals).
    Replay,
}

/// Replayed arrivals: when each request came in the recording, from its first.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Each request's offset from the first (its first transaction's `accepted_at`), in order.
    offsets: Vec<Duration>,
    /// The recording's length: the last offset plus the mean gap, after which it plays again.
    span: Duration,
}

impl Replay {
    /// From each request's time in seconds (in the order the requests are numbered), which must
    /// not go back and must not all be the same.
    pub fn new(times: &[f64]) -> anyhow::Result<Replay> {
        let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
            anyhow::bail!("nothing to replay");
        };
        if let Some(i) = times.windows(2).position(|w| w[1] < w[0]) {
            anyhow::bail!(
                "request {} comes before request {i}: sort by time first",
                i + 1
            );
        }
        anyhow::ensure!(
            last > first,
            "every transaction has the same accepted_at: nothing to replay"
        );
        let offsets = times
            .iter()
            .map(|t| Duration::from_secs_f64(t - first))
            .collect();
        let mean_gap = (last - first) / (times.len() - 1) as f64;
        Ok(Replay {
            offsets,
            span: Duration::from_secs_f64(last - first + mean_gap),
        })
    }

    /// Requests per second at `speed`: the recording's mean rate, sped up.
    pub fn rate(&self, speed: f64) -> f64 {
        self.offsets.len() as f64 / self.span.as_secs_f64() * speed
    }

    /// Release `k` of the endless replay (the recording again and again): when, from the
    /// replay's start, and which request.
    fn release(&self, k: usize, speed: f64) -> (Duration, usize) {
        let n = self.offsets.len();
        let (cycle, index) = (k / n, k % n);
        let at = self.span.as_secs_f64() * cycle as f64 + self.offsets[index].as_secs_f64();
        (Duration::from_secs_f64(at / speed), index)
    }
}

/// A replayed step: the recording, its speed, and which of its releases this process makes —
/// every `stride`-th from `first` (the parts of a split run, then the schedulers of a part).
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The recording.
    pub replay: Arc<Replay>,
    /// How many times faster than recorded.
    pub speed: f64,
    /// The first release index this process makes.
    pub first: usize,
    /// Every how many releases it makes one.
    pub stride: usize,
}

impl Replayed {
    /// Scheduler `g` of `groups`'s share: every `groups`-th of this process's releases.
    fn scheduler(&self, g: usize, groups: usize) -> Replayed {
        Replayed {
            replay: self.replay.clone(),
            speed: self.speed,
            first: self.first + g * self.stride,
            stride: self.stride * groups,
        }
    }
}

/// One step of the run.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Open loop at `rate` requests/s over at most `connections` connections.
    Open {
        /// Offered requests per second.
        rate: f64,
        /// Arrival process.
        arrivals: Arrivals,
        /// Connections, i.e. the most requests in flight.
        connections: usize,
        /// Scheduler threads, each releasing `rate / schedulers` to its own connections.
        schedulers: usize,
        /// How long after the step's start the first release is: a part of a split run
        /// (`--part`) interleaves its constant arrivals with the other parts'.
        phase: Duration,
        /// Replayed arrivals: the recording this process releases its share of.
        replay: Option<Replayed>,
    },
    /// Closed loop with `concurrency` connections, each waiting for its answer.
    Closed {
        /// Connections.
        concurrency: usize,
    },
}

/// Latencies are recorded from 1 µs to 10 minutes.
const MAX_US: u64 = 600_000_000;

fn histogram(digits: u8) -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_US, digits)?)
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Successful answers whose intended send time fell in this second.
    pub ok: u64,
    /// Failed ones.
    pub errors: u64,
    /// Their latencies.
    pub latency: Histogram<u64>,
}

/// What one step measured.
#[derive(Debug)]
pub struct Recorder {
    run_start: Instant,
    window: (Instant, Instant),
    /// Latencies of successful requests intended inside the measured window, µs.
    pub latency: Histogram<u64>,
    /// How late the scheduler released requests (open loop), µs.
    pub lateness: Histogram<u64>,
    /// Successful requests intended (open loop) or sent (closed loop) in the window.
    pub ok: u64,
    /// Successful answers that arrived within the window: the achieved rate's numerator.
    pub completed: u64,
    /// Failed requests in the window, by outcome.
    pub errors: BTreeMap<String, u64>,
    /// Successful answers of the whole run (warm-up included) by the model version that gave them.
    pub versions: BTreeMap<String, u64>,
    /// Per second since the start of the whole run (warm-up included).
    pub timeline: BTreeMap<u64, Second>,
    /// An empty per-second histogram to clone.
    empty_second: Histogram<u64>,
}

impl Recorder {
    /// Adds what `other` recorded over the same window (another scheduler's share).
    fn absorb(&mut self, other: Recorder) {
        let _ = self.latency.add(&other.latency);
        let _ = self.lateness.add(&other.lateness);
        self.ok += other.ok;
        self.completed += other.completed;
        for (label, n) in other.errors {
            *self.errors.entry(label).or_default() += n;
        }
        for (version, n) in other.versions {
            *self.versions.entry(version).or_default() += n;
        }
        for (second, theirs) in other.timeline {
            match self.timeline.get_mut(&second) {
                Some(ours) => {
                    ours.ok += theirs.ok;
                    ours.errors += theirs.errors;
                    let _ = ours.latency.add(&theirs.latency);
                }
                None => {
                    self.timeline.insert(second, theirs);
                }
            }
        }
    }

    fn new(run_start: Instant, window: (Instant, Instant)) -> anyhow::Result<Self> {
        Ok(Recorder {
            run_start,
            window,
            latency: histogram(3)?,
            lateness: histogram(2)?,
            ok: 0,
            completed: 0,
            errors: BTreeMap::new(),
            versions: BTreeMap::new(),
            timeline: BTreeMap::new(),
            empty_second: histogram(2)?,
        })
    }

    fn record(&mut self, intended: Instant, done: Instant, outcome: Result<Answered, String>) {
        let micros = done.saturating_duration_since(intended).as_micros() as u64;
        let micros = micros.clamp(1, MAX_US);
        let second = intended.saturating_duration_since(self.run_start).as_secs();
        let empty = &self.empty_second;
        let slot = self.timeline.entry(second).or_insert_with(|| Second {
            ok: 0,
            errors: 0,
            latency: empty.clone(),
        });
        let measured = intended >= self.window.0 && intended < self.window.1;
        if outcome.is_ok() && done >= self.window.0 && done < self.window.1 {
            // Past saturation, requests intended in the window are answered after it; counting
            // them would report the offered rate as achieved.
            self.completed += 1;
        }
        match outcome {
            Ok(answered) => {
                if let Some(v) = answered.version {
                    match self.versions.get_mut(&v) {
                        Some(n) => *n += 1,
                        None => {
                            self.versions.insert(v, 1);
                        }
                    }
                }
                slot.ok += 1;
                let _ = slot.latency.record(micros);
                if measured {
                    self.ok += 1;
                    let _ = self.latency.record(micros);
                }
            }
            Err(label) => {
                slot.errors += 1;
                if measured {
                    *self.errors.entry(label).or_default() += 1;
                }
            }
        }
    }
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    /// Answers so far (all outcomes).
    pub done: AtomicU64,
    /// Failures so far.
    pub failed: AtomicU64,
}

/// Runs one step: `warmup` unrecorded, then `duration` recorded. `run_start` anchors the timeline.
pub async fn run_step(
    target: Arc<Target>,
    shape: Shape,
    warmup: Duration,
    duration: Duration,
    run_start: Instant,
    seed: u64,
    live: Arc<Live>,
) -> anyhow::Result<Recorder> {
    let start = Instant::now();
    let window = (start + warmup, start + warmup + duration);
    let next = Arc::new(AtomicUsize::new(seed as usize % target.requests().max(1)));
    match shape {
        Shape::Closed { concurrency } => {
            let recorder = Arc::new(Mutex::new(Recorder::new(run_start, window)?));
            let mut tasks = Vec::new();
            for _ in 0..concurrency.max(1) {
                let (target, recorder, next, live) =
                    (target.clone(), recorder.clone(), next.clone(), live.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = target.conn();
                    while Instant::now() < window.1 {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let sent = Instant::now();
                        let outcome = target.call(&mut conn, i).await;
                        count(&live, &outcome);
                        lock(&recorder).record(sent, Instant::now(), outcome);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            into_recorder(recorder, run_start, window)
        }
        Shape::Open {
            rate,
            arrivals,
            connections,
            schedulers,
            phase,
            replay,
        } => {
            let connections = connections.max(1);
            let groups = schedulers.clamp(1, connections);
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            let mut tasks = Vec::new();
            let mut shares = Vec::new();
            for g in 0..groups {
                let share = Arc::new(Mutex::new(Recorder::new(run_start, window)?));
                // Each release: its intended time, and for a replay the request it is.
                let (tx, rx) = mpsc::unbounded_channel::<(Instant, Option<usize>)>();
                // Whichever of the scheduler's connections is free takes the next release.
                let released = Arc::new(tokio::sync::Mutex::new(rx));
                // Constant arrivals interleave the schedulers' releases evenly; Poisson shares
                // are independent Poisson processes, whose sum is the whole rate's.
                let offset = match arrivals {
                    Arrivals::Constant => {
                        phase + Duration::from_secs_f64(g as f64 / rate.max(1e-9))
                    }
                    Arrivals::Poisson | Arrivals::Replay => Duration::ZERO,
                };
                let replay = replay.as_ref().map(|r| r.scheduler(g, groups));
                let plan = Plan {
                    rate: rate / groups as f64,
                    arrivals,
                    start: start + offset,
                    end: window.1,
                    seed: seed ^ (g as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    replay,
                };
                let (stop, share_for_lateness) = (stop.clone(), share.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("bench-scheduler-{g}"))
                        .spawn(move || schedule(tx, plan, &stop, &share_for_lateness)),
                );
                let conns = connections / groups + usize::from(g < connections % groups);
                for _ in 0..conns {
                    let (target, share, next, live, released) = (
                        target.clone(),
                        share.clone(),
                        next.clone(),
                        live.clone(),
                        released.clone(),
                    );
                    tasks.push(tokio::spawn(async move {
                        let mut conn = target.conn();
                        loop {
                            // The queue's lock is let go at the end of this statement: a `while
                            // let` would hold it through the call below, one request in flight per
                            // scheduler (the open loop capped at ~6–9 k/s on loopback, 2026-12-05).
                            let Some((intended, request)) = released.lock().await.recv().await
                            else {
                                break;
                            };
                            let i = request.unwrap_or_else(|| next.fetch_add(1, Ordering::Relaxed));
                            let outcome = target.call(&mut conn, i).await;
                            count(&live, &outcome);
                            lock(&share).record(intended, Instant::now(), outcome);
                        }
                    }));
                }
                shares.push(share);
            }
            for t in tasks {
                let _ = t.await;
            }
            stop.store(true, Ordering::Relaxed);
            for handle in threads.into_iter().flatten() {
                let _ = handle.join();
            }
            let mut whole = Recorder::new(run_start, window)?;
            for share in shares {
                whole.absorb(into_recorder(share, run_start, window)?);
            }
            Ok(whole)
        }
    }
}

/// The recorder once every task that shared it has finished (so this is the last reference).
fn into_recorder(
    shared: Arc<Mutex<Recorder>>,
    run_start: Instant,
    window: (Instant, Instant),
) -> anyhow::Result<Recorder> {
    Ok(match Arc::try_unwrap(shared) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => std::mem::replace(&mut *lock(&shared), Recorder::new(run_start, window)?),
    })
}

fn lock(recorder: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

fn count(live: &Live, outcome: &Result<Answered, String>) {
    live.done.fetch_add(1, Ordering::Relaxed);
    if outcome.is_err() {
        live.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one scheduler releases.
struct Plan {
    rate: f64,
    arrivals: Arrivals,
    start: Instant,
    end: Instant,
    seed: u64,
    replay: Option<Replayed>,
}

/// Releases intended send times from `start` until `end`, sleeping in between. Linux rounds
/// sleeps up by the thread's timer slack (50 µs by default); 1 ns slack keeps releases close to
/// their times, and how late each one was is recorded.
fn schedule(
    tx: mpsc::UnboundedSender<(Instant, Option<usize>)>,
    plan: Plan,
    stop: &AtomicBool,
    recorder: &Mutex<Recorder>,
) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0);
    }
    let mut rng = Rng::new(plan.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mean_gap = 1.0 / plan.rate.max(1e-9);
    let mut at = plan.start;
    let mut late = Vec::with_capacity(1024);
    let mut k = plan.replay.as_ref().map_or(0, |r| r.first);
    loop {
        let request = match &plan.replay {
            Some(r) => {
                let (offset, request) = r.replay.release(k, r.speed);
                k += r.stride;
                at = plan.start + offset;
                Some(request)
            }
            None => {
                let gap = match plan.arrivals {
                    Arrivals::Constant | Arrivals::Replay => mean_gap,
                    Arrivals::Poisson => -mean_gap * (1.0 - rng.uniform()).ln(),
                };
                at += Duration::from_secs_f64(gap);
                None
            }
        };
        if at >= plan.end || stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        late.push(Instant::now().saturating_duration_since(at).as_micros() as u64);
        if tx.send((at, request)).is_err() {
            break;
        }
        if late.len() == late.capacity() {
            flush_lateness(recorder, &mut late);
        }
    }
    flush_lateness(recorder, &mut late);
}

fn flush_lateness(recorder: &Mutex<Recorder>, late: &mut Vec<u64>) {
    let mut r = lock(recorder);
    for &l in late.iter() {
        let _ = r.lateness.record(l.clamp(1, MAX_US));
    }
    late.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_plays_the_recording_again_at_its_speed() {
        // Requests at 0, 0.1 and 0.4 s: a mean gap of 0.2 s, so the recording is 0.6 s long.
        let replay = Replay::new(&[10.0, 10.1, 10.4]).unwrap();
        assert!((replay.rate(1.0) - 5.0).abs() < 1e-9);
        assert!((replay.rate(2.0) - 10.0).abs() < 1e-9);
        let at = |k, speed| {
            let (t, i) = replay.release(k, speed);
            ((t.as_secs_f64() * 1e6).round() / 1e6, i)
        };
        assert_eq!(at(0, 1.0), (0.0, 0));
        assert_eq!(at(2, 1.0), (0.4, 2));
        assert_eq!(at(3, 1.0), (0.6, 0));
        assert_eq!(at(4, 1.0), (0.7, 1));
        assert_eq!(at(4, 2.0), (0.35, 1));

        assert!(Replay::new(&[]).is_err());
        let same = Replay::new(&[5.0, 5.0]).unwrap_err().to_string();
        assert!(same.contains("same accepted_at"), "{same}");
        let back = Replay::new(&[5.0, 4.0]).unwrap_err().to_string();
        assert!(back.contains("request 1 comes before request 0"), "{back}");
    }

    #[test]
    fn parts_and_schedulers_share_out_every_release_once() {
        let replay = Arc::new(Replay::new(&[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap());
        let mut taken = Vec::new();
        // Three parts of a run, each with two schedulers: every release is one scheduler's.
        for part in 0..3 {
            let process = Replayed {
                replay: replay.clone(),
                speed: 1.0,
                first: part,
                stride: 3,
            };
            for g in 0..2 {
                let s = process.scheduler(g, 2);
                taken.extend(
                    (0..)
                        .map(|j| s.first + j * s.stride)
                        .take_while(|&k| k < 60),
                );
            }
        }
        taken.sort_unstable();
        assert_eq!(taken, (0..60).collect::<Vec<_>>());
    }
}
