//! The `pixguard` binary end to end: synth → features, errors on bad input, help text.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn pixguard(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pixguard");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("pixguard runs")
}

#[test]
fn synth_output_feeds_features() {
    let args = [
        "synth",
        "--rows",
        "200",
        "--seed",
        "9",
        "--fraud-rate",
        "0.1",
    ];
    let synth = pixguard(&args, None);
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    assert_eq!(
        synth.stdout,
        pixguard(&args, None).stdout,
        "same seed, same bytes"
    );

    let features = pixguard(&["features"], Some(&synth.stdout));
    assert!(
        features.status.success(),
        "{}",
        String::from_utf8_lossy(&features.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(features.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    assert_eq!(lines[0]["numeric"].as_object().unwrap().len(), 27);
    assert_eq!(lines[0]["categorical"].as_object().unwrap().len(), 10);
    assert!(lines.iter().any(|l| l["label"] == 1));

    let csv = pixguard(
        &["features", "--format", "csv", "--unscaled"],
        Some(&synth.stdout),
    );
    let text = String::from_utf8(csv.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("end_to_end_id,amount_log,") && header.ends_with(",label"));
    assert_eq!(text.lines().count(), 201);
}

#[test]
fn fitted_spec_standardises_its_training_rows() {
    let dir = std::env::temp_dir().join(format!("pixguard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.json");
    let synth = pixguard(&["synth", "--rows", "2000", "--seed", "4"], None);
    let fit = pixguard(
        &["features", "--fit", spec.to_str().unwrap()],
        Some(&synth.stdout),
    );
    assert!(
        fit.status.success(),
        "{}",
        String::from_utf8_lossy(&fit.stderr)
    );
    let rows = pixguard(
        &[
            "features",
            "--format",
            "csv",
            "--spec",
            spec.to_str().unwrap(),
        ],
        Some(&synth.stdout),
    );
    let text = String::from_utf8(rows.stdout).unwrap();
    // amount_log is never missing, so its standardised training values have mean 0 and std 1.
    let xs: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    assert!(
        mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
        "mean {mean} var {var}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_names_the_line_and_field() {
    let good = pixguard(&["synth", "--rows", "2"], None).stdout;
    let mut input = good.clone();
    input.extend_from_slice(
        b"{\"transaction\": {\"amount_cents\": 5}, \"label\": 0, \"fraud_type\": \"none\"}\n",
    );
    let out = pixguard(&["features"], Some(&input));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3: transaction.end_to_end_id: missing field"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is printed when a row is refused"
    );

    let out = pixguard(&["synth", "--fraud-rate", "1.5"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fraud rate must be in [0, 1)"));
}

/// `score`, `features` and `features --fit` refuse to write their input file (by any name):
/// `score tx.jsonl -o tx.jsonl` emptied it and answered nothing, with exit 0.
#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = std::env::temp_dir().join(format!("pixguard-cli-in-place-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("tx.jsonl");
    let rows = pixguard(&["synth", "--rows", "20", "--seed", "4"], None).stdout;
    std::fs::write(&input, &rows).unwrap();
    let same = dir.join(".").join("tx.jsonl");
    let (input_s, same_s) = (input.to_str().unwrap(), same.to_str().unwrap());
    for (args, says) in [
        (vec!["score", input_s, "-o", same_s], "the output file"),
        (vec!["features", input_s, "-o", input_s], "the output file"),
        (vec!["features", input_s, "--fit", same_s], "the --fit file"),
    ] {
        let out = pixguard(&args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(
            err.contains(says) && err.contains("would destroy the input"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read(&input).unwrap(), rows, "{args:?}");
    }
    // Another file, and stdout, are written as before.
    let scores = dir.join("scores.jsonl");
    let out = pixguard(&["score", input_s, "-o", scores.to_str().unwrap()], None);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&scores).unwrap().lines().count(),
        20
    );
    let out = pixguard(&["score", input_s, "-o", "-"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 20);
    std::fs::remove_dir_all(&dir).ok();
}

/// A file saved by Windows tools (Notepad, PowerShell 5's `-Encoding utf8`) starts with a byte
/// order mark: its first line was refused as `invalid JSON … line 1 column 1`.
#[test]
fn a_byte_order_mark_before_the_first_line_is_skipped() {
    let dir = std::env::temp_dir().join(format!("pixguard-cli-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rows = pixguard(&["synth", "--rows", "5", "--seed", "8"], None).stdout;
    let plain = dir.join("plain.jsonl");
    let marked = dir.join("marked.jsonl");
    std::fs::write(&plain, &rows).unwrap();
    std::fs::write(&marked, [b"\xEF\xBB\xBF".as_slice(), &rows].concat()).unwrap();
    let score = |path: &std::path::Path, stdin: Option<&[u8]>| {
        let arg = if stdin.is_some() {
            "-"
        } else {
            path.to_str().unwrap()
        };
        let out = pixguard(&["score", arg], stdin);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let expected = score(&plain, None);
    assert_eq!(String::from_utf8_lossy(&expected).lines().count(), 5);
    assert_eq!(score(&marked, None), expected, "a file");
    let marked_bytes = std::fs::read(&marked).unwrap();
    assert_eq!(score(&marked, Some(&marked_bytes)), expected, "stdin");
    let features =
        |path: &std::path::Path| pixguard(&["features", path.to_str().unwrap()], None).stdout;
    assert_eq!(features(&marked), features(&plain));
    // pixguard batch reads JSONL on its own path.
    let batch = |path: &std::path::Path, out: &str| {
        let out = dir.join(out);
        let run = pixguard(
            &[
                "batch",
                "-i",
                path.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(
            (&summary["scored"], &summary["rejected"]),
            (&5.into(), &0.into())
        );
        std::fs::read(out).unwrap()
    };
    assert_eq!(batch(&marked, "m.jsonl"), batch(&plain, "p.jsonl"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_documents_the_commands_and_options() {
    let help = String::from_utf8(pixguard(&["--help"], None).stdout).unwrap();
    assert!(help.contains("synth") && help.contains("features"));
    let help = String::from_utf8(pixguard(&["synth", "--help"], None).stdout).unwrap();
    for option in [
        "--seed",
        "--rows",
        "--fraud-rate",
        "--format",
        "--start",
        "--days",
        "--output",
    ] {
        assert!(help.contains(option), "synth --help lacks {option}");
    }
    let help = String::from_utf8(pixguard(&["features", "--help"], None).stdout).unwrap();
    for option in ["--spec", "--format", "--unscaled", "--fit", "--min-count"] {
        assert!(help.contains(option), "features --help lacks {option}");
    }
}

#[test]
fn serve_refuses_cuda_without_the_cuda_build_and_names_unknown_config_keys() {
    let out = pixguard(&["serve", "--device", "cuda", "--port", "0"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without the `cuda` feature"), "{err}");

    let out = pixguard(
        &["serve", "--set", "engine.batch=4", "--print-config"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config engine.batch: unknown field `batch`")
    );

    // A model folder that is not there is named as missing, one without an MLmodel as such, and
    // an error's cause is printed once (thiserror's `{source}` and anyhow's chain both show it).
    let missing = std::env::temp_dir().join(format!("pixguard-no-such-{}", std::process::id()));
    let missing = missing.to_str().unwrap();
    let out = pixguard(&["serve", "--port", "0", "--model", missing], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("not found: {missing}")), "{err}");
    let out = pixguard(&["score", "--model", missing, "-"], Some(b""));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("not found: {missing}")), "{err}");
    assert_eq!(err.matches("not found").count(), 1, "told once: {err}");
    // Run from another folder, the default (relative) model says where it was looked for.
    for args in [
        &["serve", "--port", "0"][..],
        &["score", "-"],
        &["model", "inspect"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
            .args(args)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains(&format!(
                "not found: models/pix-fraud (a relative path, looked for in {}",
                std::env::temp_dir().display()
            )),
            "{args:?}: {err}"
        );
    }
    let empty = std::env::temp_dir().join(format!("pixguard-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = pixguard(
        &["serve", "--port", "0", "--model", empty.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no MLmodel file"), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();

    let out = pixguard(&["serve", "--max-batch-size", "64", "--print-config"], None);
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("max_batch_size: 64") && yaml.contains("source: models/pix-fraud"),
        "{yaml}"
    );

    // The OpenTelemetry variables' part of the configuration, and what they set that was ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(["serve", "--print-config"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        .env("OTEL_SERVICE_NAME", "pixguard-cli")
        .env("OTEL_PROPAGATORS", "tracecontext,b3")
        .output()
        .expect("pixguard runs");
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("otlp_endpoint: http://collector:4318/v1/traces")
            && yaml.contains("protocol: http/protobuf")
            && yaml.contains("service_name: pixguard-cli"),
        "{yaml}"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("pixguard: OTEL_PROPAGATORS: b3 ignored"),
        "{err}"
    );
}

#[test]
fn model_bench_times_every_batch_size_and_writes_json() {
    let json =
        std::env::temp_dir().join(format!("pixguard-model-bench-{}.json", std::process::id()));
    let out = pixguard(
        &[
            "model",
            "bench",
            "--device",
            "cpu",
            "--batches",
            "1,8,64",
            "--millis",
            "30",
            "--json",
            json.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("on cpu"), "{table}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["batch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 8, 64]
    );
    for r in rows {
        let us = r["fused_us"].as_f64().unwrap();
        let per_s = r["fused_rows_per_s"].as_f64().unwrap();
        assert!(us > 0.0 && r["candle_us"].as_f64().unwrap() > 0.0, "{r}");
        // rows/s is the batch over the median, not an independent figure.
        let batch = r["batch"].as_f64().unwrap();
        assert!((per_s - batch / (us * 1e-6)).abs() / per_s < 1e-9, "{r}");
        assert!(r["iterations"].as_u64().unwrap() >= 5, "{r}");
        // No pipeline and no GPU timing on the CPU.
        assert!(
            r["pipelined_us"].is_null() && r["kernels_us"].is_null(),
            "{r}"
        );
    }
    let _ = std::fs::remove_file(&json);

    let bad = pixguard(&["model", "bench", "--batches", "1,x"], None);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("--batches \"x\""),
        "{stderr}"
    );
}

#[test]
fn score_on_cuda_without_it_is_refused_and_auto_falls_back() {
    let input = std::fs::read("models/pix-fraud/input_example.json").unwrap();
    let cuda = pixguard(&["score", "--device", "cuda"], Some(&input));
    let stderr = String::from_utf8_lossy(&cuda.stderr);
    if cfg!(feature = "cuda") {
        eprintln!("the cuda build: whether --device cuda works depends on the machine's GPU");
    } else {
        assert!(
            !cuda.status.success() && stderr.contains("without the `cuda` feature"),
            "{stderr}"
        );
    }
    let auto = pixguard(&["score", "--device", "auto"], Some(&input));
    assert!(
        auto.status.success(),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    let cpu = pixguard(&["score"], Some(&input));
    // Wherever auto lands, the scores are the same model's: identical on the CPU, within f32
    // rounding on a GPU.
    let scores = |o: &Output| -> Vec<f64> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["score"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (a, c) = (scores(&auto), scores(&cpu));
    assert_eq!(a.len(), c.len());
    assert!(!a.is_empty());
    assert!(
        a.iter().zip(&c).all(|(x, y)| (x - y).abs() <= 1e-5),
        "{a:?} vs {c:?}"
    );
}
