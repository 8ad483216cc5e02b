//! Distributed traces: a span for each sampled scoring request, in the caller's trace when it
//! sent a W3C `traceparent`, exported to an OpenTelemetry collector over OTLP/gRPC or OTLP/HTTP
//! (`traces.otlp_endpoint`; docs/serving.md, "Traces").
//!
//! Off (no endpoint), a request pays one branch. On, an unsampled one pays the header's parse; a
//! sampled one records its attributes and, when it ends, moves that record onto a bounded queue.
//! A thread of its own builds the OTLP spans from it and sends them in batches, off the request's
//! path. A full queue drops spans and counts them: a slow or absent collector never holds a
//! payment.

pub mod context;
mod export;
pub mod otlp;
mod transport;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use context::{Parent, SpanId, TraceId};
use otlp::{KeyValue, Span};

use crate::config::TracesConfig;

/// Spans exported, dropped and lost: `pixguard_trace_spans_total{outcome}`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Taken by the collector.
    pub exported: AtomicU64,
    /// Not queued: the queue was full.
    pub dropped: AtomicU64,
    /// Sent, and refused by the collector or lost with its connection.
    pub failed: AtomicU64,
    /// Export calls sent again after a retryable answer.
    pub retries: AtomicU64,
}

/// Samples requests and queues their spans for the exporter thread.
pub struct Tracer {
    ratio: f64,
    parent_based: bool,
    queue: crossbeam_channel::Sender<Ended>,
    counts: Arc<Counts>,
    exporter: std::sync::Mutex<Option<export::Exporter>>,
}

/// Where a sampled request's span goes: its trace and the caller's span, if it named one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span (from another process), `None` for a trace this request starts.
    pub parent: Option<SpanId>,
    /// The request's own span: its children's parent, and what a message it sends on names.
    pub span_id: SpanId,
}

impl Tracer {
    /// The tracer `config` describes, its exporter thread started; `None` when traces are off.
    pub fn start(config: &TracesConfig) -> anyhow::Result<Option<Arc<Tracer>>> {
        if config.otlp_endpoint.is_empty() {
            return Ok(None);
        }
        let (queue, spans) = crossbeam_channel::bounded(config.max_queue_size);
        let counts = Arc::new(Counts::default());
        let exporter = export::Exporter::start(config, spans, counts.clone())?;
        Ok(Some(Arc::new(Tracer {
            ratio: config.sample_ratio,
            parent_based: config.parent_based,
            queue,
            counts,
            exporter: std::sync::Mutex::new(Some(exporter)),
        })))
    }

    /// Whether a request whose `traceparent` header is `header` is recorded, and in which trace:
    /// the caller's decision when it sent a valid header and `traces.parent_based` (OpenTelemetry
    /// SDKs' default), else `traces.sample_ratio` decided on the trace id — the caller's trace
    /// when there is one, so that a span kept joins it.
    pub fn sample(&self, header: Option<&[u8]>) -> Option<Trace> {
        match header.and_then(Parent::parse) {
            Some(parent) => {
                let keep = if self.parent_based {
                    parent.sampled
                } else {
                    context::ratio_keeps(&parent.trace_id, self.ratio)
                };
                keep.then(|| Trace {
                    trace_id: parent.trace_id,
                    parent: Some(parent.span_id),
                    span_id: context::new_span_id(),
                })
            }
            None => {
                if self.ratio <= 0.0 {
                    return None;
                }
                let trace_id = context::new_trace_id();
                context::ratio_keeps(&trace_id, self.ratio).then(|| Trace {
                    trace_id,
                    parent: None,
                    span_id: context::new_span_id(),
                })
            }
        }
    }

