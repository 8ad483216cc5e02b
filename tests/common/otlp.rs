//! An OTLP trace receiver for the tests, over gRPC and HTTP (`tests/python/otlp_collector.py`: the
//! OpenTelemetry project's generated classes decode what pixguard exports), and the spans it got.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::registry::{Process, free_port};

/// The receiver, and the lines it has printed so far: spans, and `{"refused": …}` for exports it
/// turned away.
pub struct Collector {
    _process: Process,
    port: u16,
    http_port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    /// Starts the receiver on a free port under `python` and waits until it listens.
    pub fn start(python: &std::path::Path) -> Collector {
        Self::start_with(python, &[])
    }

    /// [`Collector::start`] with more arguments (`--refuse 2 --refuse-with unavailable`).
    pub fn start_with(python: &std::path::Path, more: &[&str]) -> Collector {
        let (port, http_port) = (free_port(), free_port());
        let script = format!("{}/tests/python/otlp_collector.py", crate::server::ROOT);
        let mut process = Process::spawn(
            Command::new(python)
                .args([script.as_str(), &port.to_string()])
                .args(["--http", &http_port.to_string()])
                .args(more)
                .stdout(Stdio::piped()),
        )
        .expect("start the OTLP receiver");
        let stdout = process.0.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready, listening) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "listening" {
                    let _ = ready.send(());
                } else {
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_str(&line).unwrap());
                }
            }
        });
        listening
            .recv_timeout(Duration::from_secs(30))
            .expect("the OTLP receiver did not start");
        Collector {
            _process: process,
            port,
            http_port,
            lines,
        }
    }

    /// Its OTLP/gRPC address, for `traces.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`; the traces URL adds `/v1/traces`).
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The spans of `trace` received so far.
    pub fn trace(&self, trace: &str) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|s| s["trace_id"] == trace)
            .cloned()
            .collect()
    }

    /// Waits until `trace` has `n` spans, and returns them.
    pub fn wait_for(&self, trace: &str, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.trace(trace);
            if spans.len() >= n || Instant::now() > until {
                assert_eq!(spans.len(), n, "spans of {trace}: {spans:#?}");
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every span received so far.
    pub fn all(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.get("trace_id").is_some())
            .cloned()
            .collect()
    }

    /// The exports it refused so far, by transport (`--refuse`).
    pub fn refused(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l["refused"].as_str().map(str::to_string))
            .collect()
    }
}
