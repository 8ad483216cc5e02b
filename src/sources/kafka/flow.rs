//! Backpressure on the consumer: when to stop taking messages, when to pause the partitions,
//! when to resume.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::rebalance::KafkaContext;
use super::shared::Shared;
use crate::config::StreamConfig;

/// How long the stream may stop taking messages before it pauses its partitions. Not polling
/// keeps librdkafka's prefetch (a pause drops it, and the refetch after the resume capped the
/// stream at ~37 k msg/s where not polling reached ~130 k), but a consumer that does not poll
/// serves no rebalance and leaves the group after `max.poll.interval.ms`: a longer stall (the
/// engine or the output broker stuck) pauses the partitions and keeps polling.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Backpressure on the consumer: with `stream.max_in_flight` messages received and not yet handed
/// to the producer, stop taking messages (librdkafka's prefetch queue, bounded by its
/// `queued.max.messages.kbytes`, holds the rest); past [`PAUSE_AFTER`] of that, pause every
/// assigned partition and keep polling; resume below half. Nothing is dropped or failed meanwhile.
#[derive(Default)]
pub struct Flow {
    /// Since when the in-flight bound has been reached, while it is.
    full_since: Option<Instant>,
    /// The assigned partitions are paused.
    pub paused: bool,
}

impl Flow {
    /// Whether the loop takes messages now: below the bound, or paused (polling only serves the
    /// group protocol then; paused partitions deliver nothing).
    pub fn receiving(&self) -> bool {
        self.full_since.is_none() || self.paused
    }

    /// Re-evaluates after anything moved: stall, pause or resume.
    pub fn update(
        &mut self,
        consumer: &StreamConsumer<KafkaContext>,
        shared: &Shared,
        config: &StreamConfig,
    ) {
        let pending = shared.scoring.load(Ordering::Relaxed);
        if self.paused {
            if pending <= config.max_in_flight / 2
                && let Ok(assignment) = consumer.assignment()
                && consumer.resume(&assignment).is_ok()
            {
                shared.metrics.paused.store(0, Ordering::Relaxed);
                self.paused = false;
                self.full_since = None;
            }
            return;
        }
        if pending < config.max_in_flight {
            self.full_since = None;
            return;
        }
        let since = *self.full_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= PAUSE_AFTER {
            self.pause(consumer, shared, pending);
        }
    }

    fn pause(&mut self, consumer: &StreamConsumer<KafkaContext>, shared: &Shared, pending: usize) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        if consumer.pause(&assignment).is_ok() {
            shared
                .metrics
                .paused
                .store(assignment.count() as u64, Ordering::Relaxed);
            shared.metrics.pauses.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pending, "partitions paused");
            self.paused = true;
        }
    }
}
