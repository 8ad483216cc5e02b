//! The deployment, checked against what the server really does: the Kubernetes manifests (k8s/)
//! rendered by the real `kubectl kustomize` for every overlay (`manifests`: probe and scrape paths
//! answer, the ConfigMap's config.yaml is one `pixguard serve` accepts, the grace period outlasts
//! the drain, the autoscaler's metric exists, production asks for a GPU), the dashboards' queries
//! (`dashboards`), the Cloud Endpoints documents (`endpoints`), the runbook's commands and every
//! `pixguard` line in README.md and docs/ (`runbook`)
//! and the deploy workflow (`workflow`). (Schema validation of the same renders is `.ci/run`'s
//! kubernetes-validate step.)

#[path = "../common/child.rs"]
mod child;
#[path = "../common/kafka.rs"]
mod kafka;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../common/server.rs"]
mod server;

mod dashboards;
mod endpoints;
mod manifests;
mod runbook;
mod workflow;

use std::process::Command;

use serde_yaml_ng::Value;
use server::Server;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const OVERLAYS: [&str; 3] = ["dev", "staging", "production"];

/// `kubectl kustomize k8s/overlays/<overlay>` as YAML documents; `None` (with why) without kubectl.
fn render(overlay: &str) -> Option<Vec<Value>> {
    render_dir(&format!("k8s/overlays/{overlay}"))
}

/// `kubectl kustomize <dir>` as YAML documents; `None` (with why) without kubectl.
fn render_dir(dir: &str) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .args(["kustomize", dir])
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
        "{dir}: {}",
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
