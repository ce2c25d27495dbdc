//! The error type shared by every codec function.

/// Everything that can go wrong while framing, validating, encoding or decoding a batch.
///
/// Each variant names the problem and the offending value so that a broker can hand the
/// message straight back to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the 61-byte batch header (or the 12-byte offset+length prefix).
    #[error("record batch header truncated: need {needed} bytes, only {available} present")]
    HeaderTruncated {
        /// Bytes needed to read the header (or its prefix).
        needed: usize,
        /// Bytes present in the buffer.
        available: usize,
    },
    /// The batch length field promises more bytes than the buffer holds.
    #[error("batch truncated: header says {needed} bytes, only {available} present")]
    Truncated {
        /// Total batch size according to its header (`12 + batchLength`).
        needed: usize,
        /// Bytes present in the buffer.
        available: usize,
    },
    /// The magic byte is not 2 (only RecordBatch v2 is supported).
    #[error("unsupported record batch magic {0}, expected 2")]
    BadMagic(i8),
    /// The stored CRC-32C does not match the bytes from `attributes` to the end of the batch.
    #[error("batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC stored in the batch header.
        stored: u32,
        /// The CRC computed over the batch.
        computed: u32,
    },
    /// The batch length field is smaller than the fixed header after it (49 bytes).
    #[error("invalid batch length {0}: must be at least 49 (the header after the length field)")]
    BadLength(i32),
    /// The records count in the header is negative.
    #[error("invalid records count {0} in batch header: must not be negative")]
    BadRecordCount(i32),
    /// The last offset delta in the header is negative.
    #[error("invalid last offset delta {0} in batch header: must not be negative")]
    BadLastOffsetDelta(i32),
    /// The compression bits of the attributes hold a codec that does not exist.
    #[error("unknown compression codec {0} in batch attributes (known: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)")]
    UnknownCompression(i16),
    /// A compression name that is not one of `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    #[error("unknown compression `{0}` (expected one of none, gzip, snappy, lz4, zstd)")]
    UnknownCompressionName(String),
    /// Compressing or decompressing the records failed.
    #[error("{codec} error: {message}")]
    Compression {
        /// The codec that failed (`gzip`, `snappy`, `lz4`, `zstd`).
        codec: &'static str,
        /// What the codec reported.
        message: String,
    },
    /// The number of records decoded differs from the header's records count.
    #[error("batch header says {header} records, but the records section holds {decoded}")]
    RecordCountMismatch {
        /// The header's records count.
        header: i32,
        /// Records actually found in the records section.
        decoded: usize,
    },
    /// A record inside the batch is malformed (bad lengths, bad UTF-8 header key, leftover bytes).
    #[error("malformed record: {0}")]
    MalformedRecord(String),
    /// A varint longer than 5 bytes (or a varlong longer than 10), or with bits beyond its width.
    #[error("varint overflow: too many bytes or bits beyond the integer width")]
    VarintOverflow,
    /// The buffer ended in the middle of a varint.
    #[error("varint truncated: buffer ended before the last byte")]
    VarintTruncated,
    /// A batch must hold at least one record.
    #[error("cannot build an empty record batch")]
    EmptyBatch,
    /// The batch (or one record in it) does not fit the format's 32-bit length and count fields.
    #[error("record batch too large: {0}")]
    TooLarge(String),
    /// A record's offset cannot be expressed as a delta from the batch's base offset.
    #[error("record offset {offset} cannot be encoded relative to base offset {base_offset}: the delta must be in 0..=2147483647")]
    OffsetOutOfRange {
        /// The batch's base offset (the first record's offset).
        base_offset: i64,
        /// The offending record's offset.
        offset: i64,
    },
}
