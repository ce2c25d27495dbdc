//! The fixed 61-byte batch header: parsing, framing checks, CRC and in-place patches.

use bytes::Buf;

use crate::{CodecError, Compression, BATCH_HEADER_LEN, MAGIC};

// Byte positions of the header fields (all big-endian).
pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = 8;
pub(crate) const PARTITION_LEADER_EPOCH_AT: usize = 12;
pub(crate) const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
/// `baseOffset` and `batchLength` come before what `batchLength` counts.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// The smallest legal `batchLength`: the header after the length field, with no records.
pub(crate) const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// How the timestamps of a batch's records were assigned (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TimestampType {
    /// Set by the producer when it created the record.
    #[default]
    CreateTime,
    /// Set by the broker when it appended the batch; every record's timestamp is then the
    /// batch's `maxTimestamp`.
    LogAppendTime,
}

impl TimestampType {
    /// The type's bit in the batch attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => TIMESTAMP_TYPE_BIT,
        }
    }
}

/// The fixed 61-byte header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (patched by the broker on append).
    pub base_offset: i64,
    /// Bytes after this field, i.e. the whole batch minus 12.
    pub batch_length: i32,
    /// Leader epoch of the partition when the broker appended the batch.
    pub partition_leader_epoch: i32,
    /// Format version; always [`MAGIC`] (2) in a valid batch.
    pub magic: i8,
    /// CRC-32C (Castagnoli) over the bytes from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression (bits 0-2), timestamp type (bit 3), transactional (4), control (5).
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp that record timestamp deltas are relative to.
    pub base_timestamp: i64,
    /// Largest record timestamp, or the log-append time.
    pub max_timestamp: i64,
    /// Idempotent producer id, or [`crate::NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Idempotent producer epoch, or [`crate::NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// Sequence number of the first record, or [`crate::NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// The batch's compression codec.
    pub fn compression(&self) -> Result<Compression, CodecError> {
        Compression::from_attributes(self.attributes)
    }

    /// Whether timestamps are create time or log-append time.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Offset of the last record (`base_offset + last_offset_delta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Offset right after the batch (`last_offset + 1`): where the next batch starts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Size of the whole batch in bytes, including `baseOffset` and `batchLength`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Parses the 61 header bytes; `buf` must hold at least that many (checked by callers).
    fn parse(mut b: &[u8]) -> BatchHeader {
        BatchHeader {
            base_offset: b.get_i64(),
            batch_length: b.get_i32(),
            partition_leader_epoch: b.get_i32(),
            magic: b.get_i8(),
            crc: b.get_u32(),
            attributes: b.get_i16(),
            last_offset_delta: b.get_i32(),
            base_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
            records_count: b.get_i32(),
        }
    }
}

/// Parses the header only, without checking the CRC (for reading stored batches).
///
/// Checks that `buf` holds the 61 header bytes, that the magic is 2 and that `batchLength` is
/// at least 49. It does *not* require the rest of the batch to be present, so it also reads a
/// header from a 61-byte prefix; use [`validate_batch`] (or compare [`BatchHeader::total_len`]
/// with the buffer) before slicing the batch out of `buf`.
pub fn read_header(buf: &[u8]) -> Result<BatchHeader, CodecError> {
    let Some(head) = buf.get(..BATCH_HEADER_LEN) else {
        return Err(CodecError::HeaderTruncated {
            needed: BATCH_HEADER_LEN,
            available: buf.len(),
        });
    };
    let header = BatchHeader::parse(head);
    if header.magic != MAGIC {
        return Err(CodecError::BadMagic(header.magic));
    }
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(CodecError::BadLength(header.batch_length));
    }
    Ok(header)
}

