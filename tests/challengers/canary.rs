//! The canary (`model.canary`): a second version that answers a share of live requests.

use std::collections::HashMap;

use pixguard::bench::requests::{Api, Bodies};
use pixguard::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use pixguard::protocol::grpc::{ModelStatistics, ModelStatisticsRequest, StatisticDuration};
use pixguard::transaction::Transaction;
use serde_json::{Value, json};

use super::server::{Server, copy_package, metric, transactions};
use super::{alone, get_json, stats};

const CHALLENGER: &str = "models/pix-fraud-challenger";
pub(super) const TOKEN: &str = "canary-admin-token-0123456789";

/// `POST /v1/score` of one transaction: the answer.
pub(super) async fn score_one(client: &reqwest::Client, server: &Server, tx: &Value) -> Value {
    let r = client
        .post(server.url("/v1/score"))
        .json(tx)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = r.headers()["x-model-version"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["model"]["version"],
        header.as_str(),
        "header and body agree"
    );
    body
}

/// Checks `answer` is exactly what its version alone answers.
fn is_its_versions(
    answer: &Value,
    by_version: &HashMap<String, HashMap<String, (String, f64, String)>>,
) {
    let version = answer["model"]["version"].as_str().unwrap();
    let id = answer["end_to_end_id"].as_str().unwrap();
    let (_, score, decision) = &by_version[version][id];
    assert!(
        (answer["score"].as_f64().unwrap() - score).abs() <= 1e-6,
        "{answer} against {score}"
    );
    assert_eq!(answer["decision"], decision.as_str(), "{answer}");
}

/// `tx` in the forms the bench sends over `api`.
fn built(api: Api, tx: &Value) -> Bodies {
    let tx: Transaction = serde_json::from_value(tx.clone()).unwrap();
    pixguard::bench::requests::build(api, "pix-fraud", &[tx], 1, None).unwrap()
}

