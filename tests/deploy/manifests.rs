//! The overlays' workloads, ConfigMap and GPU request against what `pixguard serve` does.

use super::*;

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

/// k8s/loadtest: an Indexed Job whose pods are the parts of one `pixguard bench` run (one part
/// each, one start, one gs:// folder), locked down as the workloads are, with arguments that
/// `pixguard bench` accepts up to the start time it then refuses as past.
#[test]
fn the_load_test_job_runs_the_parts_of_one_bench_run() {
    let Some(docs) = render_dir("k8s/loadtest") else {
        return;
    };
    let jobs = kind(&docs, "Job");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!(job["completions"], job["parallelism"]);
    assert_eq!(job["backoffLimit"], 0, "a retried part starts late");
    let n = job["completions"].as_u64().expect("completions");
    let spec = &job["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let c = &spec["containers"][0];
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert!(
        c["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .iter()
            .any(|m| m["mountPath"] == "/tmp"),
        "bench stages a gs:// report in /tmp"
    );
    let env: Vec<&Value> = c["env"].as_sequence().expect("env").iter().collect();
    let index = env
        .iter()
        .find(|e| e["name"] == "PART_INDEX")
        .expect("PART_INDEX");
    assert_eq!(
        index["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(args[0], "bench");
    for wanted in [
        format!("--part=$(PART_INDEX)/{n}"),
        "--start-at=$(START_AT)".to_string(),
    ] {
        assert!(args.contains(&wanted.as_str()), "{wanted} in {args:?}");
    }
    assert!(
        args.iter()
            .any(|a| a.starts_with("--out=gs://") && a.ends_with("/part-$(PART_INDEX)")),
        "{args:?}"
    );
    // Kubernetes' $(VAR) expansion done by hand, with a start already past: pixguard parses
    // every argument, builds the run and refuses only the start.
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let expanded: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(PART_INDEX)", "1")
                .replace("$(START_AT)", &past)
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(&expanded)
        .env("RUST_LOG", "warn")
        .output()
        .expect("pixguard runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--start-at passed"),
        "{expanded:?}: {stderr}"
    );
}
