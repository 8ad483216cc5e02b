//! A run split over generators (`--part I/N`, one `--start-at`), merged by `pixguard
//! bench-merge`: the parts start together, and the merged report counts every answer the
//! server gave; its percentiles lie between the parts'. Parts written to gs:// (a Kubernetes
//! Job's pods) merge from there.

use std::time::{Duration, SystemTime};

use super::*;

const RATE: f64 = 400.0;
const DURATION_S: f64 = 2.0;

/// Starts part `index` of `count` of one constant-rate step, beginning at `start_at`.
fn start_part(
    server: &Server,
    index: u32,
    count: u32,
    start_at: &str,
    out: &str,
    gcs_key: Option<&Path>,
) -> std::process::Child {
    let mut command = cli::pixguard_command();
    command.args([
        "bench",
        "--url",
        &server.base,
        "--rate",
        &RATE.to_string(),
        "--arrivals",
        "constant",
        "--connections",
        "8",
        "--duration",
        &DURATION_S.to_string(),
        "--warmup",
        "0.5",
        "--transactions",
        "300",
        "--no-progress",
        "--part",
        &format!("{index}/{count}"),
        "--start-at",
        start_at,
        "--out",
        out,
    ]);
    if let Some(key) = gcs_key {
        command.env("GOOGLE_SERVICE_ACCOUNT", key);
    }
    spawned(&mut command)
}

/// A start time far enough ahead for every part's process to be waiting for it, to the
/// millisecond (as the reports write theirs).
fn start_at() -> (SystemTime, String) {
    let unix = (SystemTime::now() + Duration::from_secs(3))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (
        SystemTime::UNIX_EPOCH + Duration::from_millis(unix),
        format!("{}.{:03}", unix / 1000, unix % 1000),
    )
}

fn started_at(report: &Value) -> SystemTime {
    let text = report["started_at"].as_str().expect("started_at");
    let at = chrono::DateTime::parse_from_rfc3339(text).expect("RFC 3339");
    SystemTime::UNIX_EPOCH + Duration::from_nanos(at.timestamp_nanos_opt().unwrap() as u64)
}

/// The merged report against its parts and the server's own count.
fn check_merged(merged: &Value, parts: &[Value], answered_by_server: f64) {
    assert_eq!(merged["generators"], 2, "{merged}");
    assert!(merged.get("part").is_none());
    let step = &merged["steps"][0];
    check_step(step);
    assert_eq!(step["offered_rps"].as_f64(), Some(RATE));
    let field = |s: &Value, k: &str| s[k].as_u64().unwrap();
    let of_parts = |k: &str| -> u64 { parts.iter().map(|p| field(&p["steps"][0], k)).sum() };
    assert_eq!(field(step, "ok"), of_parts("ok"));
    // Constant arrivals: the window holds RATE × DURATION_S releases, give or take one a part.
    let expected = RATE * DURATION_S;
    assert!(
        (field(step, "ok") as f64 - expected).abs() <= 2.0,
        "{} answers in the window, {expected} released",
        field(step, "ok")
    );
    // A quantile of the whole lies between the parts' quantiles; the largest is the largest.
    for q in ["p50", "p99", "max"] {
        let merged_q = step["latency_us"][q].as_u64().unwrap();
        let each: Vec<u64> = parts
            .iter()
            .map(|p| p["steps"][0]["latency_us"][q].as_u64().unwrap())
            .collect();
        let (lo, hi) = (*each.iter().min().unwrap(), *each.iter().max().unwrap());
        assert!(
            lo <= merged_q && merged_q <= hi,
            "{q}: {merged_q} not in {each:?}"
        );
    }
    assert_eq!(
        step["latency_us"]["max"].as_u64(),
        parts
            .iter()
            .map(|p| p["steps"][0]["latency_us"]["max"].as_u64().unwrap())
            .max()
    );
    // Every success the parts counted, warm-up included, is one the server counted.
    assert_eq!(bench_ok(merged), answered_by_server);
    assert_eq!(bench_ok(merged), parts.iter().map(bench_ok).sum::<f64>());
}

