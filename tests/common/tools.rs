//! The tools some integration tests run, which `.ci/run` installs (the test venv, the Kafka broker,
//! perf_analyzer): each is found, or its absence fails the test under CI (a test that needs a tool
//! CI installs must run there), or the test skips and says why.
#![allow(dead_code)]

use std::path::PathBuf;

/// `found`; without it, a failure under CI (`CI` set), else `None` with `skipped WHAT: HOW`
/// printed.
pub fn required(what: &str, found: Option<PathBuf>, how: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide what {what} needs: {how}"
    );
    eprintln!("skipped {what}: {how}");
    None
}

/// The test Python (PIXGUARD_PYTHON, with tests/python/requirements.txt), as [`required`].
pub fn python(what: &str) -> Option<PathBuf> {
    required(
        what,
        std::env::var_os("PIXGUARD_PYTHON").map(PathBuf::from),
        "set PIXGUARD_PYTHON to a Python with tests/python/requirements.txt (.ci/run builds one \
         in .ci-venv)",
    )
}

/// The executable named by the environment variable `env`, else at `default` under the
/// repository root, as [`required`]; `install` says how `.ci/run` puts it there.
pub fn installed(what: &str, env: &str, default: &str, install: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default),
        PathBuf::from,
    );
    let found = path.is_file().then(|| path.clone());
    let how = format!("nothing at {} ({install}, or set {env})", path.display());
    required(what, found, &how)
}
