//! Plain records, for clients without a RecordBatch codec: placing and batching the records a
//! client produces without building batches, and decoding stored batches into the records a
//! fetch asks for. Pure: the service edge feeds it messages and batches.

use bytes::Bytes;
use runnel_codec::{self as codec, BatchBuilder, CodecError, Compression};
use runnel_proto::v1::{self as pb, ConsumedRecord, Record, RecordHeader};

/// The records of one produce request bound for one partition: their batch, and where each
/// stands in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecords {
    /// The partition.
    pub partition: i32,
    /// Indices into the request's records, in request order.
    pub indices: Vec<usize>,
}

/// Places a request's records on partitions. `asked` is the partition the request names, if
/// any; otherwise keyed records go where Kafka's default partitioner puts them (murmur2 of the
/// key), and every keyless record of the request goes to `keyless` (the caller takes the
/// partitions in turn from request to request, Kafka's sticky placement per batch). Groups come
/// in the order of their first record.
pub fn place_records(
    records: &[Record],
    asked: Option<i32>,
    partitions: usize,
    keyless: i32,
) -> Vec<PartitionRecords> {
    let mut groups: Vec<PartitionRecords> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let partition = match (asked, &r.key) {
            (Some(p), _) => p,
            (None, Some(key)) => codec::partition_for_key(key, partitions),
            (None, None) => keyless,
        };
        match groups.iter_mut().find(|g| g.partition == partition) {
            Some(g) => g.indices.push(i),
            None => groups.push(PartitionRecords {
                partition,
                indices: vec![i],
            }),
        }
    }
    groups
}

/// The codec a produce request asks for its records.
pub fn compression_of(code: i32) -> Result<Compression, String> {
    match pb::Compression::try_from(code) {
        Ok(pb::Compression::None) => Ok(Compression::None),
        Ok(pb::Compression::Gzip) => Ok(Compression::Gzip),
        Ok(pb::Compression::Snappy) => Ok(Compression::Snappy),
        Ok(pb::Compression::Lz4) => Ok(Compression::Lz4),
        Ok(pb::Compression::Zstd) => Ok(Compression::Zstd),
        Err(_) => Err(format!(
            "unknown compression {code} (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)"
        )),
    }
}

/// Builds one batch of the records at `indices`; a record without a timestamp gets `now_ms`.
pub fn build_batch(
    records: &[Record],
    indices: &[usize],
    compression: Compression,
    now_ms: i64,
) -> Result<Bytes, CodecError> {
    let mut b = BatchBuilder::new(compression, now_ms);
    for r in indices.iter().filter_map(|&i| records.get(i)) {
        let headers: Vec<codec::Header> = r
            .headers
            .iter()
            .map(|h| codec::Header {
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect();
        let ts = if r.timestamp_ms > 0 {
            r.timestamp_ms
        } else {
            now_ms
        };
        b.append(ts, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    b.build()
}

/// Decoded records of stored batches, from `offset` on.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The records, in offset order, none before `offset`.
    pub records: Vec<ConsumedRecord>,
    /// Where the next read starts: after the last record returned, or at the batch that could
    /// not be decoded.
    pub next_offset: i64,
    /// A stored batch that could not be decoded: its base offset and why. Records before it are
    /// returned; the reader meets the error when it asks for that offset.
    pub corrupt: Option<(i64, CodecError)>,
}

/// Decodes stored batches into records from `offset` on, until their keys, values and headers
/// pass `max_bytes` (at least one record is returned when any is there).
pub fn decode_from(batches: &[Bytes], offset: i64, max_bytes: usize) -> Decoded {
    let mut out = Decoded {
        next_offset: offset,
        ..Decoded::default()
    };
    let mut size = 0usize;
    for batch in batches {
        let (header, records) = match codec::decode_batch_bytes(batch) {
            Ok(d) => d,
            Err(e) => {
                let base = codec::read_header(batch).map_or(out.next_offset, |h| h.base_offset);
                out.corrupt = Some((base.max(out.next_offset), e));
                return out;
            }
        };
        for r in records.into_iter().filter(|r| r.offset >= offset) {
            let len = r.key.as_ref().map_or(0, Bytes::len)
                + r.value.as_ref().map_or(0, Bytes::len)
                + r.headers
                    .iter()
                    .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>();
            if !out.records.is_empty() && size + len > max_bytes {
                return out;
            }
            size += len;
            out.next_offset = r.offset + 1;
            out.records.push(ConsumedRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| RecordHeader {
                        key: h.key,
                        value: h.value,
                    })
                    .collect(),
            });
        }
        // Past the whole batch, also when compaction left offsets without records at its end.
        out.next_offset = out.next_offset.max(header.next_offset());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(key: Option<&str>, value: &str) -> Record {
        Record {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..Default::default()
        }
    }

    fn stored(base: i64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values.iter().map(|v| record(Some("k"), v)).collect();
        let idx: Vec<usize> = (0..records.len()).collect();
        let mut b = build_batch(&records, &idx, Compression::Lz4, 1)
            .expect("build")
            .to_vec();
        codec::set_base_offset(&mut b, base);
        Bytes::from(b)
    }

    #[test]
    fn decoding_starts_exactly_at_the_offset_and_stops_at_corruption() {
        let mut bad = stored(5, &["x"]).to_vec();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let batches = vec![
            stored(0, &["a", "b", "c"]),
            stored(3, &["d", "e"]),
            bad.into(),
        ];
        let d = decode_from(&batches, 1, usize::MAX);
        let offsets: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1, 2, 3, 4]);
        assert_eq!(d.next_offset, 5);
        let (at, e) = d.corrupt.expect("corrupt");
        assert_eq!(at, 5);
        assert!(e.to_string().contains("CRC"), "{e}");
        // A byte budget stops early, but never before one record.
        let d = decode_from(&batches, 0, 1);
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.next_offset, 1);
        assert!(d.corrupt.is_none());
    }

    proptest! {
        #[test]
        fn placement_keeps_keys_together_and_every_record_once(
            keys in prop::collection::vec(prop::option::of(0u8..20), 0..60),
            partitions in 1usize..12,
            keyless in 0i32..12,
        ) {
            let keyless = keyless % partitions as i32;
            let records: Vec<Record> = keys
                .iter()
                .map(|k| record(k.map(|k| format!("key-{k}")).as_deref(), "v"))
                .collect();
            let groups = place_records(&records, None, partitions, keyless);
            let mut seen: Vec<usize> = groups.iter().flat_map(|g| g.indices.clone()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..records.len()).collect::<Vec<_>>());
            for g in &groups {
                prop_assert!(g.indices.windows(2).all(|w| w[0] < w[1]));
                for &i in &g.indices {
                    let expected = match &records[i].key {
                        Some(k) => codec::partition_for_key(k, partitions),
                        None => keyless,
                    };
                    prop_assert_eq!(g.partition, expected);
                }
            }
            let asked = place_records(&records, Some(3), partitions, keyless);
            prop_assert!(asked.len() <= 1);
        }
    }
}
