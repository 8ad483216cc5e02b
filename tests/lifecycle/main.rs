//! The model lifecycle against a real MLflow tracking server and a real GCS emulator: publish,
//! serve `models:/pix-fraud@production` from GCS, promote a second trained model and see the
//! server swap to it within a poll, roll back, and every refusal (tampered weights, a failing
//! golden self-test, a listing that leaves the package, an unreachable registry, admin calls
//! without the token) leaving the serving version untouched and saying why.
//!
//! One test: the MLflow server takes most of a minute to start, so it is started once and the
//! steps run in order against it: publishing (`publish`), serving, promotion and rollback
//! (`swaps`), the refusals (`refusals`), and starting without a registry (`start`).

#[path = "../common/child.rs"]
mod child;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../common/server.rs"]
mod server;

mod helpers;
mod publish;
mod refusals;
mod start;
mod swaps;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use helpers::*;
use registry::{GcsServer, MlflowServer, python};
use serde_json::{Value, json};
use server::{ROOT, Server, copy_package};

const TOKEN: &str = "lifecycle-test-admin-token";
const BUCKET: &str = "pixguard-models";
const POLL_S: u64 = 1;

struct Env {
    mlflow: MlflowServer,
    gcs: GcsServer,
    tmp: PathBuf,
}

impl Env {
    /// `pixguard <args>` with the registry and GCS environment; answers stdout, panics on failure.
    fn pixguard(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run pixguard");
        assert!(
            out.status.success(),
            "pixguard {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pixguard"));
        c.args(args)
            .current_dir(ROOT)
            .env("MLFLOW_TRACKING_URI", &self.mlflow.uri)
            .env("GOOGLE_SERVICE_ACCOUNT", &self.gcs.key_file)
            .env_remove("PIXGUARD_ADMIN_TOKEN")
            .env_remove("RUST_LOG");
        c
    }

    /// Publishes `package` with its artifacts on GCS; answers the new version.
    fn publish_gcs(&self, package: &Path, alias: Option<&str>) -> String {
        let mut args = vec![
            "model",
            "publish",
            package.to_str().expect("utf-8 path"),
            "--name",
            "pix-fraud",
            "--experiment",
            "pix-fraud-gcs",
            "--artifact-location",
        ];
        let location = format!("gs://{BUCKET}/mlflow");
        args.push(&location);
        if let Some(a) = alias {
            args.extend(["--alias", a]);
        }
        let out: Value = serde_json::from_str(self.pixguard(&args).trim()).expect("publish JSON");
        out["version"].as_str().expect("version").to_string()
    }

    /// `pixguard model promote` of pix-fraud from staging to production; answers its JSON.
    fn promote_staging(&self) -> Value {
        let out = self.pixguard(&[
            "model",
            "promote",
            "--name",
            "pix-fraud",
            "--from",
            "staging",
            "--to",
            "production",
        ]);
        serde_json::from_str(out.trim()).expect("promote JSON")
    }

    /// Points `alias` at `version` straight through the registry's REST API (as another tool
    /// would), bypassing pixguard's own bookkeeping.
    fn set_alias(&self, alias: &str, version: &str) {
        let r = reqwest::blocking::Client::new()
            .post(format!(
                "{}/api/2.0/mlflow/registered-models/alias",
                self.mlflow.uri
            ))
            .json(&json!({"name": "pix-fraud", "alias": alias, "version": version}))
            .send()
            .expect("set alias");
        assert!(r.status().is_success(), "set alias: {}", r.status());
    }

    /// The run that produced `version`.
    fn run_id(&self, version: &str) -> String {
        let v: Value = reqwest::blocking::Client::new()
            .get(format!(
                "{}/api/2.0/mlflow/model-versions/get",
                self.mlflow.uri
            ))
            .query(&[("name", "pix-fraud"), ("version", version)])
            .send()
            .expect("get version")
            .json()
            .expect("version JSON");
        v["model_version"]["run_id"]
            .as_str()
            .expect("run_id")
            .to_string()
    }

    /// `pixguard serve` following `source`, polling every second, admin token on.
    fn serve(&self, source: &str, extra: &[&str]) -> Server {
        let cache = self.tmp.join("cache");
        let poll = format!("model.poll_interval_s={POLL_S}");
        let cache_dir = format!("model.cache_dir={}", cache.display());
        let mut args = vec![
            "serve",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--model",
            source,
            "--set",
            &poll,
            "--set",
            &cache_dir,
        ];
        args.extend_from_slice(extra);
        let mut command = self.command(&args);
        command.env("PIXGUARD_ADMIN_TOKEN", TOKEN);
        Server::spawn(&mut command)
    }
}

#[test]
fn publish_serve_promote_rollback_and_refusals() {
    let Some(python) = python("the model lifecycle test") else {
        return;
    };
    let tmp = std::env::temp_dir().join(format!("pixguard-lifecycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("tmp");
    let gcs = GcsServer::start(&python, &tmp, &[BUCKET]);
    let mlflow = MlflowServer::start(&python, &tmp.join("mlflow"));
    let env = Env {
        mlflow,
        gcs,
        tmp: tmp.clone(),
    };
    publish::publish_and_open_in_mlflow(&env, &python);
    let (server, v_prod, txs) = swaps::serve_promote_and_roll_back(&env);
    refusals::refusals_leave_the_version_serving(&env, &server, &v_prod);
    drop(server);
    start::without_the_registry_or_the_admin_token(&env, &v_prod, &txs);
    let _ = std::fs::remove_dir_all(&tmp);
}
