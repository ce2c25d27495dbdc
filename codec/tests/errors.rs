//! Every error path: build a good batch, corrupt it, assert the variant (and its message).

mod common;

use bytes::Bytes;
use common::{recrc, sample_records};
use runnel_codec::{
    decode_batch, decode_batch_with_limit, encode_batch, read_header, set_base_offset,
    set_base_sequence, set_log_append_time, set_partition_leader_epoch, split_batches,
    split_batches_lenient, validate_batch, varint, BatchBuilder, CodecError, Compression, Header,
    ProducerInfo, Record, TimestampType, BATCH_HEADER_LEN,
};

fn good(compression: Compression) -> Vec<u8> {
    encode_batch(&sample_records(100), compression, ProducerInfo::default())
        .expect("encode")
        .to_vec()
}

/// An uncompressed batch with one record whose bytes a test can corrupt, and where they are.
fn one_record(key: &[u8], headers: &[Header]) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None, 0);
    b.append(0, Some(key), Some(b"v"), headers);
    b.build().expect("build").to_vec()
}

#[test]
fn good_batch_is_valid() {
    for c in Compression::ALL {
        let batch = good(c);
        let header = validate_batch(&batch).expect("valid");
        assert_eq!(header.compression(), Ok(c));
        assert_eq!(header.total_len(), batch.len());
        let (_, records) = decode_batch(&batch).expect("decode");
        assert_eq!(records, sample_records(100));
    }
}

#[test]
fn header_truncated() {
    let batch = good(Compression::None);
    let err = validate_batch(&batch[..60]).expect_err("short");
    assert_eq!(
        err,
        CodecError::HeaderTruncated {
            needed: 61,
            available: 60
        }
    );
    assert_eq!(
        err.to_string(),
        "record batch header truncated: need 61 bytes, only 60 present"
    );
    assert_eq!(
        read_header(&[]),
        Err(CodecError::HeaderTruncated {
            needed: 61,
            available: 0
        })
    );
    assert!(matches!(
        decode_batch(&batch[..10]),
        Err(CodecError::HeaderTruncated { .. })
    ));
}

#[test]
fn truncated() {
    let batch = good(Compression::Gzip);
    let n = batch.len();
    let err = validate_batch(&batch[..n - 1]).expect_err("truncated");
    assert_eq!(
        err,
        CodecError::Truncated {
            needed: n,
            available: n - 1
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "batch truncated: header says {n} bytes, only {} present",
            n - 1
        )
    );
    // read_header reads a header prefix on purpose.
    assert!(read_header(&batch[..BATCH_HEADER_LEN]).is_ok());
    assert!(matches!(
        decode_batch(&batch[..BATCH_HEADER_LEN]),
        Err(CodecError::Truncated { .. })
    ));
}

#[test]
fn trailing_bytes_after_the_batch_are_ignored() {
    let mut batch = good(Compression::None);
    let n = batch.len();
    batch.extend_from_slice(b"next batch starts here");
    assert_eq!(validate_batch(&batch).expect("valid").total_len(), n);
    assert_eq!(decode_batch(&batch).expect("decode").1, sample_records(100));
}

#[test]
fn bad_magic() {
    let mut batch = good(Compression::None);
    batch[16] = 1;
    let err = validate_batch(&batch).expect_err("magic");
    assert_eq!(err, CodecError::BadMagic(1));
    assert_eq!(
        err.to_string(),
        "unsupported record batch magic 1, expected 2"
    );
    assert_eq!(read_header(&batch), Err(CodecError::BadMagic(1)));
    assert_eq!(
        decode_batch(&batch).map(|_| ()),
        Err(CodecError::BadMagic(1))
    );
}

#[test]
fn crc_mismatch() {
    for c in Compression::ALL {
        let mut batch = good(c);
        let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        let last = batch.len() - 1;
        batch[last] ^= 0x40;
        let computed = runnel_codec::crc32c(&batch[21..]);
        let err = validate_batch(&batch).expect_err("crc");
        assert_eq!(err, CodecError::CrcMismatch { stored, computed });
        assert_eq!(
            err.to_string(),
            format!("batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")
        );
        assert!(matches!(
            decode_batch(&batch),
            Err(CodecError::CrcMismatch { .. })
        ));
        // The header alone is still readable without the CRC check.
        assert!(read_header(&batch).is_ok());
    }
    // A flipped attribute bit is caught by the CRC too.
    let mut batch = good(Compression::None);
    batch[22] ^= 0x01;
    assert!(matches!(
        validate_batch(&batch),
        Err(CodecError::CrcMismatch { .. })
    ));
}

