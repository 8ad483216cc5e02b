//! Step 1: a package published through the artifact proxy, as MLflow's own client and pyfunc
//! see it.

use super::*;

/// Publishes the bundled package to staging, checks it with MLflow's client, promotes it and
/// scores its golden rows in MLflow's pyfunc.
pub fn publish_and_open_in_mlflow(env: &Env, python: &Path) {
    let tmp = &env.tmp;
    let bundled = Path::new(ROOT).join("models/pix-fraud");

    // 1. Publish through the artifact proxy: MLflow's own client sees it, byte for byte.
    let out = env.pixguard(&[
        "model",
        "publish",
        bundled.to_str().unwrap(),
        "--name",
        "pix-fraud",
        "--alias",
        "staging",
    ]);
    let v1: Value = serde_json::from_str(out.trim()).expect("publish JSON");
    assert_eq!(v1["version"], "1");
    let client = Command::new(python)
        .arg(Path::new(ROOT).join("tests/python/mlflow_client.py"))
        .args([
            "--tracking-uri",
            &env.mlflow.uri,
            "--name",
            "pix-fraud",
            "--alias",
            "staging",
        ])
        .arg("--package")
        .arg(&bundled)
        .output()
        .expect("mlflow client");
    assert!(
        client.status.success(),
        "MLflow's client disagrees: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let seen: Value = serde_json::from_slice(&client.stdout).expect("client JSON");
    assert_eq!(seen["version"], "1");
    assert_eq!(
        seen["weights_sha256"],
        "abc07051b7df1348d8a28fe84a4d592d01777a29df0fe4d7c59fa19da4ebecaf"
    );

    // The registered version opens in MLflow's own pyfunc (the package's python_function flavor)
    // and scores the golden rows as pixguard does.
    env.promote_staging();
    let golden_txs = tmp.join("golden-transactions.jsonl");
    let lines: Vec<String> = golden("models/pix-fraud", usize::MAX)
        .0
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&golden_txs, lines.join("\n")).unwrap();
    let ours = tmp.join("pixguard-golden-scores.jsonl");
    let scored = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .current_dir(ROOT)
        .arg("score")
        .arg(&golden_txs)
        .args(["-o", ours.to_str().unwrap()])
        .output()
        .expect("pixguard score");
    assert!(scored.status.success());
    let parity = Command::new(python)
        .arg(Path::new(ROOT).join("tests/python/pyfunc_parity.py"))
        .args([
            "--tracking-uri",
            &env.mlflow.uri,
            "--model-uri",
            "models:/pix-fraud@production",
        ])
        .arg("--golden")
        .arg(bundled.join("golden.jsonl"))
        .arg("--pixguard-scores")
        .arg(&ours)
        .output()
        .expect("pyfunc parity");
    assert!(
        parity.status.success(),
        "mlflow.pyfunc disagrees with pixguard: {}{}",
        String::from_utf8_lossy(&parity.stdout),
        String::from_utf8_lossy(&parity.stderr)
    );
    eprintln!(
        "pyfunc vs pixguard: {}",
        String::from_utf8_lossy(&parity.stdout).trim()
    );
}
