//! Cross-check against an independent implementation, the `kafka-protocol` crate.
//!
//! What is compared byte for byte, and why not more:
//! * `none`, `gzip` and `snappy`: our encoding must equal kafka-protocol's exactly. gzip is
//!   deterministic here because both sides use flate2 at level 6 with its default gzip header
//!   (mtime 0); snappy because both use the `snap` crate with snappy-java's framing and 32 KiB
//!   blocks.
//! * `lz4`: kafka-protocol compresses with the C liblz4 at level 4, we use lz4_flex (one fast
//!   level), so the compressed bytes differ by design; both are valid LZ4 frames. Only the
//!   61-byte header minus the fields that depend on the compressed bytes (`batchLength`, `crc`)
//!   is compared, plus decoding in both directions.
//! * `zstd`: kafka-protocol 0.18 streams through `zstd` 0.13's `copy_encode`, we use `zstd`
//!   0.14's streaming encoder; same libzstd and level 3, but whether the frames match depends on
//!   those crates' buffering, so the bytes are compared opportunistically (reported, not
//!   required) and decoding is checked in both directions.
//! * kafka-protocol's `Record` keeps headers in an `IndexMap`, so it cannot express a repeated
//!   header key (Kafka can, and so can we): the inputs here use distinct header keys.
//! * kafka-protocol takes `baseTimestamp` as the smallest record timestamp where Kafka (and we)
//!   take the first record's: the inputs here have their smallest timestamp first.
//! * kafka-protocol subtracts timestamps without wrapping: the inputs here stay within ±2^61.
//! * kafka-protocol never sets the timestamp-type bit when encoding, and its decoder ignores
//!   Kafka's rule that a log-append-time batch reports `maxTimestamp` for every record: for
//!   log-append time only the decoded type is compared.

mod common;

use bytes::{Bytes, BytesMut};
use common::{arb_compression, arb_records, sample_records};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KpCompression, Record as KpRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType as KpTimestampType,
};
use proptest::prelude::*;
use runnel_codec::{
    decode_batch, encode_batch, set_log_append_time, validate_batch, BatchBuilder, Compression,
    Header, ProducerInfo, Record, NO_PARTITION_LEADER_EPOCH,
};

fn kp_compression(c: Compression) -> KpCompression {
    match c {
        Compression::None => KpCompression::None,
        Compression::Gzip => KpCompression::Gzip,
        Compression::Snappy => KpCompression::Snappy,
        Compression::Lz4 => KpCompression::Lz4,
        Compression::Zstd => KpCompression::Zstd,
    }
}

/// The kafka-protocol view of our records, as one batch with `producer` and `transactional`.
fn to_kp(records: &[Record], producer: ProducerInfo, transactional: bool) -> Vec<KpRecord> {
    let base = records[0].offset;
    records
        .iter()
        .map(|r| {
            let mut kp = KpRecord {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: producer.producer_id,
                producer_epoch: producer.producer_epoch,
                timestamp_type: KpTimestampType::Creation,
                offset: r.offset,
                // kafka-protocol derives baseSequence from the first record and checks that
                // offset - sequence is the same for every record of a batch.
                sequence: producer
                    .base_sequence
                    .wrapping_add((r.offset - base) as i32),
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: Default::default(),
            };
            for h in &r.headers {
                kp.headers
                    .insert(StrBytes::from_string(h.key.clone()), h.value.clone());
            }
            kp
        })
        .collect()
}

fn kp_encode(records: &[KpRecord], c: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: kp_compression(c),
        },
    )
    .expect("kafka-protocol encodes");
    buf.freeze()
}

fn kp_decode(batch: &Bytes) -> Vec<KpRecord> {
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes");
    assert!(buf.is_empty(), "exactly one batch");
    set.records
}

/// Makes records expressible by kafka-protocol the same way: distinct header keys, the
/// smallest timestamp first, and timestamps within ±2^61 (kafka-protocol computes timestamp
/// deltas with a plain `-`, which overflows, and panics in debug builds, on extreme values;
/// we wrap, like Java).
fn normalise(mut records: Vec<Record>) -> Vec<Record> {
    for r in &mut records {
        r.timestamp >>= 2;
        let mut seen = std::collections::HashSet::new();
        r.headers.retain(|h| seen.insert(h.key.clone()));
    }
    let min = records
        .iter()
        .map(|r| r.timestamp)
        .min()
        .expect("non-empty");
    records[0].timestamp = min;
    records
}

/// Header bytes that do not depend on the compressed records: everything but batchLength
/// (8..12) and crc (17..21).
fn stable_header(batch: &[u8]) -> Vec<u8> {
    [&batch[..8], &batch[12..17], &batch[21..61]].concat()
}

