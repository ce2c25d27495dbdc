//! Sans-io codec of Kafka's RecordBatch v2 format (magic 2), the on-disk and on-wire unit of
//! Runnel.
//!
//! No sockets, no async: bytes in, values out. The broker runs [`validate_batch`] on every
//! produced batch and patches it in place with [`set_base_offset`],
//! [`set_partition_leader_epoch`] and [`set_log_append_time`]; producers build batches with
//! [`BatchBuilder`]; consumers split fetched bytes with [`split_batches`] and read them with
//! [`decode_batch`].
//!
//! Layout (big-endian), see <https://kafka.apache.org/documentation/#recordbatch>:
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records
//! ```
//!
//! ```
//! use runnel_codec::{decode_batch, set_base_offset, validate_batch, BatchBuilder, Compression};
//!
//! // Producer: build a batch.
//! let mut builder = BatchBuilder::new(Compression::Lz4, 1_700_000_000_000);
//! builder.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
//! let mut batch = builder.build()?.to_vec();
//!
//! // Broker: check it and give it its offset.
//! let header = validate_batch(&batch)?;
//! assert_eq!(header.records_count, 1);
//! set_base_offset(&mut batch, 42);
//!
//! // Consumer: read the records.
//! let (_, records) = decode_batch(&batch)?;
//! assert_eq!(records[0].offset, 42);
//! assert_eq!(records[0].value.as_deref(), Some(&b"value"[..]));
//! # Ok::<(), runnel_codec::CodecError>(())
//! ```

mod builder;
mod compression;
mod decode;
mod error;
mod header;
mod partition;
mod record;
mod split;
pub mod varint;

pub use builder::{encode_batch, BatchBuilder};
pub use compression::Compression;
pub use decode::{
    decode_batch, decode_batch_bytes, decode_batch_with_limit, retain_records, validate_records,
    RecordView, RecordsChecked, MAX_UNCOMPRESSED_LEN,
};
pub use error::CodecError;
pub use header::{
    read_header, set_base_offset, set_base_sequence, set_log_append_time,
    set_partition_leader_epoch, validate_batch, BatchHeader, TimestampType,
};
pub use partition::{murmur2, partition_for_key, to_positive};
pub use record::{Header, ProducerInfo, Record};
pub use split::{split_batches, split_batches_lenient, Batches};

/// The record batch format version this crate reads and writes.
pub const MAGIC: i8 = 2;
/// Size of the fixed batch header, from `baseOffset` through `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `producerId` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch from a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` of a batch a producer built (the broker sets the real one).
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// CRC-32C (Castagnoli) of `data`, hardware-accelerated where the CPU supports it; the
/// checksum record batches carry.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}
