//! `pixguard produce`: feeds a Kafka topic with transactions (JSONL: `pixguard synth` rows, bare
//! transactions, or any line at all), at a given rate or as fast as the broker takes them, so the
//! stream path can be load-tested with the bundled tools.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

/// Arguments of `pixguard produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// JSONL input (`-` or absent: stdin). A line with a `transaction` member (synth rows) sends
    /// that member; any other line is sent as it is (malformed ones too: that is how the
    /// dead-letter path is tested).
    pub input: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to write to.
    #[arg(long, default_value = "pix.transactions")]
    pub topic: String,
    /// Messages per second (0: as fast as the broker acknowledges).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Most messages awaiting acknowledgement (librdkafka's `queue.buffering.max.messages`).
    #[arg(long, default_value_t = 10_000)]
    pub in_flight: usize,
    /// How long librdkafka may hold a message to batch it (`linger.ms`). A message's timestamp is
    /// its hand-over, so this is part of every age the stream measures from it.
    #[arg(long, default_value_t = 5.0)]
    pub linger_ms: f64,
    /// Any other librdkafka producer property, `-X key=value` as kcat takes it (repeatable; after
    /// the settings above, so it wins over them, except the idempotent producer's).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = property)]
    pub librdkafka: Vec<(String, String)>,
    /// Lines read and split before the clock starts, up to this many MiB of them (the rest as
    /// they are sent): a paced run then spends its time on the sending alone.
    #[arg(long, default_value_t = 1024)]
    pub read_ahead_mib: usize,
}

fn property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

/// How long `pixguard produce` waits for the broker before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts librdkafka's acknowledgements and failures, and notes when the idempotent producer has
/// its producer id (from librdkafka's statistics).
#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
    has_producer_id: AtomicBool,
}

