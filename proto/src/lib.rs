//! Runnel's wire contract: the `runnel.v1` gRPC services (`Broker`, `Groups`, `Admin`) and their messages.
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

/// Package `runnel.v1`.
pub mod v1 {
    tonic::include_proto!("runnel.v1");

    /// The encoded `FileDescriptorSet` of `runnel.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("runnel_descriptor");
}
