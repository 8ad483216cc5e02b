//! Running the real `pixguard` binary for a test, and a scratch folder per test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `pixguard`, run from the repository root with warnings only in its log; add the arguments.
pub fn pixguard_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pixguard"));
    command
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// Runs `command`; panics with its stderr unless it succeeds.
pub fn succeeded(command: &mut Command) -> Output {
    let out = command.output().expect("pixguard runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pixguard <args>` (see [`pixguard_command`]); panics with its stderr unless it succeeds.
pub fn pixguard_ok(args: &[&str]) -> Output {
    succeeded(pixguard_command().args(args))
}

/// An empty folder for one test of `suite`, under the system's temporary folder.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pixguard-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
