//! Runnel's Rust client: a batching, pipelined, idempotent [`Producer`], a long-polling
//! [`Consumer`], a consumer-group member ([`GroupConsumer`]), an [`Admin`] client for topics and
//! groups, and the benchmarks behind `runnel bench`.
//!
//! Everything speaks the `runnel.v1` gRPC API of `runnel-proto`; record batches are built and
//! read with `runnel-codec` (Kafka's RecordBatch v2).

pub mod admin;
pub mod bench;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;

pub use admin::{Admin, PartitionInfo, TopicDescription, TopicSummary};
pub use consumer::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, OffsetQuery, Partitions, StartOffset,
};
pub use error::{Error, Result};
pub use group::{
    GroupConsumer, GroupConsumerConfig, GroupDescription, GroupListing, RebalanceListener,
    TopicPartition,
};
pub use producer::{
    Acks, DeliveryFuture, LatencyHistogram, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata,
};
pub use runnel_codec::{Compression, Header};