#[test]
fn bad_length() {
    let mut batch = good(Compression::None);
    for len in [48, 0, -1, i32::MIN] {
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let err = validate_batch(&batch).expect_err("length");
        assert_eq!(err, CodecError::BadLength(len));
        assert_eq!(read_header(&batch), Err(CodecError::BadLength(len)));
        let mut split = split_batches(&batch);
        assert_eq!(split.next(), Some(Err(CodecError::BadLength(len))));
        assert_eq!(split.next(), None);
        // A bad length is corruption, not a partial batch: lenient splitting reports it too.
        assert_eq!(
            split_batches_lenient(&batch).next(),
            Some(Err(CodecError::BadLength(len)))
        );
    }
    assert_eq!(
        CodecError::BadLength(48).to_string(),
        "invalid batch length 48: must be at least 49 (the header after the length field)"
    );
}

#[test]
fn bad_records_count() {
    let mut batch = good(Compression::None);
    batch[57..61].copy_from_slice(&(-1i32).to_be_bytes());
    recrc(&mut batch);
    assert_eq!(validate_batch(&batch), Err(CodecError::BadRecordCount(-1)));
}

#[test]
fn bad_last_offset_delta() {
    let mut batch = good(Compression::None);
    batch[23..27].copy_from_slice(&(-5i32).to_be_bytes());
    recrc(&mut batch);
    assert_eq!(
        validate_batch(&batch),
        Err(CodecError::BadLastOffsetDelta(-5))
    );
}

#[test]
fn unknown_compression() {
    for code in [5i16, 6, 7] {
        let mut batch = good(Compression::None);
        let attributes = i16::from_be_bytes([batch[21], batch[22]]) | code;
        batch[21..23].copy_from_slice(&attributes.to_be_bytes());
        recrc(&mut batch);
        let err = validate_batch(&batch).expect_err("codec");
        assert_eq!(err, CodecError::UnknownCompression(code));
        assert!(err
            .to_string()
            .starts_with(&format!("unknown compression codec {code}")));
        // The header is readable, but asking for its codec fails.
        assert_eq!(
            read_header(&batch).expect("header").compression(),
            Err(CodecError::UnknownCompression(code))
        );
    }
}

#[test]
fn compression_errors() {
    for c in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut batch = good(c);
        // Garble the compressed records but keep the CRC right, so decompression must fail.
        for b in &mut batch[BATCH_HEADER_LEN..] {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        recrc(&mut batch);
        validate_batch(&batch).expect("framing and CRC are fine");
        match decode_batch(&batch) {
            Err(CodecError::Compression { codec, message }) => {
                assert_eq!(codec, c.name());
                assert!(!message.is_empty());
            }
            other => panic!("{c}: expected a compression error, got {other:?}"),
        }
    }
}

#[test]
fn decompression_limit() {
    let big = Record {
        value: Some(Bytes::from(vec![0u8; 1 << 20])),
        ..Record::default()
    };
    for c in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch =
            encode_batch(std::slice::from_ref(&big), c, ProducerInfo::default()).expect("encode");
        assert!(batch.len() < 64 * 1024, "{c} compresses zeros");
        assert!(matches!(
            decode_batch_with_limit(&batch, 512 * 1024),
            Err(CodecError::Compression { .. })
        ));
        assert_eq!(
            decode_batch_with_limit(&batch, 2 << 20).expect("decode").1,
            vec![big.clone()]
        );
    }
}

#[test]
fn record_count_mismatch() {
    for c in Compression::ALL {
        for claimed in [2i32, 4, 0, 1000] {
            let mut batch = good(c);
            batch[57..61].copy_from_slice(&claimed.to_be_bytes());
            recrc(&mut batch);
            validate_batch(&batch).expect("header is consistent");
            let err = decode_batch(&batch).expect_err("count");
            assert_eq!(
                err,
                CodecError::RecordCountMismatch {
                    header: claimed,
                    decoded: 3
                }
            );
        }
    }
    assert_eq!(
        CodecError::RecordCountMismatch {
            header: 4,
            decoded: 3
        }
        .to_string(),
        "batch header says 4 records, but the records section holds 3"
    );
}

/// Decodes and expects a `MalformedRecord` whose message mentions `needle`.
fn assert_malformed(batch: &[u8], needle: &str) {
    match decode_batch(batch) {
        Err(CodecError::MalformedRecord(msg)) => {
            assert!(msg.contains(needle), "`{msg}` should mention `{needle}`")
        }
        other => panic!("expected MalformedRecord({needle}), got {other:?}"),
    }
}