impl ClientContext for Acks {
    /// Decodes librdkafka's statistics only until the producer id is assigned: nothing reads them
    /// after that (decoding them all run long was ~1 % of the generator's samples at 70,000
    /// messages/s, on the core the benchmarks' broker shares).
    fn stats_raw(&self, statistics: &[u8]) {
        if self.has_producer_id.load(Ordering::Relaxed) {
            return;
        }
        if serde_json::from_slice::<rdkafka::Statistics>(statistics)
            .is_ok_and(|s| s.eos.is_some_and(|eos| eos.idemp_state == "Assigned"))
        {
            self.has_producer_id.store(true, Ordering::Relaxed);
        }
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How early a paced message may go: sleeping for less costs more than it evens out.
const PACING_SLACK: Duration = Duration::from_millis(1);

/// Sends every line, each when it is due (its timestamp, librdkafka's CreateTime, is the moment
/// it is handed over: what the stream's end-to-end latency counts from); prints how many and how
/// fast.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", args.linger_ms.to_string())
        .set(
            "queue.buffering.max.messages",
            args.in_flight.max(1).to_string(),
        );
    for (k, v) in &args.librdkafka {
        config.set(k, v);
    }
    // The pacing clock waits for the idempotent producer's id, read from the statistics: neither
    // is for a property to turn off. librdkafka renders them for the whole run (~5 % of the
    // generator's samples at a 20 ms interval, most of it its histograms), so not too often: the
    // start waits at most one interval more, before the clock.
    let producer: ThreadedProducer<Acks> = config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("statistics.interval.ms", "100")
        .create_with_context(Acks::default())
        .context("creating the Kafka producer")?;
    // Connect and learn the topic's leaders before the clock starts: otherwise the first
    // second's messages wait in librdkafka's queue for the connection and, since a message's
    // timestamp is its hand-over, read ~1 s old (floor.py: p50 779 ms for messages of second 0,
    // ~8 ms after; that second alone made the p99 of a 10 s run ~940 ms).
    producer
        .client()
        .fetch_metadata(Some(&args.topic), CONNECT_TIMEOUT)
        .context("fetching the topic's metadata")?;
    // And for the idempotent producer's id: librdkafka asks for it at creation, and when no
    // broker connection is up yet it retries 500 ms later; meanwhile every message waits. That
    // was the ~0.5 s start-up tail floor.py still saw in some runs (p90 316 ms, max 520 ms at
    // 5,000/s for 2 s; p99 447 ms at 68,635/s for 10 s), which bench.py and latency.py then
    // counted as pixguard's.
    let waiting = Instant::now();
    while !producer.context().has_producer_id.load(Ordering::Relaxed) {
        anyhow::ensure!(
            waiting.elapsed() < CONNECT_TIMEOUT,
            "the broker assigned no producer id within {CONNECT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut lines = super::open_input(args.input.as_deref())?.split(b'\n');
    let ahead = read_ahead(&mut lines, args.read_ahead_mib.saturating_mul(1 << 20))?;
    let rest = lines.map(|line| line.map(|l| split(&l)));
    let started = Instant::now();
    for (i, line) in ahead.into_iter().map(Ok).chain(rest).enumerate() {
        let (key, value) = line.context("reading the input")?;
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            let now = Instant::now();
            if due > now + PACING_SLACK {
                std::thread::sleep(due - now);
            }
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.topic).payload(&value);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        // A full queue (`--in-flight` unacknowledged) waits for acknowledgements.
        while let Err((e, back)) = producer.send(record) {
            record = back;
            if !matches!(
                e,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            ) {
                return Err(e).context("producing");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // At once, whatever `--linger-ms` says.
    crate::kafka::flush(&producer, Duration::from_secs(60))
        .context("waiting for the broker's acknowledgements")?;
    let acks = producer.context();
    let (sent, failed) = (
        acks.ok.load(Ordering::Relaxed),
        acks.failed.load(Ordering::Relaxed),
    );
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        sent,
        failed,
        seconds,
        per_second = (sent as f64 / seconds.max(1e-9)).round(),
        topic = %args.topic,
        "produced"
    );
    anyhow::ensure!(failed == 0, "{failed} messages were not acknowledged");
    Ok(())
}

/// A line's key and value, as `split` makes them.
type Split = (Option<Vec<u8>>, Vec<u8>);

/// Reads and splits lines until they take `budget` bytes or the input ends. Splitting a synth row
/// (two JSON scans) cost about as much CPU as librdkafka's sending of it (`perf record` of the
/// generator at 70,000/s): done before the clock, it is not counted in a paced run's load.
fn read_ahead(
    lines: &mut impl Iterator<Item = std::io::Result<Vec<u8>>>,
    budget: usize,
) -> anyhow::Result<Vec<Split>> {
    let mut ahead = Vec::new();
    let mut bytes = 0;
    while bytes < budget {
        let Some(line) = lines.next() else { break };
        let line = line.context("reading the input")?;
        let (key, value) = split(&line);
        bytes += value.len() + key.as_ref().map_or(0, Vec::len);
        ahead.push((key, value));
    }
    Ok(ahead)
}

/// What `split` reads of a line: borrowed, nothing else decoded (a `serde_json::Value` per line
/// and its re-encoding cost the generator ~6 µs a message, most of a core at 68 k messages/s —
/// the core the broker shares in the bundled benchmarks).
#[derive(serde::Deserialize)]
struct Row<'a> {
    #[serde(borrow, default)]
    transaction: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    end_to_end_id: Option<std::borrow::Cow<'a, str>>,
}

/// The key (the transaction's end-to-end id, when there is one) and the value of a line: a synth
/// row's `transaction` member as it is written, any other line whole.
fn split(line: &[u8]) -> Split {
    // serde reads a JSON array as a struct field by field: `[tx]` would send its first element
    // as a synth row's transaction. Only an object is a row.
    let object = line.trim_ascii_start().starts_with(b"{");
    let Some(row) = object
        .then(|| serde_json::from_slice::<Row<'_>>(line).ok())
        .flatten()
    else {
        return (None, line.to_vec());
    };
    match row.transaction {
        Some(tx) => {
            let key = serde_json::from_str::<Row<'_>>(tx.get())
                .ok()
                .and_then(|inner| inner.end_to_end_id)
                .map(|id| id.as_bytes().to_vec());
            (key, tx.get().as_bytes().to_vec())
        }
        None => (
            row.end_to_end_id.map(|id| id.as_bytes().to_vec()),
            line.to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{property, read_ahead, split};

    #[test]
    fn a_line_becomes_its_key_and_value() {
        let row = br#"{"transaction":{"end_to_end_id":"E1","amount_cents":5},"label":1}"#;
        let (key, value) = split(row);
        assert_eq!(key.as_deref(), Some(&b"E1"[..]));
        assert_eq!(value, br#"{"end_to_end_id":"E1","amount_cents":5}"#);
        let bare = br#"{"end_to_end_id":"E\u0032","amount_cents":5}"#;
        assert_eq!(split(bare), (Some(b"E2".to_vec()), bare.to_vec()));
        for odd in [
            &b"{not json"[..],
            br#"{"end_to_end_id":5}"#,
            b"[1,2]",
            b"",
            br#"[{"end_to_end_id":"E1","amount_cents":5}]"#,
            br#"[{"end_to_end_id":"E1"}, "E2"]"#,
        ] {
            assert_eq!(split(odd), (None, odd.to_vec()), "{odd:?}");
        }
    }

    #[test]
    fn read_ahead_stops_at_its_budget_and_the_rest_follows_in_order() {
        let text = b"{\"end_to_end_id\":\"E1\"}\nplain\n{\"end_to_end_id\":\"E3\"}\nlast";
        let mut lines = std::io::BufRead::split(&text[..], b'\n');
        // The first line counts 24 bytes (its 22-byte value and its key), the second 5: a budget
        // of 25 is spent after the second.
        let ahead = read_ahead(&mut lines, 25).unwrap();
        assert_eq!(ahead.len(), 2);
        assert_eq!(ahead[0].0.as_deref(), Some(&b"E1"[..]));
        assert_eq!(ahead[1], (None, b"plain".to_vec()));
        let rest: Vec<_> = lines.map(|l| split(&l.unwrap())).collect();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].0.as_deref(), Some(&b"E3"[..]));
        assert_eq!(rest[1], (None, b"last".to_vec()));
        // A budget larger than the input reads all of it.
        let all = read_ahead(&mut std::io::BufRead::split(&text[..], b'\n'), 1 << 20).unwrap();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn properties_are_key_equals_value() {
        assert_eq!(
            property("socket.nagle.disable=true"),
            Ok(("socket.nagle.disable".into(), "true".into()))
        );
        assert_eq!(property("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(property("linger.ms").is_err());
        assert!(property("=1").is_err());
    }
}
