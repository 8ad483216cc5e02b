//! `pixguard produce`: feeds a Kafka topic with transactions (JSONL: `pixguard synth` rows, bare
//! transactions, or any line at all), at a given rate or as fast as the broker takes them, so the
//! stream path can be load-tested with the bundled tools.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

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
    /// Most sends awaiting acknowledgement.
    #[arg(long, default_value_t = 10_000)]
    pub in_flight: usize,
}

/// Sends every line; prints how many and how fast.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(produce(args))
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the Kafka producer")?;
    let reader = super::open_input(args.input.as_deref())?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.context("reading the input")?;
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let (key, value) = split(&line);
        let producer = producer.clone();
        let topic = args.topic.clone();
        pending.push(async move {
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).payload(&value);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            producer.send(record, Timeout::Never).await.is_ok()
        });
        while pending.len() >= args.in_flight.max(1) {
            if let Some(ok) = pending.next().await {
                if ok { sent += 1 } else { failed += 1 }
            }
        }
    }
    while let Some(ok) = pending.next().await {
        if ok { sent += 1 } else { failed += 1 }
    }
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

/// The key (the transaction's end-to-end id, when there is one) and the value of a line.
fn split(line: &[u8]) -> (Option<Vec<u8>>, Vec<u8>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return (None, line.to_vec());
    };
    let tx = v.get("transaction").unwrap_or(&v);
    let key = tx
        .get("end_to_end_id")
        .and_then(|id| id.as_str())
        .map(|s| s.as_bytes().to_vec());
    let value = if v.get("transaction").is_some() {
        serde_json::to_vec(tx).unwrap_or_else(|_| line.to_vec())
    } else {
        line.to_vec()
    };
    (key, value)
}
