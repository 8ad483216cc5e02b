//! The model lifecycle against a real MLflow tracking server and a real GCS emulator: publish,
//! serve `models:/pix-fraud@production` from GCS, promote a second trained model and see the
//! server swap to it within a poll, roll back, and every refusal (tampered weights, a failing
//! golden self-test, a listing that leaves the package, an unreachable registry, admin calls
//! without the token) leaving the serving version untouched and saying why.
//!
//! One test: the MLflow server takes most of a minute to start, so it is started once and the
//! steps run in order against it.

#[path = "common/child.rs"]
mod child;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use registry::{GcsServer, MlflowServer, python};
use serde_json::{Value, json};
use server::{ROOT, Server};

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

/// The golden rows' transactions of a package, and their PyTorch float64 scores.
fn golden(package: &str, rows: usize) -> (Vec<Value>, Vec<f64>) {
    let text = std::fs::read_to_string(Path::new(ROOT).join(package).join("golden.jsonl"))
        .expect("golden.jsonl");
    text.lines()
        .take(rows)
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("golden line");
            (
                v["transaction"].clone(),
                v["score"].as_f64().expect("score"),
            )
        })
        .unzip()
}

/// Scores `txs` on `server`: (model_version, scores) of the batch answer.
fn score(server: &Server, txs: &[Value]) -> (Vec<String>, Vec<f64>) {
    let r = reqwest::blocking::Client::new()
        .post(server.url("/v1/score"))
        .json(&json!({ "transactions": txs }))
        .send()
        .expect("score");
    assert_eq!(r.status(), 200, "scoring failed");
    let body: Value = r.json().expect("score JSON");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["model"]["version"]
                    .as_str()
                    .expect("model.version")
                    .to_string(),
                r["score"].as_f64().expect("score"),
            )
        })
        .unzip()
}

/// What `pixguard score` answers for `txs` with the package folder itself.
fn folder_scores(package: &str, txs: &[Value], tmp: &Path) -> Vec<f64> {
    let input = tmp.join(format!("{}.jsonl", package.replace('/', "_")));
    let lines: Vec<String> = txs.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n")).expect("write input");
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .current_dir(ROOT)
        .args(["score", "--model", package])
        .arg(&input)
        .output()
        .expect("pixguard score");
    assert!(out.status.success(), "pixguard score failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("score line")["score"]
                .as_f64()
                .expect("score")
        })
        .collect()
}