/// Checks one record list both ways; returns whether the bytes were identical.
fn cross_check(records: &[Record], c: Compression, producer: ProducerInfo) -> bool {
    let ours = encode_batch(records, c, producer).expect("we encode");
    let kp_records = to_kp(records, producer, false);
    let theirs = kp_encode(&kp_records, c);

    // Both are valid for both decoders.
    assert_eq!(
        kp_decode(&ours),
        kp_records,
        "kafka-protocol decodes our {c} batch"
    );
    let their_header = validate_batch(&theirs).expect("their batch validates");
    assert_eq!(their_header.compression(), Ok(c));
    assert_eq!(
        decode_batch(&theirs).expect("we decode theirs").1,
        records,
        "we decode kafka-protocol's {c} batch"
    );
    assert_eq!(stable_header(&ours), stable_header(&theirs), "{c} header");

    let identical = ours == theirs;
    if matches!(
        c,
        Compression::None | Compression::Gzip | Compression::Snappy
    ) {
        assert!(identical, "{c}: our bytes differ from kafka-protocol's\nours:   {ours:02x?}\ntheirs: {theirs:02x?}");
    }
    identical
}

fn fixed_cases() -> Vec<(Vec<Record>, ProducerInfo)> {
    let idempotent = ProducerInfo {
        producer_id: 4242,
        producer_epoch: 7,
        base_sequence: 100,
    };
    let big = Record {
        offset: 0,
        timestamp: 1,
        key: Some(Bytes::from_static(b"big")),
        // Spans several snappy (32 KiB) and lz4 (64 KiB) blocks.
        value: Some(Bytes::from(
            (0..300_000u32)
                .map(|i| (i % 7 + i / 5000) as u8)
                .collect::<Vec<u8>>(),
        )),
        headers: vec![],
    };
    let nulls = Record {
        offset: 5,
        timestamp: -1,
        key: None,
        value: None,
        headers: vec![Header {
            key: "n".into(),
            value: None,
        }],
    };
    vec![
        (sample_records(0), ProducerInfo::default()),
        (sample_records(1_000_000), idempotent),
        (vec![nulls], idempotent),
        (vec![big], ProducerInfo::default()),
        (
            // A sequence about to wrap, and many headers.
            (0..50)
                .map(|i| Record {
                    offset: i,
                    timestamp: 1_700_000_000_000 + i,
                    key: Some(Bytes::from(format!("key-{i}"))),
                    value: Some(Bytes::from(vec![i as u8; i as usize * 10])),
                    headers: (0..(i % 4))
                        .map(|h| Header::new(format!("h{h}"), format!("v{i}")))
                        .collect(),
                })
                .collect(),
            ProducerInfo {
                producer_id: i64::MAX,
                producer_epoch: i16::MAX,
                base_sequence: i32::MAX - 10,
            },
        ),
    ]
}

#[test]
fn fixed_record_lists_match_kafka_protocol() {
    let mut zstd_identical = 0;
    for (records, producer) in fixed_cases() {
        for c in Compression::ALL {
            let identical = cross_check(&records, c, producer);
            if c == Compression::Zstd && identical {
                zstd_identical += 1;
            }
        }
    }
    println!(
        "zstd: {zstd_identical} of {} batches byte-identical to kafka-protocol",
        fixed_cases().len()
    );
}

#[test]
fn transactional_batch_matches() {
    let records: Vec<Record> = sample_records(0);
    let producer = ProducerInfo {
        producer_id: 9,
        producer_epoch: 1,
        base_sequence: 0,
    };
    let mut builder = BatchBuilder::new(Compression::None, records[0].timestamp)
        .with_producer(producer)
        .with_transactional(true);
    for r in &records {
        builder.append(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    let ours = builder.build().expect("build");
    let theirs = kp_encode(&to_kp(&records, producer, true), Compression::None);
    assert_eq!(ours, theirs);
    assert!(kp_decode(&ours).iter().all(|r| r.transactional));
}

#[test]
fn log_append_time_is_seen_by_kafka_protocol() {
    let mut batch = encode_batch(
        &sample_records(0),
        Compression::None,
        ProducerInfo::default(),
    )
    .expect("encode")
    .to_vec();
    set_log_append_time(&mut batch, 1_800_000_000_000).expect("patch");
    let decoded = kp_decode(&Bytes::from(batch));
    assert!(decoded
        .iter()
        .all(|r| r.timestamp_type == KpTimestampType::LogAppend));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary record lists (normalised as described at the top) agree with kafka-protocol.
    #[test]
    fn arbitrary_records_match_kafka_protocol(
        records in arb_records(),
        compression in arb_compression(),
        producer_id in prop_oneof![Just(-1i64), any::<i64>()],
        producer_epoch in any::<i16>(),
        base_sequence in any::<i32>(),
    ) {
        let producer = ProducerInfo { producer_id, producer_epoch, base_sequence };
        cross_check(&normalise(records), compression, producer);
    }
}