    /// Queues one request's spans for export, or drops them when the queue is full.
    pub fn submit(&self, ended: Ended) {
        let n = ended.span_count() as u64;
        if self.queue.try_send(ended).is_err() {
            self.counts.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Spans exported, dropped and lost so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Sends what is queued and stops the exporter, waiting at most `limit`.
    pub fn shutdown(&self, limit: Duration) {
        let exporter = self
            .exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(exporter) = exporter {
            exporter.stop(limit);
        }
    }
}

/// An attribute's value, kept as given until the exporter thread encodes it: a sampled request
/// allocates no key and no text it already has as a constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// Constant text.
    Static(&'static str),
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A real number.
    Double(f64),
}

impl From<&'static str> for Attr {
    fn from(v: &'static str) -> Attr {
        Attr::Static(v)
    }
}

impl From<String> for Attr {
    fn from(v: String) -> Attr {
        Attr::Text(v)
    }
}

impl From<i64> for Attr {
    fn from(v: i64) -> Attr {
        Attr::Int(v)
    }
}

impl From<f64> for Attr {
    fn from(v: f64) -> Attr {
        Attr::Double(v)
    }
}

impl From<Attr> for otlp::Value {
    fn from(v: Attr) -> otlp::Value {
        match v {
            Attr::Static(s) => otlp::Value::String(s.to_string()),
            Attr::Text(s) => otlp::Value::String(s),
            Attr::Int(i) => otlp::Value::Int(i),
            Attr::Double(d) => otlp::Value::Double(d),
        }
    }
}

/// One span being recorded: opened when a sampled request is admitted, sent when it ends.
#[derive(Debug)]
pub struct Recording {
    trace: Trace,
    /// The caller's `tracestate`, when the span continues its trace.
    trace_state: Option<String>,
    name: Cow<'static, str>,
    kind: i32,
    started: Instant,
    attributes: Vec<(&'static str, Attr)>,
    stages: Option<Stages>,
}

/// Where a scored request's time went in the engine, for its two child spans.
#[derive(Debug, Clone, Copy)]
struct Stages {
    enqueued: Instant,
    queue_us: u64,
    compute_us: u64,
}

impl Recording {
    /// A span named `name` of `kind` (`otlp::kind`) in `trace`, from `started`.
    pub fn new(
        trace: Trace,
        name: impl Into<Cow<'static, str>>,
        kind: i32,
        started: Instant,
    ) -> Recording {
        Recording {
            trace,
            trace_state: None,
            name: name.into(),
            kind,
            started,
            attributes: Vec::with_capacity(12),
            stages: None,
        }
    }

    /// Keeps the caller's `tracestate` header on the span (and its children), when the span
    /// continues the caller's trace and the value is one ([`context::trace_state`]).
    pub fn trace_state(&mut self, value: Option<&[u8]>) {
        if self.trace.parent.is_some() {
            self.trace_state = value.and_then(context::trace_state);
        }
    }

    /// Adds an attribute.
    pub fn attribute(&mut self, key: &'static str, value: impl Into<Attr>) {
        self.attributes.push((key, value.into()));
    }

    /// The engine's share: rows queued at `enqueued`, dispatched `queue_us` later, computed in
    /// `compute_us`. Becomes two child spans, `queue` and `compute`.
    pub fn stages(&mut self, enqueued: Instant, queue_us: u64, compute_us: u64) {
        self.stages = Some(Stages {
            enqueued,
            queue_us,
            compute_us,
        });
    }

    /// The trace this span is in.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The `traceparent` that names this span as the parent of what follows it (the record a
    /// consumer writes on).
    pub fn traceparent(&self) -> String {
        Parent::traceparent(&self.trace.trace_id, &self.trace.span_id, true)
    }

    /// The span ended now; `error` is the status message of a failed one. Nothing is encoded
    /// here: the exporter thread does that ([`Ended::spans`]).
    pub fn end(self, error: Option<String>) -> Ended {
        Ended {
            recording: self,
            at: Instant::now(),
            wall_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64,
            error,
        }
    }
}

/// A finished span, waiting for the exporter.
#[derive(Debug)]
pub struct Ended {
    recording: Recording,
    /// When it ended, by the monotonic clock and the wall clock read together.
    at: Instant,
    wall_ns: u64,
    error: Option<String>,
}

impl Ended {
    /// How many spans it becomes: itself and, when it was scored, `queue` and `compute`.
    pub fn span_count(&self) -> usize {
        if self.recording.stages.is_some() {
            3
        } else {
            1
        }
    }

