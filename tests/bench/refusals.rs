//! What the bench refuses or reports rather than crashing on: an unreachable target, bad arguments.

use super::*;

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
        (
            vec!["bench", "--arrivals", "replay", "--rate", "100"],
            "give --speed, not --rate",
        ),
        (
            vec!["bench", "--speed", "2"],
            "--speed is for --arrivals replay",
        ),
        (vec!["bench", "--part", "2/2"], "is not I/N with 0 ≤ I < N"),
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