#[test]
fn malformed_records() {
    // Record layout here: [61] length, [62] attributes, [63] ts delta, [64] offset delta,
    // [65] key length (zig-zag 6 = 3), key "abc", value length, "v", headers count.
    let base = one_record(b"abc", &[]);
    assert_eq!(decode_batch(&base).expect("decode").1.len(), 1);

    // Key length beyond the record.
    let mut batch = base.clone();
    batch[65] = 0x7e; // 63
    recrc(&mut batch);
    assert_malformed(&batch, "key length 63 exceeds");

    // Key length below -1.
    let mut batch = base.clone();
    batch[65] = 0x03; // -2
    recrc(&mut batch);
    assert_malformed(&batch, "invalid key length -2");

    // Record length beyond the batch.
    let mut batch = base.clone();
    batch[61] = 0x7e;
    recrc(&mut batch);
    assert_malformed(&batch, "record length 63 does not fit");

    // Negative record length.
    let mut batch = base.clone();
    batch[61] = 0x01;
    recrc(&mut batch);
    assert_malformed(&batch, "record length -1");

    // Negative headers count (last byte of the record).
    let mut batch = base.clone();
    let last = batch.len() - 1;
    batch[last] = 0x01;
    recrc(&mut batch);
    assert_malformed(&batch, "invalid headers count -1");

    // A record shorter than its fields: headers count says 1 but nothing follows.
    let mut batch = base.clone();
    batch[last] = 0x02;
    recrc(&mut batch);
    assert_malformed(&batch, "header key length");

    // Bytes left over inside the record: one more byte than its fields take.
    let mut batch = base.clone();
    assert_eq!(batch[61], 20); // zig-zag 10 bytes
    batch[61] = 22;
    batch.push(0);
    let len = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]) + 1;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    recrc(&mut batch);
    assert_malformed(&batch, "1 unread bytes after the headers");

    // A varint that never ends inside a record.
    let mut batch = base.clone();
    for b in &mut batch[64..69] {
        *b = 0xff;
    }
    recrc(&mut batch);
    assert_malformed(&batch, "varint overflow");

    // A header key that is not UTF-8.
    let batch = one_record(b"k", &[Header::new("ab", "v")]);
    let at = batch
        .windows(2)
        .rposition(|w| w == b"ab")
        .expect("header key present");
    let mut batch = batch.clone();
    batch[at] = 0xff;
    recrc(&mut batch);
    assert_malformed(&batch, "not UTF-8");

    // A null header key.
    let mut batch = one_record(b"k", &[Header::new("", "v")]);
    batch[at - 1] = 0x01; // key length 0 -> -1
    recrc(&mut batch);
    assert_malformed(&batch, "null key");

    // Garbage after the last record.
    let mut batch = base.clone();
    batch.push(0x7f);
    let len = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]) + 1;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    recrc(&mut batch);
    assert_malformed(&batch, "record #1 of a batch whose header says 1 records");
}

#[test]
fn varint_errors() {
    let mut six = &[0x80u8, 0x80, 0x80, 0x80, 0x80, 0x01][..];
    assert_eq!(
        varint::get_varint(&mut six),
        Err(CodecError::VarintOverflow)
    );
    let mut eleven = &[0xffu8; 11][..];
    assert_eq!(
        varint::get_varlong(&mut eleven),
        Err(CodecError::VarintOverflow)
    );
    let mut short = &[0x80u8][..];
    assert_eq!(
        varint::get_varint(&mut short),
        Err(CodecError::VarintTruncated)
    );
}

#[test]
fn empty_batch() {
    assert_eq!(
        BatchBuilder::new(Compression::None, 0).build(),
        Err(CodecError::EmptyBatch)
    );
    assert_eq!(
        encode_batch(&[], Compression::Zstd, ProducerInfo::default()),
        Err(CodecError::EmptyBatch)
    );
}

