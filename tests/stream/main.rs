//! `pixguard stream` against a real Kafka-protocol broker (tansu): at least once through SIGKILLs,
//! every unscorable message on the dead-letter topic with its reason, and a graceful SIGTERM that
//! leaves nothing to score twice (`delivery`); backpressure, a consumer group's hand-over and a
//! broker outage (`flow`); a traced message's trace carried onto its score (`traces`); and
//! `serve`'s decision log, every answered decision a record on a topic (`decision_log`).

#[path = "../common/child.rs"]
mod child;
#[path = "../common/kafka.rs"]
mod kafka;
#[path = "../common/otlp.rs"]
mod otlp;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../common/server.rs"]
mod server;

mod decision_log;
mod delivery;
mod flow;
mod traces;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka::{Broker, broker_binary};
use serde_json::Value;
use server::{ROOT, Server};

const PIXGUARD: &str = env!("CARGO_BIN_EXE_pixguard");
const BODY_LIMIT: usize = 4096;

struct Fixture {
    python: PathBuf,
    broker: Broker,
    tmp: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Option<Fixture> {
        let binary = broker_binary()?;
        let python = registry::python("the stream test")?;
        let tmp = std::env::temp_dir().join(format!("pixguard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        Some(Fixture {
            python,
            broker: Broker::start(&binary),
            tmp,
        })
    }

    fn topics(&self, names: &[&str]) {
        let status = Command::new(&self.python)
            .arg(Path::new(ROOT).join("tests/python/kafka_topics.py"))
            .args([
                "create",
                "--brokers",
                &self.broker.address,
                "--partitions",
                "3",
            ])
            .args(names)
            .status()
            .expect("create topics");
        assert!(status.success());
    }

    fn produce(&self, file: &Path, topic: &str) {
        let out = Command::new(PIXGUARD)
            .args([
                "produce",
                "--brokers",
                &self.broker.address,
                "--topic",
                topic,
            ])
            .arg(file)
            .output()
            .expect("pixguard produce");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every record of `topic`.
    fn dump(&self, topic: &str, expect: usize) -> Vec<Value> {
        let out = Command::new(&self.python)
            .arg(Path::new(ROOT).join("tests/python/kafka_topics.py"))
            .args(["dump", "--brokers", &self.broker.address, "--expect"])
            .arg(expect.to_string())
            .args(["--idle-s", "8", topic])
            .stderr(Stdio::inherit())
            .output()
            .expect("dump");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("dump line"))
            .collect()
    }

    /// `pixguard stream` on these topics.
    fn stream(&self, group: &str, topics: (&str, &str, &str)) -> Server {
        self.stream_with(group, topics, &[])
    }

    /// [`Fixture::stream`] with more `key=value` settings.
    fn stream_with(
        &self,
        group: &str,
        topics: (&str, &str, &str),
        extra: &[(&str, &str)],
    ) -> Server {
        let set = |k: &str, v: &str| ["--set".to_string(), format!("{k}={v}")];
        let mut args: Vec<String> = vec![
            "stream".into(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--grpc-port".into(),
            "0".into(),
        ];
        for (k, v) in [
            ("stream.brokers", self.broker.address.as_str()),
            ("stream.input_topic", topics.0),
            ("stream.output_topic", topics.1),
            ("stream.dead_letter_topic", topics.2),
            ("stream.group_id", group),
            // The broker's group join takes about half of this (the default 45 s is slow to test).
            ("stream.librdkafka.session_timeout_ms", "6000"),
            ("server.body_limit_bytes", &BODY_LIMIT.to_string()),
            ("model.poll_interval_s", "0"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            args.extend(set(k, v));
        }
        Server::spawn(Command::new(PIXGUARD).args(&args))
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    reqwest::blocking::get(server.url("/metrics"))
        .ok()
        .and_then(|r| r.text().ok())
        .map_or(-1.0, |t| server::metric_or_zero(&t, name))
}

/// Waits until `server` has consumed `at_least` messages, has nothing in flight, and has taken
/// nothing more for a second; answers that last scrape of /metrics. Nothing in flight alone is
/// not done: between two fetches of a backlog nothing is in flight either (a clean-clone CI run
/// compared counters mid-stream after such a moment: 512 fetch ages for 1,105 messages).
fn wait_idle(server: &Server, at_least: f64, within: Duration) -> String {
    let until = Instant::now() + within;
    let mut steady = (-1.0, Instant::now());
    loop {
        let text = reqwest::blocking::get(server.url("/metrics"))
            .ok()
            .and_then(|r| r.text().ok())
            .unwrap_or_default();
        let consumed = server::metric_or_zero(&text, "pixguard_stream_consumed_total");
        let in_flight = server::metric_or_zero(&text, "pixguard_stream_in_flight_messages");
        if consumed != steady.0 || in_flight != 0.0 {
            steady = (consumed, Instant::now());
        } else if consumed >= at_least && steady.1.elapsed() >= Duration::from_secs(1) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "stream not done: consumed {consumed}, in flight {in_flight}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `count` synth transactions (JSONL of bare transactions) and `pixguard score`'s scores of them.
fn traffic(tmp: &Path, count: usize, seed: u64) -> (PathBuf, HashMap<String, f64>) {
    let synth = tmp.join(format!("synth-{seed}.jsonl"));
    let status = Command::new(PIXGUARD)
        .args([
            "synth",
            "--rows",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "-o",
        ])
        .arg(&synth)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let scores = scores_of(&synth, "models/pix-fraud");
    (synth, scores)
}

/// `pixguard score`'s scores of the transactions in `input` with the package at `model`, by
/// end_to_end_id.
fn scores_of(input: &Path, model: &str) -> HashMap<String, f64> {
    let out = Command::new(PIXGUARD)
        .args(["score", "--model", model])
        .arg(input)
        .current_dir(ROOT)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["end_to_end_id"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect()
}