fn admin(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut r = match method {
        "GET" => client.get(server.url(path)),
        _ => client.post(server.url(path)),
    };
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().expect("admin call");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn serving_version(server: &Server) -> String {
    let (status, body) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    body["serving"]["version"]
        .as_str()
        .expect("version")
        .to_string()
}

/// Waits until the server serves `version`; answers how long it took.
fn wait_for_version(server: &Server, version: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if serving_version(server) == version {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still serving {} after {within:?}, expected {version}: {:?}",
            serving_version(server),
            admin(server, "GET", "/admin/model", Some(TOKEN), None).1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long the server took to load `version` the last time it swapped it in.
fn last_load(server: &Server, version: &str) -> Duration {
    let (_, body) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    let ms = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .rev()
        .find(|e| {
            e["outcome"] == "serving"
                && e["identity"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(&format!("/{version}")))
        })
        .and_then(|e| e["duration_ms"].as_u64())
        .expect("a load of that version in the history");
    Duration::from_millis(ms)
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::blocking::get(server.url("/metrics"))
        .expect("metrics")
        .text()
        .expect("metrics text");
    server::metric(&text, name)
}

/// Waits until only the serving version's engine runs: a swapped-out or refused version stops
/// its engine once its last request is answered (none are in flight here), or it leaked.
fn assert_one_engine(server: &Server, after: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    let mut running = metric(server, "pixguard_engines_running");
    while running != 1.0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        running = metric(server, "pixguard_engines_running");
    }
    assert_eq!(running, 1.0, "engines still running 5 s after {after}");
}

/// A copy of the bundled package in `dir`, for tests that break one file of it.
fn copy_package(from: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("copy dir");
    for entry in std::fs::read_dir(Path::new(ROOT).join(from)).expect("package") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            let sub = format!("{from}/{}", entry.file_name().to_string_lossy());
            copy_package(&sub, &dir.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
    }
    dir.to_path_buf()
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
    let bundled = Path::new(ROOT).join("models/pix-fraud");
    let challenger = Path::new(ROOT).join("models/pix-fraud-challenger");

    // 1. Publish through the artifact proxy: MLflow's own client sees it, byte for byte.
    let out = env.pixguard(&[
        "model",
        "publish",
        bundled.to_str().unwrap(),
        "--name",
        "pix-fraud",
        "--alias",
        "staging",
    ]);
    let v1: Value = serde_json::from_str(out.trim()).expect("publish JSON");
    assert_eq!(v1["version"], "1");
    let client = Command::new(&python)
        .arg(Path::new(ROOT).join("tests/python/mlflow_client.py"))
        .args([
            "--tracking-uri",
            &env.mlflow.uri,
            "--name",
            "pix-fraud",
            "--alias",
            "staging",
        ])
        .arg("--package")
        .arg(&bundled)
        .output()
        .expect("mlflow client");
    assert!(
        client.status.success(),
        "MLflow's client disagrees: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let seen: Value = serde_json::from_slice(&client.stdout).expect("client JSON");
    assert_eq!(seen["version"], "1");
    assert_eq!(
        seen["weights_sha256"],
        "abc07051b7df1348d8a28fe84a4d592d01777a29df0fe4d7c59fa19da4ebecaf"
    );

    // The registered version opens in MLflow's own pyfunc (the package's python_function flavor)
    // and scores the golden rows as pixguard does.
    env.pixguard(&[
        "model",
        "promote",
        "--name",
        "pix-fraud",
        "--from",
        "staging",
        "--to",
        "production",
    ]);
    let golden_txs = tmp.join("golden-transactions.jsonl");
    let lines: Vec<String> = golden("models/pix-fraud", usize::MAX)
        .0
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&golden_txs, lines.join("\n")).unwrap();
    let ours = tmp.join("pixguard-golden-scores.jsonl");
    let scored = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .current_dir(ROOT)
        .arg("score")
        .arg(&golden_txs)
        .args(["-o", ours.to_str().unwrap()])
        .output()
        .expect("pixguard score");
    assert!(scored.status.success());
    let parity = Command::new(&python)
        .arg(Path::new(ROOT).join("tests/python/pyfunc_parity.py"))
        .args([
            "--tracking-uri",
            &env.mlflow.uri,
            "--model-uri",
            "models:/pix-fraud@production",
        ])
        .arg("--golden")
        .arg(bundled.join("golden.jsonl"))
        .arg("--pixguard-scores")
        .arg(&ours)
        .output()
        .expect("pyfunc parity");
    assert!(
        parity.status.success(),
        "mlflow.pyfunc disagrees with pixguard: {}{}",
        String::from_utf8_lossy(&parity.stdout),
        String::from_utf8_lossy(&parity.stderr)
    );
    eprintln!(
        "pyfunc vs pixguard: {}",
        String::from_utf8_lossy(&parity.stdout).trim()
    );

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
    assert_eq!(scores, folder_scores("models/pix-fraud", &txs, &tmp));
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
    let moved: Value = serde_json::from_str(
        env.pixguard(&[
            "model",
            "promote",
            "--name",
            "pix-fraud",
            "--from",
            "staging",
            "--to",
            "production",
        ])
        .trim(),
    )
    .expect("promote JSON");
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
        folder_scores("models/pix-fraud-challenger", &txs_ch, &tmp)
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

    // 6. Refusals. Each leaves the serving version as it was and says why.
    let failures = metric(&server, "pixguard_model_load_failures_total");
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
    let (status, body) = admin(&server, "POST", "/admin/model/reload", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("SHA-256"),
        "{body}"
    );
    assert_eq!(serving_version(&server), v_prod);
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
    let (status, body) = admin(&server, "POST", "/admin/model/reload", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("self-test failed"),
        "{body}"
    );
    assert_eq!(serving_version(&server), v_prod);
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
        &server,
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
    assert_eq!(serving_version(&server), v_prod);
    //    d. Admin calls without the token, or with a wrong one: 401, nothing changes.
    for token in [None, Some("not-the-admin-token-at-all")] {
        let (status, _) = admin(&server, "POST", "/admin/model/reload", token, None);
        assert_eq!(status, 401);
        let (status, _) = admin(&server, "GET", "/admin/model", token, None);
        assert_eq!(status, 401);
        let (status, _) = admin(
            &server,
            "POST",
            "/admin/model",
            token,
            Some(json!({"source": "models/pix-fraud-challenger"})),
        );
        assert_eq!(status, 401);
    }
    assert_eq!(serving_version(&server), v_prod);
    assert_eq!(
        metric(&server, "pixguard_model_load_failures_total"),
        failures + 3.0
    );
    let (_, described) = admin(&server, "GET", "/admin/model", Some(TOKEN), None);
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
    let swaps = metric(&server, "pixguard_model_swaps_total");
    let (_, before) = admin(&server, "GET", "/admin/model", Some(TOKEN), None);
    let seen = before["history"].as_array().cloned().unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2 * POLL_S + 1));
    let (_, after) = admin(&server, "GET", "/admin/model", Some(TOKEN), None);
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
        metric(&server, "pixguard_model_load_failures_total"),
        failures + 3.0 + unresolved.len() as f64,
        "{after:#}"
    );
    assert_eq!(metric(&server, "pixguard_model_swaps_total"), swaps);
    assert_one_engine(&server, "three refused versions");
    drop(server);

    // 7. An unreachable registry at start: a clear error and exit code 69 …
    env.set_alias("production", &v_prod);
    let dead = format!("http://127.0.0.1:{}", registry::free_port());
    let cache_dir = format!("model.cache_dir={}", tmp.join("cache").display());
    let out = env
        .command(&[
            "serve",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--model",
            "models:/pix-fraud@production",
            "--set",
            &cache_dir,
        ])
        .env("MLFLOW_TRACKING_URI", &dead)
        .output()
        .expect("serve");
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
    //    … or, when configured to, the last good version of that source from the cache.
    let mut command = env.command(&[
        "serve",
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--model",
        "models:/pix-fraud@production",
        "--set",
        &cache_dir,
        "--set",
        "model.use_cached_on_error=true",
        "--set",
        "model.poll_interval_s=0",
    ]);
    command
        .env("MLFLOW_TRACKING_URI", &dead)
        .env("PIXGUARD_ADMIN_TOKEN", TOKEN);
    let cached = Server::spawn(&mut command);
    assert_eq!(serving_version(&cached), v_prod);
    let (versions, scores) = score(&cached, &txs);
    assert!(versions.iter().all(|v| *v == v_prod));
    assert_eq!(scores, folder_scores("models/pix-fraud", &txs, &tmp));
    drop(cached);

    // 8. No admin token configured: the admin routes are off.
    let plain = Server::start(&["--set", "model.poll_interval_s=0"]);
    let (status, _) = admin(&plain, "GET", "/admin/model", Some(TOKEN), None);
    assert_eq!(status, 404);
    drop(plain);
    let _ = std::fs::remove_dir_all(&tmp);
}
