//! `--arrivals replay`: recorded traffic sent as it came. Transactions whose `accepted_at`
//! times make a burst and a lull, given out of order, are released in time order at their own
//! offsets, sped up by `--speed`: the counts per step and per second are the ones the times
//! say, and every answer is one the server counted.

use super::*;

/// The recording: 30 payments within 30 ms, then 30 at 40 ms apart from 1.22 s (to 2.38 s).
fn offsets() -> Vec<f64> {
    let burst = (0..30).map(|i| f64::from(i) * 0.001);
    let lull = (0..30).map(|j| 1.22 + f64::from(j) * 0.04);
    burst.chain(lull).collect()
}

/// Releases of the endless replay intended within the first `window` seconds at `speed`, as
/// `pixguard bench` must compute them: the recording again after its last offset plus the mean
/// gap.
fn releases_before(offsets: &[f64], speed: f64, window: f64) -> Vec<f64> {
    let last = offsets[offsets.len() - 1];
    let span = last + last / (offsets.len() - 1) as f64;
    (0..)
        .map(|k| (span * (k / offsets.len()) as f64 + offsets[k % offsets.len()]) / speed)
        .take_while(|t| *t < window)
        .collect()
}

#[test]
fn a_replay_sends_the_recording_as_it_came_at_each_speed() {
    let server = Server::start(&[]);
    let dir = scratch("replay");
    let synth = pixguard_ok(&["synth", "--rows", "60", "--seed", "11"]);
    let base = chrono::DateTime::parse_from_rfc3339("2026-12-04T19:00:00.000-03:00").unwrap();
    let times = offsets();
    let mut lines: Vec<(usize, String)> = String::from_utf8(synth.stdout)
        .unwrap()
        .lines()
        .zip(&times)
        .enumerate()
        .map(|(i, (line, offset))| {
            let mut row: Value = serde_json::from_str(line).unwrap();
            let at = base + chrono::Duration::microseconds((offset * 1e6).round() as i64);
            row["transaction"]["accepted_at"] = at.to_rfc3339().into();
            (i, row.to_string())
        })
        .collect();
    // Out of order in the file: the replay sorts by time.
    lines.reverse();
    // A decision log's shadow record (a copy of a request logged already) at 0.5 s: skipped, or
    // second 0 would hold 31.
    let mut copy: Value = serde_json::from_str(&lines[0].1).unwrap();
    copy["role"] = "challenger".into();
    copy["transaction"]["accepted_at"] = (base + chrono::Duration::milliseconds(500))
        .to_rfc3339()
        .into();
    let input = dir.join("recorded.jsonl");
    std::fs::write(
        &input,
        lines
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .chain([format!("{copy}\n")])
            .collect::<String>(),
    )
    .unwrap();

    let out = dir.join("out");
    let before = answered(&server);
    let run = pixguard_ok(&[
        "bench",
        "--url",
        &server.base,
        "--input",
        input.to_str().unwrap(),
        "--arrivals",
        "replay",
        "--speed",
        "1,2",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--connections",
        "16",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = report(&out);
    assert_eq!(r["arrivals"], "replay");
    // The table names each step by its speed and the mean rate it makes (60 in 2.42 s: 25/s).
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(
        table.contains("1× 25") && table.contains("2× 50"),
        "{table}"
    );
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let span = 2.38 + 2.38 / 59.0;
    for (step, speed) in steps.iter().zip([1.0, 2.0]) {
        assert_eq!(step["speed"].as_f64(), Some(speed));
        let offered = step["offered_rps"].as_f64().unwrap();
        assert!(
            (offered - 60.0 / span * speed).abs() < 1e-6,
            "offered {offered} at {speed}×"
        );
        let sent = step["ok"].as_u64().unwrap()
            + step["errors"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>();
        let expected = releases_before(&times, speed, 2.0).len() as u64;
        assert_eq!(sent, expected, "{speed}×: {step}");
        check_step(step);
    }
    // At 1×, the first step's seconds: the burst in second 0, the lull's first 20 in second 1.
    let first_step: Vec<u64> = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == 0)
        .map(|t| t["ok"].as_u64().unwrap())
        .collect();
    let by_second = |s: f64| {
        releases_before(&times, 1.0, 2.0)
            .iter()
            .filter(|t| t.floor() == s)
            .count() as u64
    };
    assert_eq!(first_step, [by_second(0.0), by_second(1.0)]);
    assert_eq!(first_step, [30, 20]);
    assert_eq!(answered(&server) - before, bench_ok(&r));

    // The same replay from two generators (`--part`): each takes every other release, and the
    // merge sends exactly what one generator did.
    let at = (std::time::SystemTime::now() + std::time::Duration::from_secs(3))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let parts: Vec<_> = (0..2)
        .map(|i| {
            spawned(
                cli::pixguard_command()
                    .args(["bench", "--url", &server.base, "--input"])
                    .arg(&input)
                    .args(["--arrivals", "replay", "--speed", "1,2", "--duration", "2"])
                    .args(["--warmup", "0", "--connections", "16", "--no-progress"])
                    .args([
                        "--part",
                        &format!("{i}/2"),
                        "--start-at",
                        &format!("{at:.3}"),
                    ])
                    .arg("--out")
                    .arg(dir.join(format!("parts/part-{i}"))),
            )
        })
        .collect();
    parts.into_iter().for_each(finished);
    let merged = dir.join("merged");
    pixguard_ok(&[
        "bench-merge",
        dir.join("parts").to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    let m = report(&merged);
    for (whole, one) in m["steps"].as_array().unwrap().iter().zip(steps) {
        assert_eq!(whole["ok"], one["ok"], "{whole}");
        assert_eq!(whole["speed"], one["speed"]);
        let (a, b) = (
            whole["offered_rps"].as_f64().unwrap(),
            one["offered_rps"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{a} ≠ {b}");
    }

    // Every transaction at one instant is no recording to replay.
    let flat = dir.join("flat.jsonl");
    let same: String = lines
        .iter()
        .take(3)
        .map(|(_, l)| {
            let mut row: Value = serde_json::from_str(l).unwrap();
            row["transaction"]["accepted_at"] = base.to_rfc3339().into();
            format!("{row}\n")
        })
        .collect();
    std::fs::write(&flat, same).unwrap();
    let run = pixguard(&[
        "bench",
        "--url",
        &server.base,
        "--input",
        flat.to_str().unwrap(),
        "--arrivals",
        "replay",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("same accepted_at"),
        "{stderr}"
    );
}
