//! Step 6: tampered weights, a failing self-test, a listing that leaves the package, and admin
//! calls without the token — each refused, the serving version untouched.

use super::*;

/// Every refusal leaves `server` serving `v_prod` and says why.
pub fn refusals_leave_the_version_serving(env: &Env, server: &Server, v_prod: &str) {
    let tmp = &env.tmp;
    let bundled = Path::new(ROOT).join("models/pix-fraud");

    // 6. Refusals. Each leaves the serving version as it was and says why.
    let failures = metric(server, "pixguard_model_load_failures_total");
    //    a. Tampered weights: a version whose safetensors changed after publication.
    let v_bad = env.publish_gcs(&bundled, None);
    let weights = format!(
        "mlflow/{}/artifacts/model/model.safetensors",
        env.run_id(&v_bad)
    );
    assert!(
        env.gcs.list(BUCKET, "mlflow/").contains(&weights),
        "{weights} in the bucket"
    );
    let mut bytes = env.gcs.get(BUCKET, &weights);
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    env.gcs.put(BUCKET, &weights, bytes);
    env.set_alias("production", &v_bad);
    let (status, body) = admin(server, "POST", "/admin/model/reload", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("SHA-256"),
        "{body}"
    );
    assert_eq!(serving_version(server), v_prod);
    //    b. A golden self-test that fails: weights and digests intact, one stored score off.
    let broken = copy_package("models/pix-fraud", &tmp.join("broken-golden"));
    let text = std::fs::read_to_string(broken.join("golden.jsonl")).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[7]["score"] = json!(lines[7]["score"].as_f64().unwrap() + 0.01);
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(broken.join("golden.jsonl"), text.join("\n") + "\n").unwrap();
    let v_golden = env.publish_gcs(&broken, None);
    env.set_alias("production", &v_golden);
    let (status, body) = admin(server, "POST", "/admin/model/reload", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("self-test failed"),
        "{body}"
    );
    assert_eq!(serving_version(server), v_prod);
    //    c. A listing with an object named `…/../…`: refused before anything is written.
    for entry in std::fs::read_dir(&bundled).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        env.gcs.put(
            BUCKET,
            &format!("evil/model/{}", entry.file_name().to_string_lossy()),
            std::fs::read(entry.path()).unwrap(),
        );
    }
    env.gcs
        .put(BUCKET, "evil/model/../../escaped", b"x".to_vec());
    let (status, body) = admin(
        server,
        "POST",
        "/admin/model",
        Some(TOKEN),
        Some(json!({"source": format!("gs://{BUCKET}/evil/model")})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("refusing artifact path"),
        "{body}"
    );
    assert!(!tmp.join("escaped").exists() && !tmp.join("cache/escaped").exists());
    assert_eq!(serving_version(server), v_prod);
    //    d. Admin calls without the token, or with a wrong one: 401, nothing changes.
    for token in [None, Some("not-the-admin-token-at-all")] {
        let (status, _) = admin(server, "POST", "/admin/model/reload", token, None);
        assert_eq!(status, 401);
        let (status, _) = admin(server, "GET", "/admin/model", token, None);
        assert_eq!(status, 401);
        let (status, _) = admin(
            server,
            "POST",
            "/admin/model",
            token,
            Some(json!({"source": "models/pix-fraud-challenger"})),
        );
        assert_eq!(status, 401);
    }
    assert_eq!(serving_version(server), v_prod);
    //    e. Malformed admin calls: 400 naming what is wrong, nothing changes. A list is not read
    //       as a pin's fields, and `force=yes` is not taken for "not forced".
    for (path, body, says) in [
        (
            "/admin/model",
            Some(json!(["models/pix-fraud-challenger"])),
            "body: expected {\"source\"",
        ),
        (
            "/admin/model",
            Some(json!({"sourse": "models/pix-fraud-challenger"})),
            "unknown field `sourse`",
        ),
        ("/admin/model/reload?force=yes", None, "query: "),
        (
            "/admin/model/reload?forse=true",
            None,
            "unknown field `forse`",
        ),
    ] {
        let (status, answer) = admin(server, "POST", path, Some(TOKEN), body);
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["code"], "malformed_request", "{answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(says),
            "{path}: {answer}"
        );
    }
    // Cloud Endpoints' `?key=` is not refused: the check runs, and answers as a plain reload does
    // while the alias names a refused version (409 with the earlier reason, nothing retried).
    let (status, answer) = admin(
        server,
        "POST",
        "/admin/model/reload?key=an-api-key",
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, &answer["outcome"]),
        (409, &json!("refused")),
        "{answer}"
    );
    assert_eq!(serving_version(server), v_prod);
    assert_eq!(
        metric(server, "pixguard_model_load_failures_total"),
        failures + 3.0
    );
    let (_, described) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    assert!(
        described["last_error"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("refusing artifact path")
    );
    // The last refused version is not retried on every poll (it is still the alias' target):
    // no load event names it again. A poll whose registry lookup itself failed is an event
    // without a version, counted among the failures too; it is printed, since it says the
    // registry stumbled, not that a refused version was fetched again (seen once in a clean-clone
    // CI run: failures 4 where 3 were expected, the history not kept then).
    let swaps = metric(server, "pixguard_model_swaps_total");
    let (_, before) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    let seen = before["history"].as_array().cloned().unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2 * POLL_S + 1));
    let (_, after) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    let new_events: Vec<&Value> = after["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| !seen.contains(e)).collect())
        .unwrap_or_default();
    let (unresolved, others): (Vec<&Value>, Vec<&Value>) = new_events
        .iter()
        .partition(|e| e["outcome"] == "refused" && e["identity"].is_null());
    if !unresolved.is_empty() {
        println!("registry lookups that failed during the wait: {unresolved:#?}");
    }
    assert!(
        others.is_empty(),
        "a refused version was loaded again: {others:#?}"
    );
    assert_eq!(
        metric(server, "pixguard_model_load_failures_total"),
        failures + 3.0 + unresolved.len() as f64,
        "{after:#}"
    );
    assert_eq!(metric(server, "pixguard_model_swaps_total"), swaps);
    assert_one_engine(server, "three refused versions");
}
