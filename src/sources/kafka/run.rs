//! The consumer loop: fetch, decode, score through the scoring layer in chunks, produce each
//! score (or dead-letter record), and commit each partition's contiguous watermark once the
//! broker has acknowledged what it covers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::FutureExt;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use tokio::sync::watch;

use super::StreamMetrics;
use super::flow::Flow;
use super::message::{Unscorable, dead_letter_headers, decode, headers_of, output};
use super::produce::{Delivery, FLUSH_SLICE, Producer, Sink, Source, enqueue, record, redeliver};
use super::rebalance::{KafkaContext, list};
use super::settings::{consumer_config, producer_config};
use super::shared::Shared;
use super::trace;
use crate::config::StreamConfig;
use crate::engine::Lane;
use crate::protocol::v1::ScoreResult;
use crate::scoring::ScoreError;
use crate::sources::Host;
use crate::transaction::Transaction;

/// Decoded messages on their way: the transactions as the scoring layer takes them (no copy),
/// and beside each, where it came from.
#[derive(Default)]
struct Chunk {
    txs: Vec<Transaction>,
    work: Vec<Work>,
    /// The timestamps of every message taken, scored or dead-lettered, for the fetch age.
    stamps: Vec<Option<i64>>,
}

/// Where one decoded message came from.
struct Work {
    key: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    /// Its span, when it is traced.
    span: Option<Box<crate::traces::Recording>>,
}

