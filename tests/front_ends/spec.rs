//! The Open Inference Protocol REST routes' bodies against the specification's JSON objects.

use super::*;

/// A key of a specification object and the check of its JSON type.
type Key<'a> = (&'a str, fn(&Value) -> bool);

/// Exactly the keys `keys`, each of the JSON type the specification gives.
fn shape(what: &str, v: &Value, keys: &[Key]) {
    let object = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    want.sort_unstable();
    assert_eq!(names, want, "{what}: {v}");
    for (k, is) in keys {
        assert!(is(&v[*k]), "{what}: {k} has the wrong type: {v}");
    }
}

fn strings(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

fn numbers(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_i64))
}

fn metadata_tensors(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(|t| {
            shape(
                "$metadata_tensor",
                t,
                &[
                    ("name", Value::is_string),
                    ("datatype", Value::is_string),
                    ("shape", numbers),
                ],
            );
            true
        })
    })
}

/// Every OIP REST route against the specification's JSON objects (`$live_server_response`, …).
pub(super) async fn spec_bodies(server: &Server) {
    let get = |path: &str| {
        let url = server.url(path);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = get("/v2/health/live").await;
    assert_eq!(status, 200);
    shape("$live_server_response", &v, &[("live", Value::is_boolean)]);
    assert_eq!(v["live"], true);
    let (status, v) = get("/v2/health/ready").await;
    assert_eq!(status, 200);
    shape(
        "$ready_server_response",
        &v,
        &[("ready", Value::is_boolean)],
    );
    assert_eq!(v["ready"], true);
    let (_, v) = get("/v2").await;
    shape(
        "$metadata_server_response",
        &v,
        &[
            ("name", Value::is_string),
            ("version", Value::is_string),
            ("extensions", strings),
        ],
    );
    let (status, meta) = get(&format!("/v2/models/{MODEL}")).await;
    assert_eq!(status, 200);
    shape(
        "$metadata_model_response",
        &meta,
        &[
            ("name", Value::is_string),
            ("versions", strings),
            ("platform", Value::is_string),
            ("inputs", metadata_tensors),
            ("outputs", metadata_tensors),
        ],
    );
    let version = meta["versions"][0].as_str().unwrap().to_string();
    for path in [
        format!("/v2/models/{MODEL}/ready"),
        format!("/v2/models/{MODEL}/versions/{version}/ready"),
    ] {
        let (status, v) = get(&path).await;
        assert_eq!(status, 200, "{path}");
        shape(
            "$ready_model_response",
            &v,
            &[("name", Value::is_string), ("ready", Value::is_boolean)],
        );
        assert_eq!(v, json!({"name": MODEL, "ready": true}));
    }
    let (_, versioned) = get(&format!("/v2/models/{MODEL}/versions/{version}")).await;
    assert_eq!(versioned, meta);
    for path in [
        "/v2/models/no-such-model".to_string(),
        format!("/v2/models/{MODEL}/versions/0.0.0-none"),
        "/v2/models/no-such-model/ready".to_string(),
    ] {
        let (status, v) = get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            v["error"].is_string(),
            "$metadata_model_error_response: {v}"
        );
    }
    // A path no route answers and a method a route does not take are JSON errors too (axum's own
    // were empty bodies), the wrong method with the methods that are allowed.
    let client = reqwest::Client::new();
    for (method, path, status, code, allow) in [
        ("GET", "/v1/scores", 404, "not_found", None),
        ("POST", "/v2/repository/index", 404, "not_found", None),
        ("GET", "/v1/score", 405, "method_not_allowed", Some("POST")),
        (
            "DELETE",
            "/v2/models/pix-fraud",
            405,
            "method_not_allowed",
            Some("GET,HEAD"),
        ),
    ] {
        let r = client
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            r.headers().get("allow").map(|v| v.to_str().unwrap()),
            allow,
            "{method} {path}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{method} {path}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(path), "{method} {path}: {v}");
        if status == 404 {
            assert!(error.contains("POST /v1/score"), "names the routes: {v}");
        }
    }
    // `$inference_response`, with the request's id; an unknown output is refused before compute.
    let valid = transactions(1, 73).remove(0);
    let (body, _) = oip_forms(&valid, MODEL);
    // Edited as text: the bench writes NaN literals for absent floats, as tritonclient does.
    let text = String::from_utf8(body).unwrap();
    let with_id = format!("{{\"id\":\"req-42\",{}", &text[1..]);
    let r = reqwest::Client::new()
        .post(server.url(&infer_path(MODEL)))
        .body(with_id.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    shape(
        "$inference_response",
        &v,
        &[
            ("model_name", Value::is_string),
            ("model_version", Value::is_string),
            ("id", Value::is_string),
            ("outputs", Value::is_array),
        ],
    );
    assert_eq!(v["id"], "req-42");
    for output in v["outputs"].as_array().unwrap() {
        shape(
            "$response_output",
            output,
            &[
                ("name", Value::is_string),
                ("shape", numbers),
                ("datatype", Value::is_string),
                ("data", Value::is_array),
            ],
        );
    }
    let unknown_output = format!(
        "{},\"outputs\":[{{\"name\":\"attention\"}}]}}",
        &with_id[..with_id.len() - 1]
    );
    let before = rows_scored(server).await;
    let r = reqwest::Client::new()
        .post(server.url(&infer_path(MODEL)))
        .body(unknown_output)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown output 'attention'"),
        "{v}"
    );
    assert_eq!(rows_scored(server).await, before, "refused before compute");
    // gRPC metadata lists the same tensors.
    let grpc = grpc_client(server)
        .await
        .model_metadata(ModelMetadataRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = grpc.inputs.iter().map(|t| t.name.as_str()).collect();
    let http: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str_name())
        .collect();
    assert_eq!(names, http);
}

trait Named {
    fn as_str_name(&self) -> &str;
}

impl Named for Value {
    fn as_str_name(&self) -> &str {
        self["name"].as_str().unwrap_or_default()
    }
}

async fn rows_scored(server: &Server) -> f64 {
    let text = server::metrics_text(&reqwest::Client::new(), server).await;
    server::metric(&text, "pixguard_rows_scored_total")
}
