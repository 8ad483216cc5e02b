//! The log thread: renders each queued entry's records and hands them to librdkafka, whose
//! delivery callback counts them. Its producer is tuned for throughput, not latency (no payment
//! waits for it): records linger to share a request to the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::{Counts, Entry, record};
use crate::config::Config;
use crate::kafka::{Role, client, flush};

/// How often the thread takes what has been queued.
const TICK: Duration = Duration::from_millis(1);

/// What the thread is sent.
// Stop is sent once in a process's life; boxing the entry would cost every request an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// A request's decisions.
    Entry(Entry),
    /// Stop: what came before is sent; the broker's acknowledgements are awaited until then.
    Stop(Instant),
}

/// librdkafka's delivery callbacks (on the producer's polling thread).
struct Counting {
    counts: Arc<Counts>,
    /// Whether the last delivery failed: a failure after a success is logged, not every one.
    failing: AtomicBool,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.counts.delivered.fetch_add(1, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("decision log: the broker takes records again");
                }
            }
            Err((e, _)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "decision log: a record was not delivered (counted in pixguard_decision_log_records_total{{outcome=\"failed\"}})"
                    );
                }
            }
        }
    }
}

/// The producer's settings: throughput defaults (a record lingers up to 20 ms to share a
/// request), the idempotent producer with `acks=all` unless configured otherwise, then
/// `stream.librdkafka` and `decision_log.librdkafka` (the same cluster's credentials, once).
pub(super) fn producer_config(config: &Config) -> rdkafka::ClientConfig {
    let log = &config.decision_log;
    let brokers = if log.brokers.is_empty() {
        &config.stream.brokers
    } else {
        &log.brokers
    };
    client(
        brokers,
        &[&config.stream.librdkafka, &log.librdkafka],
        Role::Producer,
        &[
            ("linger.ms", "20"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ],
    )
}

/// Starts the thread sending what `entries` brings to `decision_log.topic`.
pub fn start(
    config: &Config,
    entries: crossbeam_channel::Receiver<Message>,
    counts: Arc<Counts>,
    stopped: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let client = producer_config(config);
    let topic = config.decision_log.topic.clone();
    let nice = config.server.front_end_nice;
    let (created, creation) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("pixguard-decisions".into())
        .spawn(move || {
            // Below the engine, as the front ends are: no payment waits for a record. The
            // producer is created here, after, so that librdkafka's threads inherit the value.
            crate::threads::lower_priority(nice);
            let context = Counting {
                counts: counts.clone(),
                failing: AtomicBool::new(false),
            };
            let producer: ThreadedProducer<Counting> = match client.create_with_context(context) {
                Ok(producer) => {
                    let _ = created.send(Ok(()));
                    producer
                }
                Err(e) => {
                    let _ = created.send(Err(e));
                    return;
                }
            };
            run(&producer, &topic, &entries, &counts, &stopped);
        })?;
    match creation.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "decision_log: creating the Kafka producer: {e}"
        )),
        Err(_) => Err(anyhow::anyhow!(
            "decision_log: the producer's thread ended before creating it"
        )),
    }
}

/// Sends every entry until told to stop, then waits for the broker's acknowledgements until
/// the stop's deadline. The producer's drop purges what is still unsent: its callbacks count
/// those as failed.
fn run(
    producer: &ThreadedProducer<Counting>,
    topic: &str,
    entries: &crossbeam_channel::Receiver<Message>,
    counts: &Counts,
    stopped: &AtomicBool,
) {
    // Woken by a clock, not by each entry: a blocked receiver would make every request's send a
    // futex wake and a context switch on the front end's core. A short tick keeps each turn's
    // work small, so that it delays the requests sharing its core by little at a time.
    let deadline = 'run: loop {
        std::thread::sleep(TICK);
        loop {
            match entries.try_recv() {
                Ok(Message::Entry(entry)) => {
                    send(producer, topic, &entry, counts, stopped);
                    counts.queued.fetch_sub(entry.rows(), Ordering::AcqRel);
                }
                Ok(Message::Stop(deadline)) => break 'run deadline,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => break 'run Instant::now(),
            }
        }
    };
    // Anything sent after the stop (at most a shadow's late copy: the front ends have stopped)
    // is not logged, and counted as dropped.
    while let Ok(message) = entries.try_recv() {
        if let Message::Entry(entry) = message {
            counts.queued.fetch_sub(entry.rows(), Ordering::AcqRel);
            counts
                .dropped
                .fetch_add(entry.rows() as u64, Ordering::Relaxed);
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = flush(producer, left) {
        tracing::warn!(
            error = %e,
            unacknowledged = producer.in_flight_count(),
            "decision log: records not acknowledged when the server stopped (counted as failed)"
        );
    }
}

/// Hands an entry's records to librdkafka. Its queue full (a broker down for a while), it waits
/// for room — the entries behind it wait in the log's own queue, whose bound drops new ones —
/// until the server stops.
fn send(
    producer: &ThreadedProducer<Counting>,
    topic: &str,
    entry: &Entry,
    counts: &Counts,
    stopped: &AtomicBool,
) {
    let traceparent = entry.traceparent();
    let headers = traceparent.as_ref().map(|value| {
        OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(value.as_bytes()),
        })
    });
    record::render(entry, |key, value| {
        let mut record = BaseRecord::<[u8], [u8], ()>::with_opaque_to(topic, ()).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = &headers {
            record = record.headers(headers.clone());
        }
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if !stopped.load(Ordering::Acquire) =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "decision log: a record was refused by librdkafka");
                    return;
                }
            }
        }
    });
}
