//! librdkafka client settings shared by every Kafka client pixguard runs (the stream's consumer
//! and producer, the decision log's producer): the configured pass-through, less what belongs to
//! the other role, so one map configures both without librdkafka's `CONFWARN`s. And a producer's
//! flush that does flush.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};

use crate::config::Librdkafka;

/// Which client a setting is for: `stream.librdkafka` is one map for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A consumer.
    Consumer,
    /// A producer.
    Producer,
}

/// Properties librdkafka documents for consumers only (`C` in its CONFIGURATION.md, 2.12, the
/// version rdkafka-sys builds): a producer given one logs a `CONFWARN` at every start.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.offset.reset",
    "consume.callback.max.messages",
];

/// Properties librdkafka documents for producers only (`P`); a consumer given one warns likewise.
const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queuing.strategy",
    "produce.offset.report",
    "partitioner",
];

impl Role {
    /// Whether a property (librdkafka's spelling) is for this client: everything but the other
    /// role's own properties, so one map can configure both without warnings.
    fn takes(self, property: &str) -> bool {
        let other = match self {
            Role::Consumer => PRODUCER_ONLY,
            Role::Producer => CONSUMER_ONLY,
        };
        !other.contains(&property)
    }
}

/// librdkafka settings for one role: `defaults`, then each of `layers` in turn (a later one wins;
/// `security_protocol` → `security.protocol`: no librdkafka property has `_`, and environment
/// variable names cannot hold `.`), less the other role's own properties.
pub fn client(
    brokers: &str,
    layers: &[&Librdkafka],
    role: Role,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in layers.iter().flat_map(|layer| layer.iter()) {
        let property = k.replace('_', ".");
        if !role.takes(&property) {
            continue;
        }
        let value = match v {
            serde_yaml_ng::Value::String(s) => s.clone(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::Bool(b) => b.to_string(),
            other => serde_yaml_ng::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        c.set(property, value);
    }
    c
}

/// Sends what lingers now and waits up to `limit` for the broker's acknowledgements.
///
/// librdkafka sends lingering records at once only *during* an `rd_kafka_flush` call (it marks
/// the producer flushing and wakes its broker threads for that call's duration). rdkafka's
/// `Producer::flush` (0.39) calls it with a zero timeout in a loop, so the mark lasts
/// microseconds: a broker thread that wakes after it returns goes back to lingering, and with a
/// long `linger.ms` the records were purged unsent at the deadline (the decision log's SIGTERM
/// test lost its records in about two runs of five). One call with the whole timeout keeps the
/// mark up until everything is acknowledged; the `ThreadedProducer`'s own thread polls the
/// delivery reports meanwhile, which is what lets the count of records reach zero (so it takes
/// a `ThreadedProducer`: with no thread polling, the call would wait out its limit).
pub fn flush<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    limit: Duration,
) -> Result<(), RDKafkaErrorCode> {
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the pointer is the live producer's handle, borrowed for the call, and
    // rd_kafka_flush may be called from any thread while the producer exists.
    let code = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), ms) };
    match RDKafkaErrorCode::from(code) {
        RDKafkaErrorCode::NoError => Ok(()),
        e => Err(e),
    }
}
