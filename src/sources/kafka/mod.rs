//! `pixguard stream`: Kafka in, scores out. A consumer-group member scoring each message with the
//! same scoring layer, engine and model as `serve`; each score goes to the output topic, each
//! message that cannot be scored to the dead-letter topic (Kafka Connect's headers), and a
//! partition's offset is committed only up to the contiguous run of messages whose output the
//! broker has acknowledged: at least once, never a silent skip. docs/streaming.md.

mod flow;
mod message;
mod offsets;
mod produce;
mod rebalance;
mod run;
mod settings;
mod shared;
mod trace;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

pub use message::{Unscorable, decode};
pub use offsets::Offsets;
pub use run::run;
pub use shared::{Shared, shared};

use crate::histogram::{Stage, write_histogram, write_samples};

/// What the stream records, for `/metrics`, `/v1/stats` and the progress log.
pub struct StreamMetrics {
    /// Messages received.
    pub consumed: AtomicU64,
    /// Scores acknowledged by the broker.
    pub produced: AtomicU64,
    /// Offset commits made.
    pub commits: AtomicU64,
    /// Scoring calls retried because the engine was full or late.
    pub retries: AtomicU64,
    /// Errors the Kafka client reported (outages included).
    pub broker_errors: AtomicU64,
    /// Sends that failed and were retried.
    pub produce_errors: AtomicU64,
    /// Messages of partitions revoked after they were fetched, left to their new owner.
    pub skipped: AtomicU64,
    /// Times the partitions were paused for backpressure.
    pub pauses: AtomicU64,
    /// Partitions paused now.
    pub paused: AtomicU64,
    /// Every broker unreachable (readiness fails) until the next successful fetch or send.
    pub brokers_down: AtomicBool,
    dead_letters: Mutex<BTreeMap<&'static str, u64>>,
    /// Per assigned partition, its lag in messages as librdkafka last computed it.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Message timestamp → the broker acknowledged its score, µs.
    pub end_to_end: Stage,
    /// Message timestamp → the stream received it, µs: the part of `end_to_end` spent before
    /// pixguard (the producer's batching, the broker, the fetch).
    pub fetch_age: Stage,
    /// Message timestamp → its score handed to the producer, µs: `end_to_end` less this is the
    /// output's wait for the broker's acknowledgement (`linger.ms`, the produce round trip).
    pub scored_age: Stage,
    started: Instant,
}

