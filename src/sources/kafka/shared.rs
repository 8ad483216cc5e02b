//! What the consumer loop, its scoring tasks, the producer's delivery callback and the rebalance
//! callback share: the offsets in flight, the backpressure count, and the stream's metrics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::StreamMetrics;
use super::offsets::Offsets;
use crate::config::StreamConfig;

/// What the loop, its tasks and the rebalance callback share.
pub struct Shared {
    pub(super) offsets: Mutex<Offsets>,
    pub(super) progress: Condvar,
    /// Messages received and not yet handed to the producer: what backpressure bounds. Past the
    /// hand-off a message holds only its output record, bounded by librdkafka's own queue
    /// (`queue.buffering.max.messages`); counting it too made the bound a cap on the output
    /// broker's round trips (32,768 in flight over ~250 ms of produce latency: ~130 k msg/s).
    pub(super) scoring: std::sync::atomic::AtomicUsize,
    /// Woken as each chunk is handed to the producer: a stalled stream goes on as soon as it has
    /// room, not on the next tick.
    pub(super) wake: tokio::sync::Notify,
    /// What the stream records.
    pub metrics: StreamMetrics,
    pub(super) revoke_timeout: Duration,
}

impl Shared {
    /// The message at `offset` is finished: its output is acknowledged.
    pub(super) fn finished(&self, topic: &str, partition: i32, offset: i64) {
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finished(topic, partition, offset);
        self.progress.notify_all();
    }

    /// `n` messages handed to the producer (or the dead-letter topic): room for more.
    pub(super) fn handed_off(&self, n: usize) {
        self.scoring.fetch_sub(n, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Messages received and not yet finished.
    pub fn pending(&self) -> usize {
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending()
    }

    /// The stream's figures for `/v1/stats`: counts and end-to-end percentiles (µs).
    pub fn stats(&self) -> serde_json::Value {
        let m = &self.metrics;
        let (total, recent) = m.end_to_end.hdr.percentiles();
        let (fetch_total, fetch_recent) = m.fetch_age.hdr.percentiles();
        let (scored_total, scored_recent) = m.scored_age.hdr.percentiles();
        serde_json::json!({
            "consumed": m.consumed.load(Ordering::Relaxed),
            "produced": m.produced.load(Ordering::Relaxed),
            "dead_lettered": m.dead_lettered_total(),
            "in_flight": self.pending(),
            "end_to_end_us": {"since_start": total, "last_60s": recent},
            "fetch_age_us": {"since_start": fetch_total, "last_60s": fetch_recent},
            "scored_age_us": {"since_start": scored_total, "last_60s": scored_recent},
        })
    }

    /// The Prometheus lines: messages in flight, partitions owned, then the counters.
    pub fn prometheus(&self, out: &mut String) {
        crate::histogram::write_samples(
            out,
            "pixguard_stream_in_flight_messages",
            "Messages received and not yet finished (uncommitted).",
            "gauge",
            &[(String::new(), self.pending() as u64)],
        );
        let assigned = self
            .offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .assigned();
        crate::histogram::write_samples(
            out,
            "pixguard_stream_assigned_partitions",
            "Input partitions this member owns now (0 until the group has assigned it some).",
            "gauge",
            &[(String::new(), assigned as u64)],
        );
        self.metrics.prometheus(out);
    }
}

/// The state shared by the loop and its tasks, for a stream configured as `config`.
pub fn shared(config: &StreamConfig) -> anyhow::Result<Arc<Shared>> {
    Ok(Arc::new(Shared {
        offsets: Mutex::new(Offsets::default()),
        progress: Condvar::new(),
        scoring: std::sync::atomic::AtomicUsize::new(0),
        wake: tokio::sync::Notify::new(),
        metrics: StreamMetrics::new()?,
        revoke_timeout: Duration::from_millis(config.revoke_timeout_ms),
    }))
}
