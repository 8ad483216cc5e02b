//! The Kubernetes manifests (k8s/), rendered by the real `kubectl kustomize` for every overlay,
//! checked against what the server really does: probe and scrape paths answer, the ConfigMap's
//! config.yaml is one `pixguard serve` accepts, the grace period outlasts the drain, the
//! autoscaler's metric exists, production asks for a GPU. (Schema validation of the same renders
//! is `.ci/run`'s kubernetes-validate step.)

#[path = "common/child.rs"]
mod child;
#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/server.rs"]
mod server;

use std::process::Command;

use serde_yaml_ng::Value;
use server::Server;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const OVERLAYS: [&str; 3] = ["dev", "staging", "production"];

/// `kubectl kustomize k8s/overlays/<overlay>` as YAML documents; `None` (with why) without kubectl.
fn render(overlay: &str) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .args(["kustomize", &format!("k8s/overlays/{overlay}")])
        .current_dir(ROOT)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install kubectl (Debian kubernetes-client): {e}"
            );
            eprintln!("skipped: no kubectl ({e}); apt-get install kubernetes-client");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 YAML");
    Some(
        text.split("\n---\n")
            .map(|doc| serde_yaml_ng::from_str(doc).expect("a YAML document"))
            .collect(),
    )
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn pod_specs(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "Job")))
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
            (name, &d["spec"]["template"]["spec"])
        })
        .collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn every_overlay_renders_secure_probed_and_bounded_workloads() {
    for overlay in OVERLAYS {
        let Some(docs) = render(overlay) else { return };
        let specs = pod_specs(&docs);
        assert_eq!(specs.len(), 3, "{overlay}: server, stream, batch");
        for (name, spec) in specs {
            let pod = &spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], Value::Bool(true), "{overlay}/{name}");
            assert_eq!(spec["serviceAccountName"], "pixguard", "{overlay}/{name}");
            for c in spec["containers"].as_sequence().expect("containers") {
                let sc = &c["securityContext"];
                assert_eq!(
                    sc["readOnlyRootFilesystem"],
                    Value::Bool(true),
                    "{overlay}/{name}"
                );
                assert_eq!(
                    sc["allowPrivilegeEscalation"],
                    Value::Bool(false),
                    "{overlay}/{name}"
                );
                assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{overlay}/{name}");
                for side in ["requests", "limits"] {
                    for r in ["cpu", "memory"] {
                        assert!(
                            !c["resources"][side][r].is_null(),
                            "{overlay}/{name}: {side}.{r}"
                        );
                    }
                }
                // A read-only root: everything written goes to a mounted volume.
                let mounts: Vec<&str> = c["volumeMounts"]
                    .as_sequence()
                    .expect("mounts")
                    .iter()
                    .map(|m| str_of(&m["mountPath"]))
                    .collect();
                assert!(mounts.contains(&"/tmp"), "{overlay}/{name}: {mounts:?}");
                if c["name"] == "pixguard" {
                    assert!(mounts.contains(&"/var/cache/pixguard"), "{overlay}/{name}");
                }
            }
        }
        let server = kind(&docs, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == "pixguard")
            .expect("server Deployment");
        let c = &server["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["startupProbe"]["httpGet"]["path"], "/readyz", "{overlay}");
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{overlay}"
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{overlay}"
        );
        // The startup probe must cover a model download, self-test and warm-up: minutes.
        let startup = c["startupProbe"]["periodSeconds"].as_u64().unwrap_or(0)
            * c["startupProbe"]["failureThreshold"].as_u64().unwrap_or(0);
        assert!(startup >= 120, "{overlay}: startup allows only {startup} s");
    }
}

