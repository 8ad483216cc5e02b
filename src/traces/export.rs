//! The exporter thread: takes queued spans, sends them to the collector in batches over OTLP/gRPC
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) at least every
//! `traces.export_interval_ms`, on a runtime of its own so that an export never takes a front
//! end's thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::Receiver;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::otlp::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, InstrumentationScope, KeyValue,
    Resource, ResourceSpans, ScopeSpans, Span,
};
use super::{Counts, Ended};
use crate::config::TracesConfig;

/// The OTLP export method.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Spans per export call at most (the batch span processor's default).
const BATCH: usize = 512;
/// A failed export is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The running exporter thread.
pub struct Exporter {
    stop: crossbeam_channel::Sender<()>,
    stopped: Receiver<()>,
}

impl Exporter {
    /// Starts the thread sending what `spans` receives to `config.otlp_endpoint`.
    pub fn start(
        config: &TracesConfig,
        spans: Receiver<Ended>,
        counts: Arc<Counts>,
    ) -> anyhow::Result<Exporter> {
        let mut endpoint = Endpoint::from_shared(config.otlp_endpoint.clone())
            .with_context(|| format!("traces.otlp_endpoint: {}", config.otlp_endpoint))?
            .connect_timeout(Duration::from_millis(config.export_timeout_ms))
            .timeout(Duration::from_millis(config.export_timeout_ms));
        if config.otlp_endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .context("traces.otlp_endpoint: TLS")?;
        }
        let resource = Resource {
            attributes: resource_attributes(&config.service_name),
        };
        let interval = Duration::from_millis(config.export_interval_ms);
        let (stop, stopping) = crossbeam_channel::bounded(1);
        let (done, stopped) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("pixguard-traces".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "traces: no runtime for the exporter; spans are dropped");
                        return;
                    }
                };
                // Connects on the first call, and again after a failure.
                let channel = runtime.block_on(async { endpoint.connect_lazy() });
                let mut sender = Sender {
                    runtime,
                    grpc: tonic::client::Grpc::new(channel),
                    resource,
                    counts,
                    warned: None,
                };
                sender.run(&spans, &stopping, interval);
                let _ = done.send(());
            })
            .context("starting the traces exporter thread")?;
        Ok(Exporter { stop, stopped })
    }

    /// Sends what is queued and ends the thread, waiting at most `limit`.
    pub fn stop(self, limit: Duration) {
        let _ = self.stop.send(());
        if self.stopped.recv_timeout(limit).is_err() {
            tracing::warn!("traces: the exporter did not finish in time; queued spans are lost");
        }
    }
}

/// What describes this process in every export: `service.name` and the like.
fn resource_attributes(service: &str) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("service.name", service),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("telemetry.sdk.language", "rust"),
    ];
    // A pod's name is its hostname: the collector's k8sattributes processor matches on the IP.
    if let Ok(host) = std::env::var("HOSTNAME") {
        attributes.push(KeyValue::new("service.instance.id", host.clone()));
        attributes.push(KeyValue::new("host.name", host));
    }
    attributes
}

struct Sender {
    runtime: tokio::runtime::Runtime,
    grpc: tonic::client::Grpc<Channel>,
    resource: Resource,
    counts: Arc<Counts>,
    warned: Option<Instant>,
}

impl Sender {
    fn run(&mut self, spans: &Receiver<Ended>, stopping: &Receiver<()>, interval: Duration) {
        let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
        let mut due = Instant::now() + interval;
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(spans) -> more => match more {
                    Ok(more) => batch.extend(more.spans()),
                    // The tracer is gone: nothing more will come.
                    Err(_) => return self.flush(batch),
                },
                // Stopped, or the tracer dropped its end: what is queued goes now.
                recv(stopping) -> _ => {
                    batch.extend(spans.try_iter().flat_map(Ended::spans));
                    return self.flush(batch);
                }
                default(wait) => {}
            }
            if batch.len() >= BATCH || (Instant::now() >= due && !batch.is_empty()) {
                let rest = if batch.len() > BATCH {
                    batch.split_off(BATCH)
                } else {
                    Vec::new()
                };
                self.export(std::mem::replace(&mut batch, rest));
            }
            if Instant::now() >= due {
                due = Instant::now() + interval;
            }
        }
    }

    /// Exports all of `batch`, in calls of at most [`BATCH`] spans.
    fn flush(&mut self, mut batch: Vec<Span>) {
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(BATCH));
            self.export(batch);
            batch = rest;
        }
    }

    /// One export call; spans the collector did not take are counted as failed.
    fn export(&mut self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "pixguard".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                }],
            }],
        };
        let grpc = &mut self.grpc;
        let answer = self.runtime.block_on(async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<
                ExportTraceServiceRequest,
                ExportTraceServiceResponse,
            >::default();
            grpc.unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(EXPORT),
                codec,
            )
            .await
        });
        let (taken, problem) = match answer {
            Ok(answer) => match answer.into_inner().partial_success {
                Some(p) if p.rejected_spans > 0 => (
                    n.saturating_sub(p.rejected_spans as u64),
                    Some(format!(
                        "the collector refused {} spans: {}",
                        p.rejected_spans, p.error_message
                    )),
                ),
                _ => (n, None),
            },
            Err(status) => (0, Some(format!("{}: {}", status.code(), status.message()))),
        };
        self.counts.exported.fetch_add(taken, Ordering::Relaxed);
        self.counts.failed.fetch_add(n - taken, Ordering::Relaxed);
        if let Some(problem) = problem
            && self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            self.warned = Some(Instant::now());
            tracing::warn!(spans = n - taken, %problem, "traces: export failed (logged at most once a minute)");
        }
    }
}
