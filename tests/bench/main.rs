//! `pixguard bench` and `pixguard bench-compare` against the real server on loopback: every
//! answer the load generator counts must be one the server counted too. The open loop
//! (`open_loop`), the closed loop over every API (`apis`), what is refused (`refusals`), TLS
//! with the release gate (`https`), a run split over generators and merged (`parts`), and
//! recorded traffic replayed at its own times (`replay`).

#[path = "../common/child.rs"]
mod child;
#[path = "../common/cli.rs"]
mod cli;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../common/server.rs"]
mod server;

mod apis;
mod https;
mod open_loop;
mod parts;
mod refusals;
mod replay;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cli::{pixguard_command, pixguard_ok, succeeded};
use serde_json::Value;
use server::{Server, answered_ok, metric_or_zero};

/// `pixguard <args>`, whether it succeeds or not.
fn pixguard(args: &[&str]) -> Output {
    pixguard_command()
        .args(args)
        .output()
        .expect("run pixguard")
}

fn scratch(name: &str) -> PathBuf {
    cli::scratch("bench", name)
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
        .expect("report.json is JSON")
}

/// Starts a `pixguard` run in the background (a part of a split run), its output kept for
/// [`finished`].
fn spawned(command: &mut Command) -> std::process::Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a part")
}

/// Waits for a [`spawned`] run; panics with its stderr unless it succeeded.
fn finished(child: std::process::Child) {
    let out = child.wait_with_output().expect("part runs");
    assert!(
        out.status.success(),
        "a part failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A metric's value in the server's /metrics now (0 while absent).
fn metric_now(server: &Server, name: &str) -> f64 {
    let text = reqwest::blocking::get(server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    metric_or_zero(&text, name)
}

/// Scoring requests the server answered successfully so far, every API.
fn answered(server: &Server) -> f64 {
    let text = reqwest::blocking::get(server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    answered_ok(&text)
}

/// Successful answers the bench saw over the whole run, warm-up included.
fn bench_ok(report: &Value) -> f64 {
    report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|t| t["ok"].as_f64().unwrap())
        .sum()
}

/// A closed-loop step's `server` figures (the server's statistics read as its window opened and
/// after its last answer) against what the client counted: one row a request, the server's time
/// per request at least its queue + compute, and about the requests the client had answered in
/// the window. Rows are counted as a batch ends and requests as their answer goes, so the
/// requests in flight at a read (at most the step's connections) can fall on either side of it;
/// and the first read is taken by a timer beside the step's own, so the requests compared are
/// within a quarter of each other.
fn check_server_side(step: &Value) {
    let server = &step["server"];
    let n = |k: &str| server[k].as_u64().unwrap_or_else(|| panic!("{k}: {step}"));
    let us = |k: &str| server[k].as_f64().unwrap_or_else(|| panic!("{k}: {step}"));
    let in_flight = step["concurrency"].as_u64().unwrap();
    assert!(n("rows").abs_diff(n("requests")) <= 2 * in_flight, "{step}");
    assert!(n("batches") >= 1 && n("batches") <= n("rows"), "{step}");
    assert!(us("queue_us") > 0.0 && us("compute_us") > 0.0, "{step}");
    assert!(
        us("request_us") >= us("queue_us") + us("compute_us"),
        "{step}"
    );
    let client = step["ok"].as_u64().unwrap() as f64;
    let counted = n("requests") as f64;
    assert!(
        (counted - client).abs() <= 0.25 * client + 3.0,
        "the server counted {counted}, the client {client}: {step}"
    );
}

fn check_step(step: &Value) {
    let l = &step["latency_us"];
    let p = |k: &str| l[k].as_u64().unwrap();
    assert!(step["ok"].as_u64().unwrap() > 0, "{step}");
    assert!(step["errors"].as_object().unwrap().is_empty(), "{step}");
    assert!(
        p("p50") > 0 && p("p50") <= p("p90") && p("p90") <= p("p99"),
        "{step}"
    );
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"), "{step}");
}
