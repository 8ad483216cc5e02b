//! `pixguard bench` and `pixguard bench-compare` against the real server on loopback: every
//! answer the load generator counts must be one the server counted too.

#[path = "common/child.rs"]
mod child;
#[path = "common/cli.rs"]
mod cli;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/server.rs"]
mod server;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cli::{pixguard_command, pixguard_ok};
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

#[test]
fn open_loop_steps_write_the_table_the_json_and_the_html() {
    let server = Server::start(&[]);
    let out = scratch("open");
    let before = answered(&server);
    let run = pixguard_ok(&[
        "bench",
        "--url",
        &server.base,
        "--rate",
        "200,400",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--transactions",
        "300",
        // Three schedulers, each releasing a third of the rate to a third of the connections:
        // the counts below hold for their merged recorders.
        "--threads",
        "3",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("offered/s") && stdout.contains("p99.9 ms"),
        "{stdout}"
    );

    let r = report(&out);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, rate) in steps.iter().zip([200.0, 400.0]) {
        check_step(step);
        assert_eq!(step["offered_rps"].as_f64(), Some(rate));
        // Poisson arrivals over 2 s: the count is within a few standard deviations of the rate.
        let achieved = step["achieved_rps"].as_f64().unwrap();
        assert!(
            (achieved - rate).abs() < 0.25 * rate,
            "offered {rate}, achieved {achieved}"
        );
        assert!(
            step["scheduler_lateness_us"]["p50"].as_u64().is_some(),
            "{step}"
        );
    }
    let ticks = r["timeline"].as_array().unwrap();
    assert!(
        ticks.iter().any(|t| t["warmup"] == true) && ticks.iter().any(|t| t["warmup"] == false)
    );
    // Every success the bench counted, warm-up included, is a 200 the server counted.
    assert_eq!(answered(&server) - before, bench_ok(&r));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3, "three plots");
    assert!(
        html.contains("Latency percentiles against achieved throughput")
            && html.ends_with("</html>\n")
    );
}

