//! Encoding: [`BatchBuilder`] appends records into one buffer and finishes the batch.

use bytes::Bytes;

use crate::compression::compress;
use crate::header::{transactional_bits, write_header, LOG_OVERHEAD};
use crate::varint::{put_varint, put_varlong, varint_len, varlong_len};
use crate::{
    BatchHeader, CodecError, Compression, Header, ProducerInfo, Record, TimestampType,
    BATCH_HEADER_LEN, MAGIC, NO_PARTITION_LEADER_EPOCH,
};

/// Bytes a nullable key/value/header value takes: its length varint plus its bytes.
#[inline]
fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        // `as i32` may wrap for > 2 GiB, but then the byte count alone overflows the record
        // size check in `append_at`, so the varint's length does not matter.
        Some(v) => varint_len(v.len() as i32) + v.len(),
        None => 1,
    }
}

#[inline]
fn put_nullable(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            put_varint(buf, v.len() as i32);
            buf.extend_from_slice(v);
        }
        None => put_varint(buf, -1),
    }
}

/// Builds one batch incrementally.
///
/// Records are encoded straight into one `Vec<u8>` behind 61 reserved header bytes, so
/// appending allocates nothing but that buffer's growth; [`build`](Self::build) then fills the
/// header in place (uncompressed) or compresses the records behind a fresh header.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    timestamp_type: TimestampType,
    transactional: bool,
    producer: ProducerInfo,
    partition_leader_epoch: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: i32,
    records_count: i32,
    /// 61 reserved header bytes, then the uncompressed records.
    buf: Vec<u8>,
    /// Why the batch no longer fits the format, reported by `build`.
    too_large: Option<String>,
}

impl BatchBuilder {
    /// A builder for a batch whose record timestamps are deltas from `base_timestamp`
    /// (normally the first record's timestamp).
    pub fn new(compression: Compression, base_timestamp: i64) -> Self {
        Self::with_capacity(compression, base_timestamp, 1024)
    }

