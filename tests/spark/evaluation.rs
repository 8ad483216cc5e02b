//! The decision log joined to confirmed frauds: a server logging its decisions and its shadow
//! challenger's to a real broker scores labelled synth traffic; the records, read back from the
//! topic, and the synth labels go through `clients/python/jobs/evaluate_decisions.py` (PySpark),
//! and its counts and rates are checked against the same counts made here from the records.

use std::collections::HashSet;

use super::*;

/// `{"transactions": [...]}` bodies of `rows` synth rows, and the ids of the frauds among them.
fn labelled(rows: usize, seed: u64) -> (Vec<Value>, HashSet<String>) {
    let out = pixguard_ok(&[
        "synth",
        "--rows",
        &rows.to_string(),
        "--seed",
        &seed.to_string(),
        "--fraud-rate",
        "0.2",
    ]);
    let mut txs = Vec::new();
    let mut frauds = HashSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        if row["label"] == 1 {
            frauds.insert(row["transaction"]["end_to_end_id"].as_str().unwrap().into());
        }
        txs.push(row["transaction"].clone());
    }
    (txs, frauds)
}

#[test]
fn the_evaluation_job_counts_each_versions_decisions_on_frauds_and_legitimate_payments() {
    let Some(py) = spark_python("the decision evaluation job") else {
        return;
    };
    let Some(broker_bin) = broker_binary() else {
        return;
    };
    let broker = Broker::start(&broker_bin);
    let dir = scratch("spark", "evaluation");
    let topics = Path::new(ROOT).join("tests/python/kafka_topics.py");
    run_python(
        &py,
        &[
            s(&topics),
            "create",
            "--brokers",
            &broker.address,
            "decisions",
        ],
        &[],
    );
    let brokers = format!("decision_log.brokers={}", broker.address);
    let server = Server::start(&[
        "--set",
        "decision_log.topic=decisions",
        "--set",
        &brokers,
        "--set",
        "model.shadow=models/pix-fraud-challenger",
        "--set",
        "model.shadow_fraction=1.0",
        "--set",
        "model.poll_interval_s=0",
    ]);
    let (txs, frauds) = labelled(400, 81);
    assert!(frauds.len() > 40, "{} frauds", frauds.len());
    let http = reqwest::blocking::Client::new();
    for chunk in txs.chunks(50) {
        let r = http
            .post(server.url("/v1/score"))
            .json(&serde_json::json!({ "transactions": chunk }))
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }
    // A client's retry: the same payment decided again; it counts once.
    let r = http
        .post(server.url("/v1/score"))
        .json(&txs[0])
        .send()
        .unwrap();
    assert!(r.status().is_success());

    let dumped = run_python(
        &py,
        &[
            s(&topics),
            "dump",
            "--brokers",
            &broker.address,
            "--expect",
            "802",
            "--idle-s",
            "10",
            "decisions",
        ],
        &[],
    );
    let records: Vec<Value> = dumped
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            serde_json::from_str(r["value"].as_str().unwrap()).unwrap()
        })
        .collect();
    assert_eq!(records.len(), 802);
    let decisions = dir.join("decisions.jsonl");
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&decisions, lines.join("\n") + "\n").unwrap();
    let confirmed = dir.join("frauds.csv");
    let mut csv = String::from("end_to_end_id,reported_at\n");
    for id in &frauds {
        csv.push_str(&format!("{id},2026-12-01T10:00:00Z\n"));
    }
    std::fs::write(&confirmed, csv).unwrap();

    let output = dir.join("evaluation.jsonl");
    let points_output = dir.join("points.jsonl");
    let printed = run_python(
        &py,
        &[
            "clients/python/jobs/evaluate_decisions.py",
            "--decisions",
            s(&decisions),
            "--frauds",
            s(&confirmed),
            "--output",
            s(&output),
            "--points-output",
            s(&points_output),
            "--false-stop-rates",
            "0.01,0.05,0.2",
        ],
        &[],
    );
    eprintln!("{printed}");
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "champion and challenger: {rows:#?}");

    // The same job reading the topic itself instead of a sink's files: the same rows.
    let from_topic = dir.join("evaluation-topic.jsonl");
    run_python(
        &py,
        &[
            "clients/python/jobs/evaluate_decisions.py",
            "--brokers",
            &broker.address,
            "--decisions-topic",
            "decisions",
            "--end-offsets",
            "probe",
            "--frauds",
            s(&confirmed),
            "--output",
            s(&from_topic),
        ],
        &[],
    );
    let topic_rows: Vec<Value> = std::fs::read_to_string(&from_topic)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(topic_rows, rows, "read from the topic, as from the files");

    // The same counts, here: each (version, role)'s decisions, one per payment.
    for row in &rows {
        let version = row["model_version"].as_str().unwrap();
        let role = row["role"].as_str().unwrap();
        let mut seen = HashSet::new();
        let mut counts: HashMap<(String, bool), u64> = HashMap::new();
        for r in records.iter().filter(|r| {
            r["model_version"] == version && r["role"].as_str().unwrap_or("champion") == role
        }) {
            let id = r["end_to_end_id"].as_str().unwrap();
            if seen.insert(id.to_string()) {
                let decision = r["decision"].as_str().unwrap().to_lowercase();
                *counts.entry((decision, frauds.contains(id))).or_default() += 1;
            }
        }
        let n = |d: &str, fraud: bool| counts.get(&(d.into(), fraud)).copied().unwrap_or(0);
        assert_eq!(row["payments"], 400, "{row}");
        assert_eq!(row["frauds"], frauds.len() as u64, "{row}");
        for d in ["allow", "hold", "reject"] {
            assert_eq!(row[format!("{d}_fraud")], n(d, true), "{role} {d}");
            assert_eq!(row[format!("{d}_legit")], n(d, false), "{role} {d}");
        }
        let fraud = frauds.len() as f64;
        let close = |key: &str, want: f64| {
            let got = row[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "{role} {key}: {got} against {want}"
            );
        };
        close("reject_recall", n("reject", true) as f64 / fraud);
        close(
            "stop_recall",
            (n("reject", true) + n("hold", true)) as f64 / fraud,
        );
        let rejected = n("reject", true) + n("reject", false);
        if rejected == 0 {
            assert!(row["reject_precision"].is_null(), "{row}");
        } else {
            close(
                "reject_precision",
                n("reject", true) as f64 / rejected as f64,
            );
        }
        close(
            "false_stop_rate",
            (n("reject", false) + n("hold", false)) as f64 / (400.0 - fraud),
        );
        assert!(
            printed.contains(&format!("{version} {role}: 400 payments")),
            "{printed}"
        );
    }
    let roles: HashSet<&str> = rows.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, HashSet::from(["champion", "challenger"]));

    // The operating points, here: per (version, role), the legitimate payments' scores sorted,
    // the k-th lowest (k = ceil((1 - target) × legit)) is the threshold; stopping above it, the
    // shares of legitimate payments and of frauds stopped.
    let points: Vec<Value> = std::fs::read_to_string(&points_output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(points.len(), 2 * 3, "{points:#?}");
    for point in &points {
        let (version, role) = (
            point["model_version"].as_str().unwrap(),
            point["role"].as_str().unwrap(),
        );
        let mut seen = HashSet::new();
        let (mut legit, mut fraud): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
        for r in records.iter().filter(|r| {
            r["model_version"] == version && r["role"].as_str().unwrap_or("champion") == role
        }) {
            let id = r["end_to_end_id"].as_str().unwrap();
            if seen.insert(id.to_string()) {
                let score = r["score"].as_f64().unwrap() as f32;
                if frauds.contains(id) {
                    fraud.push(score);
                } else {
                    legit.push(score);
                }
            }
        }
        legit.sort_by(f32::total_cmp);
        let target = point["target_false_stop_rate"].as_f64().unwrap();
        let k = ((1.0 - target) * legit.len() as f64).ceil() as usize;
        let threshold = legit[k - 1];
        assert_eq!(
            point["threshold"].as_f64().unwrap() as f32,
            threshold,
            "{role} at {target}: {point}"
        );
        let above = |scores: &[f32]| scores.iter().filter(|&&s| s > threshold).count();
        assert_eq!(point["legit"], legit.len() as u64, "{point}");
        assert_eq!(point["legit_stopped"], above(&legit) as u64, "{point}");
        assert_eq!(point["frauds_stopped"], above(&fraud) as u64, "{point}");
        let false_stops = above(&legit) as f64 / legit.len() as f64;
        assert!(false_stops <= target, "{point}");
        let close = |key: &str, want: f64| {
            let got = point[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "{role} {key}: {got} against {want}"
            );
        };
        close("false_stop_rate", false_stops);
        close("stop_recall", above(&fraud) as f64 / fraud.len() as f64);
        assert!(
            printed.contains(&format!(
                "{version} {role}: false stops ≤ {target}: stop above"
            )),
            "{printed}"
        );
    }
}
