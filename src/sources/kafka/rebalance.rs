//! librdkafka's callbacks into the stream: broker errors and statistics (readiness, lag), and
//! rebalances — a revoked partition's work in flight is finished (or left to the next owner) and
//! its watermark committed before it is given up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::Key;
use super::produce::{FLUSH_SLICE, Producer};
use super::shared::Shared;

/// librdkafka calls back here: errors (broker outages) and rebalances.
pub(super) struct KafkaContext {
    pub(super) shared: Arc<Shared>,
    /// The stream's producer, flushed while a revocation waits for its partitions' scores. Weak:
    /// the run and its tasks own it; the consumer must not keep it alive.
    pub(super) producer: Weak<Producer>,
}

impl ClientContext for KafkaContext {
    /// librdkafka's statistics (every 10 s): each assigned partition's lag as the client computes
    /// it (high watermark − committed offset); -1 where the broker has not said.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = self
            .shared
            .metrics
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        lag.clear();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    lag.insert((topic.clone(), partition), p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared
            .metrics
            .broker_errors
            .fetch_add(1, Ordering::Relaxed);
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.shared
                .metrics
                .brokers_down
                .store(true, Ordering::Relaxed);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for KafkaContext {
    /// Before partitions are given up: finish their work in flight (up to `revoke_timeout`) and
    /// commit what is done, so the next owner starts exactly there.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let keys: Vec<Key> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let shared = &self.shared;
        let drain = || {
            let until = Instant::now() + shared.revoke_timeout;
            let mut offsets = shared.offsets.lock().unwrap_or_else(|p| p.into_inner());
            while offsets.pending_in(&keys) > 0 && Instant::now() < until {
                // Their scores may be held by a configured `linger.ms`: a flush sends them now
                // (as the SIGTERM drain does). Not under the lock: their deliveries take it.
                if let Some(producer) = self.producer.upgrade() {
                    drop(offsets);
                    let slice = until.saturating_duration_since(Instant::now());
                    let _ = crate::kafka::flush(&producer, slice.min(FLUSH_SLICE));
                    offsets = shared.offsets.lock().unwrap_or_else(|p| p.into_inner());
                    if offsets.pending_in(&keys) == 0 {
                        break;
                    }
                }
                offsets = shared
                    .progress
                    .wait_timeout(offsets, Duration::from_millis(20))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let left = offsets.pending_in(&keys);
            let positions = offsets.positions(&keys);
            offsets.forget(&keys);
            (left, positions)
        };
        // This runs inside `recv()` on an async worker: `block_in_place` hands the worker's queued
        // tasks (its next-task slot is not stolen by the others) to another thread, so the chunks
        // being waited for keep running.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let (left, positions) = if multi_thread {
            tokio::task::block_in_place(drain)
        } else {
            drain()
        };
        if left > 0 {
            tracing::warn!(
                messages = left,
                "partitions revoked with work unfinished: the next owner scores those again"
            );
        }
        if let Some(list) = list(&positions) {
            match consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => {
                    self.shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "commit before revocation failed"),
            }
        }
        tracing::info!(partitions = ?keys, "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let keys: Vec<Key> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            self.shared
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .assign(&keys);
            let parts: Vec<i32> = keys.iter().map(|k| k.1).collect();
            tracing::info!(partitions = ?parts, "partitions assigned");
        }
    }
}

pub(super) fn list(positions: &[(String, i32, i64)]) -> Option<TopicPartitionList> {
    if positions.is_empty() {
        return None;
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .ok()?;
    }
    Some(list)
}