    /// The OTLP spans: the span and its children.
    pub fn spans(self) -> Vec<Span> {
        let Ended {
            recording: r,
            at: now,
            wall_ns: wall,
            error,
        } = self;
        // Instants are monotonic; the wall clock of each is read back from one reading of both.
        let at =
            |i: Instant| wall.saturating_sub(now.saturating_duration_since(i).as_nanos() as u64);
        let trace = r.trace;
        // Bit 0: sampled. Bit 8: whether the parent is remote is known; bit 9: it is.
        let remote = if trace.parent.is_some() { 0x300 } else { 0x100 };
        let mut spans = Vec::with_capacity(3);
        let trace_state = r.trace_state.unwrap_or_default();
        spans.push(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: trace.span_id.to_vec(),
            trace_state: trace_state.clone(),
            parent_span_id: trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x01 | remote,
            name: r.name.into_owned(),
            kind: r.kind,
            start_time_unix_nano: at(r.started),
            end_time_unix_nano: wall,
            attributes: r
                .attributes
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect(),
            status: error.map(|message| otlp::Status {
                message,
                code: otlp::STATUS_ERROR,
            }),
        });
        if let Some(s) = r.stages {
            let queued = at(s.enqueued);
            let dispatched = queued + s.queue_us * 1_000;
            let computed = (dispatched + s.compute_us * 1_000).min(wall);
            for (name, start, end) in [
                ("queue", queued, dispatched.min(wall)),
                ("compute", dispatched.min(wall), computed),
            ] {
                spans.push(Span {
                    trace_id: trace.trace_id.to_vec(),
                    span_id: context::new_span_id().to_vec(),
                    trace_state: trace_state.clone(),
                    parent_span_id: trace.span_id.to_vec(),
                    flags: 0x101,
                    name: name.to_string(),
                    kind: otlp::kind::INTERNAL,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes: Vec::new(),
                    status: None,
                });
            }
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracer whose queue holds one request's spans, and that queue's far end.
    fn queued(ratio: f64) -> (Tracer, crossbeam_channel::Receiver<Ended>) {
        let (queue, spans) = crossbeam_channel::bounded(1);
        let tracer = Tracer {
            ratio,
            parent_based: true,
            queue,
            counts: Arc::default(),
            exporter: std::sync::Mutex::new(None),
        };
        (tracer, spans)
    }

    fn tracer(ratio: f64) -> Tracer {
        queued(ratio).0
    }

    #[test]
    fn a_callers_decision_is_followed_and_the_ratio_decides_the_rest() {
        let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = tracer(0.0).sample(Some(header)).unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(
            t.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_ne!(Some(t.span_id), t.parent);
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(tracer(1.0).sample(Some(unsampled)), None);
        assert_eq!(tracer(0.0).sample(None), None);
        // A header that is not a traceparent is no parent: the ratio decides.
        let own = tracer(1.0).sample(Some(b"garbage")).unwrap();
        assert_eq!(own.parent, None);
    }

    #[test]
    fn without_parent_based_sampling_the_ratio_decides_on_the_callers_trace_id() {
        let not_parent_based = |ratio| Tracer {
            parent_based: false,
            ..tracer(ratio)
        };
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let sampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // Kept against the caller's "not sampled", and in the caller's trace.
        let t = not_parent_based(1.0).sample(Some(unsampled)).unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.parent.map(|p| p[1]), Some(0xf0));
        // Dropped against the caller's "sampled".
        assert_eq!(not_parent_based(0.0).sample(Some(sampled)), None);
        // The decision is the trace id's: its low half, 0xa3ce929d0e0e4736, is 0.640 of the way
        // up the range (0xa3ce… / 2^64), so it is kept at 0.65 and not at 0.63.
        assert!(not_parent_based(0.65).sample(Some(unsampled)).is_some());
        assert!(not_parent_based(0.63).sample(Some(sampled)).is_none());
    }

    #[test]
    fn a_tracestate_is_kept_only_in_the_callers_trace() {
        let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = tracer(1.0);
        for (trace, kept) in [
            (t.sample(Some(header)), "congo=t61rcWkgMzE"),
            (t.sample(None), ""),
        ] {
            let mut r = Recording::new(trace.unwrap(), "s", otlp::kind::SERVER, Instant::now());
            r.trace_state(Some(b"congo=t61rcWkgMzE"));
            r.stages(Instant::now(), 1, 1);
            let spans = r.end(None).spans();
            assert!(spans.iter().all(|s| s.trace_state == kept), "{spans:?}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (t, spans) = queued(1.0);
        let span = || {
            Recording::new(
                t.sample(None).unwrap(),
                "s",
                otlp::kind::SERVER,
                Instant::now(),
            )
            .end(None)
        };
        t.submit(span());
        t.submit(span());
        assert_eq!(t.counts().dropped.load(Ordering::Relaxed), 1);
        assert_eq!(spans.try_iter().count(), 1);
    }

    #[test]
    fn the_children_lie_inside_their_span_in_order() {
        let trace = tracer(1.0).sample(None).unwrap();
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let mut r = Recording::new(trace, "POST /v1/score", otlp::kind::SERVER, started);
        r.stages(started + Duration::from_millis(1), 1_500, 2_000);
        let spans = r.end(Some("internal".into())).spans();
        let [server, queue, compute] = &spans[..] else {
            panic!("{spans:?}")
        };
        assert_eq!(server.status.as_ref().unwrap().code, otlp::STATUS_ERROR);
        assert_eq!(server.parent_span_id, Vec::<u8>::new());
        assert_eq!(server.flags, 0x101);
        for child in [queue, compute] {
            assert_eq!(child.parent_span_id, server.span_id);
            assert_eq!(child.trace_id, server.trace_id);
            assert!(server.start_time_unix_nano <= child.start_time_unix_nano);
            assert!(child.end_time_unix_nano <= server.end_time_unix_nano);
        }
        assert_eq!(
            queue.start_time_unix_nano - server.start_time_unix_nano,
            1_000_000
        );
        assert_eq!(queue.end_time_unix_nano, compute.start_time_unix_nano);
        assert_eq!(
            queue.end_time_unix_nano - queue.start_time_unix_nano,
            1_500_000
        );
        assert_eq!(
            compute.end_time_unix_nano - compute.start_time_unix_nano,
            2_000_000
        );
    }
}
