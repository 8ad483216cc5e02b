//! Triton's statistics extension (`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`): cumulative
//! counts and durations, which perf_analyzer reads to split its latency into queue and compute.

use crate::server::AppState;

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
pub fn model_statistics(state: &AppState) -> ModelStatistics {
    let m = &state.metrics;
    let duration = |(count, ns): (u64, u64)| Duration { count, ns };
    let histogram = |h: &crate::engine::metrics::PromHistogram| {
        let (_, sum_us, count) = h.snapshot();
        Duration {
            count,
            ns: sum_us.saturating_mul(1_000),
        }
    };
    let (_, _, batches) = m.batch_size.snapshot();
    ModelStatistics {
        name: state.model.name.clone(),
        version: state.model.version.clone(),
        last_inference: m
            .last_inference_ms
            .load(std::sync::atomic::Ordering::Relaxed),
        inference_count: m.rows_scored.load(std::sync::atomic::Ordering::Relaxed),
        execution_count: batches,
        success: duration(m.succeeded.count_ns()),
        fail: duration(m.failed.count_ns()),
        queue: histogram(&m.queue.prom),
        compute_infer: histogram(&m.compute.prom),
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
