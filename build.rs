//! Generates the gRPC code and the descriptor set that server reflection serves.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Audio payloads as `Bytes`: chunks are sliced and shared, never copied.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("callvault_descriptor.bin"))
        .compile_with_config(config, &["proto/callvault/v1/callvault.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
