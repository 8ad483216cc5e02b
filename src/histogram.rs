//! Latency histograms shared by the layers that measure: Prometheus histograms with fixed bounds
//! and lock-free updates, for aggregation across replicas, and HDR histograms (since start and over
//! the last 60 s) for exact percentiles.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latency bucket bounds in microseconds, fine from 10 µs.
pub const LATENCY_BOUNDS_US: &[f64] = &[
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    25_000.0,
    50_000.0,
    100_000.0,
    250_000.0,
    500_000.0,
    1_000_000.0,
    2_500_000.0,
];

/// Batch-size bucket bounds in rows.
pub const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// A Prometheus histogram with fixed bounds and lock-free updates.
#[derive(Debug)]
pub struct PromHistogram {
    /// Upper bounds of the buckets (the `+Inf` bucket is implicit).
    pub bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl PromHistogram {
    /// An empty histogram.
    pub fn new(bounds: &'static [f64]) -> Self {
        PromHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation (µs for latencies, rows for batch sizes).
    pub fn observe(&self, value: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value as f64 <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (one per bound, then +Inf), the sum and the count.
    pub fn snapshot(&self) -> (Vec<u64>, u64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (
            cumulative,
            self.sum_micros.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        )
    }
}

const WINDOW_SLICE: Duration = Duration::from_secs(10);
const WINDOW_SLICES: usize = 6;

/// Exact percentiles of one stage since start and over the last 60 s (six 10 s slices).
#[derive(Debug)]
pub struct HdrStage {
    inner: Mutex<HdrInner>,
}

#[derive(Debug)]
struct HdrInner {
    empty: Histogram<u64>,
    total: Histogram<u64>,
    slices: VecDeque<(Instant, Histogram<u64>)>,
}

impl HdrStage {
    /// An empty stage: 1 µs to 1 hour at 3 significant digits.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        let empty = Histogram::new_with_bounds(1, 3_600_000_000, 3)?;
        Ok(HdrStage {
            inner: Mutex::new(HdrInner {
                total: empty.clone(),
                empty,
                slices: VecDeque::new(),
            }),
        })
    }
}

/// Percentiles of one stage in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

impl HdrStage {
    /// Records a duration.
    pub fn record(&self, micros: u64) {
        self.record_all(&[micros]);
    }

    /// Records several durations under one lock and one clock reading (the Kafka stream
    /// records a chunk's messages at once).
    pub fn record_all(&self, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = inner
            .slices
            .back()
            .is_none_or(|(start, _)| now.duration_since(*start) >= WINDOW_SLICE);
        if fresh {
            let empty = inner.empty.clone();
            inner.slices.push_back((now, empty));
            while inner.slices.len() > WINDOW_SLICES {
                inner.slices.pop_front();
            }
        }
        let HdrInner { total, slices, .. } = &mut *inner;
        for &m in micros {
            let value = m.clamp(1, 3_600_000_000);
            let _ = total.record(value);
            if let Some((_, h)) = slices.back_mut() {
                let _ = h.record(value);
            }
        }
    }

    /// Percentiles since start, and over the slices that began in the last 60 s.
    pub fn percentiles(&self) -> (Percentiles, Percentiles) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut recent = inner.empty.clone();
        let horizon = WINDOW_SLICE * WINDOW_SLICES as u32;
        for (start, h) in &inner.slices {
            if start.elapsed() < horizon {
                let _ = recent.add(h);
            }
        }
        (percentiles(&inner.total), percentiles(&recent))
    }
}

/// One latency stage, in both forms.
#[derive(Debug)]
pub struct Stage {
    /// For /metrics.
    pub prom: PromHistogram,
    /// For /v1/stats.
    pub hdr: HdrStage,
}

impl Stage {
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Stage {
            prom: PromHistogram::new(LATENCY_BOUNDS_US),
            hdr: HdrStage::new()?,
        })
    }

    /// Records a duration in microseconds.
    pub fn record(&self, micros: u64) {
        self.record_all(&[micros]);
    }

    /// Records several durations in microseconds.
    pub fn record_all(&self, micros: &[u64]) {
        for &m in micros {
            self.prom.observe(m);
        }
        self.hdr.record_all(micros);
    }
}

/// A cumulative count and duration, as Triton's statistics extension reports them.
#[derive(Debug, Default)]
pub struct Cumulative {
    count: AtomicU64,
    micros: AtomicU64,
}

impl Cumulative {
    /// Adds one occurrence lasting `micros`.
    pub fn add(&self, micros: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Occurrences and their total duration in nanoseconds.
    pub fn count_ns(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.micros.load(Ordering::Relaxed).saturating_mul(1_000),
        )
    }
}

/// Writes `h` as a Prometheus histogram, its values divided by `scale` (µs → s: 1e6).
pub fn write_histogram(out: &mut String, name: &str, help: &str, h: &PromHistogram, scale: f64) {
    let (cumulative, sum, count) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, c) in h.bounds.iter().zip(&cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {c}", bound / scale);
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}",
        cumulative.last().copied().unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {count}",
        sum as f64 / scale
    );
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
pub fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a Prometheus metric of `kind` (counter, gauge) with its labelled samples.
pub fn write_samples<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: &[(String, T)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}
