//! Triton's statistics extension (`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`): cumulative
//! counts and durations, which perf_analyzer reads to split its latency into queue and compute.

use std::sync::atomic::Ordering;

use crate::histogram::PromHistogram;
use crate::scoring::{Scoring, Served};

/// A cumulative count and duration in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Duration {
    /// Occurrences.
    pub count: u64,
    /// Their total duration.
    pub ns: u64,
}

/// Statistics of the served model since start.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelStatistics {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// End of the last scoring request, ms since the Unix epoch.
    pub last_inference: u64,
    /// Rows scored.
    pub inference_count: u64,
    /// Batches run by the model.
    pub execution_count: u64,
    /// Scoring requests answered, whole time.
    pub success: Duration,
    /// Scoring requests refused or failed, whole time.
    pub fail: Duration,
    /// Time requests waited in the batcher's queue.
    pub queue: Duration,
    /// Model time of the batches requests rode in.
    pub compute_infer: Duration,
}

/// The served model's statistics. Feature assembly happens before the queue and is part of
/// `success` only; compute_input and compute_output are not measured apart from compute_infer.
pub fn model_statistics(scoring: &Scoring, served: &Served) -> ModelStatistics {
    let front = &scoring.metrics;
    let engine = scoring.engine_metrics();
    let duration = |(count, ns): (u64, u64)| Duration { count, ns };
    let histogram = |h: &PromHistogram| {
        let (_, sum_us, count) = h.snapshot();
        Duration {
            count,
            ns: sum_us.saturating_mul(1_000),
        }
    };
    let (_, _, batches) = engine.batch_size.snapshot();
    ModelStatistics {
        name: served.model().name.clone(),
        version: served.model().version.clone(),
        last_inference: front.last_inference_ms.load(Ordering::Relaxed),
        inference_count: engine.rows_scored(),
        execution_count: batches,
        success: duration(front.succeeded.count_ns()),
        fail: duration(front.failed.count_ns()),
        queue: histogram(&engine.queue.prom),
        compute_infer: histogram(&engine.compute.prom),
    }
}

impl ModelStatistics {
    /// The JSON form Triton serves.
    pub fn to_json(&self) -> serde_json::Value {
        let zero = Duration::default();
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success,
                "fail": self.fail,
                "queue": self.queue,
                "compute_input": zero,
                "compute_infer": self.compute_infer,
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        })
    }
}
