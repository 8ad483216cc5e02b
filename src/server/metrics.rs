//! `/metrics` (Prometheus text exposition) and `/v1/stats` (HDR percentiles as JSON).

use std::sync::atomic::Ordering;

use serde_json::json;

use super::models::Models;
use crate::engine::Totals;
use crate::histogram::{
    Stage, label_value, write_histogram as histogram, write_samples as counter,
};
use crate::scoring::canary::Canary;
use crate::scoring::shadow::{SCORE_SCALE, Shadow};
use crate::scoring::{Scoring, Served};

/// Renders every metric in the Prometheus text format (durations in seconds): the front ends'
/// (through the scoring layer) and the engine's.
pub fn prometheus(scoring: &Scoring, models: &Models) -> String {
    let front = &scoring.metrics;
    let m = scoring.engine_metrics();
    let served = scoring.served();
    let queue_depth = scoring.queued_rows();
    let in_flight = front.in_flight.load(Ordering::Acquire);
    let ready = scoring.takes_traffic();
    let mut out = String::with_capacity(8 * 1024);
    let stages: [(&str, &str, &Stage); 4] = [
        (
            "pixguard_request_duration_seconds",
            "Whole scoring request (any API), admission to answer.",
            &front.request,
        ),
        (
            "pixguard_queue_wait_seconds",
            "Enqueue to dispatch of a request's rows.",
            &m.queue,
        ),
        (
            "pixguard_compute_duration_seconds",
            "Model compute of the batches a request rode in.",
            &m.compute,
        ),
        (
            "pixguard_engine_duration_seconds",
            "Queue wait plus compute of a request.",
            &m.engine,
        ),
    ];
    for (name, help, stage) in stages {
        histogram(&mut out, name, help, &stage.prom, 1e6);
    }
    histogram(
        &mut out,
        "pixguard_batch_size_rows",
        "Rows per dispatched batch.",
        &m.batch_size,
        1.0,
    );
    counter(
        &mut out,
        "pixguard_queue_depth_rows",
        "Rows waiting in the queues of the versions that answer (the champion's and the canary's).",
        "gauge",
        &[(String::new(), queue_depth as u64)],
    );
    counter(
        &mut out,
        "pixguard_requests_in_flight",
        "Scoring requests admitted and not yet answered (bounded by server.max_concurrent_requests).",
        "gauge",
        &[(String::new(), in_flight as u64)],
    );
    counter(
        &mut out,
        "pixguard_rows_scored_total",
        "Rows computed by the model.",
        "counter",
        &[(String::new(), load(&m.rows_scored))],
    );
    counter(
        &mut out,
        "pixguard_rows_dropped_total",
        "Rows dropped before compute.",
        "counter",
        &[
            ("{reason=\"deadline\"}".into(), load(&m.rows_expired)),
            ("{reason=\"client_gone\"}".into(), load(&m.rows_abandoned)),
        ],
    );
    counter(
        &mut out,
        "pixguard_rejections_total",
        "Requests the engine turned away: queue full, or deadline passed before compute.",
        "counter",
        &[
            (
                "{reason=\"overloaded\"}".into(),
                load(&m.rejections.overloaded),
            ),
            ("{reason=\"deadline\"}".into(), load(&m.rejections.deadline)),
        ],
    );
    let responses: Vec<(String, u64)> = front
        .responses()
        .into_iter()
        .map(|(api, code, n)| {
            (
                format!("{{api=\"{}\",code=\"{}\"}}", api.as_str(), code.as_str()),
                n,
            )
        })
        .collect();
    counter(
        &mut out,
        "pixguard_responses_total",
        "Scoring requests by API (v1, oip_http, oip_grpc) and how they ended (ok, or the error code).",
        "counter",
        &responses,
    );
    let device = served.engine().device().as_str();
    counter(
        &mut out,
        "pixguard_device_info",
        "Device the model runs on.",
        "gauge",
        &[(format!("{{device=\"{device}\"}}"), 1)],
    );
    counter(
        &mut out,
        "pixguard_cuda_fallback",
        "1 when device: auto fell back to the CPU.",
        "gauge",
        &[(String::new(), load(&m.cuda_fallback))],
    );
    counter(
        &mut out,
        "pixguard_device_failed",
        "1 once a worker's device can take no more work (liveness fails; restart).",
        "gauge",
        &[(String::new(), u64::from(m.device_failure.get().is_some()))],
    );
    counter(
        &mut out,
        "pixguard_ready",
        "1 when the server takes traffic.",
        "gauge",
        &[(String::new(), u64::from(ready))],
    );
    counter(
        &mut out,
        "pixguard_model_info",
        "The model version serving now, and the source it follows.",
        "gauge",
        &[(info_labels(&served), 1)],
    );
    counter(
        &mut out,
        "pixguard_model_swaps_total",
        "Model versions swapped in since start.",
        "counter",
        &[(String::new(), models.swaps.load(Ordering::Relaxed))],
    );
    counter(
        &mut out,
        "pixguard_engines_running",
        "Engines running: one per loaded version (the serving one, a shadow, a swapped-out one finishing its last requests).",
        "gauge",
        &[(String::new(), crate::engine::running() as u64)],
    );
    counter(
        &mut out,
        "pixguard_model_load_failures_total",
        "Model versions refused (fetch, package checks, self-test or warm-up failed); the serving version stayed.",
        "counter",
        &[(String::new(), models.failures.load(Ordering::Relaxed))],
    );
    if let Some(tracer) = scoring.tracer() {
        let c = tracer.counts();
        counter(
            &mut out,
            "pixguard_trace_spans_total",
            "Spans of traced requests: exported to the collector, dropped (export queue full), failed (the export call failed or the collector refused them).",
            "counter",
            &[
                ("{outcome=\"exported\"}".into(), load(&c.exported)),
                ("{outcome=\"dropped\"}".into(), load(&c.dropped)),
                ("{outcome=\"failed\"}".into(), load(&c.failed)),
            ],
        );
        counter(
            &mut out,
            "pixguard_trace_export_retries_total",
            "Export calls sent again after a retryable answer (the collector restarting or overloaded, a lost connection).",
            "counter",
            &[(String::new(), load(&c.retries))],
        );
    }
    if let Some(log) = scoring.decision_log() {
        let c = log.counts();
        counter(
            &mut out,
            "pixguard_decision_log_records_total",
            "Decision-log records (one per scored transaction of a logged request): delivered (acknowledged by the broker), failed (not acknowledged within message.timeout.ms, refused, or unsent at stop), dropped (decision_log.max_queue_records already waiting).",
            "counter",
            &[
                ("{outcome=\"delivered\"}".into(), load(&c.delivered)),
                ("{outcome=\"failed\"}".into(), load(&c.failed)),
                ("{outcome=\"dropped\"}".into(), load(&c.dropped)),
            ],
        );
        counter(
            &mut out,
            "pixguard_decision_log_queued_records",
            "Decision-log records waiting to be handed to the Kafka producer.",
            "gauge",
            &[(String::new(), c.queued.load(Ordering::Relaxed) as u64)],
        );
    }
    version_metrics(&mut out, scoring);
    if let Some(canary) = scoring.canary() {
        canary_metrics(&mut out, canary);
    }
    if let Some(shadow) = scoring.shadow() {
        shadow_metrics(&mut out, shadow);
    }
    super::monitoring::prometheus(&mut out, scoring);
    out
}

