//! Steps 2–5: served from the registry and GCS, a promotion swapped in within a poll, a rollback.

use super::*;

/// Serves `models:/pix-fraud@production` from GCS, promotes the challenger, rolls back; answers
/// the server, the production version and the golden transactions it scored.
pub fn serve_promote_and_roll_back(env: &Env) -> (Server, String, Vec<Value>) {
    let tmp = &env.tmp;
    let bundled = Path::new(ROOT).join("models/pix-fraud");
    let challenger = Path::new(ROOT).join("models/pix-fraud-challenger");

    // 2. The same package published with its files on GCS becomes production.
    let v_prod = env.publish_gcs(&bundled, Some("production"));
    assert!(
        !env.gcs.list(BUCKET, "mlflow/").is_empty(),
        "the artifacts went to the bucket"
    );

    // 3. Served from the registry, read from GCS: the golden rows score exactly as the folder.
    let server = env.serve("models:/pix-fraud@production", &[]);
    let (txs, reference) = golden("models/pix-fraud", 200);
    let (versions, scores) = score(&server, &txs);
    assert!(versions.iter().all(|v| *v == v_prod), "{versions:?}");
    assert_eq!(scores, folder_scores("models/pix-fraud", &txs, tmp));
    let worst = scores
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-5,
        "registry-served scores {worst:e} from the PyTorch reference"
    );
    let (_, described) = admin(&server, "GET", "/admin/model", Some(TOKEN), None);
    let location = described["serving"]["origin"]["location"]
        .as_str()
        .unwrap_or("");
    assert!(
        location.starts_with(&format!("gs://{BUCKET}/")),
        "read from GCS: {location}"
    );
    // The training reference travelled with the package: monitoring compares with it.
    let monitoring: serde_json::Value = reqwest::blocking::get(server.url("/v1/monitoring"))
        .and_then(|r| r.json())
        .expect("/v1/monitoring");
    assert_eq!(
        monitoring["champion"]["reference"]["rows"], 2_000_000,
        "{monitoring}"
    );

    // 4. The challenger, published to staging and promoted: the server swaps within a poll.
    let v_ch = env.publish_gcs(&challenger, Some("staging"));
    let moved = env.promote_staging();
    assert_eq!(moved["version"], v_ch.as_str());
    assert_eq!(moved["replaced"], v_prod.as_str());
    let took = wait_for_version(&server, &v_ch, Duration::from_secs(POLL_S + 20));
    let load = last_load(&server, &v_ch);
    eprintln!("swap to the challenger seen after {took:?} (its load: {load:?})");
    // Within one poll interval plus the version's own load time (and this loop's 50 ms step and
    // admin call).
    assert!(
        took <= Duration::from_secs(POLL_S) + load + Duration::from_millis(500),
        "{took:?}"
    );
    let (txs_ch, _) = golden("models/pix-fraud-challenger", 200);
    let (versions, scores) = score(&server, &txs_ch);
    assert!(versions.iter().all(|v| *v == v_ch), "{versions:?}");
    assert_eq!(
        scores,
        folder_scores("models/pix-fraud-challenger", &txs_ch, tmp)
    );

    // 5. Rollback: production points back at the version it replaced, and the server follows.
    let moved: Value = serde_json::from_str(
        env.pixguard(&[
            "model",
            "rollback",
            "--name",
            "pix-fraud",
            "--alias",
            "production",
        ])
        .trim(),
    )
    .expect("rollback JSON");
    assert_eq!(moved["version"], v_prod.as_str());
    let took = wait_for_version(&server, &v_prod, Duration::from_secs(POLL_S + 20));
    let load = last_load(&server, &v_prod);
    assert!(
        took <= Duration::from_secs(POLL_S) + load + Duration::from_millis(500),
        "{took:?}"
    );
    let listed = env.pixguard(&["model", "list", "--name", "pix-fraud", "--json"]);
    let rows: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("list line"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert_one_engine(&server, "a promotion and a rollback");
    // The versions swapped in were built on the front end's (niced) blocking threads; their
    // engines still run at the process's priority, ahead of the front end (the default 5).
    #[cfg(target_os = "linux")]
    server.assert_front_end_nicer_by(5);
    let prod = rows
        .iter()
        .find(|r| r["version"] == v_prod.as_str())
        .expect("production row");
    assert!(
        prod["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "production")
    );
    (server, v_prod, txs)
}