#[test]
fn the_configmap_is_a_config_pixguard_accepts_and_the_grace_period_outlasts_the_drain() {
    let Some(docs) = render("production") else {
        return;
    };
    let cm = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|d| str_of(&d["metadata"]["name"]).starts_with("pixguard-config"))
        .expect("the config ConfigMap");
    let text = str_of(&cm["data"]["config.yaml"]);
    let dir = std::env::temp_dir().join(format!("pixguard-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("config.yaml");
    std::fs::write(&file, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .current_dir(ROOT)
        .output()
        .expect("pixguard runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: Value = serde_yaml_ng::from_slice(&out.stdout).expect("effective config");
    let grace_ms = effective["server"]["grace_period_ms"]
        .as_u64()
        .expect("grace");
    let drain_ms = effective["server"]["drain_timeout_ms"]
        .as_u64()
        .expect("drain");
    for d in kind(&docs, "Deployment") {
        let spec = &d["spec"]["template"]["spec"];
        let pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let period = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace period");
        assert!(
            period * 1000 > pre_stop * 1000 + grace_ms + drain_ms,
            "{}: {period} s must outlast preStop {pre_stop} s + grace {grace_ms} ms + drain {drain_ms} ms",
            str_of(&d["metadata"]["name"])
        );
        // The admin token the config names is mounted where it says.
        let token = effective["server"]["admin_token_file"]
            .as_str()
            .expect("token file");
        let mounted = spec["containers"][0]["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .iter()
            .any(|m| token.starts_with(str_of(&m["mountPath"])) && m["name"] == "admin-token");
        assert!(mounted, "{token} is not on a mounted Secret");
    }
}

#[test]
fn production_asks_for_a_gpu_and_follows_the_production_alias() {
    let Some(docs) = render("production") else {
        return;
    };
    for (name, spec) in pod_specs(&docs) {
        assert!(
            !str_of(&spec["nodeSelector"]["cloud.google.com/gke-accelerator"]).is_empty(),
            "{name}: selects the accelerator"
        );
        assert!(
            spec["tolerations"]
                .as_sequence()
                .is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu")),
            "{name}: tolerates the GPU taint"
        );
        let c = &spec["containers"][0];
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1", "{name}");
        let env: Vec<(&str, &str)> = c["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .map(|e| (str_of(&e["name"]), str_of(&e["value"])))
            .collect();
        assert!(
            env.contains(&("PIXGUARD__ENGINE__DEVICE", "cuda")),
            "{name}: {env:?}"
        );
        assert!(
            env.contains(&("PIXGUARD__MODEL__SOURCE", "models:/pix-fraud@production")),
            "{name}: {env:?}"
        );
        assert!(str_of(&c["image"]).contains("pixguard-cuda"), "{name}");
    }
    // The HTTP API behind Cloud Endpoints: ESPv2 beside the server, the Service's http port on it.
    let server = kind(&docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "pixguard")
        .expect("server");
    let esp = server["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "esp"))
        .expect("an ESPv2 sidecar");
    let args: Vec<&str> = esp["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(str_of)
        .collect();
    assert!(args.contains(&"--rollout_strategy=managed"), "{args:?}");
    assert!(
        args.contains(&"--backend=http://127.0.0.1:8080"),
        "{args:?}"
    );
    let endpoints: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/k8s/endpoints/openapi.yaml")).expect("document"),
    )
    .expect("YAML");
    let service = format!("--service={}", str_of(&endpoints["host"]));
    assert!(args.contains(&service.as_str()), "{args:?} vs {service}");
    let svc = kind(&docs, "Service")[0];
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "esp");
    let Some(dev) = render("dev") else { return };
    for (name, spec) in pod_specs(&dev) {
        assert!(
            spec["nodeSelector"].is_null(),
            "dev/{name} runs on CPU nodes"
        );
    }
}

#[test]
fn probe_scrape_and_autoscaling_targets_exist_on_a_live_server() {
    let Some(docs) = render("production") else {
        return;
    };
    let server = Server::start(&[]);
    let client = reqwest::blocking::Client::new();
    let mut paths: Vec<String> = Vec::new();
    for d in kind(&docs, "Deployment") {
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            paths.push(str_of(&c[probe]["httpGet"]["path"]).to_string());
        }
    }
    for pm in kind(&docs, "PodMonitoring") {
        for e in pm["spec"]["endpoints"].as_sequence().expect("endpoints") {
            paths.push(str_of(&e["path"]).to_string());
        }
    }
    paths.sort();
    paths.dedup();
    assert!(paths.len() >= 3, "{paths:?}");
    for path in &paths {
        let status = client
            .get(server.url(path))
            .send()
            .expect("the server answers")
            .status();
        assert!(status.is_success(), "{path}: {status}");
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    for hpa in kind(&docs, "HorizontalPodAutoscaler") {
        for m in hpa["spec"]["metrics"].as_sequence().expect("metrics") {
            let name = str_of(&m["pods"]["metric"]["name"]);
            if name.is_empty() {
                continue;
            }
            // Managed Prometheus names it prometheus.googleapis.com|<metric>|<kind>.
            let metric = name.split('|').nth(1).unwrap_or(name);
            assert!(
                metrics.lines().any(|l| l.starts_with(metric)),
                "the autoscaler's {metric} is not in /metrics"
            );
        }
    }
}

/// Metric names (`pixguard_…`) and `by (…)` labels of a PromQL expression.
fn promql_parts(expr: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pixguard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    let mut labels = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let end = tail.find(')').unwrap_or(tail.len());
        labels.extend(tail[..end].split(',').map(|l| l.trim().to_string()));
        rest = &tail[end..];
    }
    // Prometheus adds `pod` from the scrape target; `le` is every histogram's.
    labels.retain(|l| l != "pod" && l != "le" && !l.is_empty());
    (names, labels)
}

#[test]
fn every_dashboard_query_reads_metrics_a_live_server_exposes() {
    let Some(python) = registry::python("the dashboard test (Kafka topics)") else {
        return;
    };
    let Some(broker_bin) = kafka::broker_binary() else {
        return;
    };
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/k8s/dashboards/pixguard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:?}");
    // Every family shows up only when its part runs: the stream (with a partition assigned, for
    // the lag), the shadow, and at least one scored request.
    let broker = kafka::Broker::start(&broker_bin);
    let created = Command::new(&python)
        .args([
            "tests/python/kafka_topics.py",
            "create",
            "--brokers",
            &broker.address,
        ])
        .args(["--partitions", "1", "dash.in", "dash.out", "dash.dlq"])
        .current_dir(ROOT)
        .status()
        .expect("python runs");
    assert!(created.success());
    let brokers = format!("stream.brokers={}", broker.address);
    let server = Server::start(&[
        "--set",
        "stream.enabled=true",
        "--set",
        &brokers,
        "--set",
        "stream.input_topic=dash.in",
        "--set",
        "stream.output_topic=dash.out",
        "--set",
        "stream.dead_letter_topic=dash.dlq",
        // The broker's group join takes about half the session timeout; statistics (the lag) every s.
        "--set",
        "stream.librdkafka.session_timeout_ms=6000",
        "--set",
        "stream.librdkafka.statistics_interval_ms=1000",
        "--set",
        "model.shadow=models/pix-fraud-challenger",
        "--set",
        "model.shadow_fraction=1.0",
    ]);
    // The lag is known once the partition has records and a position.
    let rows = std::env::temp_dir().join(format!("pixguard-dash-{}.jsonl", std::process::id()));
    let synth = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(["synth", "--rows", "20", "-o"])
        .arg(&rows)
        .status()
        .expect("synth");
    assert!(synth.success());
    let produced = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args([
            "produce",
            "--brokers",
            &broker.address,
            "--topic",
            "dash.in",
        ])
        .arg(&rows)
        .env("RUST_LOG", "warn")
        .status()
        .expect("produce");
    assert!(produced.success());
    let tx = server::transactions(3, 5);
    let client = reqwest::blocking::Client::new();
    let scored = client
        .post(server.url("/v1/score"))
        .json(&serde_json::json!({ "transactions": tx }))
        .send()
        .expect("score");
    assert!(scored.status().is_success());
    let mut missing: Vec<String> = Vec::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < until {
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("metrics");
        missing.clear();
        for expr in &exprs {
            let (names, labels) = promql_parts(expr);
            assert!(!names.is_empty(), "{expr}: no pixguard metric");
            for name in &names {
                let samples: Vec<&str> = metrics
                    .lines()
                    .filter(|l| {
                        l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                    })
                    .collect();
                if samples.is_empty() {
                    missing.push(format!("{name} (in {expr})"));
                }
                for label in &labels {
                    if !samples.is_empty()
                        && !samples.iter().any(|l| l.contains(&format!("{label}=\"")))
                    {
                        missing.push(format!("{name}{{{label}}} (in {expr})"));
                    }
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("dashboard queries read what /metrics lacks: {missing:#?}");
}

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

/// Shell commands in a text's fenced blocks (continuation lines joined) that start with `prefix`.
fn commands_in(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if current.starts_with(prefix) {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    out
}

/// Runs `pixguard <args> --help` through bash (its quoting and variables): clap refuses a
/// subcommand or flag it does not know before it prints help.
fn assert_pixguard_accepts(command: &str, where_: &str) {
    let line = format!("{command} --help");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_pixguard"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &line])
        .env("PATH", path)
        .env("PROJECT_ID", "my-psp-fraud")
        .env("SMOKE_API_KEY", "k")
        .env("GCP_PROJECT", "my-psp-fraud")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{where_}: `{command}` is refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_pixguard_command_in_the_runbook_is_one_pixguard_accepts() {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/deploy.md")).expect("docs/deploy.md");
    let commands = commands_in(&doc, "pixguard ");
    assert!(commands.len() >= 4, "{commands:#?}");
    for c in &commands {
        assert_pixguard_accepts(c, "docs/deploy.md");
    }
    // kubectl's commands and flags (cobra refuses an unknown flag before it prints help); the
    // gcloud ones are checked by the test below.
    if render("dev").is_some() {
        let kubectl = commands_in(&doc, "kubectl ");
        assert!(kubectl.len() >= 5, "{kubectl:#?}");
        for c in &kubectl {
            let out = Command::new("bash")
                .args(["-c", &format!("{c} --help")])
                .env("MLFLOW_TRACKING_URI", "http://mlflow:5000")
                .env("MLFLOW_TRACKING_TOKEN", "t")
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "docs/deploy.md: `{c}` is refused:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The paths it names exist.
    for path in [
        "k8s/render.sh",
        "k8s/endpoints/openapi.yaml",
        "k8s/endpoints/grpc.yaml",
        "tests/python/endpoints_grpc.py",
        "k8s/overlays/production/ingress.yaml",
        ".github/workflows/deploy.yml",
    ] {
        assert!(doc.contains(path), "the runbook does not mention {path}");
        assert!(
            std::path::Path::new(&format!("{ROOT}/{path}")).exists(),
            "{path}"
        );
    }
}

/// Runs a gcloud command line through bash with no credentials and a scratch configuration: gcloud
/// parses the whole line (command path, flag names, choices) before it asks for an account, so a
/// misspelling exits 2 and a line spelled right stops at "no active account" (or succeeds, for a
/// local command such as `gcloud config set`).
fn assert_gcloud_accepts(command: &str, where_: &str, scratch: &std::path::Path) {
    let out = Command::new("bash")
        .args(["-c", command])
        .env("HOME", scratch)
        .env("CLOUDSDK_CONFIG", scratch.join("gcloud"))
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
        // What the runbook exports and the workflow's variables hold.
        .env("PROJECT_ID", "my-psp-fraud")
        .env("PROJECT_NUMBER", "123456789012")
        .env("REGION", "southamerica-east1")
        .env("GPU_ZONES", "southamerica-east1-a,southamerica-east1-c")
        .env("CLUSTER", "pixguard")
        .env("POD_SA", "pixguard@my-psp-fraud.iam.gserviceaccount.com")
        .env(
            "DEPLOYER",
            "github-deployer@my-psp-fraud.iam.gserviceaccount.com",
        )
        .env("GITHUB_REPO", "my-psp/pixguard")
        .env("ADDRESS", "203.0.113.7")
        .env("GCP_PROJECT", "my-psp-fraud")
        .env("GCP_REGION", "southamerica-east1")
        .env("GKE_CLUSTER", "pixguard")
        .env("GKE_LOCATION", "southamerica-east1")
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("You do not currently have an active account"),
        "{where_}: `{command}` is refused by gcloud (exit {:?}):\n{stderr}",
        out.status.code()
    );
}

#[test]
fn every_gcloud_command_in_the_runbook_and_the_workflow_is_one_gcloud_accepts() {
    // The Google Cloud CLI is on this kind of machine, but no registry `.ci/run` installs from
    // (PyPI, npm, Debian) carries it: where it is missing the test says so and checks nothing.
    if Command::new("gcloud").arg("--version").output().is_err() {
        eprintln!("skipped: the Google Cloud CLI (gcloud) is not installed");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("pixguard-gcloud-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/deploy.md")).expect("docs/deploy.md");
    let runbook = commands_in(&doc, "gcloud ");
    assert!(runbook.len() >= 25, "{runbook:#?}");
    for c in &runbook {
        assert_gcloud_accepts(c, "docs/deploy.md", &scratch);
    }
    let wf: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/.github/workflows/deploy.yml")).expect("deploy"),
    )
    .expect("YAML");
    let mut workflow = Vec::new();
    for job in wf["jobs"].as_mapping().expect("jobs").values() {
        for step in job["steps"].as_sequence().into_iter().flatten() {
            if let Some(run) = step["run"].as_str() {
                workflow.extend(commands_in(&format!("```\n{run}\n```"), "gcloud "));
            }
        }
    }
    assert!(workflow.len() >= 4, "{workflow:#?}");
    for c in &workflow {
        assert_gcloud_accepts(c, ".github/workflows/deploy.yml", &scratch);
    }
    println!(
        "gcloud accepts {} runbook and {} workflow command lines",
        runbook.len(),
        workflow.len()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The deploy workflow: on push to production only, one at a time, checks before images before
/// deploy, keyless auth, images pinned by digest, the promotion before the apply, a smoke test
/// that gates, and both rollbacks on failure; every pixguard command it runs is one pixguard
/// accepts and every Deployment it waits for or undoes exists in the production render.
#[test]
fn the_deploy_workflow_checks_deploys_smoke_tests_and_rolls_back() {
    let text =
        std::fs::read_to_string(format!("{ROOT}/.github/workflows/deploy.yml")).expect("deploy");
    let wf: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(
        wf["on"]["push"]["branches"],
        serde_yaml_ng::from_str::<Value>("[production]").unwrap()
    );
    assert_eq!(wf["concurrency"]["cancel-in-progress"], false);
    assert!(wf["permissions"].as_mapping().is_some_and(|m| m.is_empty()));
    let jobs = &wf["jobs"];
    assert_eq!(jobs["checks"]["uses"], "./.github/workflows/ci.yml");
    let ci: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/.github/workflows/ci.yml")).expect("ci"),
    )
    .expect("YAML");
    assert!(
        ci["on"].get("workflow_call").is_some(),
        "ci.yml is callable"
    );
    assert_eq!(jobs["images"]["needs"], "checks");
    assert_eq!(jobs["deploy"]["needs"], "images");
    assert_eq!(jobs["deploy"]["environment"], "production");
    for job in ["images", "deploy"] {
        assert_eq!(jobs[job]["permissions"]["id-token"], "write", "{job}");
    }
    // Every action pinned by commit.
    for line in text.lines().map(str::trim) {
        if let Some(uses) = line
            .strip_prefix("- uses: ")
            .or(line.strip_prefix("uses: "))
        {
            let uses = uses.split_whitespace().next().unwrap_or("");
            if uses.starts_with("./") {
                continue;
            }
            let sha = uses.rsplit('@').next().unwrap_or("");
            assert!(
                sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                "{uses} is not pinned by commit"
            );
        }
    }
    let files: Vec<&str> = jobs["images"]["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .filter(|s| s["with"]["push"] == true)
        .map(|s| str_of(&s["with"]["file"]))
        .collect();
    assert_eq!(files, ["Dockerfile", "Dockerfile.cuda"]);

    let steps = jobs["deploy"]["steps"].as_sequence().expect("steps");
    let at = |id: &str| {
        steps
            .iter()
            .position(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}"))
    };
    let run_at = |needle: &str| {
        steps
            .iter()
            .position(|s| str_of(&s["run"]).contains(needle))
            .unwrap_or_else(|| panic!("no step runs {needle}"))
    };
    let (promote, apply) = (at("promote"), at("apply"));
    let rendering = run_at("k8s/render.sh production");
    let smoke = run_at(" bench ");
    let undo = run_at("rollout undo");
    let unalias = run_at("model rollback");
    assert!(
        promote < apply && rendering < apply && apply < smoke,
        "order"
    );
    assert!(smoke < undo && smoke < unalias, "rollbacks come last");
    let if_of = |i: usize| str_of(&steps[i]["if"]).to_string();
    assert!(
        if_of(undo).contains("failure()") && if_of(undo).contains("steps.apply"),
        "{}",
        if_of(undo)
    );
    assert!(
        if_of(unalias).contains("failure()") && if_of(unalias).contains("steps.promote"),
        "{}",
        if_of(unalias)
    );
    let smoke_run = str_of(&steps[smoke]["run"]);
    for gate in ["--fail-error-rate", "--fail-p99-ms", "--header \"x-api-key"] {
        assert!(smoke_run.contains(gate), "the smoke test lacks {gate}");
    }

    // pixguard runs from the pushed image: `docker run … "$IMAGE" <args>`.
    let mut runs = 0;
    for job in ["images", "deploy"] {
        for step in jobs[job]["steps"].as_sequence().expect("steps") {
            let script = format!("```\n{}\n```", str_of(&step["run"]));
            for cmd in commands_in(&script, "") {
                let Some((_, args)) = cmd
                    .split_once("docker run")
                    .and_then(|(_, rest)| rest.split_once("IMAGE\" "))
                else {
                    continue;
                };
                // `moved=$(docker run … "$IMAGE" model promote …)`: the command substitution's end.
                let args = args.trim_end().trim_end_matches(')');
                assert_pixguard_accepts(&format!("pixguard {args}"), "deploy.yml");
                runs += 1;
            }
        }
    }
    assert!(runs >= 5, "{runs} pixguard commands found");
    // Its kubectl commands and flags, likewise (cobra refuses an unknown flag before help).
    let kubectl: Vec<String> = ["images", "deploy"]
        .iter()
        .flat_map(|job| jobs[*job]["steps"].as_sequence().expect("steps"))
        .flat_map(|step| commands_in(&format!("```\n{}\n```", str_of(&step["run"])), "kubectl "))
        .collect();
    assert!(kubectl.len() >= 5, "{kubectl:#?}");
    if render("dev").is_some() {
        for c in &kubectl {
            let out = Command::new("bash")
                .args(["-c", &format!("{c} --help")])
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "deploy.yml: `{c}` is refused:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let Some(docs) = render("production") else {
        return;
    };
    let deployments: Vec<&str> = kind(&docs, "Deployment")
        .iter()
        .map(|d| str_of(&d["metadata"]["name"]))
        .collect();
    let namespace = str_of(&kind(&docs, "Deployment")[0]["metadata"]["namespace"]).to_string();
    for (i, part) in text.match_indices("deployment/") {
        let name: String = text[i + part.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        assert!(deployments.contains(&name.as_str()), "deployment/{name}");
    }
    assert!(text.contains(&format!("kubectl -n {namespace} rollout")));
}

/// `k8s/render.sh` fills in the project and region and pins every pixguard image by digest, or
/// refuses; the certificate's domain is the Endpoints host.
#[test]
fn render_pins_images_by_digest_and_leaves_no_placeholder() {
    if render("production").is_none() {
        return;
    }
    let digest = format!("sha256:{}", "ab".repeat(32));
    let image = format!("southamerica-east1-docker.pkg.dev/p-1/pixguard/pixguard-cuda@{digest}");
    let out = Command::new(format!("{ROOT}/k8s/render.sh"))
        .args(["production", "p-1", "southamerica-east1", &image])
        .output()
        .expect("render.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(!text.contains("PROJECT_ID") && !text.contains("REGION-"));
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str(doc).expect("a YAML document"))
        .collect();
    let mut pinned = 0;
    for (name, spec) in pod_specs(&docs) {
        for c in spec["containers"].as_sequence().expect("containers") {
            let img = str_of(&c["image"]);
            if img.contains("/pixguard") {
                assert_eq!(img, image, "{name}");
                pinned += 1;
            }
        }
    }
    assert!(pinned >= 3, "{pinned}");
    let cert = kind(&docs, "ManagedCertificate")[0];
    let openapi: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/k8s/endpoints/openapi.yaml")).expect("document"),
    )
    .expect("YAML");
    assert_eq!(
        str_of(&cert["spec"]["domains"][0]),
        str_of(&openapi["host"]).replace("PROJECT_ID", "p-1")
    );
    // A tag instead of a digest is refused.
    let refused = Command::new(format!("{ROOT}/k8s/render.sh"))
        .args(["production", "p-1", "southamerica-east1"])
        .output()
        .expect("render.sh runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not pinned"));
}