/// Each serving version's own counters, since it started serving (its Triton statistics, as
/// Triton's `nv_inference_*` metrics): a canary's failures, rows and mean queue and compute time
/// beside its champion's, where every other metric has both together.
fn version_metrics(out: &mut String, scoring: &Scoring) {
    let slots = scoring.serving();
    let labels = |served: &Served, extra: &str| {
        let model = served.model();
        format!(
            "{{model=\"{}\",version=\"{}\",role=\"{}\"{extra}}}",
            label_value(&model.name),
            label_value(&model.version),
            served.role().as_str(),
        )
    };
    let mut requests = Vec::new();
    let mut request_seconds = Vec::new();
    for served in &slots {
        let r = served.requests();
        for (outcome, cumulative) in [("ok", &r.succeeded), ("failed", &r.failed)] {
            let (count, ns) = cumulative.count_ns();
            let extra = format!(",outcome=\"{outcome}\"");
            requests.push((labels(served, &extra), count as f64));
            request_seconds.push((labels(served, &extra), seconds(ns)));
        }
    }
    counter(
        out,
        "pixguard_version_requests_total",
        "Scoring requests routed to each serving version (API requests, and Kafka's chunks of messages), by outcome (ok or failed).",
        "counter",
        &requests,
    );
    counter(
        out,
        "pixguard_version_request_seconds_total",
        "Whole duration of those requests, by outcome.",
        "counter",
        &request_seconds,
    );
    // One reading of each version's totals, so that a scrape's rows and batches agree.
    let figures: Vec<(String, [f64; 5])> = slots
        .iter()
        .map(|s| {
            let t: &Totals = s.engine().totals();
            let (batches, rows) = t.batches_and_rows();
            let (answered, queue_ns) = t.queue.count_ns();
            let values = [
                rows as f64,
                batches as f64,
                answered as f64,
                seconds(queue_ns),
                seconds(t.compute.count_ns().1),
            ];
            (labels(s, ""), values)
        })
        .collect();
    let families: [(&str, &str); 5] = [
        (
            "pixguard_version_rows_scored_total",
            "Rows each serving version's engine scored (Kafka's too).",
        ),
        (
            "pixguard_version_batches_total",
            "Batches each serving version's engine scored.",
        ),
        (
            "pixguard_version_engine_requests_total",
            "Requests each serving version's engine answered (the count of the two sums below).",
        ),
        (
            "pixguard_version_queue_seconds_total",
            "Queue wait of the requests each serving version's engine answered.",
        ),
        (
            "pixguard_version_compute_seconds_total",
            "Compute of the batches those requests rode in.",
        ),
    ];
    for (k, (name, help)) in families.into_iter().enumerate() {
        let samples: Vec<_> = (figures.iter())
            .map(|(labels, values)| (labels.clone(), values[k]))
            .collect();
        counter(out, name, help, "counter", &samples);
    }
}

