//! The output side: scores and dead-letter records handed to librdkafka, each finished by
//! librdkafka's delivery callback once the broker has acknowledged it. One callback per record and
//! no future per message: a `FutureProducer` future (a oneshot channel, a task slot, a waker) per
//! score was ~18 % of a profile of the stream draining 200,000 messages (docs/benchmarks.md).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{DeliveryResult, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::{Message, error::KafkaError};
use tokio::sync::mpsc;

use super::StreamMetrics;
use super::shared::Shared;

/// The stream's producer: scores and dead-letter records.
pub type Producer = ThreadedProducer<Sink>;

/// The longest one flush call lasts while the SIGTERM drain or a revocation waits for scores,
/// before it looks at what is pending again.
pub(super) const FLUSH_SLICE: Duration = Duration::from_millis(100);

/// A record on its way, as librdkafka holds it.
pub type Record<'a> = BaseRecord<'a, [u8], [u8], Box<Delivery>>;

/// The input message a record answers: its topic, partition and offset.
pub type Source = (String, i32, i64);

/// What a record finishes once the broker has it.
pub enum Delivery {
    /// The score of the message at `source`.
    Score {
        /// The input message.
        source: Source,
        /// Its timestamp (ms since the epoch), for the end-to-end latency.
        timestamp_ms: Option<i64>,
    },
    /// The dead-letter record of the message at `source`.
    DeadLetter {
        /// The input message.
        source: Source,
        /// Why it could not be scored (the metric's label).
        class: &'static str,
    },
}

impl Delivery {
    /// The broker has the record: count it and mark its input message finished.
    fn acknowledged(self, shared: &Shared) {
        match self {
            Delivery::Score {
                source,
                timestamp_ms,
            } => {
                shared.metrics.produced.fetch_add(1, Ordering::Relaxed);
                StreamMetrics::record_age(
                    &shared.metrics.end_to_end,
                    timestamp_ms,
                    chrono::Utc::now().timestamp_millis(),
                );
                shared.finished(&source.0, source.1, source.2);
            }
            Delivery::DeadLetter { source, class } => {
                shared.metrics.dead_lettered(class);
                shared.finished(&source.0, source.1, source.2);
            }
        }
    }
}

/// A record whose delivery failed, detached from librdkafka, to be sent again.
pub struct Redelivery {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    delivery: Box<Delivery>,
}

/// librdkafka's delivery callbacks (on the producer's polling thread).
pub struct Sink {
    shared: Arc<Shared>,
    failed: mpsc::UnboundedSender<Redelivery>,
}

impl Sink {
    /// The context, and the receiving end of the failed deliveries for [`redeliver`].
    pub fn new(shared: Arc<Shared>) -> (Self, mpsc::UnboundedReceiver<Redelivery>) {
        let (failed, rx) = mpsc::unbounded_channel();
        (Sink { shared, failed }, rx)
    }
}

impl ClientContext for Sink {}

impl ProducerContext for Sink {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => {
                self.shared
                    .metrics
                    .brokers_down
                    .store(false, Ordering::Relaxed);
                delivery.acknowledged(&self.shared);
            }
            Err((e, message)) => {
                // librdkafka has retried for `message.timeout.ms` already (a broker outage): send
                // it again rather than lose it; its input stays unfinished, so uncommitted.
                self.shared
                    .metrics
                    .produce_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "delivery failed; sending again");
                let again = Redelivery {
                    topic: message.topic().to_string(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    headers: message.headers().map(|h| h.detach()),
                    delivery,
                };
                // Closed only when the stream is stopping: the message stays uncommitted and is
                // scored again after the restart.
                let _ = self.failed.send(again);
            }
        }
    }
}

/// How long a send waits for room in librdkafka's full queue before it looks again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// A record for `topic` carrying `delivery`, with whichever of key, payload and headers it has.
pub fn record<'a>(
    topic: &'a str,
    delivery: Box<Delivery>,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
) -> Record<'a> {
    let mut record = Record::with_opaque_to(topic, delivery);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(p) = payload {
        record = record.payload(p);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    record
}

/// Hands `record` to librdkafka, waiting while its queue is full (backpressure, not loss); the
/// delivery callback finishes what it carries.
pub async fn enqueue(producer: &Producer, shared: &Shared, mut record: Record<'_>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((e, back)) => {
                record = back;
                if matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                ) {
                    // Room comes back with every acknowledgement: look again soon. A growing
                    // back-off here idled the stream up to a second at a time at full speed.
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    continue;
                }
                shared
                    .metrics
                    .produce_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "produce failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// How long a failed delivery waits before it is sent again (after librdkafka's own retries).
const REDELIVERY_DELAY: Duration = Duration::from_secs(1);

/// Sends failed deliveries again, in rounds: whatever failed meanwhile goes after one delay.
pub async fn redeliver(
    producer: Arc<Producer>,
    shared: Arc<Shared>,
    mut failed: mpsc::UnboundedReceiver<Redelivery>,
) {
    while let Some(first) = failed.recv().await {
        tokio::time::sleep(REDELIVERY_DELAY).await;
        let mut round = vec![first];
        while let Ok(more) = failed.try_recv() {
            round.push(more);
        }
        for r in round {
            let record = record(
                &r.topic,
                r.delivery,
                r.key.as_deref(),
                r.payload.as_deref(),
                r.headers,
            );
            enqueue(&producer, &shared, record).await;
        }
    }
}
