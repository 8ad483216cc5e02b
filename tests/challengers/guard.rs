//! The canary guard (`model.canary_max_stop_ratio`, `canary_max_latency_ratio`,
//! `canary_max_error_share`): a canary that stops far more payments than its champion, answers
//! far slower, or fails far more of its requests is taken off the answers, and says why.

use std::collections::HashMap;

use pixguard::protocol::grpc::ModelInferRequest;
use pixguard::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use pixguard::protocol::grpc::model_infer_request::InferInputTensor;
use serde_json::{Value, json};

use super::canary::{TOKEN, admin_canary, score_one};
use super::server::{Server, edited_package, metric, rewrite_in_package, transactions};
use super::{get_json, stats};

/// A copy of the champion's package in `dir` as another version whose hold threshold was
/// mistyped (1e-30: it stops every payment), its digest in MLmodel updated to match.
fn mistyped_threshold(dir: &std::path::Path) -> std::path::PathBuf {
    edited_package(dir, |config| {
        config["version"] = json!("20261207.0001");
        config["thresholds"]["hold"] = json!(1e-30);
    })
}

/// The reason of the canary's halt in `/v1/stats`' `canary`, whose share must be 0; then every
/// one of `txs` is answered by the champion, and the halt is counted once.
async fn halted_for(client: &reqwest::Client, server: &Server, txs: &[Value]) -> String {
    let canary = stats(client, server).await["canary"].clone();
    assert_eq!(canary["fraction"], 0.0, "{canary}");
    let reason = canary["halted"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for tx in txs {
        let answer = score_one(client, server, tx).await;
        assert_eq!(
            answer["model"]["version"], "20261127.0446",
            "halted: {answer}"
        );
    }
    let text = super::server::metrics_text(client, server).await;
    assert_eq!(metric(&text, "pixguard_canary_halts_total"), 1.0);
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_takes_a_canary_that_holds_everything_off_the_answers() {
    let client = reqwest::Client::new();
    // The stop-share guard alone: its latency is the champion's, but 20 samples are few.
    let (server, dir) = edited_canary("guard", mistyped_threshold, "model.canary_max_stop_ratio");
    let txs = transactions(200, 43);
    let canary_stats = || async { stats(&client, &server).await["canary"].clone() };
    // Every other request is the canary's, and it stops every one; once each version has 20 rows
    // in its monitor (published each second), the guard sets its share to 0.
    let mut sent = 0;
    let mut held_by_canary = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while canary_stats().await["halts"] == 0 {
        assert!(
            std::time::Instant::now() < until,
            "no halt: {}",
            canary_stats().await
        );
        let answer = score_one(&client, &server, &txs[sent % txs.len()]).await;
        if answer["model"]["version"] == "20261207.0001" {
            assert_ne!(answer["decision"], "ALLOW", "{answer}");
            held_by_canary += 1;
        }
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(held_by_canary >= 20, "{held_by_canary} of {sent}");
    let reason = halted_for(&client, &server, &txs[..20]).await;
    assert!(
        reason.starts_with("canary 20261207.0001: stopped (HOLD or REJECT) 100.00 % of"),
        "{reason}"
    );
    assert!(
        reason.contains("outside 1/3 to 3 (model.canary_max_stop_ratio)"),
        "{reason}"
    );
    assert!(server.logged("the canary guard set the canary's share to 0"));
    let text = super::server::metrics_text(&client, &server).await;
    assert_eq!(metric(&text, "pixguard_canary_fraction"), 0.0);

    // A person raising the share again clears the halt; on the same evidence (its 10 minutes
    // still hold everything) the guard halts it again.
    let (status, body) = admin_canary(&client, &server, 0.5, TOKEN).await;
    assert_eq!((status, body["was"].as_f64()), (200, Some(0.0)), "{body}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while canary_stats().await["halts"] != 2 {
        assert!(
            std::time::Instant::now() < until,
            "no second halt: {}",
            canary_stats().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(canary_stats().await["fraction"], 0.0);
    // The admin API says the same of it as /v1/stats: one account of the canary's figures.
    let described: Value = get_json(&client, &server, "/admin/model", Some(TOKEN)).await;
    let stats = canary_stats().await;
    for key in ["fraction", "requests", "halts", "halted"] {
        assert_eq!(described["canary"][key], stats[key], "{key}");
    }
    assert!(described["canary"]["halted"]["reason"].is_string());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The command of a server whose canary is the package at `package`, answering half of the
/// requests and compared from 20 each, with only the guard `guard` (a `model.` setting) on; then
/// `more` (`--set` each).
fn guarded_canary(package: &str, guard: &str, more: &[&str]) -> std::process::Command {
    let mut sets = vec![
        format!("model.canary={package}"),
        "model.canary_fraction=0.5".into(),
        "model.canary_guard_min_rows=20".into(),
    ];
    for other in [
        "model.canary_max_stop_ratio",
        "model.canary_max_latency_ratio",
        "model.canary_max_error_share",
    ] {
        if other != guard {
            sets.push(format!("{other}=0"));
        }
    }
    sets.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<String> = (sets.into_iter())
        .flat_map(|s| ["--set".to_string(), s])
        .collect();
    Server::command(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A server (with the admin token) whose canary is the package `make` writes into a temporary
/// folder named after `name`, with only the guard `guard` on ([`guarded_canary`]); and the folder,
/// for the test to remove.
fn edited_canary(
    name: &str,
    make: fn(&std::path::Path) -> std::path::PathBuf,
    guard: &str,
) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("pixguard-canary-{name}-{}", std::process::id()));
    let package = make(&dir);
    let mut command = guarded_canary(&package.display().to_string(), guard, &[]);
    (
        Server::spawn(command.env("PIXGUARD_ADMIN_TOKEN", TOKEN)),
        dir,
    )
}

/// A server whose canary (the challenger package) decides as the champion does but computes each
/// batch 30 ms longer, with only the guard `guard` on ([`guarded_canary`]).
fn slow_canary(guard: &str) -> Server {
    Server::spawn(&mut guarded_canary(
        "models/pix-fraud-challenger",
        guard,
        &["engine.test_canary_delay_us=30000"],
    ))
}

/// The number in a halt's `reason` between `after` and `unit`.
fn figure(reason: &str, after: &str, unit: &str) -> f64 {
    reason
        .split(after)
        .nth(1)
        .and_then(|r| r.split(unit).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure after {after:?} in {reason}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_takes_a_canary_far_slower_than_the_champion_off_the_answers() {
    // The canary decides as the champion does (the stop-share guard is off) and fails nothing
    // (nor is the error guard on), but each of its batches takes 30 ms more: at a small share it
    // would be the service's p99.
    let client = reqwest::Client::new();
    let server = slow_canary("model.canary_max_latency_ratio");
    let txs = transactions(200, 44);
    let canary_stats = || async { stats(&client, &server).await["canary"].clone() };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut sent = 0;
    while canary_stats().await["halts"] == 0 {
        assert!(
            std::time::Instant::now() < until,
            "no halt after {sent} requests: {}",
            canary_stats().await
        );
        score_one(&client, &server, &txs[sent % txs.len()]).await;
        sent += 1;
    }
    let reason = halted_for(&client, &server, &txs[..10]).await;
    assert!(
        reason.starts_with("canary 20261202.1646: engine p99 (queue + compute)"),
        "{reason}"
    );
    assert!(
        reason.contains("(model.canary_max_latency_ratio)"),
        "{reason}"
    );
    // Its p99 is at least the 30 ms it was slowed by.
    assert!(figure(&reason, "compute) ", " ms") >= 30.0, "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_takes_a_canary_whose_requests_fail_off_the_answers() {
    // The canary decides as the champion does and its latency is not compared (both other guards
    // are off), but its batches take 30 ms more: with callers allowing 20 ms, its requests that
    // wait for one of them fail past their deadline, a payment without a decision each.
    let client = reqwest::Client::new();
    let server = slow_canary("model.canary_max_error_share");
    let txs = std::sync::Arc::new(transactions(200, 45));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let (client, txs, url) = (client.clone(), txs.clone(), server.url("/v1/score"));
            let halted = server.url("/v1/stats");
            tokio::spawn(async move {
                let mut statuses = HashMap::<u16, u64>::new();
                for sent in 0.. {
                    if sent % 20 == 0 {
                        let stats: Value = client
                            .get(&halted)
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        if stats["canary"]["halts"] != 0 || std::time::Instant::now() > until {
                            break;
                        }
                    }
                    let r = client
                        .post(&url)
                        .header("x-request-timeout-ms", "20")
                        .json(&txs[(caller * 25 + sent) % txs.len()])
                        .send()
                        .await
                        .unwrap();
                    *statuses.entry(r.status().as_u16()).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses = HashMap::<u16, u64>::new();
    for caller in callers {
        for (status, n) in caller.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    assert!(
        statuses.keys().all(|s| [200, 504].contains(s)) && statuses.contains_key(&504),
        "{statuses:?}"
    );
    let reason = halted_for(&client, &server, &txs[..10]).await;
    assert!(
        reason.starts_with("canary 20261202.1646: failed "),
        "{reason} after {statuses:?}"
    );
    assert!(
        reason.contains("(model.canary_max_error_share)"),
        "{reason}"
    );
    // The canary's failed share is far above the champion's, each from its own engine.
    assert!(
        figure(&reason, "failed ", " %") > 10.0 + figure(&reason, "the champion's ", " %"),
        "{reason}"
    );
    eprintln!("{statuses:?}: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_refusing_what_the_champion_takes_hands_it_to_the_champion_and_stays_on() {
    // The canary scores exactly as the champion but takes one feature column more: it refuses
    // every request of a feature store sending the champion's precomputed features. Those of its
    // share are the champion's to answer, as they would be without a canary: none fails, and the
    // error guard (the only one on) has no failure to halt it for.
    let client = reqwest::Client::new();
    let (server, dir) = edited_canary("widened", widened_package, "model.canary_max_error_share");
    // Said when it loaded, before any request.
    assert!(server.logged("the canary takes other precomputed features than the champion"));
    let txs = transactions(40, 46);
    let typed: Vec<pixguard::transaction::Transaction> = (txs.iter())
        .map(|tx| serde_json::from_value(tx.clone()).unwrap())
        .collect();
    let spec = pixguard::model::ModelPackage::load(
        std::path::Path::new(super::server::ROOT).join("models/pix-fraud"),
    )
    .unwrap()
    .config
    .features;
    let rows = pixguard::features::FeatureExtractor::new(spec)
        .unwrap()
        .extract(&typed);
    let (nn, nc) = (rows.n_numeric, rows.n_categorical);
    // The admin API says it too.
    let described = get_json(&client, &server, "/admin/model", Some(TOKEN)).await;
    assert_eq!(
        described["canary"]["features_mode_change"],
        format!(
            "`features` {nn} → {} columns, `categories` {nc} → {nc} columns: a request shaped for \
             the other is refused",
            nn + 1
        ),
        "{described}"
    );
    let body = |i: usize| {
        json!({"inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, nn], "data": rows.numeric[i * nn..(i + 1) * nn]},
            {"name": "categories", "datatype": "INT64", "shape": [1, nc], "data": rows.categorical[i * nc..(i + 1) * nc]},
        ]})
    };
    let infer = server.url("/v2/models/pix-fraud/infer");
    let grpc = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_address()))
        .await
        .unwrap();
    // Row `i` of the features, over HTTP or gRPC as raw tensors by turns of two (the canary's
    // sampler takes every other request at share 0.5, so each API meets both versions): how it
    // ended.
    let send = |i: usize| {
        let row = i % txs.len();
        let http = client.post(&infer).json(&body(row));
        let mut grpc = grpc.clone();
        let tensor = |name: &str, datatype: &str, width: usize| InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![1, width as i64],
            ..Default::default()
        };
        let raw_input_contents = vec![
            (rows.numeric[row * nn..(row + 1) * nn].iter())
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            (rows.categorical[row * nc..(row + 1) * nc].iter())
                .flat_map(|&v| i64::from(v).to_le_bytes())
                .collect(),
        ];
        let request = ModelInferRequest {
            model_name: "pix-fraud".into(),
            inputs: vec![
                tensor("features", "FP32", nn),
                tensor("categories", "INT64", nc),
            ],
            raw_input_contents,
            ..Default::default()
        };
        async move {
            if (i / 2).is_multiple_of(2) {
                let r = http.send().await.unwrap();
                let status = r.status().as_u16();
                let answer: Value = r.json().await.unwrap();
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["model_version"], "20261127.0446", "{answer}");
            } else {
                let answer = grpc.model_infer(request).await.unwrap().into_inner();
                assert_eq!(answer.model_version, "20261127.0446");
            }
        }
    };
    let sent = 200;
    for i in 0..sent {
        send(i).await;
    }
    // The guard checks every second, on at least 20 rows (`guarded_canary`).
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let figures = stats(&client, &server).await["canary"].clone();
    assert_eq!(
        (&figures["halts"], &figures["fraction"]),
        (&json!(0), &json!(0.5)),
        "{figures}"
    );
    // Exactly its share (the sampler is a counter), all handed on.
    assert_eq!(figures["declined"], sent / 2, "{figures}");
    assert_eq!(figures["requests"], 0, "{figures}");
    let text = super::server::metrics_text(&client, &server).await;
    assert_eq!(
        metric(&text, "pixguard_canary_declined_total"),
        (sent / 2) as f64
    );
    // The requests are the champion's in its statistics, none the canary's.
    let version_stats = |version: &str| {
        let path = format!("/v2/models/pix-fraud/versions/{version}/stats");
        let (client, server) = (&client, &server);
        async move {
            let s: Value = get_json(client, server, &path, None).await;
            let stats = &s["model_stats"][0]["inference_stats"];
            (
                stats["success"]["count"].as_u64(),
                stats["fail"]["count"].as_u64(),
            )
        }
    };
    assert_eq!(
        version_stats("20261127.0446").await,
        (Some(sent as u64), Some(0))
    );
    assert_eq!(version_stats("20261207.0002").await, (Some(0), Some(0)));
    // Inputs neither takes: the champion's refusal, for the canary's share too (here the second
    // of the two), as without a canary.
    for _ in 0..2 {
        let bad = json!({"inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 5], "data": vec![0.0; 5]},
            {"name": "categories", "datatype": "INT64", "shape": [1, nc], "data": vec![0; nc]},
        ]});
        let r = client.post(&infer).json(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 422);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            answer["error"],
            format!("features: shape [1, 5] must be [N, {nn}]"),
            "{answer}"
        );
    }
    let figures = stats(&client, &server).await["canary"].clone();
    assert_eq!(figures["declined"], sent / 2 + 1, "{figures}");
    // Transactions it takes as the champion does: it answers its share of those.
    let mut answered = HashMap::<String, u32>::new();
    for tx in &txs[..10] {
        let answer = score_one(&client, &server, tx).await;
        let version = answer["model"]["version"].as_str().unwrap().to_string();
        *answered.entry(version).or_default() += 1;
    }
    assert_eq!(answered.get("20261207.0002"), Some(&5), "{answered:?}");
    assert_eq!(answered.get("20261127.0446"), Some(&5), "{answered:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of the champion's package in `dir` as another version with one more numeric feature
/// (`amount_log` again) whose weights are all zero: it scores exactly as the champion, but its
/// `features` tensor is a column wider, so it refuses a features-mode request (Open Inference
/// Protocol) shaped for the champion, as a retrained model with a new feature would.
fn widened_package(dir: &std::path::Path) -> std::path::PathBuf {
    let mut at = 0;
    let package = edited_package(dir, |config| {
        config["version"] = json!("20261207.0002");
        let numeric = config["features"]["numeric"].as_array_mut().unwrap();
        at = numeric.len();
        let mut again = numeric[0].clone();
        again["name"] = json!("amount_log_again");
        numeric.push(again);
        // Every feature is in a reason-code group: the amount's.
        let groups = config["explanations"]["groups"].as_array_mut().unwrap();
        let amount = groups
            .iter_mut()
            .find(|g| g["numeric"][0] == "amount_log")
            .unwrap();
        amount["numeric"]
            .as_array_mut()
            .unwrap()
            .push(json!("amount_log_again"));
    });
    let old = std::fs::read(package.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&old).unwrap();
    let widened: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = (view.data().chunks_exact(4))
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            // The axes that run over x0 (the numeric features, then the embeddings): both of
            // each cross layer's, and the first MLP layer's input.
            let axes = match name.as_str() {
                n if n.starts_with("cross.") => [true, true],
                "mlp.0.weight" => [false, true],
                _ => [false, false],
            };
            let (shape, values) = zero_at(view.shape(), &values, axes, at);
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views = widened.iter().map(|(name, shape, bytes)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes);
        (name.clone(), view.unwrap())
    });
    let weights = safetensors::serialize(views, None).unwrap();
    rewrite_in_package(&package, "model.safetensors", &weights);
    // The monitor's reference distributions, one per feature in the model's order: the new
    // feature's are the amount's.
    let path = package.join("reference.json");
    let mut reference: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let features = reference["features"].as_array_mut().unwrap();
    let mut again = features[0].clone();
    again["name"] = json!("amount_log_again");
    features.insert(at, again);
    rewrite_in_package(
        &package,
        "reference.json",
        &serde_json::to_vec(&reference).unwrap(),
    );
    package
}

/// `values` of `shape` (one or two axes) with a zero inserted at index `at` of each axis marked in
/// `axes`: a row, a column, or both.
fn zero_at(shape: &[usize], values: &[f32], axes: [bool; 2], at: usize) -> (Vec<usize>, Vec<f32>) {
    let (rows, cols) = match shape {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        _ => panic!("a tensor of shape {shape:?}"),
    };
    // A vector's one axis is its columns.
    let (widen_rows, widen_cols) = if shape.len() == 1 {
        (false, axes[0])
    } else {
        (axes[0], axes[1])
    };
    let width = cols + usize::from(widen_cols);
    let mut out = Vec::with_capacity((rows + 1) * width);
    for (i, row) in values.chunks_exact(cols).enumerate() {
        if widen_rows && i == at {
            out.extend(std::iter::repeat_n(0.0, width));
        }
        if widen_cols {
            out.extend_from_slice(&row[..at]);
            out.push(0.0);
            out.extend_from_slice(&row[at..]);
        } else {
            out.extend_from_slice(row);
        }
    }
    if widen_rows && at == rows {
        out.extend(std::iter::repeat_n(0.0, width));
    }
    let shape = match shape {
        [_] => vec![width],
        _ => vec![rows + usize::from(widen_rows), width],
    };
    (shape, out)
}
