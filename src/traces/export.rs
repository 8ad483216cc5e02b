//! The exporter thread: takes queued spans, sends them to the collector in batches over OTLP/gRPC
//! or OTLP/HTTP (`transport.rs`) at least every `traces.export_interval_ms`, on a runtime of its
//! own so that an export never takes a front end's thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::Receiver;
use prost::Message;

use super::otlp::{
    ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans, ScopeSpans,
    Span,
};
use super::transport::{self, Transport};
use super::{Counts, Ended};
use crate::config::TracesConfig;

/// A failed export is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The first wait before a retry; each one after doubles it, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two tries of one export.
const LONGEST_WAIT: Duration = Duration::from_secs(5);

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
        let headers = transport::headers_from_environment()?;
        let config = config.clone();
        let resource = Resource {
            attributes: resource_attributes(&config),
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
                let transport = match runtime.block_on(async { Transport::new(&config, headers) }) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "traces: no exporter; spans are dropped");
                        return;
                    }
                };
                let mut sender = Sender {
                    runtime,
                    transport,
                    timeout: Duration::from_millis(config.export_timeout_ms),
                    batch: config.max_export_batch_size,
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

/// What describes this process in every export: `service.name`, `traces.resource_attributes`,
/// and the pod's name unless those give one.
fn resource_attributes(config: &TracesConfig) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("service.name", config.service_name.clone()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("telemetry.sdk.language", "rust"),
    ];
    let given = |key: &str| config.resource_attributes.contains_key(key);
    // A pod's name is its hostname: the collector's k8sattributes processor matches on the IP.
    if let Ok(host) = std::env::var("HOSTNAME") {
        for key in ["service.instance.id", "host.name"] {
            if !given(key) {
                attributes.push(KeyValue::new(key, host.clone()));
            }
        }
    }
    // service.name is its own key, and the version and SDK are the binary's: not overridden.
    let extra: Vec<KeyValue> = config
        .resource_attributes
        .iter()
        .filter(|(k, _)| !attributes.iter().any(|a| &a.key == *k))
        .map(|(k, v)| KeyValue::new(k, v.clone()))
        .collect();
    attributes.extend(extra);
    attributes
}

struct Sender {
    runtime: tokio::runtime::Runtime,
    transport: Transport,
    /// How long one export may take, its retries included.
    timeout: Duration,
    /// Spans per export call at most.
    batch: usize,
    resource: Resource,
    counts: Arc<Counts>,
    warned: Option<Instant>,
}

impl Sender {
    /// Sends `request`, and again after a retryable failure (the collector restarting, a
    /// connection lost, HTTP 429 or 503), waiting 100 ms, then twice as long each time up to 5 s,
    /// or as long as the collector's `Retry-After` says, for as long as `traces.export_timeout_ms`
    /// allows from the first try. Spans keep queueing meanwhile, and a full queue drops them as
    /// ever: a retry never holds a request.
    fn send_with_retries(
        &mut self,
        request: bytes::Bytes,
    ) -> Result<super::otlp::ExportTraceServiceResponse, transport::Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut wait = FIRST_WAIT;
        loop {
            let transport = &mut self.transport;
            let failure = match self.runtime.block_on(transport.send(request.clone())) {
                Err(failure) if failure.retryable => failure,
                answer => return answer,
            };
            let pause = failure.retry_after.unwrap_or(wait);
            if Instant::now() + pause >= deadline {
                return Err(failure);
            }
            tracing::debug!(problem = %failure.message, ?pause, "traces: export failed; trying again");
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(pause);
            wait = (wait * 2).min(LONGEST_WAIT);
        }
    }

    fn run(&mut self, spans: &Receiver<Ended>, stopping: &Receiver<()>, interval: Duration) {
        let mut batch: Vec<Span> = Vec::with_capacity(self.batch);
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
            if batch.len() >= self.batch || (Instant::now() >= due && !batch.is_empty()) {
                let rest = if batch.len() > self.batch {
                    batch.split_off(self.batch)
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

    /// Exports all of `batch`, in calls of at most `self.batch` spans.
    fn flush(&mut self, mut batch: Vec<Span>) {
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(self.batch));
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
        let encoded = bytes::Bytes::from(request.encode_to_vec());
        let answer = self.send_with_retries(encoded);
        let (taken, problem) = match answer {
            Ok(answer) => match answer.partial_success {
                Some(p) if p.rejected_spans > 0 => (
                    n.saturating_sub(p.rejected_spans as u64),
                    Some(format!(
                        "the collector refused {} spans: {}",
                        p.rejected_spans, p.error_message
                    )),
                ),
                _ => (n, None),
            },
            Err(failure) => (0, Some(failure.message)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::otlp::Value;

    #[test]
    fn configured_attributes_add_to_the_resource_and_never_replace_its_own() {
        let mut config = TracesConfig {
            service_name: "pixguard-live".into(),
            ..TracesConfig::default()
        };
        for (k, v) in [
            ("service.name", "other"),
            ("telemetry.sdk.language", "go"),
            ("host.name", "node-7"),
            ("team", "fraud"),
        ] {
            config.resource_attributes.insert(k.into(), v.into());
        }
        let attributes: Vec<(String, String)> = resource_attributes(&config)
            .into_iter()
            .map(|kv| match kv.value.and_then(|v| v.value) {
                Some(Value::String(s)) => (kv.key, s),
                other => panic!("{other:?}"),
            })
            .collect();
        let of = |key: &str| -> Vec<&str> {
            attributes
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(of("service.name"), ["pixguard-live"]);
        assert_eq!(of("telemetry.sdk.language"), ["rust"]);
        // Given, so not the pod's HOSTNAME.
        assert_eq!(of("host.name"), ["node-7"]);
        assert_eq!(of("team"), ["fraud"]);
    }
}