/// OIP over HTTP, to `path`: (status, body).
async fn oip_http(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    tx: &Value,
) -> (u16, Value) {
    let Bodies::Http { bodies, .. } = built(Api::OipHttp, tx) else {
        unreachable!("OIP HTTP bodies")
    };
    let r = client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(bodies[0].to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// An admin POST to `path` with `token` and a JSON `body` (none: empty): (status, answer).
async fn admin_post(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    let mut request = client.post(server.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The feature columns whose definition differs between two packages' `model.json`, by name,
/// read from the JSON itself.
fn recoded_columns(a: &str, b: &str) -> Vec<String> {
    let features = |package: &str| -> Value {
        let path = std::path::Path::new(super::server::ROOT)
            .join(package)
            .join("model.json");
        serde_json::from_slice::<Value>(&std::fs::read(path).unwrap()).unwrap()["features"].clone()
    };
    let (a, b) = (features(a), features(b));
    let mut names = Vec::new();
    for kind in ["numeric", "categorical"] {
        let (ours, theirs) = (a[kind].as_array().unwrap(), b[kind].as_array().unwrap());
        assert_eq!(ours.len(), theirs.len(), "{kind}");
        for (x, y) in ours.iter().zip(theirs) {
            assert_eq!(x["name"], y["name"]);
            if x != y {
                names.push(x["name"].as_str().unwrap().to_string());
            }
        }
    }
    names
}

/// `POST /admin/canary` `{"fraction": fraction}`.
pub(super) async fn admin_canary(
    client: &reqwest::Client,
    server: &Server,
    fraction: f64,
    token: &str,
) -> (u16, Value) {
    let body = json!({ "fraction": fraction });
    admin_post(client, server, "/admin/canary", Some(body), token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answers_its_share_on_every_api_and_is_dialled_down_live() {
    let client = reqwest::Client::new();
    let txs = transactions(60, 41);
    let champion_alone = alone(&client, &[], &txs).await;
    let canary_alone = alone(&client, &["--model", CHALLENGER], &txs).await;
    let champion = champion_alone.values().next().unwrap().0.clone();
    let canary = canary_alone.values().next().unwrap().0.clone();
    assert_ne!(champion, canary, "two versions to tell apart");
    let by_version = HashMap::from([
        (champion.clone(), champion_alone),
        (canary.clone(), canary_alone),
    ]);

    // The canary follows a folder this test changes (the champion checks no source: poll 0).
    let canary_dir = std::env::temp_dir().join(format!("pixguard-canary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&canary_dir);
    copy_package(CHALLENGER, &canary_dir);
    let mut command = Server::command(&[
        "--set",
        "model.poll_interval_s=0",
        "--set",
        &format!("model.canary={}", canary_dir.display()),
        "--set",
        "model.canary_fraction=0.25",
        // Every request the champion answers is also scored in the shadow: the shadow must see
        // those and none of the canary's.
        "--set",
        &format!("model.shadow={CHALLENGER}"),
        "--set",
        "model.shadow_fraction=1.0",
    ]);
    let server = Server::spawn(command.env("PIXGUARD_ADMIN_TOKEN", TOKEN));

    // /v1, one transaction a request: every 4th is the canary's (the share is a counter).
    let mut answered_by = Vec::new();
    for tx in &txs[..40] {
        let answer = score_one(&client, &server, tx).await;
        is_its_versions(&answer, &by_version);
        answered_by.push(answer["model"]["version"].as_str().unwrap() == canary);
    }
    let expected: Vec<bool> = (0..40).map(|i| i % 4 == 3).collect();
    assert_eq!(answered_by, expected);

    // A request naming a version is answered by that version, over OIP HTTP and gRPC.
    let path = |v: &str| format!("/v2/models/pix-fraud/versions/{v}/infer");
    let (status, body) = oip_http(&client, &server, &path(&canary), &txs[40]).await;
    assert_eq!(
        (status, body["model_version"].as_str()),
        (200, Some(canary.as_str())),
        "{body}"
    );
    let (status, body) = oip_http(&client, &server, &path(&champion), &txs[41]).await;
    assert_eq!(
        (status, body["model_version"].as_str()),
        (200, Some(champion.as_str())),
        "{body}"
    );
    let (status, body) = oip_http(&client, &server, &path("19990101.0000"), &txs[41]).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown version '19990101.0000'"),
        "{body}"
    );
    let metadata: Value = get_json(&client, &server, "/v2/models/pix-fraud", None).await;
    assert_eq!(metadata["versions"], json!([champion, canary]));

    let mut request = built(Api::OipGrpc, &txs[42]).grpc_request(0).unwrap();
    request.model_version = canary.clone();
    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_address()))
        .await
        .unwrap();
    let answer = grpc.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.model_version, canary);
    let at = answer.outputs.iter().position(|o| o.name == "score");
    let raw = &answer.raw_output_contents[at.expect("a score output")];
    let score = f64::from(f32::from_le_bytes(raw[..4].try_into().unwrap()));
    let id = txs[42]["end_to_end_id"].as_str().unwrap();
    assert!((score - by_version[&canary][id].1).abs() <= 1e-6, "{score}");

    // 10 of the share, 1 named over HTTP, 1 over gRPC.
    let text = super::server::metrics_text(&client, &server).await;
    assert_eq!(metric(&text, "pixguard_canary_requests_total"), 12.0);
    assert_eq!(metric(&text, "pixguard_canary_fraction"), 0.25);
    assert!(
        text.contains(&format!(
            "pixguard_canary_model_info{{name=\"pix-fraud\",version=\"{canary}\""
        )),
        "{text}"
    );
    let canary_stats = stats(&client, &server).await["canary"].clone();
    assert_eq!(canary_stats["requests"], 12, "{canary_stats}");
    each_version_has_its_own_statistics(&client, &server, (&champion, 31), (&canary, 12)).await;

    // The admin API: refused without the token or with a share out of range; then 0 at once.
    assert_eq!(
        admin_canary(&client, &server, 0.0, "wrong-token-0123456789")
            .await
            .0,
        401
    );
    let (status, body) = admin_canary(&client, &server, 2.0, TOKEN).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("fraction: 2 is not between 0 and 1"),
        "{body}"
    );
    let (status, body) = admin_canary(&client, &server, 0.0, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["was"].as_f64(), body["fraction"].as_f64()),
        (Some(0.25), Some(0.0))
    );
    for tx in &txs[43..60] {
        let answer = score_one(&client, &server, tx).await;
        assert_eq!(
            answer["model"]["version"],
            champion.as_str(),
            "dialled to 0: {answer}"
        );
        is_its_versions(&answer, &by_version);
    }
    let described: Value = get_json(&client, &server, "/admin/model", Some(TOKEN)).await;
    assert_eq!(described["canary"]["fraction"], 0.0, "{described}");
    assert_eq!(
        described["canary"]["serving"]["version"],
        canary.as_str(),
        "{described}"
    );
    assert_eq!(
        described["canary"]["serving"]["origin"]["role"], "canary",
        "{described}"
    );
    // The challenger is a retrained version: the same columns, standardised with its own
    // statistics and with its own vocabularies. A feature store's rows built for the champion
    // mean other values to it, and the admin API says so (the shadow counts them incompatible).
    let recoded = recoded_columns("models/pix-fraud", CHALLENGER);
    let change = described["canary"]["features_mode_change"]
        .as_str()
        .unwrap();
    assert!(
        change.contains(&format!(
            " columns, {} columns encoded otherwise (",
            recoded.len()
        )) && change.contains(&format!("`{}` (", recoded[0]))
            && change.ends_with("): the same tensors now mean other values"),
        "{change} ({recoded:?})"
    );

    // The shadow saw every request the champion answered (30 + 17 on /v1, 1 named over HTTP),
    // none of the canary's.
    let shadow = stats(&client, &server).await["shadow"].clone();
    assert_eq!(shadow["sampled"], 48, "{shadow}");
    let monitoring: Value = get_json(&client, &server, "/v1/monitoring", None).await;
    let all = |role: &str| {
        let windows = monitoring[role]["windows"].as_array().unwrap();
        windows.iter().find(|w| w["window"] == "all").unwrap()["rows"].clone()
    };
    assert_eq!(monitoring["canary"]["role"], "canary");
    assert_eq!(all("canary"), 12, "{monitoring}");
    assert_eq!(all("champion"), 48, "{monitoring}");

    // Its source is followed as the champion's is: a new version there swaps in on a check of its
    // role, and only the canary's slot changes.
    std::fs::remove_dir_all(&canary_dir).unwrap();
    copy_package("models/pix-fraud", &canary_dir);
    let reload = |query: &str| {
        let path = format!("/admin/model/reload{query}");
        let (client, server) = (&client, &server);
        async move { admin_post(client, server, &path, None, TOKEN).await }
    };
    let (status, body) = reload("?role=warden").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("query: "),
        "{body}"
    );
    let (status, body) = reload("?role=canary").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "swapped", "{body}");
    assert_eq!(body["serving"], format!("pix-fraud:{champion}"), "{body}");
    let described: Value = get_json(&client, &server, "/admin/model", Some(TOKEN)).await;
    assert_eq!(
        described["canary"]["serving"]["version"],
        champion.as_str(),
        "{described}"
    );
    assert_eq!(described["canary"]["swaps"], 1, "{described}");
    assert!(
        described["canary"]["features_mode_change"].is_null(),
        "the champion's own package: {described}"
    );
    assert_eq!(
        described["swaps"], 0,
        "the champion's slot is untouched: {described}"
    );
    // Both slots serve one version now: one statistics entry, the champion's 31 + 17 requests
    // and the new canary's none (a swapped-in version starts at 0).
    let both = get_json(&client, &server, "/v2/models/pix-fraud/stats", None).await;
    let listed = both["model_stats"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{both}");
    assert_eq!(listed[0]["version"], champion.as_str(), "{both}");
    assert_eq!(
        listed[0]["inference_stats"]["success"]["count"], 48,
        "{both}"
    );
    assert_eq!(
        described["shadow"]["serving"]["version"],
        canary.as_str(),
        "{described}"
    );
    let (status, body) = reload("?role=challenger").await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("unchanged")),
        "{body}"
    );

    // Pinned to another source in its role: the canary follows it from now on.
    let pin = |query: &str| {
        let path = format!("/admin/model{query}");
        let (client, server) = (&client, &server);
        let body = json!({ "source": CHALLENGER });
        async move { admin_post(client, server, &path, Some(body), TOKEN).await }
    };
    let (status, body) = pin("?role=shadow").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = pin("?role=canary").await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("swapped")),
        "{body}"
    );
    let described = get_json(&client, &server, "/admin/model", Some(TOKEN)).await;
    let canary_now = &described["canary"];
    assert_eq!(
        canary_now["serving"]["version"],
        canary.as_str(),
        "{described}"
    );
    assert_eq!(canary_now["source"], CHALLENGER, "{described}");
    assert_eq!(
        described["serving"]["version"],
        champion.as_str(),
        "{described}"
    );
    let _ = std::fs::remove_dir_all(&canary_dir);
}

