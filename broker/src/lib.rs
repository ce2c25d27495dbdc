//! Runnel's broker: partition logs in sled, served over gRPC.
//!
//! Layout: [`codec`](runnel_codec) validates batches; [`storage`] keeps them; [`log`] applies
//! Kafka's rules per partition; [`appender`] threads run the appends; [`durability`] makes them
//! durable by group commit; [`broker`] ties partitions to metadata; [`groups`] coordinates
//! consumer groups; [`replication`] copies partitions between brokers; [`service`] is the gRPC edge; [`server`] runs the process.

pub mod appender;
pub mod broker;
pub mod compaction;
pub mod config;
pub mod durability;
pub mod error;
pub mod groups;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod producer_ids;
pub mod records;
pub mod replication;
pub mod retention;
pub mod server;
pub mod service;
pub mod storage;
