//! The Open Inference Protocol with the clients Triton users have, against the real server:
//! tritonclient over HTTP and gRPC (tests/python/oip_tritonclient.py; a Python with tritonclient:
//! `.ci/run` builds one and sets PIXGUARD_PYTHON), and perf_analyzer (`.ci/run` puts it in
//! `.perf-analyzer/`). Elsewhere each test says why it skips.

#[path = "common/child.rs"]
mod child;
#[path = "common/server.rs"]
mod server;
#[path = "common/tools.rs"]
mod tools;

use std::path::PathBuf;
use std::process::Command;

use server::Server;

#[test]
fn tritonclient_http_and_grpc_get_the_same_scores_as_pixguard_score() {
    let Some(python) = tools::python("the tritonclient test") else {
        return;
    };
    let server = Server::start(&[]);
    let url = server.base.trim_start_matches("http://").to_string();
    let status = Command::new(python)
        .arg(format!("{}/tests/python/oip_tritonclient.py", server::ROOT))
        .args([
            "--url",
            &url,
            "--grpc-url",
            &server.grpc_address(),
            "--pixguard",
            env!("CARGO_BIN_EXE_pixguard"),
        ])
        .args(["--model", &format!("{}/models/pix-fraud", server::ROOT)])
        .status()
        .expect("run the tritonclient script");
    assert!(
        status.success(),
        "tritonclient test failed; server log: {:?}",
        server.log.lock().unwrap()
    );
}

/// perf_analyzer, Triton's load generator: `.perf-analyzer/perf_analyzer` (`.ci/run` takes it out
/// of the tritonclient 2.50.0 wheel, with the libcudart it loads in `lib/`), or
/// PIXGUARD_PERF_ANALYZER.
fn perf_analyzer() -> Option<PathBuf> {
    tools::installed(
        "the perf_analyzer test",
        "PIXGUARD_PERF_ANALYZER",
        ".perf-analyzer/perf_analyzer",
        "see .ci/run",
    )
}

/// A figure of perf_analyzer's report: the number after `label` in its `section` ("Client:",
/// "Server:").
fn reported(report: &str, section: &str, label: &str) -> u64 {
    let from = report
        .find(section)
        .unwrap_or_else(|| panic!("no {section}:\n{report}"));
    let line = report[from..]
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} under {section}:\n{report}"));
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{label} {line}"))
}

/// perf_analyzer against a version named as MLflow's registry names them (an integer: perf_analyzer
/// reads versions as integers): over HTTP and gRPC it reads the server's statistics around each
/// measurement window and prints the server's split of the latency, and the requests the server
/// counted are the ones it sent (one in flight: at most one straddles each end of the window).
#[test]
fn perf_analyzer_reads_the_server_side_split_of_a_registry_version() {
    let Some(binary) = perf_analyzer() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pixguard-perf-analyzer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let package =
        server::edited_package(&dir.join("model"), |config| config["version"] = "7".into());

    // The feature tensors of 200 transactions, one request each, in perf_analyzer's input format.
    let spec = pixguard::model::ModelPackage::load(&package)
        .unwrap()
        .config
        .features;
    let extractor = pixguard::features::FeatureExtractor::new(spec).unwrap();
    let txs: Vec<pixguard::transaction::Transaction> = server::transactions(200, 17)
        .into_iter()
        .map(|tx| serde_json::from_value(tx).unwrap())
        .collect();
    let batch = extractor.extract(&txs);
    let steps: Vec<serde_json::Value> = (0..batch.rows)
        .map(|r| {
            let numeric = &batch.numeric[r * batch.n_numeric..(r + 1) * batch.n_numeric];
            let ids = &batch.categorical[r * batch.n_categorical..(r + 1) * batch.n_categorical];
            serde_json::json!({ "features": numeric, "categories": ids })
        })
        .collect();
    let data = dir.join("features.json");
    std::fs::write(&data, serde_json::json!({ "data": steps }).to_string()).unwrap();

    let server = Server::start(&["--model", package.to_str().unwrap()]);
    let http = server.base.trim_start_matches("http://").to_string();
    let libs = binary.parent().unwrap().join("lib");
    for (protocol, address) in [("http", http), ("grpc", server.grpc_address())] {
        let out = Command::new(&binary)
            .env("LD_LIBRARY_PATH", &libs)
            .args(["-m", "pix-fraud", "-i", protocol, "-u", &address])
            .arg("--input-data")
            .arg(&data)
            .args(["--concurrency-range", "1", "--measurement-interval", "1000"])
            // Two cores shared with the server: no stability to wait for, three windows.
            .args(["--stability-percentage", "1000"])
            .output()
            .expect("run perf_analyzer");
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{protocol}: {report}");
        let sent = reported(&report, "Client:", "Request count:");
        let counted = reported(&report, "Server:", "Successful request count:");
        assert!(sent > 0, "{protocol}: {report}");
        assert!(sent.abs_diff(counted) <= 2, "{protocol}: {report}");
        assert!(
            report.contains("+ queue ") && report.contains("+ compute infer "),
            "{protocol}: no server-side split in {report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
