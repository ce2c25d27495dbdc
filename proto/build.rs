//! Compiles `runnel/v1/*.proto` with protox (no system `protoc`) into tonic/prost code, and
//! writes the file descriptor set that the reflection service serves.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "runnel/v1/common.proto",
        "runnel/v1/groups.proto",
        "runnel/v1/broker.proto",
        "runnel/v1/admin.proto",
        "runnel/v1/replica.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("runnel_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Batches travel as `Bytes` so that the broker stores and serves them without copies.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