/// Nanoseconds in seconds.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A version's name, version and source as labels.
fn info_labels(served: &Served) -> String {
    format!(
        "{{name=\"{}\",version=\"{}\",source=\"{}\"}}",
        label_value(&served.model().name),
        label_value(&served.model().version),
        label_value(&served.origin.source)
    )
}

/// The canary's version, its share and the requests it answered.
fn canary_metrics(out: &mut String, canary: &Canary) {
    counter(
        out,
        "pixguard_canary_model_info",
        "The canary version answering a share of requests, and the source it follows.",
        "gauge",
        &[(info_labels(&canary.slot().load()), 1)],
    );
    counter(
        out,
        "pixguard_canary_fraction",
        "Share of requests the canary answers now (model.canary_fraction, POST /admin/canary).",
        "gauge",
        &[(String::new(), canary.fraction())],
    );
    counter(
        out,
        "pixguard_canary_requests_total",
        "Requests the canary answered: its share, and those naming its version.",
        "counter",
        &[(String::new(), load(&canary.requests))],
    );
    counter(
        out,
        "pixguard_canary_declined_total",
        "Requests of the canary's share whose inputs it refused and the champion took (precomputed features shaped for the champion): answered by the champion.",
        "counter",
        &[(String::new(), load(&canary.declined))],
    );
    counter(
        out,
        "pixguard_canary_halts_total",
        "Times the canary guard set the canary's share to 0: its HOLD+REJECT share out of band against the champion's (model.canary_max_stop_ratio), its engine p99 too slow (canary_max_latency_ratio) or its share of requests failed or refused for their input too high (canary_max_error_share).",
        "counter",
        &[(String::new(), load(&canary.halts))],
    );
}

