//! Compiles the Open Inference Protocol's gRPC service (the server, and the client that
//! `pixguard bench` uses) with the protoc that the `protoc-bin-vendored` crate ships, so building
//! needs nothing installed; with the `cuda` feature, also compiles `kernels/*.cu` to PTX with nvcc.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/protocol/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("inference_descriptor.bin");
    tonic_prost_build::configure()
        .build_client(true)
        // For the server reflection service: `grpcurl list` and its kind learn the service here.
        .file_descriptor_set_path(descriptors)
        // `bytes` fields as `Bytes`: raw tensor contents are slices of the received buffer, not
        // one allocation and copy each (25 per transaction-fields request).
        .bytes(".")
        .compile_protos(&[proto], &["src/protocol"])?;
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_ptx()?;
    }
    Ok(())
}

/// PTX rather than a cubin: the driver JIT-compiles it for whatever GPU it finds at or above the
/// target architecture, so one binary serves A100s, L4s and H100s.
fn compile_ptx() -> Result<(), Box<dyn std::error::Error>> {
    let source = "kernels/dcn.cu";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    let nvcc = std::env::var_os("CUDA_ROOT")
        .map(|root| PathBuf::from(root).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    // The kernels use nothing past sm_80; PTX for the lowest target keeps the most cards.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap = cap.parse::<u32>().unwrap_or(80).min(80);
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("dcn.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-lineinfo"])
        .arg(format!("-arch=compute_{cap}"))
        .arg(source)
        .arg("-o")
        .arg(&out)
        .status()
        .map_err(|e| {
            format!(
                "running {}: {e} (kernels/build-cuda.sh sets it up)",
                nvcc.display()
            )
        })?;
    if !status.success() {
        return Err(format!("{} failed on {source}: {status}", nvcc.display()).into());
    }
    Ok(())
}