/// Runs until `stop` turns true; then finishes the work in flight and commits.
pub async fn run(
    state: Arc<dyn Host>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = state.config().stream.clone();
    if config.prefault_mib > 0 {
        crate::memory::keep_freed_memory();
        crate::memory::pretouch(config.prefault_mib);
    }
    let (sink, failed) = Sink::new(shared.clone());
    let producer: Arc<Producer> = Arc::new(
        producer_config(&config)
            .create_with_context(sink)
            .context("creating the Kafka producer")?,
    );
    let consumer: StreamConsumer<KafkaContext> = consumer_config(&config)
        .create_with_context(KafkaContext {
            shared: shared.clone(),
            producer: Arc::downgrade(&producer),
        })
        .context("creating the Kafka consumer")?;
    let redelivery = tokio::spawn(redeliver(producer.clone(), shared.clone(), failed));
    consumer
        .subscribe(&[config.input_topic.as_str()])
        .with_context(|| format!("subscribing to {}", config.input_topic))?;
    tracing::info!(
        brokers = %config.brokers,
        input = %config.input_topic,
        output = %config.output_topic,
        dead_letter = %config.dead_letter_topic,
        group = %config.group_id,
        "stream consuming"
    );
    let mut tick = tokio::time::interval(Duration::from_millis(config.commit_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flow = Flow::default();
    let mut last_log = Instant::now();
    loop {
        flow.update(&consumer, &shared, &config);
        let receiving = flow.receiving();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            // A chunk handed to the producer may end a stall: the loop re-evaluates at once, not
            // on the tick.
            _ = shared.wake.notified(), if !receiving || flow.paused => {}
            _ = tick.tick() => {
                commit(&consumer, &shared, CommitMode::Async);
                if last_log.elapsed() >= Duration::from_secs(10) {
                    last_log = Instant::now();
                    shared.metrics.log_progress();
                }
            }
            message = consumer.recv(), if receiving => {
                let first = match message {
                    Ok(m) => m,
                    Err(e) => {
                        shared.metrics.broker_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "kafka receive error; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                shared.metrics.brokers_down.store(false, Ordering::Relaxed);
                // Whatever else is already fetched joins this chunk: one scoring call for many
                // messages, the engine's batcher packs them further.
                // One clock reading for the chunk's fetch ages.
                let received_ms = chrono::Utc::now().timestamp_millis();
                let mut chunk = Chunk::default();
                accept(&*state, &shared, &producer, &config, &first, &mut chunk);
                drop(first);
                while chunk.txs.len() < config.max_batch {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => accept(&*state, &shared, &producer, &config, &m, &mut chunk),
                        _ => break,
                    }
                }
                StreamMetrics::record_ages(
                    &shared.metrics.fetch_age,
                    chunk.stamps.drain(..),
                    received_ms,
                );
                let chunk = dispatchable(&shared, chunk);
                if !chunk.txs.is_empty() {
                    tokio::spawn(score(state.clone(), shared.clone(), producer.clone(), config.clone(), chunk));
                }
            }
        }
    }
    // Stop fetching; finish what is in flight; commit it. The waits are flushes: librdkafka sends
    // what it holds at once while a flush call lasts, where a configured `linger.ms` would hold the
    // last scores (and this drain, and their commit) for that long. A flush returns when its queue
    // is empty, which it is while the last chunks are still being scored: hence the loop.
    let until = Instant::now() + Duration::from_millis(state.config().server.drain_timeout_ms);
    while shared.pending() > 0 && Instant::now() < until {
        let slice = until
            .saturating_duration_since(Instant::now())
            .min(FLUSH_SLICE);
        let held = producer.clone();
        // A timeout leaves records queued: the loop flushes again until the deadline.
        let _ = tokio::task::spawn_blocking(move || crate::kafka::flush(&held, slice)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = shared.pending();
    commit(&consumer, &shared, CommitMode::Sync);
    if left > 0 {
        tracing::warn!(
            messages = left,
            "stream stopped with work unfinished (not committed)"
        );
    }
    redelivery.abort();
    tracing::info!("stream stopped");
    Ok(())
}

/// Commits every partition's watermark that moved.
fn commit(consumer: &StreamConsumer<KafkaContext>, shared: &Shared, mode: CommitMode) {
    let positions = shared
        .offsets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .committable();
    if let Some(list) = list(&positions) {
        match consumer.commit(&list, mode) {
            Ok(()) => {
                shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "offset commit failed; retried on the next tick"),
        }
    }
}

/// The chunk's messages whose partitions are still ours, registered as in flight. A chunk's
/// messages become pending only here, as it is handed to its task: a rebalance can run inside
/// the `recv()` calls that fill a chunk, and a revocation waiting for messages still sitting in the
/// unsent chunk would wait for the very loop it is blocking (its timeout ran out, the new owner
/// scored them again). Messages of a partition revoked meanwhile are left to the new owner.
fn dispatchable(shared: &Shared, chunk: Chunk) -> Chunk {
    let mut offsets = shared.offsets.lock().unwrap_or_else(|p| p.into_inner());
    let mut kept = Chunk {
        txs: Vec::with_capacity(chunk.txs.len()),
        work: Vec::with_capacity(chunk.work.len()),
        ..Chunk::default()
    };
    for (tx, w) in chunk.txs.into_iter().zip(chunk.work) {
        if offsets.owns(&w.topic, w.partition) {
            offsets.received(&w.topic, w.partition, w.offset);
            kept.txs.push(tx);
            kept.work.push(w);
        } else {
            shared.metrics.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.scoring.fetch_add(kept.txs.len(), Ordering::Relaxed);
    kept
}

/// Counts a chunk's messages handed off when it is dropped, however its task ends.
struct HandOff<'a>(&'a Shared, usize);

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        self.0.handed_off(self.1);
    }
}

/// Takes one message: queues it for scoring, or registers it and dead-letters it.
fn accept(
    state: &dyn Host,
    shared: &Arc<Shared>,
    producer: &Arc<Producer>,
    config: &StreamConfig,
    message: &BorrowedMessage<'_>,
    chunk: &mut Chunk,
) {
    let (topic, partition, offset) = (
        message.topic().to_string(),
        message.partition(),
        message.offset(),
    );
    {
        let offsets = shared.offsets.lock().unwrap_or_else(|p| p.into_inner());
        if !offsets.owns(&topic, partition) {
            // Fetched before its partition was revoked: the new owner scores it.
            shared.metrics.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    shared.metrics.consumed.fetch_add(1, Ordering::Relaxed);
    let timestamp_ms = message.timestamp().to_millis();
    chunk.stamps.push(timestamp_ms);
    let key = message.key().map(<[u8]>::to_vec);
    let headers = headers_of(message);
    let tracer = state.scoring().tracer();
    let span = trace::start(
        tracer,
        message,
        (&topic, partition, offset),
        &config.group_id,
    );
    match decode(message.payload(), state.config().server.body_limit_bytes) {
        Ok(tx) => {
            chunk.txs.push(tx);
            chunk.work.push(Work {
                key,
                headers,
                topic,
                partition,
                offset,
                timestamp_ms,
                span,
            });
        }
        Err(why) => {
            let headers = trace::dead_lettered(tracer, span, headers, &why);
            shared
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .received(&topic, partition, offset);
            let value = message.payload().map(<[u8]>::to_vec);
            let version = state.scoring().served().model().version.clone();
            let (producer, shared) = (producer.clone(), shared.clone());
            let dlq = config.dead_letter_topic.clone();
            tokio::spawn(async move {
                let letter = Letter {
                    source: (topic, partition, offset),
                    key,
                    value,
                    headers,
                    why,
                    version,
                };
                dead_letter(&producer, &shared, &dlq, letter).await;
            });
        }
    }
}

/// A message that cannot be scored, on its way to the dead-letter topic.
struct Letter {
    source: Source,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    why: Unscorable,
    version: String,
}

/// Hands a dead-letter record to the producer; its delivery finishes the message.
async fn dead_letter(producer: &Producer, shared: &Shared, topic: &str, letter: Letter) {
    let Letter {
        source,
        key,
        value,
        headers,
        why,
        version,
    } = letter;
    let headers = dead_letter_headers(headers, (&source.0, source.1, source.2), &why, &version);
    let delivery = Box::new(Delivery::DeadLetter {
        source,
        class: why.class,
    });
    let record = record(
        topic,
        delivery,
        key.as_deref(),
        value.as_deref(),
        Some(headers),
    );
    enqueue(producer, shared, record).await;
}

/// Scores a chunk (retrying while the engine is busy: backpressure, not loss), then hands each
/// score to the producer; its delivery marks the message finished.
async fn score(
    state: Arc<dyn Host>,
    shared: Arc<Shared>,
    producer: Arc<Producer>,
    config: StreamConfig,
    chunk: Chunk,
) {
    let Chunk { txs, work, .. } = chunk;
    let _handed_off = HandOff(&shared, txs.len());
    let mut backoff = Duration::from_millis(5);
    let (served, scores) = loop {
        let served = state.scoring().pick();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let scored = state
            .scoring()
            .score_transactions(&served, &txs, deadline, false, Lane::Bulk, None)
            .await;
        // Each try is a request of the version it took, in its statistics as an API request is.
        let micros = started.elapsed().as_micros() as u64;
        served.requests().record_now(scored.is_ok(), micros);
        match scored {
            Ok(scores) => break (served, scores),
            Err(ScoreError::Overloaded(_) | ScoreError::DeadlineExceeded) => {
                shared.metrics.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                // Not the messages' fault and not curable by waiting (a model or device error):
                // each goes to the dead-letter topic with the reason rather than being retried
                // forever.
                tracing::error!(error = %e, messages = txs.len(), "scoring failed; dead-lettering the chunk");
                let version = served.model().version.clone();
                for (tx, w) in txs.iter().zip(work) {
                    let why = Unscorable {
                        class: "scoring_failed",
                        field: None,
                        message: e.to_string(),
                    };
                    let tracer = state.scoring().tracer();
                    let headers = trace::dead_lettered(tracer, w.span, w.headers, &why);
                    let letter = Letter {
                        source: (w.topic, w.partition, w.offset),
                        key: w.key,
                        value: serde_json::to_vec(tx).ok(),
                        headers,
                        why,
                        version: version.clone(),
                    };
                    dead_letter(&producer, &shared, &config.dead_letter_topic, letter).await;
                }
                return;
            }
        }
    };
    // The chunk was scored at one moment by one version: both rendered once.
    let model = served.model();
    let model_version = format!("{}:{}", model.name, model.version);
    let now = chrono::Utc::now();
    let scored_at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let scored_ms = now.timestamp_millis();
    StreamMetrics::record_ages(
        &shared.metrics.scored_age,
        work.iter().map(|w| w.timestamp_ms),
        scored_ms,
    );
    let mut value = Vec::with_capacity(512);
    for (row, (tx, w)) in txs.iter().zip(work).enumerate() {
        // The /v1 answer itself (the same type /v1 renders), plus provenance.
        let answer = ScoreResult {
            end_to_end_id: tx.end_to_end_id.as_str(),
            score: scores.scores[row],
            decision: scores.decisions[row],
            reasons: served.reason(&scores, row),
            model,
        };
        value.clear();
        output(
            &mut value,
            answer,
            (&model_version, served.role()),
            &scored_at,
            (&w.topic, w.partition, w.offset),
        );
        let tracer = state.scoring().tracer();
        let headers = trace::scored(tracer, w.span, w.headers, (&served, &scores, row));
        let delivery = Box::new(Delivery::Score {
            source: (w.topic, w.partition, w.offset),
            timestamp_ms: w.timestamp_ms,
        });
        let record = record(
            &config.output_topic,
            delivery,
            Some(tx.end_to_end_id.as_str().as_bytes()),
            Some(value.as_slice()),
            headers,
        );
        enqueue(&producer, &shared, record).await;
    }
}
