//! onnxruntime scores fresh synth traffic through the package's model.onnx and must agree with
//! `pixguard score` within 1e-5 (tests/python/onnx_parity.py). Needs a Python with onnxruntime:
//! `.ci/run` builds one and sets PIXGUARD_PYTHON; elsewhere the test says why it skips.

use std::process::Command;

#[path = "common/tools.rs"]
mod tools;

#[test]
fn onnxruntime_agrees_with_pixguard_score() {
    let Some(python) = tools::python("onnxruntime parity") else {
        return;
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(python)
        .arg(format!("{root}/tests/python/onnx_parity.py"))
        .args([
            "--pixguard",
            env!("CARGO_BIN_EXE_pixguard"),
            "--model",
            &format!("{root}/models/pix-fraud"),
        ])
        .status()
        .expect("run the onnxruntime parity script");
    assert!(status.success(), "onnxruntime parity failed");
}
