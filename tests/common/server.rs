//! Starts the real `pixguard serve` binary on a free loopback port for a test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

impl Server {
    /// `pixguard serve --address 127.0.0.1 --port 0` plus `args`, from the repository root.
    pub fn start(args: &[&str]) -> Server {
        Self::spawn(&mut Self::command(args))
    }

    /// The command `start` runs, for a test that prepares it further before `spawn`.
    pub fn command(args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pixguard"));
        // A shell's OpenTelemetry settings would turn traces on in every test's server.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("OTEL_")) {
                command.env_remove(name);
            }
        }
        command
            .args(["serve", "--address", "127.0.0.1", "--port", "0"])
            .args(["--grpc-port", "0"])
            .args(args);
        command
    }

    /// Spawns a prepared command and waits for its "listening" line.
    pub fn spawn(command: &mut Command) -> Server {
        let mut child = crate::child::spawn(
            command
                .current_dir(ROOT)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .expect("start pixguard serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut address = None;
                if line.contains("grpc listening") {
                    // The gRPC port: read from the log by `grpc_address`.
                } else if let Some(at) = line.find("listening address=") {
                    address = line[at + "listening address=".len()..]
                        .split_whitespace()
                        .next()
                        .map(str::to_string);
                } else if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["message"] == "listening"
                {
                    address = Some(json["address"].as_str().unwrap_or("").to_string());
                }
                // Kept before the start is announced: a test that reads the log as soon as
                // `spawn` returns finds the listening line in it (json_logs_… once did not).
                sink.lock().unwrap().push(line);
                if let Some(address) = address {
                    let _ = tx.send(address);
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("server did not start: {:?}", log.lock().unwrap())
            });
        Server {
            child,
            base: format!("http://{address}"),
            log,
        }
    }

    /// `host:port` of the gRPC service, from the log line written before the HTTP one.
    pub fn grpc_address(&self) -> String {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find(|l| l.contains("grpc listening"))
            .expect("a grpc listening line");
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(json) => json["address"].as_str().unwrap_or("").to_string(),
            Err(_) => line
                .split("address=")
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether a line the server logged so far holds `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// The nice value of each of the server's threads, by thread name (Linux keeps a name's first
    /// 15 bytes), from `/proc/PID/task/*/stat`.
    #[cfg(target_os = "linux")]
    pub fn thread_nice_values(&self) -> Vec<(String, i32)> {
        let tasks =
            std::fs::read_dir(format!("/proc/{}/task", self.child.id())).expect("server threads");
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
            .map(|stat| {
                // "TID (NAME) STATE …": the name may hold spaces; nice is the 19th field.
                let (head, rest) = stat.rsplit_once(')').expect("the name in parentheses");
                let name = head.split_once('(').expect("name").1.to_string();
                let nice = rest.split_whitespace().nth(16).expect("nice field");
                (name, nice.parse().expect("nice is a number"))
            })
            .collect()
    }

    /// Asserts that the front end's threads run `by` nice levels above the engine's (the
    /// spawner's, which keeps the process's value): every `pixguard-http` and `pixguard-rows-*`
    /// thread at one, every batcher, worker and monitor thread at the other.
    #[cfg(target_os = "linux")]
    pub fn assert_front_end_nicer_by(&self, by: i32) {
        let threads = self.thread_nice_values();
        let base = threads
            .iter()
            .find(|(name, _)| name.starts_with("pixguard-spawn"))
            .unwrap_or_else(|| panic!("no spawner thread: {threads:?}"))
            .1;
        let front = (base + by).min(19);
        for (name, nice) in &threads {
            let expected = if name.starts_with("pixguard-http") || name.starts_with("pixguard-rows")
            {
                front
            } else if ["pixguard-batche", "pixguard-worker", "pixguard-monito"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                base
            } else {
                continue;
            };
            assert_eq!(*nice, expected, "{name}: {threads:?}");
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "server did not exit: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled or labelled Prometheus sample (`name` includes labels).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .expect("numeric sample")
}

/// `count` synthetic transactions (bare JSON values) from `pixguard synth`.
pub fn transactions(count: usize, seed: u64) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args([
            "synth",
            "--rows",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--fraud-rate",
            "0.05",
        ])
        .output()
        .expect("pixguard synth");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["transaction"].clone())
        .collect()
}

/// Like [`metric`], but 0 for a labelled sample that has not appeared yet (no such response so far).
pub fn metric_or_zero(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("numeric sample"))
}

/// The `/metrics` text of a running server.
pub async fn metrics_text(client: &reqwest::Client, server: &Server) -> String {
    client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Scoring requests answered successfully so far, over every API
/// (`pixguard_responses_total{api=…,code="ok"}` summed).
pub fn answered_ok(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("pixguard_responses_total{") && l.contains("code=\"ok\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A copy of the bundled package in `dir` (emptied first) with its `model.json` changed by `edit`,
/// the file's digest in MLmodel updated to match: another version, still a valid package.
pub fn edited_package(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let package = copy_package("models/pix-fraud", dir);
    let old = std::fs::read(package.join("model.json")).expect("model.json");
    let mut config: serde_json::Value = serde_json::from_slice(&old).expect("model.json is JSON");
    edit(&mut config);
    let text = serde_json::to_string_pretty(&config).expect("JSON");
    rewrite_in_package(&package, "model.json", text.as_bytes());
    package
}

/// Writes `bytes` as the file `name` of the package in `package`, its digest in MLmodel updated
/// to match.
pub fn rewrite_in_package(package: &std::path::Path, name: &str, bytes: &[u8]) {
    use pixguard::model::package::sha256_hex;
    let old = sha256_hex(&std::fs::read(package.join(name)).expect("the package's file"));
    std::fs::write(package.join(name), bytes).expect("write the file");
    let mlmodel = std::fs::read_to_string(package.join("MLmodel")).expect("MLmodel");
    assert!(mlmodel.contains(&old), "MLmodel names {name}'s digest");
    let mlmodel = mlmodel.replace(&old, &sha256_hex(bytes));
    std::fs::write(package.join("MLmodel"), mlmodel).expect("MLmodel");
}

/// A copy of the package at `from` (relative to the repository root) in `dir`, for tests that
/// change or break it.
pub fn copy_package(from: &str, dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("copy dir");
    for entry in std::fs::read_dir(std::path::Path::new(ROOT).join(from)).expect("package") {
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
