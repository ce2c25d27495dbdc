//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use proptest::prelude::*;
use runnel_codec::{Compression, Header, Record};

/// Recomputes the CRC of a batch after a test changed a CRC-covered field on purpose.
/// The CRC covers `21..12 + batchLength` (or the whole buffer if the length is off).
pub fn recrc(batch: &mut [u8]) {
    let len = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]);
    let end = usize::try_from(len)
        .ok()
        .map(|l| l + 12)
        .filter(|end| (21..=batch.len()).contains(end))
        .unwrap_or(batch.len());
    let crc = runnel_codec::crc32c(&batch[21..end]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A small batch of three records with keys, values, a null and headers.
pub fn sample_records(base_offset: i64) -> Vec<Record> {
    vec![
        Record {
            offset: base_offset,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"key-0")),
            value: Some(Bytes::from_static(b"value-0")),
            headers: vec![
                Header::new("trace", "abc"),
                Header {
                    key: "empty".into(),
                    value: None,
                },
            ],
        },
        Record {
            offset: base_offset + 1,
            timestamp: 1_700_000_000_005,
            key: None,
            value: Some(Bytes::from(vec![b'x'; 300])),
            headers: vec![],
        },
        Record {
            offset: base_offset + 2,
            timestamp: 1_700_000_000_003,
            key: Some(Bytes::new()),
            value: None,
            headers: vec![Header::new("k", "")],
        },
    ]
}

/// Any codec.
pub fn arb_compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

/// A byte string, mostly short, sometimes empty, now and then larger than a snappy block
/// (32 KiB) and an lz4 block (64 KiB).
pub fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..48),
        1 => Just(Vec::new()),
        1 => (1usize..100_000, any::<u8>()).prop_map(|(n, seed)| {
            // Compressible but not constant.
            (0..n).map(|i| (i as u8).wrapping_mul(seed) ^ (i / 97) as u8).collect()
        }),
    ]
    .prop_map(Bytes::from)
}

/// A nullable byte string.
pub fn arb_nullable() -> impl Strategy<Value = Option<Bytes>> {
    prop::option::weighted(0.85, arb_bytes())
}

/// A header; keys are any Unicode (including empty) and may repeat within a record.
pub fn arb_header() -> impl Strategy<Value = Header> {
    (
        "\\PC{0,12}",
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..24)),
    )
        .prop_map(|(key, value)| Header {
            key,
            value: value.map(Bytes::from),
        })
}

/// Timestamps: mostly realistic, sometimes extreme (deltas must wrap correctly).
pub fn arb_timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1_600_000_000_000i64..1_800_000_000_000,
        1 => any::<i64>(),
        1 => Just(-1i64),
    ]
}

/// A list of 1..20 records with increasing offsets (gaps allowed) from `base`.
pub fn arb_records() -> impl Strategy<Value = Vec<Record>> {
    (
        prop_oneof![Just(0i64), 0i64..i64::MAX / 2],
        prop::collection::vec(
            (
                0i64..3,
                arb_timestamp(),
                arb_nullable(),
                arb_nullable(),
                prop::collection::vec(arb_header(), 0..4),
            ),
            1..20,
        ),
    )
        .prop_map(|(base, rows)| {
            let mut offset = base;
            rows.into_iter()
                .enumerate()
                .map(|(i, (gap, timestamp, key, value, headers))| {
                    if i > 0 {
                        offset += 1 + gap;
                    }
                    Record {
                        offset,
                        timestamp,
                        key,
                        value,
                        headers,
                    }
                })
                .collect()
        })
}