#[test]
fn offset_out_of_range() {
    let mut records = sample_records(10);
    records[2].offset = 9;
    assert_eq!(
        encode_batch(&records, Compression::None, ProducerInfo::default()),
        Err(CodecError::OffsetOutOfRange {
            base_offset: 10,
            offset: 9
        })
    );
    records[2].offset = 10 + i64::from(i32::MAX) + 1;
    assert!(matches!(
        encode_batch(&records, Compression::None, ProducerInfo::default()),
        Err(CodecError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn split_errors() {
    let a = good(Compression::None);
    let b = good(Compression::Lz4);
    let mut buf = [a.clone(), b.clone()].concat();

    let all: Vec<_> = split_batches(&buf).collect();
    assert_eq!(all, vec![Ok(&a[..]), Ok(&b[..])]);

    // Partial trailing batch: strict errors, lenient stops.
    buf.extend_from_slice(&a[..100]);
    let strict: Vec<_> = split_batches(&buf).collect();
    assert_eq!(strict.len(), 3);
    assert_eq!(
        strict[2],
        Err(CodecError::Truncated {
            needed: a.len(),
            available: 100
        })
    );
    let mut lenient = split_batches_lenient(&buf);
    assert_eq!(lenient.next(), Some(Ok(&a[..])));
    assert_eq!(lenient.next(), Some(Ok(&b[..])));
    assert_eq!(lenient.next(), None);
    assert_eq!(lenient.remainder(), &a[..100]);

    // Fewer than 12 bytes left: not even the length is there.
    let buf = [a.clone(), a[..5].to_vec()].concat();
    let strict: Vec<_> = split_batches(&buf).collect();
    assert_eq!(
        strict[1],
        Err(CodecError::HeaderTruncated {
            needed: 12,
            available: 5
        })
    );
    assert_eq!(split_batches_lenient(&buf).count(), 1);
    assert_eq!(split_batches(&[]).count(), 0);
}

#[test]
fn patches_in_place() {
    for c in Compression::ALL {
        let mut batch = good(c);
        set_base_offset(&mut batch, 1_000_000);
        set_partition_leader_epoch(&mut batch, 7);
        let header = validate_batch(&batch).expect("CRC still valid");
        assert_eq!(header.base_offset, 1_000_000);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 1_000_002);
        assert_eq!(header.next_offset(), 1_000_003);
        let (_, records) = decode_batch(&batch).expect("decode");
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1_000_000, 1_000_001, 1_000_002]);
    }
}

#[test]
fn log_append_time() {
    for c in Compression::ALL {
        let mut batch = good(c);
        set_log_append_time(&mut batch, 42).expect("patch");
        let header = validate_batch(&batch).expect("CRC recomputed");
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 42);
        assert_eq!(header.base_timestamp, 42);
        assert_eq!(header.compression(), Ok(c));
        let (_, records) = decode_batch(&batch).expect("decode");
        assert!(records.iter().all(|r| r.timestamp == 42));
        let mut expected = sample_records(100);
        for r in &mut expected {
            r.timestamp = 42;
        }
        assert_eq!(records, expected);
    }
    let batch = good(Compression::None);
    let mut short = batch[..batch.len() - 1].to_vec();
    assert!(matches!(
        set_log_append_time(&mut short, 1),
        Err(CodecError::Truncated { .. })
    ));
    let mut tiny = batch[..20].to_vec();
    assert!(matches!(
        set_log_append_time(&mut tiny, 1),
        Err(CodecError::HeaderTruncated { .. })
    ));
}

#[test]
fn base_sequence_patch() {
    for c in Compression::ALL {
        let mut batch = good(c);
        set_base_sequence(&mut batch, 500).expect("patch");
        let header = validate_batch(&batch).expect("CRC recomputed");
        assert_eq!(header.base_sequence, 500);
        assert_eq!(decode_batch(&batch).expect("decode").1, sample_records(100));
    }
    let batch = good(Compression::None);
    let mut short = batch[..batch.len() - 1].to_vec();
    assert!(matches!(
        set_base_sequence(&mut short, 1),
        Err(CodecError::Truncated { .. })
    ));
}

#[test]
#[should_panic(expected = "holds no record batch header")]
fn set_base_offset_panics_on_short_buffer() {
    set_base_offset(&mut [0u8; 10], 1);
}

#[test]
fn builder_options_reach_the_header() {
    let producer = ProducerInfo {
        producer_id: 77,
        producer_epoch: 3,
        base_sequence: 1000,
    };
    let mut b = BatchBuilder::new(Compression::Snappy, 5_000)
        .with_producer(producer)
        .with_partition_leader_epoch(9)
        .with_timestamp_type(TimestampType::LogAppendTime)
        .with_transactional(true);
    assert!(b.is_empty());
    let added = b.append(5_010, Some(b"k"), None, &[]);
    assert_eq!(b.estimated_size(), BATCH_HEADER_LEN + added);
    b.append(5_003, None, Some(b"v"), &[]);
    assert_eq!(b.len(), 2);
    let batch = b.build().expect("build");
    let h = validate_batch(&batch).expect("valid");
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (77, 3, 1000)
    );
    assert_eq!(h.partition_leader_epoch, 9);
    assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    assert!(h.is_transactional());
    assert!(!h.is_control());
    assert_eq!(h.base_offset, 0);
    assert_eq!((h.base_timestamp, h.max_timestamp), (5_000, 5_010));
    assert_eq!((h.records_count, h.last_offset_delta), (2, 1));
}