/// An open loop keeps as many requests in flight as its rate needs, up to its connections: against
/// a server whose every batch takes 25 ms, 320/s needs ~8 at once. (A queue lock once held across
/// the call let each scheduler have one request in flight: two schedulers, ~80/s here.)
#[test]
fn open_loop_keeps_as_many_requests_in_flight_as_the_rate_needs() {
    let server = Server::start(&["--set", "engine.test_worker_delay_us=25000"]);
    let out = scratch("in-flight");
    pixguard_ok(&[
        "bench",
        "--url",
        &server.base,
        "--rate",
        "320",
        "--duration",
        "3",
        "--warmup",
        "0.5",
        "--connections",
        "32",
        "--threads",
        "2",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let step = &report(&out)["steps"][0];
    check_step(step);
    let achieved = step["achieved_rps"].as_f64().unwrap();
    assert!(
        achieved > 0.75 * 320.0,
        "offered 320/s, achieved {achieved}/s: requests are not overlapping"
    );
    // The server saw them overlap: its batches gathered several requests each.
    let rows = metric_now(&server, "pixguard_batch_size_rows_sum");
    let batches = metric_now(&server, "pixguard_batch_size_rows_count");
    assert!(rows / batches > 3.0, "{rows} rows in {batches} batches");
}

#[test]
fn closed_loop_over_grpc_and_oip_http_and_the_comparison() {
    let server = Server::start(&[]);
    let grpc = format!("http://{}", server.grpc_address());
    let (a, b) = (scratch("grpc"), scratch("oip-http"));
    let before = answered(&server);
    pixguard_ok(&[
        "bench",
        "--api",
        "oip-grpc",
        "--url",
        &grpc,
        "--mode",
        "closed",
        "--concurrency",
        "1,3",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--label",
        "grpc run",
        "--no-progress",
        "--out",
        a.to_str().unwrap(),
    ]);
    let r = report(&a);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["concurrency"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 3]
    );
    steps.iter().for_each(check_step);
    assert_eq!(answered(&server) - before, bench_ok(&r));

    pixguard_ok(&[
        "bench",
        "--api",
        "oip-http",
        "--url",
        &server.base,
        "--mode",
        "closed",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--label",
        "http run",
        "--no-progress",
        "--out",
        b.to_str().unwrap(),
    ]);
    report(&b)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(check_step);

    let cmp = scratch("compare");
    pixguard_ok(&[
        "bench-compare",
        a.join("report.json").to_str().unwrap(),
        b.join("report.json").to_str().unwrap(),
        // What is checked is the table, not the speed: a debug build on a loaded 2-core machine
        // can miss 10 ms at p99 (seen in CI), which would leave no ratio to print.
        "--p99-ms",
        "1000",
        "--out",
        cmp.to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(cmp.join("compare.md")).unwrap();
    assert!(
        md.contains("| grpc run |") && md.contains("| http run |") && md.contains("1.0×"),
        "{md}"
    );
    assert_eq!(
        std::fs::read_to_string(cmp.join("compare.html"))
            .unwrap()
            .matches("<svg")
            .count(),
        2
    );
}

#[test]
fn an_unreachable_target_is_reported_not_a_crash() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = scratch("refused");
    let run = pixguard_ok(&[
        "bench",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--rate",
        "100,200",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = report(&out);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "stepping stops once every request fails");
    assert_eq!(steps[0]["ok"], 0);
    assert!(
        steps[0]["errors"]["connect"].as_u64().unwrap() > 0,
        "{}",
        steps[0]
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("stopping after step 1"));
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    for (args, needle) in [
        (vec!["bench", "--rate", "10:1:1"], "end ≥ start"),
        (vec!["bench", "--rate", "fast"], "not a value"),
        (
            vec!["bench", "--url", "ftp://x:1"],
            "the scheme must be http:// or https://",
        ),
        (
            vec!["bench", "--header", "x-api-key"],
            "is not `Name: value`",
        ),
        (
            vec!["bench", "--api", "v1", "--oip-types", "metadata"],
            "applies to --api oip-http and oip-grpc",
        ),
        (
            vec!["bench", "--mode", "closed", "--concurrency", "0"],
            "positive",
        ),
        (
            vec!["bench", "--input", "/no/such/file.jsonl"],
            "/no/such/file.jsonl",
        ),
        (
            vec!["bench", "--api", "mlflow", "--rows-per-request", "4"],
            "does not apply to --api mlflow",
        ),
        (
            vec!["bench", "--rows-per-request", "0"],
            "--rows-per-request",
        ),
    ] {
        let run = pixguard(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
    let help = String::from_utf8_lossy(&pixguard(&["bench", "--help"]).stdout).to_string();
    for option in [
        "--api",
        "--url",
        "--model",
        "--mode",
        "--rate",
        "--arrivals",
        "--connections",
        "--concurrency",
        "--duration",
        "--warmup",
        "--stop-p99-ms",
        "--transactions",
        "--seed",
        "--input",
        "--timeout-ms",
        "--threads",
        "--label",
        "--out",
        "--no-progress",
        "--rows-per-request",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
}

#[test]
fn batched_requests_score_every_row_they_carry() {
    let server = Server::start(&[]);
    let rows_scored = |server: &Server| metric_now(server, "pixguard_rows_scored_total");
    let dir = scratch("batched");
    let (answers_before, rows_before) = (answered(&server), rows_scored(&server));
    pixguard_ok(&[
        "bench",
        "--url",
        &server.base,
        "--rows-per-request",
        "37",
        "--transactions",
        "500",
        "--mode",
        "closed",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--no-progress",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let r = report(&dir);
    r["steps"].as_array().unwrap().iter().for_each(check_step);
    let requests = answered(&server) - answers_before;
    assert_eq!(requests, bench_ok(&r));
    // Each answered request carried 37 transactions, all of them scored.
    assert_eq!(rows_scored(&server) - rows_before, 37.0 * requests);
}

/// `https://` with an API key, as the deploy workflow's smoke test runs it through Cloud
/// Endpoints: a TLS gateway (tests/python/tls_gateway.py, its own CA handed over as
/// SSL_CERT_FILE) that answers 401 without the key and forwards to the real server otherwise. With
/// the key the release gate passes and the key is not in the report; without it the gate fails
/// the run and says why.
#[test]
fn https_with_an_api_key_and_the_release_gate() {
    let Some(python) = registry::python("bench over TLS (cryptography)") else {
        return;
    };
    let server = Server::start(&[]);
    let dir = scratch("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let key = "k3y-for-the-smoke-test";
    let mut gateway = registry::Process::spawn(
        Command::new(&python)
            .arg(format!("{}/tests/python/tls_gateway.py", server::ROOT))
            .args(["--backend", server.base.trim_start_matches("http://")])
            .args(["--api-key", key])
            .arg("--ca-out")
            .arg(&ca)
            .stdout(Stdio::piped()),
    )
    .expect("start the TLS gateway");
    let mut line = String::new();
    std::io::BufReader::new(gateway.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the gateway's port");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening PORT");
    let url = format!("https://localhost:{port}");
    let bench = |out: &str, header: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pixguard"));
        command
            .current_dir(server::ROOT)
            .env("SSL_CERT_FILE", &ca)
            .args(["bench", "--url", &url, "--rate", "40", "--duration", "2"])
            .args(["--warmup", "0.5", "--transactions", "50", "--no-progress"])
            .args(["--fail-error-rate", "0", "--fail-p99-ms", "5000"])
            .arg("--out")
            .arg(dir.join(out));
        if let Some(h) = header {
            command.args(["--header", &h]);
        }
        command.output().expect("run pixguard bench")
    };

    let before = answered(&server);
    let ok = bench("with-key", Some(format!("x-api-key: {key}")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = report(&dir.join("with-key"));
    let step = &r["steps"][0];
    check_step(step);
    assert!(step["ok"].as_f64().unwrap() > 0.0, "{step}");
    assert_eq!(step["errors"], serde_json::json!({}), "{step}");
    // Every answer came from the server, through TLS and the gateway.
    assert!(answered(&server) - before >= bench_ok(&r), "{step}");
    let text = std::fs::read_to_string(dir.join("with-key/report.json")).unwrap();
    assert!(!text.contains(key), "the API key is in report.json");

    let refused = bench("without-key", None);
    assert!(!refused.status.success(), "the gate let 401s through");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("gate failed") && stderr.contains("401"),
        "{stderr}"
    );
    let r = report(&dir.join("without-key"));
    assert!(r["steps"][0]["errors"]["401"].as_f64().unwrap_or(0.0) > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--oip-types metadata` reads the model's metadata (HTTP and gRPC) before the run and sends the
/// fields as declared; against pixguard, whose metadata declares its own types, every request
/// is answered.
#[test]
fn oip_types_from_the_servers_metadata() {
    let server = Server::start(&[]);
    let grpc = format!("http://{}", server.grpc_address());
    for (api, url) in [("oip-http", server.base.clone()), ("oip-grpc", grpc)] {
        let dir = scratch(&format!("metadata-{api}"));
        let before = answered(&server);
        let run = pixguard(&[
            "bench",
            "--api",
            api,
            "--oip-types",
            "metadata",
            "--url",
            &url,
            "--rate",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0.3",
            "--no-progress",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{api}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let r = report(&dir);
        check_step(&r["steps"][0]);
        assert!(answered(&server) - before >= bench_ok(&r), "{api}");
    }
    // A model that is not there: refused before any load, saying why.
    let run = pixguard(&[
        "bench",
        "--api",
        "oip-http",
        "--oip-types",
        "metadata",
        "--model",
        "nope",
        "--url",
        &server.base,
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("metadata"));
}
