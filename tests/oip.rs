//! The Open Inference Protocol with the clients Triton users have: tritonclient over HTTP against
//! the real server (tests/python/oip_tritonclient.py), over HTTP and gRPC. Needs a Python with tritonclient: `.ci/run`
//! builds one and sets PIXGUARD_PYTHON; elsewhere the test says why it skips.

#[path = "common/child.rs"]
mod child;
#[path = "common/server.rs"]
mod server;

use std::process::Command;

use server::Server;

#[test]
fn tritonclient_http_and_grpc_get_the_same_scores_as_pixguard_score() {
    let Some(python) = std::env::var_os("PIXGUARD_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set PIXGUARD_PYTHON (tests/python/requirements.txt)"
        );
        eprintln!(
            "skipped tritonclient test: set PIXGUARD_PYTHON to a Python with tests/python/requirements.txt"
        );
        return;
    };
    let server = Server::start(&[]);
    let url = server.base.trim_start_matches("http://").to_string();
    let status = Command::new(python)
        .arg(format!("{}/tests/python/oip_tritonclient.py", server::ROOT))
        .args([
            "--url",
            &url,
            "--grpc-url",
            &server.grpc_address(),
            "--pixguard",
            env!("CARGO_BIN_EXE_pixguard"),
        ])
        .args(["--model", &format!("{}/models/pix-fraud", server::ROOT)])
        .status()
        .expect("run the tritonclient script");
    assert!(
        status.success(),
        "tritonclient test failed; server log: {:?}",
        server.log.lock().unwrap()
    );
}