impl StreamMetrics {
    /// Empty.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(StreamMetrics {
            consumed: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            broker_errors: AtomicU64::new(0),
            produce_errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            paused: AtomicU64::new(0),
            brokers_down: AtomicBool::new(false),
            dead_letters: Mutex::new(BTreeMap::new()),
            lag: Mutex::new(BTreeMap::new()),
            end_to_end: Stage::new()?,
            fetch_age: Stage::new()?,
            scored_age: Stage::new()?,
            started: Instant::now(),
        })
    }

    /// Records in `stage` the age at `now_ms` of a message stamped `timestamp_ms` (ms since the
    /// epoch); a message without a timestamp is not counted, a clock behind it counts as 0.
    pub fn record_age(stage: &Stage, timestamp_ms: Option<i64>, now_ms: i64) {
        if let Some(age) = age_us(timestamp_ms, now_ms) {
            stage.record(age);
        }
    }

    /// Records in `stage` the ages at `now_ms` of messages stamped `timestamps_ms`, at once.
    pub fn record_ages(
        stage: &Stage,
        timestamps_ms: impl Iterator<Item = Option<i64>>,
        now_ms: i64,
    ) {
        let ages: Vec<u64> = timestamps_ms.filter_map(|ts| age_us(ts, now_ms)).collect();
        stage.record_all(&ages);
    }

    /// One message dead-lettered, for `class`.
    pub fn dead_lettered(&self, class: &'static str) {
        *self
            .dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(class)
            .or_default() += 1;
    }

    /// Messages dead-lettered, all reasons.
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// A progress line: counts and rates since start.
    pub fn log_progress(&self) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let consumed = self.consumed.load(Ordering::Relaxed);
        let produced = self.produced.load(Ordering::Relaxed);
        tracing::info!(
            consumed,
            produced,
            dead_lettered = self.dead_lettered_total(),
            commits = self.commits.load(Ordering::Relaxed),
            paused = self.paused.load(Ordering::Relaxed),
            consumed_per_s = (consumed as f64 / seconds).round(),
            "stream progress"
        );
    }

    /// The Prometheus lines.
    pub fn prometheus(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write_samples(
            out,
            "pixguard_stream_consumed_total",
            "Kafka messages received.",
            "counter",
            &[(String::new(), load(&self.consumed))],
        );
        write_samples(
            out,
            "pixguard_stream_produced_total",
            "Scores the broker acknowledged on the output topic.",
            "counter",
            &[(String::new(), load(&self.produced))],
        );
        let dead: Vec<(String, u64)> = self
            .dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(class, n)| (format!("{{reason=\"{class}\"}}"), *n))
            .collect();
        write_samples(
            out,
            "pixguard_stream_dead_lettered_total",
            "Messages sent to the dead-letter topic, by reason.",
            "counter",
            &dead,
        );
        write_samples(
            out,
            "pixguard_stream_skipped_total",
            "Messages of partitions revoked after they were fetched, left to their new owner.",
            "counter",
            &[(String::new(), load(&self.skipped))],
        );
        write_samples(
            out,
            "pixguard_stream_commits_total",
            "Offset commits.",
            "counter",
            &[(String::new(), load(&self.commits))],
        );
        write_samples(
            out,
            "pixguard_stream_retries_total",
            "Scoring calls retried while the engine was full.",
            "counter",
            &[(String::new(), load(&self.retries))],
        );
        write_samples(
            out,
            "pixguard_stream_pauses_total",
            "Times the partitions were paused for backpressure.",
            "counter",
            &[(String::new(), load(&self.pauses))],
        );
        write_samples(
            out,
            "pixguard_stream_paused_partitions",
            "Partitions paused now.",
            "gauge",
            &[(String::new(), load(&self.paused))],
        );
        write_samples(
            out,
            "pixguard_stream_broker_errors_total",
            "Errors the Kafka client reported.",
            "counter",
            &[(String::new(), load(&self.broker_errors))],
        );
        write_samples(
            out,
            "pixguard_stream_produce_errors_total",
            "Sends that failed and were retried.",
            "counter",
            &[(String::new(), load(&self.produce_errors))],
        );
        write_samples(
            out,
            "pixguard_stream_brokers_down",
            "1 while every broker is unreachable.",
            "gauge",
            &[(
                String::new(),
                u64::from(self.brokers_down.load(Ordering::Relaxed)),
            )],
        );
        let lag: Vec<(String, u64)> = self
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((topic, partition), n)| {
                (
                    format!("{{topic=\"{topic}\",partition=\"{partition}\"}}"),
                    (*n).max(0) as u64,
                )
            })
            .collect();
        write_samples(
            out,
            "pixguard_stream_lag_messages",
            "Per assigned partition: messages behind the high watermark (librdkafka's statistics, every 10 s; absent where the broker does not say).",
            "gauge",
            &lag,
        );
        write_histogram(
            out,
            "pixguard_stream_end_to_end_seconds",
            "Message timestamp to the score's acknowledgement.",
            &self.end_to_end.prom,
            1e6,
        );
        write_histogram(
            out,
            "pixguard_stream_fetch_age_seconds",
            "Message timestamp to its receipt by the stream: the share of the end-to-end time spent before pixguard (producer batching, broker, fetch).",
            &self.fetch_age.prom,
            1e6,
        );
        write_histogram(
            out,
            "pixguard_stream_scored_age_seconds",
            "Message timestamp to its score being handed to the producer: what end_to_end adds after it is the wait for the broker's acknowledgement.",
            &self.scored_age.prom,
            1e6,
        );
    }
}

/// The age in µs at `now_ms` of a message stamped `timestamp_ms`: none without a timestamp, 0
/// for a clock behind it.
fn age_us(timestamp_ms: Option<i64>, now_ms: i64) -> Option<u64> {
    timestamp_ms.map(|ts| (now_ms - ts).max(0) as u64 * 1000)
}