#[test]
fn a_run_split_over_generators_starts_together_and_merges_into_the_whole_load() {
    let server = Server::start(&[]);
    let root = scratch("parts");
    let before = answered(&server);
    let (at, at_text) = start_at();
    let dirs: Vec<PathBuf> = (0..2).map(|i| root.join(format!("part-{i}"))).collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| start_part(&server, i as u32, 2, &at_text, d.to_str().unwrap(), None))
        .collect();
    children.into_iter().for_each(finished);
    let parts: Vec<Value> = dirs.iter().map(|d| report(d)).collect();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["part"]["index"], i, "{p}");
        assert_eq!(p["part"]["count"], 2);
        assert_eq!(p["steps"][0]["offered_rps"].as_f64(), Some(RATE / 2.0));
        assert!(p["steps"][0]["latency_hdr"].is_string());
        assert!(p["timeline"][0]["latency_hdr"].is_string());
        // Both waited for the start time, and began within a few milliseconds of it.
        let began = started_at(p);
        let late = began.duration_since(at).expect("not before --start-at");
        assert!(
            late < Duration::from_millis(250),
            "part {i} began {late:?} late"
        );
    }
    // Each part says when it began the step, from the common start: together.
    let began: Vec<u64> = parts
        .iter()
        .map(|p| p["steps"][0]["started_ms"].as_u64().expect("started_ms"))
        .collect();
    assert!(began.iter().all(|ms| *ms < 250), "{began:?}");

    let merged_dir = root.join("merged");
    let run = pixguard_ok(&[
        "bench-merge",
        root.to_str().unwrap(),
        "--out",
        merged_dir.to_str().unwrap(),
        "--fail-error-rate",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("merged 2 parts"), "{stdout}");
    assert!(stdout.contains(&format!("{RATE:.0}")), "{stdout}");
    let merged = report(&merged_dir);
    check_merged(&merged, &parts, answered(&server) - before);
    // Merged again into the same place: the earlier merge, now in the folder, is left out.
    let again = pixguard(&[
        "bench-merge",
        root.to_str().unwrap(),
        "--out",
        merged_dir.to_str().unwrap(),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("an earlier merge, not a part"));
    assert_eq!(report(&merged_dir)["steps"], merged["steps"]);
    assert!(
        std::fs::read_to_string(merged_dir.join("report.html"))
            .unwrap()
            .contains("<svg")
    );

    // One part alone is not the run: refused, naming the part that is missing.
    let one = pixguard(&[
        "bench-merge",
        dirs[0].join("report.json").to_str().unwrap(),
        "--out",
        root.join("alone").to_str().unwrap(),
    ]);
    assert!(!one.status.success());
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert!(stderr.contains("part 1/2 missing"), "{stderr}");
}

#[test]
fn a_start_time_already_past_is_refused() {
    let past = SystemTime::now() - Duration::from_secs(60);
    let unix = past
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = scratch("past");
    let run = pixguard(&[
        "bench",
        "--url",
        "http://127.0.0.1:1",
        "--rate",
        "10",
        "--part",
        "0/2",
        "--start-at",
        &unix.to_string(),
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--start-at passed"), "{stderr}");
    assert!(!out.join("report.json").exists());
}

#[test]
fn parts_written_to_gcs_merge_from_there() {
    let Some(python) = registry::python("the gs:// bench parts test (fake-gcs-server)") else {
        return;
    };
    let dir = scratch("parts-gcs");
    let gcs = registry::GcsServer::start(&python, &dir, &["pix-load"]);
    let server = Server::start(&[]);
    let before = answered(&server);
    let (_, at_text) = start_at();
    let children: Vec<_> = (0..2)
        .map(|i| {
            let out = format!("gs://pix-load/run-1/part-{i}");
            start_part(&server, i, 2, &at_text, &out, Some(&gcs.key_file))
        })
        .collect();
    children.into_iter().for_each(finished);
    let mut names = gcs.list("pix-load", "run-1/");
    names.sort();
    assert_eq!(
        names,
        [
            "run-1/part-0/report.html",
            "run-1/part-0/report.json",
            "run-1/part-1/report.html",
            "run-1/part-1/report.json"
        ]
    );
    let parts: Vec<Value> = (0..2)
        .map(|i| {
            serde_json::from_slice(&gcs.get("pix-load", &format!("run-1/part-{i}/report.json")))
                .unwrap()
        })
        .collect();
    let merged_dir = dir.join("merged");
    succeeded(
        cli::pixguard_command()
            .args(["bench-merge", "gs://pix-load/run-1", "--out"])
            .arg(&merged_dir)
            .env("GOOGLE_SERVICE_ACCOUNT", &gcs.key_file),
    );
    check_merged(&report(&merged_dir), &parts, answered(&server) - before);
    // bench-compare reads reports from the bucket too.
    let compared = dir.join("compared");
    succeeded(
        cli::pixguard_command()
            .args([
                "bench-compare",
                "gs://pix-load/run-1/part-0/report.json",
                "gs://pix-load/run-1/part-1/report.json",
                "--out",
            ])
            .arg(&compared)
            .env("GOOGLE_SERVICE_ACCOUNT", &gcs.key_file),
    );
    let md = std::fs::read_to_string(compared.join("compare.md")).unwrap();
    assert_eq!(
        md.lines().count(),
        4,
        "a header, its rule and two runs: {md}"
    );
}

#[test]
fn a_closed_loop_split_over_generators_shares_out_its_connections() {
    // Three connections over two parts: 2 and 1; merged, the three of the run, and every answer
    // the server gave.
    let server = Server::start(&[]);
    let root = scratch("parts-closed");
    let before = answered(&server);
    let (_, at) = start_at();
    let children: Vec<_> = (0..2)
        .map(|i| {
            spawned(
                cli::pixguard_command()
                    .args(["bench", "--url", &server.base, "--mode", "closed"])
                    .args(["--concurrency", "3", "--duration", "1", "--warmup", "0.2"])
                    .args([
                        "--no-progress",
                        "--part",
                        &format!("{i}/2"),
                        "--start-at",
                        &at,
                    ])
                    .arg("--out")
                    .arg(root.join(format!("part-{i}"))),
            )
        })
        .collect();
    children.into_iter().for_each(finished);
    let shares: Vec<u64> = (0..2)
        .map(|i| {
            report(&root.join(format!("part-{i}")))["steps"][0]["concurrency"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(shares, [2, 1]);
    let merged_dir = root.join("merged");
    pixguard_ok(&[
        "bench-merge",
        root.to_str().unwrap(),
        "--out",
        merged_dir.to_str().unwrap(),
    ]);
    let merged = report(&merged_dir);
    let step = &merged["steps"][0];
    check_step(step);
    assert_eq!(step["concurrency"], 3);
    assert!(
        step["offered_rps"].is_null(),
        "a closed loop offers no rate"
    );
    assert_eq!(bench_ok(&merged), answered(&server) - before);
}