    /// Like [`new`](Self::new), reserving room for `capacity` bytes of uncompressed records up
    /// front (e.g. the producer's `batch.size`).
    #[must_use]
    pub fn with_capacity(compression: Compression, base_timestamp: i64, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN.saturating_add(capacity));
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            compression,
            timestamp_type: TimestampType::CreateTime,
            transactional: false,
            producer: ProducerInfo::default(),
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            base_timestamp,
            max_timestamp: i64::MIN,
            last_offset_delta: 0,
            records_count: 0,
            buf,
            too_large: None,
        }
    }

    /// Sets the idempotent producer's id, epoch and the first record's sequence number.
    #[must_use]
    pub fn with_producer(mut self, producer: ProducerInfo) -> Self {
        self.producer = producer;
        self
    }

    /// Sets `partitionLeaderEpoch` (default [`NO_PARTITION_LEADER_EPOCH`]; the broker sets it).
    #[must_use]
    pub fn with_partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets the timestamp type bit (default [`TimestampType::CreateTime`]).
    #[must_use]
    pub fn with_timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        self.timestamp_type = timestamp_type;
        self
    }

    /// Marks the batch as part of a transaction (attribute bit 4).
    #[must_use]
    pub fn with_transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Appends a record with offset delta = number of records so far; returns the encoded size
    /// added (uncompressed).
    ///
    /// A record that does not fit the format (over 2 GiB) adds nothing and returns 0; the
    /// following [`build`](Self::build) then fails with [`CodecError::TooLarge`].
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let offset_delta = self.records_count;
        self.append_at(offset_delta, timestamp, key, value, headers)
    }

    /// Appends a record with an explicit offset delta (for [`encode_batch`]).
    fn append_at(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        if self.too_large.is_some() {
            return 0;
        }
        if self.records_count == i32::MAX {
            self.too_large = Some(format!("more than {} records", i32::MAX));
            return 0;
        }
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let mut headers_len = varint_len(headers.len() as i32);
        for h in headers {
            headers_len += nullable_len(Some(h.key.as_bytes())) + nullable_len(h.value.as_deref());
        }
        let body_len = 1 // attributes
            + varlong_len(timestamp_delta)
            + varint_len(offset_delta)
            + nullable_len(key)
            + nullable_len(value)
            + headers_len;
        let Ok(body_len_i32) = i32::try_from(body_len) else {
            self.too_large = Some(format!("a record of {body_len} bytes"));
            return 0;
        };
        let added = varint_len(body_len_i32) + body_len;
        let buf = &mut self.buf;
        let start = buf.len();
        buf.reserve(added);
        put_varint(buf, body_len_i32);
        buf.push(0); // record attributes: unused in v2
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, headers.len() as i32);
        for h in headers {
            put_nullable(buf, Some(h.key.as_bytes()));
            put_nullable(buf, h.value.as_deref());
        }
        debug_assert_eq!(buf.len() - start, added);
        self.records_count += 1;
        self.last_offset_delta = self.last_offset_delta.max(offset_delta);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        added
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.records_count as usize
    }

    /// Whether no record has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.records_count == 0
    }

    /// Header plus uncompressed records bytes: the batch size if it is not compressed, and an
    /// upper bound for the producer's batch-size accounting otherwise.
    pub fn estimated_size(&self) -> usize {
        self.buf.len()
    }

    /// Finishes: compresses, writes the header with base offset 0, computes the CRC.
    pub fn build(self) -> Result<Bytes, CodecError> {
        self.finish(0)
    }

    /// Finishes with the given base offset.
    fn finish(self, base_offset: i64) -> Result<Bytes, CodecError> {
        if let Some(what) = self.too_large {
            return Err(CodecError::TooLarge(what));
        }
        if self.records_count == 0 {
            return Err(CodecError::EmptyBatch);
        }
        let mut out = if self.compression == Compression::None {
            self.buf
        } else {
            let records = &self.buf[BATCH_HEADER_LEN..];
            // Most record data compresses to well under half; the Vec grows if not.
            let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records.len() / 2 + 64);
            out.resize(BATCH_HEADER_LEN, 0);
            compress(self.compression, records, &mut out)?;
            out
        };
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| {
            CodecError::TooLarge(format!(
                "{} bytes, over the format's 2 GiB limit",
                out.len()
            ))
        })?;
        let header = BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC,
            crc: 0, // computed by write_header
            attributes: self.compression.attribute_bits()
                | self.timestamp_type.attribute_bits()
                | transactional_bits(self.transactional),
            last_offset_delta: self.last_offset_delta,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
            records_count: self.records_count,
        };
        write_header(&mut out, &header);
        Ok(Bytes::from(out))
    }
}

/// Encodes `records` as one batch: the base offset and base timestamp are the first record's,
/// and every other record's offset and timestamp are stored relative to them.
///
/// Fails with [`CodecError::EmptyBatch`] for no records and [`CodecError::OffsetOutOfRange`]
/// if an offset is below the first record's or more than `i32::MAX` above it.
pub fn encode_batch(
    records: &[Record],
    compression: Compression,
    producer: ProducerInfo,
) -> Result<Bytes, CodecError> {
    let Some(first) = records.first() else {
        return Err(CodecError::EmptyBatch);
    };
    let capacity = records
        .iter()
        .map(|r| {
            r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + 16
        })
        .sum();
    let mut builder =
        BatchBuilder::with_capacity(compression, first.timestamp, capacity).with_producer(producer);
    for r in records {
        let offset_delta = r
            .offset
            .checked_sub(first.offset)
            .and_then(|d| i32::try_from(d).ok())
            .filter(|d| *d >= 0)
            .ok_or(CodecError::OffsetOutOfRange {
                base_offset: first.offset,
                offset: r.offset,
            })?;
        builder.append_at(
            offset_delta,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    builder.finish(first.offset)
}
