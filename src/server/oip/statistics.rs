//! Triton's statistics extension (`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`): cumulative
//! counts and durations, which perf_analyzer reads to split its latency into queue and compute.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::scoring::{ScoreError, Scoring, Served};

/// A cumulative count and duration in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Duration {
    /// Occurrences.
    pub count: u64,
    /// Their total duration.
    pub ns: u64,
}

/// Statistics of one served version since it started serving.
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
    /// By batch size, smallest first: batches that scored and their model time.
    pub batch_stats: Vec<(u64, Duration)>,
}

/// Triton's answer for `name` (every model when `None`) and `version` (every version serving it
/// when `None` or empty): one entry per version, the champion's first. Each version's figures are
/// its own engine's and those of the requests that took it, since it started serving; a version
/// both the champion and the canary serve (a canary following the champion's package) is one
/// entry with both slots' figures. An unknown model or version is refused as for inference.
pub fn statistics(
    scoring: &Scoring,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<ModelStatistics>, ScoreError> {
    let version = version.filter(|v| !v.is_empty());
    if let Some(name) = name {
        scoring.named(name, version)?;
    }
    let mut groups: Vec<Vec<Arc<Served>>> = Vec::new();
    for served in scoring.serving() {
        let model = served.model();
        if name.is_some_and(|n| n != model.name) || version.is_some_and(|v| v != model.version) {
            continue;
        }
        match groups.iter_mut().find(|g| g[0].model() == model) {
            Some(group) => group.push(served),
            None => groups.push(vec![served]),
        }
    }
    Ok(groups.iter().map(|g| model_statistics(g)).collect())
}

/// The statistics of one version, served by every slot in `slots` (at least one). Feature
/// assembly happens before the queue and is part of `success` only; compute_input and
/// compute_output are not measured apart from compute_infer ([`Duration::within`]).
fn model_statistics(slots: &[Arc<Served>]) -> ModelStatistics {
    let model = slots[0].model();
    let mut stats = ModelStatistics {
        name: model.name.clone(),
        version: model.version.clone(),
        last_inference: 0,
        inference_count: 0,
        execution_count: 0,
        success: Duration::default(),
        fail: Duration::default(),
        queue: Duration::default(),
        compute_infer: Duration::default(),
        batch_stats: Vec::new(),
    };
    let mut by_size = std::collections::BTreeMap::<u64, Duration>::new();
    for served in slots {
        let requests = served.requests();
        let engine = served.engine().totals();
        stats.last_inference = stats
            .last_inference
            .max(requests.last_ms.load(Ordering::Relaxed));
        stats.success.add(requests.succeeded.count_ns());
        stats.fail.add(requests.failed.count_ns());
        stats.queue.add(engine.queue.count_ns());
        stats.compute_infer.add(engine.compute.count_ns());
        for (rows, figures) in engine.by_size() {
            stats.execution_count += figures.0;
            stats.inference_count += rows as u64 * figures.0;
            by_size.entry(rows as u64).or_default().add(figures);
        }
    }
    stats.batch_stats = by_size.into_iter().collect();
    stats
}

impl Duration {
    /// A stage timed inside this one (compute_input and compute_output, inside compute_infer):
    /// the same count, no time of its own. perf_analyzer refuses statistics whose three compute
    /// counts differ ("Server side statistics compute counts must be the same").
    pub fn within(self) -> Duration {
        Duration {
            count: self.count,
            ns: 0,
        }
    }

    /// Adds `count` occurrences lasting `ns` in all.
    fn add(&mut self, (count, ns): (u64, u64)) {
        self.count += count;
        self.ns += ns;
    }
}

/// The JSON answer Triton serves: `{"model_stats": [...]}`.
pub fn to_json(stats: &[ModelStatistics]) -> serde_json::Value {
    let stats: Vec<_> = stats.iter().map(ModelStatistics::to_json).collect();
    serde_json::json!({ "model_stats": stats })
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
                "compute_input": self.compute_infer.within(),
                "compute_infer": self.compute_infer,
                "compute_output": self.compute_infer.within(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": self.batch_stats.iter().map(|(size, infer)| serde_json::json!({
                "batch_size": size,
                "compute_input": infer.within(),
                "compute_infer": infer,
                "compute_output": infer.within(),
            })).collect::<Vec<_>>(),
        })
    }
}
