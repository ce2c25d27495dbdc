//! The fuzz property, checked in the normal test run: no input makes the decoding functions
//! panic. (The cargo-fuzz target in `fuzz/` explores the same property without bounds.)

mod common;

use common::{arb_compression, arb_records, recrc};
use proptest::prelude::*;
use runnel_codec::{
    decode_batch, decode_batch_bytes, decode_batch_with_limit, encode_batch, read_header,
    set_base_offset, set_log_append_time, set_partition_leader_epoch, split_batches,
    split_batches_lenient, validate_batch, varint, ProducerInfo, BATCH_HEADER_LEN,
};

/// Runs every reading function on `buf`; they may fail but must not panic, and what they
/// accept must be consistent.
fn exercise(buf: &[u8]) {
    let header = read_header(buf);
    if let Ok(valid) = validate_batch(buf) {
        assert_eq!(header.as_ref().ok(), Some(&valid));
        assert!(valid.total_len() <= buf.len());
        if let Ok((h, records)) = decode_batch_with_limit(buf, 1 << 20) {
            assert_eq!(h, valid);
            assert_eq!(records.len(), h.records_count as usize);
            let shared = decode_batch_bytes(&bytes::Bytes::copy_from_slice(buf));
            assert_eq!(shared.map(|(_, r)| r), Ok(records));
        }
        // Patching a valid batch keeps it valid.
        let mut copy = buf.to_vec();
        set_base_offset(&mut copy, 12345);
        set_partition_leader_epoch(&mut copy, 3);
        assert!(validate_batch(&copy).is_ok());
        assert_eq!(set_log_append_time(&mut copy, 99), Ok(()));
        assert!(validate_batch(&copy).is_ok());
    } else {
        let mut copy = buf.to_vec();
        let _ = set_log_append_time(&mut copy, 99);
    }

    let mut total = 0;
    for batch in split_batches(buf) {
        match batch {
            Ok(b) => {
                total += b.len();
                let _ = decode_batch_with_limit(b, 1 << 20);
            }
            Err(_) => break,
        }
    }
    assert!(total <= buf.len());
    let mut lenient = split_batches_lenient(buf);
    let yielded: usize = lenient
        .by_ref()
        .filter_map(Result::ok)
        .map(<[u8]>::len)
        .sum();
    assert_eq!(yielded + lenient.remainder().len(), buf.len());

    let mut s = buf;
    while varint::get_varlong(&mut s).is_ok() && !s.is_empty() {}
    let mut s = buf;
    while varint::get_varint(&mut s).is_ok() && !s.is_empty() {}
}

/// One way to damage a batch.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: prop::sample::Index,
        bits: u8,
    },
    Set {
        at: prop::sample::Index,
        byte: u8,
    },
    Truncate {
        at: prop::sample::Index,
    },
    Insert {
        at: prop::sample::Index,
        bytes: Vec<u8>,
    },
    HeaderField {
        at: usize,
        value: i32,
    },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..=255)
            .prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<prop::sample::Index>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        // batchLength, lastOffsetDelta, recordsCount, or 4 bytes of the attributes/records.
        (
            prop::sample::select(vec![8usize, 23, 57, 21, 61, 62]),
            prop_oneof![any::<i32>(), -2i32..70]
        )
            .prop_map(|(at, value)| Mutation::HeaderField { at, value }),
    ]
}

fn apply(batch: &mut Vec<u8>, m: &Mutation) {
    if batch.is_empty() {
        return;
    }
    match m {
        Mutation::Flip { at, bits } => {
            let i = at.index(batch.len());
            batch[i] ^= bits;
        }
        Mutation::Set { at, byte } => {
            let i = at.index(batch.len());
            batch[i] = *byte;
        }
        Mutation::Truncate { at } => batch.truncate(at.index(batch.len())),
        Mutation::Insert { at, bytes } => {
            let i = at.index(batch.len());
            batch.splice(i..i, bytes.iter().copied());
        }
        Mutation::HeaderField { at, value } => {
            if let Some(field) = batch.get_mut(*at..*at + 4) {
                field.copy_from_slice(&value.to_be_bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes, including ones that start like a batch header.
    #[test]
    fn random_bytes_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 0..600),
        plausible in any::<bool>(),
    ) {
        if plausible && bytes.len() >= BATCH_HEADER_LEN {
            // Make the framing plausible so that the deeper checks run.
            let len = (bytes.len() - 12) as i32;
            bytes[8..12].copy_from_slice(&len.to_be_bytes());
            bytes[16] = 2;
            bytes[21] = 0;
            bytes[22] &= 0x07;
            recrc(&mut bytes);
        }
        exercise(&bytes);
    }

    /// Valid batches of every codec, damaged a few times, with the CRC fixed up half of the
    /// time so that the damage reaches the decompressors and the record decoder.
    #[test]
    fn mutated_batches_never_panic(
        records in arb_records(),
        compression in arb_compression(),
        mutations in prop::collection::vec(arb_mutation(), 1..6),
        fix_crc in any::<bool>(),
        concat in any::<bool>(),
    ) {
        let mut batch = encode_batch(&records, compression, ProducerInfo::default())
            .expect("encode")
            .to_vec();
        for m in &mutations {
            apply(&mut batch, m);
        }
        if fix_crc && batch.len() >= BATCH_HEADER_LEN {
            recrc(&mut batch);
        }
        exercise(&batch);
        if concat {
            let mut two = batch.clone();
            two.extend_from_slice(&batch);
            exercise(&two);
        }
        let _ = decode_batch(&batch);
    }
}