/// Parses the header and checks the batch's framing and CRC, without decompressing.
///
/// This is what the broker runs on every produced batch. It checks that `buf` holds the header
/// and the whole batch (`total_len <= buf.len()`; bytes after the batch are ignored, compare
/// `total_len()` with `buf.len()` to insist on exactly one batch), the magic, `batchLength >=
/// 49`, the CRC-32C, `recordsCount >= 0`, `lastOffsetDelta >= 0` and the compression code.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, CodecError> {
    let header = read_header(buf)?;
    let total = header.total_len();
    let Some(covered) = buf.get(ATTRIBUTES_AT..total) else {
        return Err(CodecError::Truncated {
            needed: total,
            available: buf.len(),
        });
    };
    // The CRC comes before the field checks so that a corrupted batch reports corruption.
    let computed = crc32c::crc32c(covered);
    if computed != header.crc {
        return Err(CodecError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0 {
        return Err(CodecError::BadRecordCount(header.records_count));
    }
    // Kafka requires lastOffsetDelta == recordsCount - 1 only for fresh, uncompacted batches;
    // compaction keeps the delta while dropping records, so only the sign is checked.
    if header.last_offset_delta < 0 {
        return Err(CodecError::BadLastOffsetDelta(header.last_offset_delta));
    }
    header.compression()?;
    Ok(header)
}

/// Panics with a clear message when an in-place patch gets less than a header.
fn assert_header_present(batch: &[u8], what: &str) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "{what}: buffer of {} bytes holds no record batch header (needs {BATCH_HEADER_LEN}); validate the batch first",
        batch.len()
    );
}

/// Sets `baseOffset` in place. The CRC does not cover it, so no CRC is recomputed.
///
/// # Panics
/// If `batch` is shorter than the 61-byte header: call it on validated batches only.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert_header_present(batch, "set_base_offset");
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets `partitionLeaderEpoch` in place. The CRC does not cover it either.
///
/// # Panics
/// If `batch` is shorter than the 61-byte header: call it on validated batches only.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert_header_present(batch, "set_partition_leader_epoch");
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// For log-append-time topics: sets the timestamp-type bit, `maxTimestamp` and
/// `baseTimestamp` to `now_ms`, and recomputes the CRC.
///
/// Readers then report `now_ms` as every record's timestamp (Kafka's rule for
/// `LogAppendTime`). (Kafka's broker rewrites only `maxTimestamp`; `baseTimestamp` is set too
/// so that readers which ignore the rule also see the append time, give or take the deltas.)
/// The old CRC is not re-checked: run [`validate_batch`] first, as the broker does, or a
/// corrupted batch would get a fresh, valid CRC.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) -> Result<(), CodecError> {
    rewrite_covered(batch, |batch, header| {
        let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    })
}

/// Sets `baseSequence` and recomputes the CRC: for a producer that re-sequences a batch it
/// built earlier (when batches before it failed for good). Like [`set_log_append_time`], it
/// does not re-check the old CRC.
pub fn set_base_sequence(batch: &mut [u8], base_sequence: i32) -> Result<(), CodecError> {
    rewrite_covered(batch, |batch, _| {
        batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    })
}

/// Checks the framing, lets `patch` change CRC-covered header fields, and recomputes the CRC.
fn rewrite_covered(
    batch: &mut [u8],
    patch: impl FnOnce(&mut [u8], &BatchHeader),
) -> Result<(), CodecError> {
    let header = read_header(batch)?;
    let total = header.total_len();
    if total > batch.len() {
        return Err(CodecError::Truncated {
            needed: total,
            available: batch.len(),
        });
    }
    patch(batch, &header);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..total]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Writes every header field into `out[..61]` and the CRC over `out[21..]`.
pub(crate) fn write_header(out: &mut [u8], h: &BatchHeader) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&h.base_offset.to_be_bytes());
    put(&h.batch_length.to_be_bytes());
    put(&h.partition_leader_epoch.to_be_bytes());
    put(&h.magic.to_be_bytes());
    put(&0u32.to_be_bytes()); // CRC, filled in below
    put(&h.attributes.to_be_bytes());
    put(&h.last_offset_delta.to_be_bytes());
    put(&h.base_timestamp.to_be_bytes());
    put(&h.max_timestamp.to_be_bytes());
    put(&h.producer_id.to_be_bytes());
    put(&h.producer_epoch.to_be_bytes());
    put(&h.base_sequence.to_be_bytes());
    put(&h.records_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Attribute bits for the transactional flag.
pub(crate) fn transactional_bits(transactional: bool) -> i16 {
    if transactional {
        TRANSACTIONAL_BIT
    } else {
        0
    }
}