/// Triton's statistics name each version with the requests that took it, as the client counted
/// them (`(version, requests)`: the champion's, then the canary's), over HTTP and gRPC: one row
/// a request, sent one at a time, so as many rows and batches (all of 1 row) as requests; none
/// failed (the one refused for an unknown version took no version).
async fn each_version_has_its_own_statistics(
    client: &reqwest::Client,
    server: &Server,
    champion: (&str, u64),
    canary: (&str, u64),
) {
    let expect = |stat: &Value, (version, requests): (&str, u64)| {
        assert_eq!(
            (&stat["name"], &stat["version"]),
            (&json!("pix-fraud"), &json!(version)),
            "{stat}"
        );
        let counts = |keys: &[&str]| -> Vec<u64> {
            keys.iter()
                .map(|k| k.split('.').fold(stat, |v, k| &v[k]).as_u64().unwrap())
                .collect()
        };
        let inference = |k: &str| format!("inference_stats.{k}.count");
        let keys = ["success", "queue", "compute_infer"].map(inference);
        let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        keys.extend(["inference_count", "execution_count"]);
        assert_eq!(counts(&keys), vec![requests; 5], "{stat}");
        assert_eq!(stat["inference_stats"]["fail"]["count"], 0, "{stat}");
        let sizes = stat["batch_stats"].as_array().unwrap();
        assert_eq!(sizes.len(), 1, "{stat}");
        assert_eq!(
            (&sizes[0]["batch_size"], &sizes[0]["compute_infer"]["count"]),
            (&json!(1), &json!(requests)),
            "{stat}"
        );
        assert!(
            stat["inference_stats"]["success"]["ns"].as_u64().unwrap() > 0,
            "{stat}"
        );
        assert!(stat["last_inference"].as_u64().unwrap() > 0, "{stat}");
    };
    let both = get_json(client, server, "/v2/models/pix-fraud/stats", None).await;
    let listed = both["model_stats"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{both}");
    expect(&listed[0], champion);
    expect(&listed[1], canary);
    let all = get_json(client, server, "/v2/models/stats", None).await;
    assert_eq!(all, both, "one model: the same versions");
    let path = format!("/v2/models/pix-fraud/versions/{}/stats", canary.0);
    let one = get_json(client, server, &path, None).await;
    assert_eq!(one["model_stats"].as_array().unwrap().len(), 1, "{one}");
    expect(&one["model_stats"][0], canary);
    let unknown = client
        .get(server.url("/v2/models/pix-fraud/versions/19990101.0000/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let grpc = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_address()))
        .await
        .unwrap();
    let ask = |name: &str, version: &str| {
        let request = ModelStatisticsRequest {
            name: name.into(),
            version: version.into(),
        };
        let mut grpc = grpc.clone();
        async move {
            grpc.model_statistics(request)
                .await
                .unwrap()
                .into_inner()
                .model_stats
        }
    };
    let grpc_counts = |stat: &ModelStatistics| {
        let inference = stat.inference_stats.as_ref().unwrap();
        let count = |d: &Option<StatisticDuration>| d.as_ref().unwrap().count;
        let sizes: Vec<_> = stat
            .batch_stats
            .iter()
            .map(|b| (b.batch_size, count(&b.compute_infer)))
            .collect();
        (
            stat.version.clone(),
            [
                count(&inference.success),
                count(&inference.queue),
                count(&inference.compute_infer),
                stat.inference_count,
                stat.execution_count,
            ],
            count(&inference.fail),
            sizes,
        )
    };
    let want = |(version, requests): (&str, u64)| {
        (version.to_string(), [requests; 5], 0, vec![(1, requests)])
    };
    let listed: Vec<_> = ask("", "").await.iter().map(grpc_counts).collect();
    assert_eq!(listed, vec![want(champion), want(canary)]);
    let listed: Vec<_> = ask("pix-fraud", canary.0)
        .await
        .iter()
        .map(grpc_counts)
        .collect();
    assert_eq!(listed, vec![want(canary)]);

    // The same figures in Prometheus, by role.
    let text = super::server::metrics_text(client, server).await;
    for ((version, requests), role) in [(champion, "champion"), (canary, "canary")] {
        let labels = format!("{{model=\"pix-fraud\",version=\"{version}\",role=\"{role}\"");
        let outcome =
            |o: &str| format!("pixguard_version_requests_total{labels},outcome=\"{o}\"}}");
        assert_eq!(metric(&text, &outcome("ok")), requests as f64, "{role}");
        assert_eq!(metric(&text, &outcome("failed")), 0.0, "{role}");
        for family in ["rows_scored", "batches", "engine_requests"] {
            let name = format!("pixguard_version_{family}_total{labels}}}");
            assert_eq!(metric(&text, &name), requests as f64, "{name}");
        }
        let name = format!("pixguard_version_compute_seconds_total{labels}}}");
        assert!(metric(&text, &name) > 0.0, "{name}");
    }
}
