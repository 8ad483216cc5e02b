//! Running the real `pixguard` binary for a test, and a scratch folder per test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `pixguard <args>` from the repository root with warnings only in its log; panics with its
/// stderr unless it succeeds.
pub fn pixguard_ok(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("pixguard runs");
    assert!(
        out.status.success(),
        "pixguard {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An empty folder for one test of `suite`, under the system's temporary folder.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pixguard-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
