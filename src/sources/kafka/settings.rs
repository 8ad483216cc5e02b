//! librdkafka settings for the stream's consumer and producer: pixguard's defaults, the
//! configured pass-through, and what at-least-once does not let a configuration change.

use rdkafka::config::ClientConfig;

use crate::config::StreamConfig;
use crate::kafka::{Role, client};

/// The consumer's settings. A payment waits for its fetch: librdkafka's default lets a broker
/// hold a fetch 500 ms for more data (tansu does), which alone made the end-to-end p50 226 ms at
/// half load. Offsets are stored and committed by the stream only (at-least-once).
pub(super) fn consumer_config(config: &StreamConfig) -> ClientConfig {
    let mut c = client(
        &config.brokers,
        &[&config.librdkafka],
        Role::Consumer,
        &[
            ("fetch.wait.max.ms", "5"),
            // While the stream holds back (its in-flight bound), librdkafka's prefetch queue fills
            // and it stops fetching for this long (1 s by default) — after the stream has drained
            // the queue, it then idles: 128 k msg/s at 76 % of the core, 170 k at 100 % with 10 ms.
            ("fetch.queue.backoff.ms", "10"),
            ("statistics.interval.ms", "10000"),
        ],
    );
    c.set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    c
}

/// The producer's settings: `linger.ms` 0 unless configured (a score is sent at once; scores that
/// come while a request is in flight still share the next one — at 78 k/s on a shared broker core
/// this cut the end-to-end median 13 → 10 ms and cost no drain throughput, docs/benchmarks.md);
/// the idempotent producer with `acks=all` whatever is configured, since at-least-once
/// commits an offset only after its score is durably acknowledged.
pub(super) fn producer_config(config: &StreamConfig) -> ClientConfig {
    let mut c = client(
        &config.brokers,
        &[&config.librdkafka],
        Role::Producer,
        &[("linger.ms", "0")],
    );
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default stream settings with these `stream.librdkafka` entries (text, as overrides give).
    fn with_librdkafka(entries: &[(&str, &str)]) -> StreamConfig {
        let mut config = StreamConfig::default();
        for (k, v) in entries {
            config
                .librdkafka
                .insert((*k).into(), serde_yaml_ng::Value::String((*v).into()));
        }
        config
    }

    #[test]
    fn configured_settings_win_over_defaults_but_not_over_the_delivery_guarantee() {
        let config = with_librdkafka(&[
            ("linger_ms", "5"),
            ("acks", "1"),
            ("enable_idempotence", "false"),
        ]);
        let producer = producer_config(&config);
        assert_eq!(producer.get("linger.ms"), Some("5"), "a default yields");
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(
            producer_config(&StreamConfig::default()).get("linger.ms"),
            Some("0")
        );
    }

    /// Collects what librdkafka logs while a client is created.
    #[derive(Default)]
    struct Logged(std::sync::Mutex<Vec<String>>);

    impl rdkafka::ClientContext for Logged {
        fn log(&self, _: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
            if let Ok(mut lines) = self.0.lock() {
                lines.push(format!("{facility} {message}"));
            }
        }
    }

    impl rdkafka::consumer::ConsumerContext for Logged {}

    impl rdkafka::producer::ProducerContext for Logged {
        type DeliveryOpaque = ();
        fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
    }

    /// librdkafka's configuration warnings when a consumer and a producer are created from `c`
    /// and `p` (no broker is needed to create one).
    fn warnings(mut c: ClientConfig, mut p: ClientConfig) -> Vec<String> {
        use rdkafka::config::RDKafkaLogLevel::Warning;
        use rdkafka::consumer::Consumer;
        use rdkafka::producer::Producer;
        let consumer: rdkafka::consumer::BaseConsumer<Logged> = c
            .set_log_level(Warning)
            .create_with_context(Logged::default())
            .unwrap();
        let producer: rdkafka::producer::BaseProducer<Logged> = p
            .set_log_level(Warning)
            .create_with_context(Logged::default())
            .unwrap();
        // rust-rdkafka routes librdkafka's log to the client's queue, served by its poll.
        let _ = consumer.poll(std::time::Duration::from_millis(100));
        producer.poll(std::time::Duration::from_millis(100));
        [consumer.context(), producer.context()]
            .iter()
            .flat_map(|logged| logged.0.lock().unwrap().clone())
            .filter(|line| line.starts_with("CONFWARN"))
            .collect()
    }

    #[test]
    fn one_map_configures_both_clients_without_librdkafka_warning() {
        // What docs/streaming.md and the tests set, with each role's own and a shared property.
        let config = with_librdkafka(&[
            ("session_timeout_ms", "6000"),
            ("heartbeat_interval_ms", "2000"),
            ("isolation_level", "read_committed"),
            ("fetch_min_bytes", "1"),
            ("max_poll_interval_ms", "60000"),
            ("compression_type", "lz4"),
            ("batch_size", "65536"),
            ("message_timeout_ms", "30000"),
            ("client_id", "pixguard-test"),
        ]);
        // librdkafka itself is the reference: the same map given whole to both warns.
        let whole = |extra: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", "localhost:1");
            for (k, v) in config.librdkafka.iter() {
                if let serde_yaml_ng::Value::String(v) = v {
                    c.set(k.replace('_', "."), v);
                }
            }
            for (k, v) in extra {
                c.set(*k, *v);
            }
            c
        };
        let before = warnings(whole(&[("group.id", "g")]), whole(&[]));
        // (librdkafka names an alias by the property it stands for: compression.type → .codec.)
        for property in [
            "session.timeout.ms",
            "isolation.level",
            "compression.codec",
            "batch.size",
        ] {
            assert!(
                before.iter().any(|w| w.contains(property)),
                "librdkafka warns of {property}: {before:?}"
            );
        }
        let consumer = consumer_config(&config);
        let producer = producer_config(&config);
        assert_eq!(
            warnings(consumer.clone(), producer.clone()),
            Vec::<String>::new()
        );
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(producer.get("compression.type"), Some("lz4"));
        assert_eq!(consumer.get("client.id"), Some("pixguard-test"));
        assert_eq!(producer.get("client.id"), Some("pixguard-test"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(consumer.get("compression.type"), None);
    }
}
