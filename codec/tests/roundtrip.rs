//! Property tests: whatever is encoded decodes to the same thing.

mod common;

use bytes::Bytes;
use common::{arb_compression, arb_records};
use proptest::prelude::*;
use runnel_codec::{
    decode_batch, decode_batch_bytes, encode_batch, set_base_offset, set_partition_leader_epoch,
    split_batches, split_batches_lenient, validate_batch, varint, BatchBuilder, Compression,
    ProducerInfo, Record, TimestampType, BATCH_HEADER_LEN,
};

fn arb_producer() -> impl Strategy<Value = ProducerInfo> {
    prop_oneof![
        Just(ProducerInfo::default()),
        (any::<i64>(), any::<i16>(), any::<i32>()).prop_map(|(id, epoch, seq)| ProducerInfo {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// encode_batch -> validate_batch -> decode_batch gives back the records and the header
    /// fields that describe them.
    #[test]
    fn encode_validate_decode(
        records in arb_records(),
        compression in arb_compression(),
        producer in arb_producer(),
    ) {
        let batch = encode_batch(&records, compression, producer).expect("encode");
        let header = validate_batch(&batch).expect("valid");
        prop_assert_eq!(header.total_len(), batch.len());
        prop_assert_eq!(header.compression(), Ok(compression));
        prop_assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        prop_assert_eq!(header.records_count as usize, records.len());
        prop_assert_eq!(header.base_offset, records[0].offset);
        prop_assert_eq!(header.last_offset(), records[records.len() - 1].offset);
        prop_assert_eq!(header.base_timestamp, records[0].timestamp);
        prop_assert_eq!(
            header.max_timestamp,
            records.iter().map(|r| r.timestamp).max().expect("non-empty")
        );
        prop_assert_eq!(header.producer_id, producer.producer_id);
        prop_assert_eq!(header.producer_epoch, producer.producer_epoch);
        prop_assert_eq!(header.base_sequence, producer.base_sequence);

        let (decoded_header, decoded) = decode_batch(&batch).expect("decode");
        prop_assert_eq!(decoded_header, header);
        prop_assert_eq!(&decoded, &records);
        let (_, shared) = decode_batch_bytes(&batch).expect("decode shared");
        prop_assert_eq!(&shared, &records);
    }

    /// The builder's hot path: offsets 0.., sizes add up, uncompressed size is exact.
    #[test]
    fn builder_round_trip(
        records in arb_records(),
        compression in arb_compression(),
        producer in arb_producer(),
    ) {
        let base_timestamp = records[0].timestamp;
        let mut builder = BatchBuilder::new(compression, base_timestamp).with_producer(producer);
        let mut total = BATCH_HEADER_LEN;
        for r in &records {
            total += builder.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.headers);
            prop_assert_eq!(builder.estimated_size(), total);
        }
        prop_assert_eq!(builder.len(), records.len());
        let batch = builder.build().expect("build");
        if compression == Compression::None {
            prop_assert_eq!(batch.len(), total);
        }
        let header = validate_batch(&batch).expect("valid");
        prop_assert_eq!(header.base_offset, 0);
        prop_assert_eq!(header.last_offset_delta as usize, records.len() - 1);
        let (_, decoded) = decode_batch(&batch).expect("decode");
        let expected: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| Record { offset: i as i64, ..r.clone() })
            .collect();
        prop_assert_eq!(decoded, expected);
    }

    /// Patching the base offset (and leader epoch) keeps the CRC valid and shifts offsets.
    #[test]
    fn set_base_offset_keeps_crc(
        records in arb_records(),
        compression in prop::sample::select(vec![Compression::None, Compression::Snappy]),
        new_base in 0i64..i64::MAX / 2,
        epoch in any::<i32>(),
    ) {
        let mut batch = encode_batch(&records, compression, ProducerInfo::default())
            .expect("encode")
            .to_vec();
        set_base_offset(&mut batch, new_base);
        set_partition_leader_epoch(&mut batch, epoch);
        let header = validate_batch(&batch).expect("still valid");
        prop_assert_eq!(header.base_offset, new_base);
        prop_assert_eq!(header.partition_leader_epoch, epoch);
        let (_, decoded) = decode_batch(&batch).expect("decode");
        for (d, r) in decoded.iter().zip(&records) {
            prop_assert_eq!(d.offset, new_base + (r.offset - records[0].offset));
        }
    }

    /// Concatenated batches split back into exactly those batches.
    #[test]
    fn split_concatenated(
        lists in prop::collection::vec((arb_records(), arb_compression()), 0..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let batches: Vec<Bytes> = lists
            .iter()
            .map(|(records, c)| encode_batch(records, *c, ProducerInfo::default()).expect("encode"))
            .collect();
        let buf: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
        let split: Vec<&[u8]> = split_batches(&buf).collect::<Result<_, _>>().expect("split");
        prop_assert_eq!(split.len(), batches.len());
        for (s, b) in split.iter().zip(&batches) {
            prop_assert_eq!(*s, &b[..]);
            validate_batch(s).expect("each batch is valid");
        }

        // Cut the buffer anywhere: lenient splitting yields the whole batches before the cut.
        if !buf.is_empty() {
            let at = cut.index(buf.len());
            let head = &buf[..at];
            let whole = batches
                .iter()
                .scan(0usize, |end, b| { *end += b.len(); Some(*end) })
                .take_while(|end| *end <= at)
                .count();
            let mut lenient = split_batches_lenient(head);
            let got: Vec<&[u8]> = lenient.by_ref().collect::<Result<_, _>>().expect("lenient");
            prop_assert_eq!(got.len(), whole);
            let consumed: usize = got.iter().map(|b| b.len()).sum();
            prop_assert_eq!(lenient.remainder().len(), at - consumed);
            let strict: Vec<_> = split_batches(head).collect();
            prop_assert_eq!(strict.iter().filter(|r| r.is_err()).count(), usize::from(consumed != at));
        }
    }

    /// varint / varlong: round trip and predicted length.
    #[test]
    fn varint_round_trip(v in any::<i32>(), w in any::<i64>(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut buf = Vec::new();
        varint::put_varint(&mut buf, v);
        prop_assert_eq!(buf.len(), varint::varint_len(v));
        let n = buf.len();
        varint::put_varlong(&mut buf, w);
        prop_assert_eq!(buf.len() - n, varint::varlong_len(w));
        buf.extend_from_slice(&tail);
        let mut s = &buf[..];
        prop_assert_eq!(varint::get_varint(&mut s), Ok(v));
        prop_assert_eq!(varint::get_varlong(&mut s), Ok(w));
        prop_assert_eq!(s, &tail[..]);
    }

    /// A varint of i32 range read as a varlong gives the same value (Kafka shares the zig-zag).
    #[test]
    fn varint_is_a_small_varlong(v in any::<i32>()) {
        let mut buf = Vec::new();
        varint::put_varint(&mut buf, v);
        prop_assert_eq!(varint::get_varlong(&mut &buf[..]), Ok(i64::from(v)));
    }
}

/// Compaction's rewrite keeps the kept records' offsets and bytes, in every codec.
#[test]
fn retain_records_keeps_offsets_in_every_codec() {
    for codec in runnel_codec::Compression::ALL {
        let mut b = runnel_codec::BatchBuilder::new(codec, 1_000);
        for i in 0..10u8 {
            let value = [i; 40];
            let v: Option<&[u8]> = if i == 7 { None } else { Some(&value) };
            b.append(1_000 + i64::from(i), Some(&[b'k', i % 3]), v, &[]);
        }
        let mut batch = b.build().expect("build").to_vec();
        runnel_codec::set_base_offset(&mut batch, 100);
        let mut seen = Vec::new();
        let out = runnel_codec::retain_records(&batch, 1 << 20, |r| {
            seen.push((r.offset, r.timestamp, r.tombstone));
            r.offset % 2 == 1
        })
        .expect("rewrite")
        .expect("changed");
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[7], (107, 1_007, true));
        let (h, records) = runnel_codec::decode_batch(&out).expect("valid after the rewrite");
        assert_eq!((h.base_offset, h.last_offset()), (100, 109), "{codec:?}");
        assert_eq!(h.records_count, 5);
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![101, 103, 105, 107, 109]);
        assert!(records[3].value.is_none());
        assert_eq!(records[0].timestamp, 1_001);
        // Nothing dropped: nothing to rewrite. Everything dropped: an empty batch.
        assert!(runnel_codec::retain_records(&batch, 1 << 20, |_| true)
            .expect("rewrite")
            .is_none());
        let empty = runnel_codec::retain_records(&batch, 1 << 20, |_| false)
            .expect("rewrite")
            .expect("changed");
        let (h, records) = runnel_codec::decode_batch(&empty).expect("valid");
        assert_eq!(
            (h.records_count, records.len(), h.last_offset()),
            (0, 0, 109)
        );
    }
}
