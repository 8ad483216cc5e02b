//! The bench over TLS with an API key, through a gateway in front of a real server, and the release gate.

use super::*;

/// `https://` with an API key, as the deploy workflow's smoke test runs it through Cloud
/// Endpoints: a TLS gateway (tests/python/tls_gateway.py, its own CA handed over as
/// SSL_CERT_FILE) that answers 401 without the key and forwards to the real server otherwise. With
/// the key the release gate passes and the key is not in the report; without it the gate fails
/// the run and says why.
#[test]
fn https_with_an_api_key_and_the_release_gate() {
    let Some(python) = registry::python("bench over TLS (cryptography)") else {
        return;
    };
    let server = Server::start(&[]);
    let dir = scratch("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let key = "k3y-for-the-smoke-test";
    let mut gateway = registry::Process::spawn(
        Command::new(&python)
            .arg(format!("{}/tests/python/tls_gateway.py", server::ROOT))
            .args(["--backend", server.base.trim_start_matches("http://")])
            .args(["--api-key", key])
            .arg("--ca-out")
            .arg(&ca)
            .stdout(Stdio::piped()),
    )
    .expect("start the TLS gateway");
    let mut line = String::new();
    std::io::BufReader::new(gateway.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the gateway's port");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening PORT");
    let url = format!("https://localhost:{port}");
    let bench = |out: &str, header: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pixguard"));
        command
            .current_dir(server::ROOT)
            .env("SSL_CERT_FILE", &ca)
            .args(["bench", "--url", &url, "--rate", "40", "--duration", "2"])
            .args(["--warmup", "0.5", "--transactions", "50", "--no-progress"])
            .args(["--fail-error-rate", "0", "--fail-p99-ms", "5000"])
            .arg("--out")
            .arg(dir.join(out));
        if let Some(h) = header {
            command.args(["--header", &h]);
        }
        command.output().expect("run pixguard bench")
    };

    let before = answered(&server);
    let ok = bench("with-key", Some(format!("x-api-key: {key}")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = report(&dir.join("with-key"));
    let step = &r["steps"][0];
    check_step(step);
    assert!(step["ok"].as_f64().unwrap() > 0.0, "{step}");
    assert_eq!(step["errors"], serde_json::json!({}), "{step}");
    // Every answer came from the server, through TLS and the gateway.
    assert!(answered(&server) - before >= bench_ok(&r), "{step}");
    let text = std::fs::read_to_string(dir.join("with-key/report.json")).unwrap();
    assert!(!text.contains(key), "the API key is in report.json");

    let refused = bench("without-key", None);
    assert!(!refused.status.success(), "the gate let 401s through");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("gate failed") && stderr.contains("401"),
        "{stderr}"
    );
    let r = report(&dir.join("without-key"));
    assert!(r["steps"][0]["errors"]["401"].as_f64().unwrap_or(0.0) > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
