//! Compiles the Open Inference Protocol's gRPC service (the server, and the client that
//! `pixguard bench` uses) with the protoc that the `protoc-bin-vendored` crate ships, so building
//! needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/server/grpc/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .build_client(true)
        .compile_protos(&[proto], &["src/server/grpc"])?;
    Ok(())
}
