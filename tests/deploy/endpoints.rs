//! The Cloud Endpoints documents (OpenAPI and gRPC) against the server's routes, its answers and
//! its proto.

use super::*;

/// (METHOD, path) of every `.route("path", get(…).post(…))` in a Rust source file.
fn routes_in(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        let body = &rest[at + ".route(".len()..];
        let mut depth = 1usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &body[..end];
        let path = call.split('"').nth(1).unwrap_or("").to_string();
        for method in ["get", "post", "put", "delete", "patch"] {
            let token = format!("{method}(");
            let found = call.match_indices(&token).any(|(i, _)| {
                i == 0
                    || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && call.as_bytes()[i - 1] != b'_'
            });
            if found {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
        rest = &body[end..];
    }
    out
}

#[test]
fn the_endpoints_document_lists_exactly_the_servers_routes() {
    let read = |p: &str| std::fs::read_to_string(format!("{ROOT}/{p}")).expect("source");
    let mut server: Vec<(String, String)> = ["src/server/mod.rs", "src/server/admin.rs"]
        .iter()
        .flat_map(|p| routes_in(&read(p)))
        .collect();
    server.sort();
    server.dedup();
    assert!(server.len() >= 20, "{server:?}");
    let doc: Value = serde_yaml_ng::from_str(&read("k8s/endpoints/openapi.yaml")).expect("YAML");
    let mut documented = Vec::new();
    let mut operation_ids = Vec::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        for (method, op) in item.as_mapping().expect("operations") {
            documented.push((str_of(method).to_uppercase(), str_of(path).to_string()));
            operation_ids.push(str_of(&op["operationId"]).to_string());
        }
    }
    documented.sort();
    let only_server: Vec<_> = server.iter().filter(|r| !documented.contains(r)).collect();
    let only_doc: Vec<_> = documented.iter().filter(|r| !server.contains(r)).collect();
    assert!(
        only_server.is_empty() && only_doc.is_empty(),
        "routes the document lacks: {only_server:?}; documented routes the server lacks: {only_doc:?}"
    );
    // Endpoints needs an operationId on every operation, each one different.
    assert!(operation_ids.iter().all(|o| !o.is_empty()));
    let mut unique = operation_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), operation_ids.len(), "{operation_ids:?}");
    assert!(str_of(&doc["host"]).ends_with(".cloud.goog"));
    assert_eq!(doc["swagger"], "2.0");
}

/// schemathesis (PyPI) against a live server: every operation of the Endpoints document, examples,
/// coverage and fuzzing phases; no 5xx, and every answer's status, content type, headers and body
/// are ones the document declares. Cross-field rules (MANU without a key, a registered device
/// with its first-seen time, …) are beyond Swagger 2.0, so most generated /v1 bodies are 422s,
/// which the document declares.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(python) = registry::python("schemathesis against the Endpoints document") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pixguard-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let token = "schemathesis-admin-token-0123";
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, token).expect("token file");
    let server = Server::spawn(
        Command::new(env!("CARGO_BIN_EXE_pixguard"))
            .args(["serve", "--address", "127.0.0.1", "--port", "0"])
            .args(["--grpc-port", "0"])
            .env("PIXGUARD__SERVER__ADMIN_TOKEN_FILE", &token_file),
    );
    let schemathesis = python.with_file_name("schemathesis");
    let out = Command::new(&schemathesis)
        .current_dir(&dir)
        .args(["run", &format!("{ROOT}/k8s/endpoints/openapi.yaml")])
        .args(["--url", &server.url("")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance,response_headers_conformance",
        ])
        .args(["--max-examples", "50", "--seed", "18"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", schemathesis.display()));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran every operation of the document, not zero of them.
    let doc: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/k8s/endpoints/openapi.yaml")).expect("document"),
    )
    .expect("YAML");
    let operations: usize = doc["paths"]
        .as_mapping()
        .expect("paths")
        .values()
        .map(|item| item.as_mapping().map_or(0, |m| m.len()))
        .sum();
    assert!(
        report.contains(&format!("Tested: {operations}")) && report.contains(" passed"),
        "{operations} operations in the document; schemathesis said:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gRPC Endpoints configuration parses as a `google.api.Service`, names only methods of the
/// proto the server compiles and gives each of them a rule (tests/python/endpoints_grpc.py, with
/// protoc from grpcio-tools); the production overlay's gRPC ESPv2 serves that service and proxies
/// to the server's gRPC port, and the Service's grpc port goes through it.
#[test]
fn the_grpc_endpoints_config_matches_the_proto_and_the_sidecar() {
    let Some(python) = registry::python("the gRPC Endpoints configuration check") else {
        return;
    };
    let out = Command::new(&python)
        .arg(format!("{ROOT}/tests/python/endpoints_grpc.py"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let proto =
        std::fs::read_to_string(format!("{ROOT}/src/protocol/inference.proto")).expect("proto");
    let rpcs = proto
        .lines()
        .filter(|l| l.trim_start().starts_with("rpc "))
        .count();
    assert_eq!(summary["methods"], rpcs, "{summary}");
    assert!(summary["descriptor_bytes"].as_u64().unwrap_or(0) > 1000);

    let Some(docs) = render("production") else {
        return;
    };
    let server = kind(&docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "pixguard")
        .expect("server");
    let containers = server["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let grpc_port = containers[0]["ports"]
        .as_sequence()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "grpc"))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the server's grpc port");
    let esp = containers
        .iter()
        .find(|c| c["name"] == "esp-grpc")
        .expect("a gRPC ESPv2 sidecar");
    let args: Vec<&str> = esp["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(str_of)
        .collect();
    let service = format!("--service={}", summary["service"].as_str().unwrap_or(""));
    assert!(args.contains(&service.as_str()), "{args:?} vs {service}");
    let backend = format!("--backend=grpc://127.0.0.1:{grpc_port}");
    assert!(args.contains(&backend.as_str()), "{args:?} vs {backend}");
    assert!(args.contains(&"--rollout_strategy=managed"), "{args:?}");
    let svc = kind(&docs, "Service")[0];
    assert_eq!(svc["spec"]["ports"][1]["name"], "grpc");
    assert_eq!(svc["spec"]["ports"][1]["targetPort"], "esp-grpc");
}
