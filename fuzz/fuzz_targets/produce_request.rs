//! A produce request's batches through the broker's checks into a partition log over the memory
//! store, as the `Broker` service hands them over: nothing may panic, a refused request changes
//! nothing, and an accepted one is stored whole and reads back batch by batch.
//!
//! The first byte picks the topic's settings (compacted, log-append time, a small
//! `max.message.bytes`, and whether the request's CRCs are fixed up so that mutations reach the
//! record checks); the rest is the request's `batches` field.
//!
//! Run with `cargo +nightly fuzz run produce_request` from `fuzz/`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use runnel_broker::log::{AppendContext, LogConfig, PartitionLog};
use runnel_broker::storage::{MemoryStorage, Storage};
use runnel_codec::{decode_batch, split_batches, BatchBuilder, Compression, ProducerInfo};

/// Gives every batch in `buf` a valid CRC, as a client with a bug would send it.
fn fix_crcs(buf: &mut [u8]) {
    let mut at = 0;
    while at + 61 <= buf.len() {
        let len = i32::from_be_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12 + at))
            .filter(|end| *end <= buf.len() && *end >= at + 61)
        else {
            return;
        };
        let crc = runnel_codec::crc32c(&buf[at + 21..end]);
        buf[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let config = LogConfig {
        compact: flags & 1 != 0,
        log_append_time: flags & 2 != 0,
        max_message_bytes: if flags & 4 != 0 { 200 } else { 1 << 20 },
        ..LogConfig::default()
    };
    let mut request = rest.to_vec();
    if flags & 8 != 0 {
        fix_crcs(&mut request);
    }
    let request = Bytes::from(request);
    let storage = MemoryStorage::default();
    let log = PartitionLog::recover(storage.open_log("t", 0).expect("open"), 0, 0).expect("recover");

    // Something stored before, which a refused request must leave intact.
    let mut first = BatchBuilder::new(Compression::None, 1).with_producer(ProducerInfo {
        producer_id: 3,
        producer_epoch: 0,
        base_sequence: 0,
    });
    first.append(1, Some(b"k"), Some(b"v"), &[]);
    let first = first.build().expect("build");
    log.append(&[first], &config, &AppendContext::at(1)).expect("first append");
    log.mark_durable(log.log_end_offset());
    let before = log.summary();

    let Ok(batches) = split_batches(&request)
        .map(|b| b.map(|s| request.slice_ref(s)))
        .collect::<Result<Vec<Bytes>, _>>()
    else {
        return;
    };
    let ctx = AppendContext {
        now_ms: 5,
        producer_id_end: 1_000,
    };
    match log.append(&batches, &config, &ctx) {
        Err(_) => assert_eq!(log.summary(), before, "a refused request changed the log"),
        Ok(outcome) => {
            log.mark_durable(log.log_end_offset());
            let after = log.summary();
            assert!(after.log_end_offset >= before.log_end_offset);
            assert!(outcome.base_offset <= outcome.last_offset, "{outcome:?}");
            if outcome.duplicate {
                assert_eq!(after.log_end_offset, before.log_end_offset, "a duplicate stored something");
                assert!(outcome.last_offset < before.log_end_offset, "{outcome:?}");
            } else {
                // New batches go at the end; a retried batch in the same request answers with
                // its earlier offsets, so the answer may start before the old end.
                assert_eq!(outcome.last_offset + 1, after.log_end_offset);
                assert!(outcome.base_offset < after.log_end_offset);
            }
            // Every stored batch decodes, and the offsets run without a gap.
            let mut offset = 0;
            let mut next = 0;
            while offset < after.high_watermark {
                let read = log.read(offset, 1 << 20).expect("read");
                for b in &read.batches {
                    let (h, records) = decode_batch(b).expect("every stored batch decodes");
                    assert_eq!(h.base_offset, next, "offsets run without a gap");
                    assert_eq!(records.len(), h.records_count as usize);
                    next = h.last_offset() + 1;
                }
                if read.next_offset <= offset {
                    break;
                }
                offset = read.next_offset;
            }
            assert_eq!(next, after.log_end_offset);
        }
    }
});