/// The canary's figures for `/v1/stats`.
fn canary_stats(canary: &Canary) -> serde_json::Value {
    super::with_fields(
        json!({ "model": canary.slot().load().model() }),
        canary.figures(),
    )
}

const DECISIONS: [&str; 3] = ["ALLOW", "HOLD", "REJECT"];

/// The challenger's version, sampling outcomes, decision agreement and score distribution.
fn shadow_metrics(out: &mut String, shadow: &Shadow) {
    let served = shadow.slot().load_full();
    let m = &shadow.metrics;
    counter(
        out,
        "pixguard_shadow_model_info",
        "The challenger version scored in the shadow, and the source it follows.",
        "gauge",
        &[(info_labels(&served), 1)],
    );
    counter(
        out,
        "pixguard_shadow_requests_total",
        "Requests sampled for the challenger, and those shed (champion busy), not comparable (feature rows of another spec) or failed on it.",
        "counter",
        &[
            ("{outcome=\"sampled\"}".to_string(), load(&m.sampled)),
            ("{outcome=\"shed\"}".to_string(), load(&m.shed)),
            (
                "{outcome=\"incompatible\"}".to_string(),
                load(&m.incompatible),
            ),
            ("{outcome=\"error\"}".to_string(), load(&m.errors)),
        ],
    );
    let mut agreement = Vec::new();
    for (i, champion) in DECISIONS.iter().enumerate() {
        for (j, challenger) in DECISIONS.iter().enumerate() {
            agreement.push((
                format!("{{champion=\"{champion}\",challenger=\"{challenger}\"}}"),
                load(&m.agreement[i][j]),
            ));
        }
    }
    counter(
        out,
        "pixguard_shadow_decisions_total",
        "Rows scored by both, by champion decision and challenger decision.",
        "counter",
        &agreement,
    );
    histogram(
        out,
        "pixguard_shadow_score",
        "Challenger scores of the rows it scored.",
        &m.scores,
        SCORE_SCALE,
    );
}

/// The shadow's figures for `/v1/stats`.
fn shadow_stats(shadow: &Shadow) -> serde_json::Value {
    let m = &shadow.metrics;
    let served = shadow.slot().load_full();
    let mut matrix = serde_json::Map::new();
    let mut agree = 0;
    let mut total = 0;
    for (i, champion) in DECISIONS.iter().enumerate() {
        let mut row = serde_json::Map::new();
        for (j, challenger) in DECISIONS.iter().enumerate() {
            let n = load(&m.agreement[i][j]);
            total += n;
            if i == j {
                agree += n;
            }
            row.insert((*challenger).into(), n.into());
        }
        matrix.insert((*champion).into(), row.into());
    }
    json!({
        "model": served.model(),
        "sampled": load(&m.sampled),
        "shed": load(&m.shed),
        "incompatible": load(&m.incompatible),
        "errors": load(&m.errors),
        "rows": load(&m.rows),
        "decision_agreement": if total > 0 { agree as f64 / total as f64 } else { 1.0 },
        "decisions_champion_by_challenger": matrix,
    })
}

/// p50/p90/p99/p99.9/max per stage, since start and over the last 60 s, in microseconds.
pub fn stats(
    scoring: &Scoring,
    stream: Option<&crate::sources::kafka::Shared>,
) -> serde_json::Value {
    let m = scoring.engine_metrics();
    let queue_depth = scoring.queued_rows();
    let stage = |s: &Stage| {
        let (total, recent) = s.hdr.percentiles();
        json!({"since_start": total, "last_60s": recent})
    };
    json!({
        "unit": "microseconds",
        "stages": {
            "request": stage(&scoring.metrics.request),
            "queue": stage(&m.queue),
            "compute": stage(&m.compute),
            "engine": stage(&m.engine),
        },
        "rows_scored": m.rows_scored(),
        "queue_depth_rows": queue_depth,
        "canary": scoring.canary().map(canary_stats),
        "shadow": scoring.shadow().map(|s| shadow_stats(s)),
        "stream": stream.map(|s| s.stats()),
    })
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}
