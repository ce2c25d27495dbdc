//! The partition log's unit tests: its contract over each storage, checks, producers,
//! concurrent stores, recovery, retention and compaction.

mod log {
    use super::super::*;
    use crate::storage::{MemoryStorage, SledStorage, Storage};
    use runnel_codec::{BatchBuilder, Compression, ProducerInfo};

    fn batch(n: usize, ts: i64, producer: Option<(i64, i32)>) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None, ts);
        if let Some((pid, seq)) = producer {
            b = b.with_producer(ProducerInfo {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: seq,
            });
        }
        for i in 0..n {
            b.append(ts, Some(format!("k{i}").as_bytes()), Some(b"value"), &[]);
        }
        b.build().expect("build")
    }

    fn config() -> LogConfig {
        LogConfig::default()
    }

    #[tokio::test]
    async fn a_failed_or_panicking_store_takes_the_log_offline_and_wakes_waiters() {
        use crate::storage::faulty::{Faults, FaultyStorage};
        for panics in [false, true] {
            let storage = FaultyStorage::<MemoryStorage>::default();
            let log = PartitionLog::recover(storage.open_log("t", 0).expect("open"), 0, 0)
                .expect("recover");
            log.append(&[batch(2, 1, None)], &config(), &AppendContext::at(0))
                .expect("append");
            log.mark_durable(log.log_end_offset());
            let mut waiter = log.watch_high_watermark();
            waiter.borrow_and_update();
            let flag = if panics {
                &storage.faults.panic_puts
            } else {
                &storage.faults.fail_puts
            };
            Faults::set(flag, true);
            let e = log
                .append(&[batch(1, 2, None)], &config(), &AppendContext::at(0))
                .expect_err("store fails");
            let cause = if panics {
                "panicked"
            } else {
                "injected disk failure"
            };
            assert!(
                matches!(e, LogError::Offline(_)) && e.to_string().contains(cause),
                "{e}"
            );
            // The waiter is woken, the high watermark stays put, and the log says why.
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter.changed())
                .await
                .expect("woken")
                .expect("open");
            assert_eq!(*waiter.borrow(), 2);
            assert!(log.offline().get().is_some_and(|w| w.contains(cause)));
            // Later appends and reads are refused at once, even once the disk is back: the
            // storage must be reopened and the log recovered.
            Faults::set(flag, false);
            for e in [
                log.append(&[batch(1, 3, None)], &config(), &AppendContext::at(0))
                    .expect_err("offline"),
                log.read(0, 1 << 20).expect_err("offline"),
            ] {
                assert!(matches!(e, LogError::Offline(_)), "{e}");
            }
        }
    }

    /// The log's contract, run over every storage.
    fn contract<S: Storage>(storage: &S) {
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let a = log
            .append(&[batch(3, 1000, None)], &config(), &AppendContext::at(0))
            .expect("append");
        assert_eq!((a.base_offset, a.last_offset), (0, 2));
        let b = log
            .append(
                &[batch(2, 2000, None), batch(1, 3000, None)],
                &config(),
                &AppendContext::at(0),
            )
            .expect("append");
        assert_eq!((b.base_offset, b.last_offset), (3, 5));
        // Nothing is visible until durable.
        assert!(log.read(0, 1 << 20).expect("read").batches.is_empty());
        storage.flush().expect("flush");
        log.mark_durable(log.log_end_offset());
        let r = log.read(4, 1 << 20).expect("read");
        assert_eq!(r.high_watermark, 6);
        assert_eq!(r.batches.len(), 2, "starts with the batch holding offset 4");
        assert_eq!(r.next_offset, 6);
        let offsets: Vec<i64> = r
            .batches
            .iter()
            .flat_map(|b| codec::decode_batch(b).expect("decode").1)
            .map(|rec| rec.offset)
            .collect();
        assert_eq!(offsets, vec![3, 4, 5]);
        assert!(matches!(
            log.read(7, 100),
            Err(LogError::OffsetOutOfRange { offset: 7, .. })
        ));
        assert_eq!(log.offset_for_timestamp(1500).expect("ts"), Some((3, 2000)));
        assert_eq!(log.offset_for_timestamp(9999).expect("ts"), None);
        // Retention by bytes keeps the newest batches.
        let s = log.summary();
        let last_size = log.read(5, 1).expect("read").batches[0].len() as i64;
        let cfg = LogConfig {
            retention_bytes: last_size,
            retention_ms: -1,
            ..config()
        };
        assert_eq!(
            log.apply_retention(&cfg, 0, &|| Ok(())).expect("retention"),
            Some(5)
        );
        assert_eq!(log.summary().log_start_offset, 5);
        assert!(log.summary().size_bytes < s.size_bytes);
        assert!(matches!(
            log.read(2, 100),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Recovery rebuilds the same state.
        drop(log);
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("open"), 5, 0).expect("recover");
        let s2 = log.summary();
        assert_eq!(
            (s2.log_start_offset, s2.log_end_offset, s2.high_watermark),
            (5, 6, 6)
        );
    }

    #[test]
    fn log_contract_on_memory() {
        contract(&MemoryStorage::default());
    }

    #[test]
    fn log_contract_on_sled() {
        let dir = tempfile::tempdir().expect("dir");
        contract(&SledStorage::open(dir.path()).expect("open"));
    }

    #[test]
    fn idempotent_retries_are_dropped_and_gaps_refused() {
        let s = MemoryStorage::default();
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let b0 = batch(3, 0, Some((7, 0)));
        let first = log
            .append(std::slice::from_ref(&b0), &config(), &AppendContext::at(0))
            .expect("append");
        let again = log
            .append(&[b0], &config(), &AppendContext::at(0))
            .expect("retry");
        assert!(again.duplicate);
        assert_eq!(
            (again.base_offset, again.last_offset),
            (first.base_offset, first.last_offset)
        );
        assert_eq!(log.log_end_offset(), 3);
        let gap = log.append(
            &[batch(1, 0, Some((7, 5)))],
            &config(),
            &AppendContext::at(0),
        );
        assert!(matches!(
            gap,
            Err(LogError::OutOfOrderSequence {
                expected: 3,
                got: 5,
                ..
            })
        ));
        log.append(
            &[batch(1, 0, Some((7, 3)))],
            &config(),
            &AppendContext::at(0),
        )
        .expect("next in sequence");
        assert_eq!(log.log_end_offset(), 4);
    }

    /// A request that mixes a retried batch with new ones answers with the range of all of
    /// them, in whichever order they come (found by the produce_request fuzz target).
    #[test]
    fn a_request_with_a_retried_batch_spans_all_of_its_offsets() {
        let s = MemoryStorage::default();
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let dup = batch(2, 0, Some((7, 0)));
        log.append(std::slice::from_ref(&dup), &config(), &AppendContext::at(0))
            .expect("append");
        // The retried batch first, then the producer's next one.
        let out = log
            .append(
                &[dup.clone(), batch(3, 0, Some((7, 2)))],
                &config(),
                &AppendContext::at(0),
            )
            .expect("retry and next");
        assert!(!out.duplicate);
        assert_eq!((out.base_offset, out.last_offset), (0, 4));
        // Another producer's new batch first, then the retry: still 5..=5 and 0..=1, so 0..=5.
        let out = log
            .append(
                &[batch(1, 0, Some((8, 0))), dup],
                &config(),
                &AppendContext::at(0),
            )
            .expect("new and retry");
        assert_eq!((out.base_offset, out.last_offset), (0, 5));
        assert_eq!(log.log_end_offset(), 6);
    }

    #[test]
    fn producer_state_survives_recovery() {
        let s = MemoryStorage::default();
        let b0 = batch(2, 0, Some((9, 0)));
        {
            let log =
                PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
            log.append(std::slice::from_ref(&b0), &config(), &AppendContext::at(0))
                .expect("append");
        }
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        assert!(
            log.append(&[b0], &config(), &AppendContext::at(0))
                .expect("retry")
                .duplicate
        );
    }

    #[test]
    fn bad_batches_are_refused_and_nothing_is_written() {
        let s = MemoryStorage::default();
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let good = batch(1, 0, None);
        let mut bad_crc = good.to_vec();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let cases: Vec<Bytes> = vec![
            Bytes::from(bad_crc),
            good.slice(..good.len() - 3),
            Bytes::from_static(b"garbage"),
        ];
        for bad in cases {
            let r = log.append(&[good.clone(), bad], &config(), &AppendContext::at(0));
            assert!(
                matches!(&r, Err(LogError::InBatch { index: 1, count: 2, source })
                    if matches!(**source, LogError::InvalidBatch(_))),
                "{r:?}"
            );
        }
        assert!(matches!(
            log.append(&[], &config(), &AppendContext::at(0)),
            Err(LogError::EmptyProduce)
        ));
        let small = LogConfig {
            max_message_bytes: 10,
            ..config()
        };
        assert!(matches!(
            log.append(&[good], &small, &AppendContext::at(0)),
            Err(LogError::BatchTooLarge { .. })
        ));
        assert_eq!(log.log_end_offset(), 0);
    }

    #[test]
    fn log_append_time_stamps_batches() {
        let s = MemoryStorage::default();
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let cfg = LogConfig {
            log_append_time: true,
            ..config()
        };
        let out = log
            .append(&[batch(2, 5, None)], &cfg, &AppendContext::at(123_456))
            .expect("append");
        assert_eq!(out.log_append_time_ms, 123_456);
        log.mark_durable(2);
        let r = log.read(0, 1 << 20).expect("read");
        let h = codec::validate_batch(&r.batches[0]).expect("valid after stamping");
        assert_eq!(h.max_timestamp, 123_456);
    }
}

mod concurrent_store {
    use super::super::*;
    use crate::storage::{MemoryStorage, Storage};
    use runnel_codec::{BatchBuilder, Compression, ProducerInfo};

    fn batch(n: usize) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None, 0);
        for _ in 0..n {
            b.append(0, None, Some(b"v"), &[]);
        }
        b.build().expect("build")
    }

    #[test]
    fn high_watermark_waits_for_every_batch_below_it() {
        let s = MemoryStorage::default();
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let cfg = LogConfig::default();
        let first = log
            .reserve(&[batch(2)], &cfg, &AppendContext::at(0))
            .expect("reserve");
        let second = log
            .reserve(&[batch(3)], &cfg, &AppendContext::at(0))
            .expect("reserve");
        assert_eq!(
            (second.outcome.base_offset, second.outcome.last_offset),
            (2, 4)
        );
        // The later batch is stored first: nothing may become visible yet.
        log.write(second).expect("write");
        assert_eq!(log.stored_end_offset(), 0);
        log.mark_durable(5);
        assert_eq!(log.summary().high_watermark, 0);
        log.write(first).expect("write");
        assert_eq!(log.stored_end_offset(), 5);
        log.mark_durable(5);
        assert_eq!(log.summary().high_watermark, 5);
    }

    #[test]
    fn recovery_truncates_at_a_gap_left_by_a_crash() {
        let s = MemoryStorage::default();
        {
            let log =
                PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
            let cfg = LogConfig::default();
            let a = log
                .reserve(&[batch(2)], &cfg, &AppendContext::at(0))
                .expect("reserve");
            let _lost = log
                .reserve(&[batch(2)], &cfg, &AppendContext::at(0))
                .expect("reserve");
            let c = log
                .reserve(&[batch(2)], &cfg, &AppendContext::at(0))
                .expect("reserve");
            log.write(a).expect("write");
            log.write(c).expect("write");
            // "crash": the middle batch never reached storage.
        }
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let summary = log.summary();
        assert_eq!(
            (
                summary.log_end_offset,
                summary.high_watermark,
                summary.batch_count
            ),
            (2, 2, 1)
        );
        let stored = s
            .open_log("t", 0)
            .expect("open")
            .read(0, i64::MAX, usize::MAX)
            .expect("scan");
        assert_eq!(stored.len(), 1, "the batch after the gap is removed");
    }

    /// A store that counts the batches recovery reads, to show it reads only the tail.
    #[derive(Debug, Clone)]
    struct Counting {
        inner: crate::storage::MemoryLog,
        read: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BatchLog for Counting {
        type Buf = Vec<u8>;
        fn buffer(batch: &[u8]) -> Vec<u8> {
            batch.to_vec()
        }
        fn put(&self, base: i64, batch: Vec<u8>) -> Result<(), StorageError> {
            self.inner.put(base, batch)
        }
        fn read(&self, from: i64, end: i64, max: usize) -> Result<Vec<Bytes>, StorageError> {
            self.inner.read(from, end, max)
        }
        fn scan_from(
            &self,
            from: i64,
            visit: &mut crate::storage::Visit<'_>,
        ) -> Result<(), StorageError> {
            let read = self.read.clone();
            self.inner.scan_from(from, &mut |b, v| {
                read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                visit(b, v)
            })
        }
        fn remove(&self, base: i64) -> Result<(), StorageError> {
            self.inner.remove(base)
        }
        fn read_index(&self) -> Result<crate::storage::StoredIndex, StorageError> {
            self.inner.read_index()
        }
        fn rewrite(
            &self,
            replace: &[(i64, Vec<u8>)],
            remove: &[i64],
            index_put: &[(i64, Vec<u8>)],
            checkpoint: &[u8],
        ) -> Result<(), StorageError> {
            self.inner.rewrite(replace, remove, index_put, checkpoint)
        }
        fn write_index(
            &self,
            put: &[(i64, Vec<u8>)],
            remove: &[i64],
            checkpoint: &[u8],
        ) -> Result<(), StorageError> {
            self.inner.write_index(put, remove, checkpoint)
        }
    }

    fn idempotent(pid: i64, seq: i32) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None, 0).with_producer(ProducerInfo {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
        });
        b.append(0, None, Some(b"v"), &[]);
        b.build().expect("build")
    }

    #[test]
    fn recovery_reads_the_index_and_only_the_tail_after_the_checkpoint() {
        let s = MemoryStorage::default();
        let counting = Counting {
            inner: s.open_log("t", 0).expect("open"),
            read: Arc::default(),
        };
        let cfg = LogConfig::default();
        let log = PartitionLog::recover(counting.clone(), 0, 0).expect("recover");
        for seq in 0..100 {
            log.append(&[idempotent(1, seq)], &cfg, &AppendContext::at(0))
                .expect("append");
        }
        log.mark_durable(log.log_end_offset());
        assert_eq!(log.checkpoint().expect("checkpoint"), Some(100));
        assert_eq!(log.checkpoint().expect("again"), None, "nothing new");
        for seq in 100..103 {
            log.append(&[idempotent(1, seq)], &cfg, &AppendContext::at(0))
                .expect("append");
        }
        log.mark_durable(log.log_end_offset());
        let before = log.summary();
        drop(log);

        counting.read.store(0, std::sync::atomic::Ordering::SeqCst);
        let log = PartitionLog::recover(counting.clone(), 0, 0).expect("recover");
        // The three batches after the checkpoint, and the first batch below the log start
        // offset check (none here, so it looks at one).
        let read = counting.read.load(std::sync::atomic::Ordering::SeqCst);
        assert!(read <= 4, "recovery read {read} batches");
        assert_eq!(log.summary(), before);
        assert_eq!(log.unchecked().1, 100);
        // The producer state is whole: a retry of a checkpointed batch and of a tail batch are
        // both answered as duplicates, and the sequence goes on.
        for (seq, offset) in [(50, 50), (101, 101)] {
            let again = log
                .append(&[idempotent(1, seq)], &cfg, &AppendContext::at(0))
                .expect("retry");
            assert!(again.duplicate);
            assert_eq!(again.base_offset, offset);
        }
        assert_eq!(
            log.append(&[idempotent(1, 103)], &cfg, &AppendContext::at(0))
                .expect("next")
                .base_offset,
            103
        );
    }

    #[test]
    fn retention_is_durable_and_a_restart_finishes_what_it_began() {
        let s = MemoryStorage::default();
        let cfg = LogConfig::default();
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        for _ in 0..10 {
            log.append(&[batch(1)], &cfg, &AppendContext::at(0))
                .expect("append");
        }
        log.mark_durable(10);
        log.checkpoint().expect("checkpoint");
        let flushes = std::sync::atomic::AtomicUsize::new(0);
        let keep_four = LogConfig {
            retention_ms: -1,
            retention_bytes: 4 * log.read(0, 1).expect("read").batches[0].len() as i64,
            ..cfg
        };
        let start = log
            .apply_retention(&keep_four, 0, &|| {
                flushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .expect("retention");
        assert_eq!(start, Some(6));
        assert_eq!(flushes.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(log);
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        assert_eq!(log.summary().log_start_offset, 6, "no older log start");
        assert_eq!(log.summary().batch_count, 4);

        // A retention interrupted after its checkpoint, before its deletions: the restart
        // deletes what is below the log start offset.
        let raw = s.open_log("t", 0).expect("open");
        let mut stale = batch(1).to_vec();
        codec::set_base_offset(&mut stale, 2);
        raw.put(2, stale).expect("put");
        drop(log);
        let log = PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        assert_eq!(log.summary().log_start_offset, 6);
        assert!(
            raw.read(0, 6, usize::MAX).expect("read").is_empty(),
            "the batch below the log start is gone"
        );
    }

    /// A batch of (key, value) records; `None` values are tombstones.
    fn keyed(records: &[(&str, Option<&str>)], ts: i64, producer: Option<(i64, i32)>) -> Bytes {
        let mut b = BatchBuilder::new(Compression::Lz4, ts);
        if let Some((producer_id, base_sequence)) = producer {
            b = b.with_producer(ProducerInfo {
                producer_id,
                producer_epoch: 0,
                base_sequence,
            });
        }
        for (k, v) in records {
            b.append(ts, Some(k.as_bytes()), v.map(str::as_bytes), &[]);
        }
        b.build().expect("build")
    }

    fn visible(log: &PartitionLog<impl BatchLog>) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        for b in log
            .read(log.summary().log_start_offset, usize::MAX)
            .expect("read")
            .batches
        {
            for r in codec::decode_batch(&b).expect("decode").1 {
                let text =
                    |v: &Option<Bytes>| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
                out.push((r.offset, text(&r.key).unwrap_or_default(), text(&r.value)));
            }
        }
        out
    }

    fn compaction_over<S: Storage>(storage: &S) {
        let cfg = LogConfig {
            compact: true,
            delete: false,
            min_cleanable_dirty_ratio: 0.0,
            delete_retention_ms: 1_000,
            ..LogConfig::default()
        };
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        let ctx = AppendContext::at(0);
        // Offsets: a=0 b=1 | a=2 c=3 | b=4 (tombstone) d=5 | c=6 — the last batch is producer 9's
        // only batch, and the second one is the last batch of producer 8.
        log.append(
            &[keyed(&[("a", Some("a0")), ("b", Some("b0"))], 10_000, None)],
            &cfg,
            &ctx,
        )
        .expect("append");
        log.append(
            &[keyed(
                &[("a", Some("a1")), ("c", Some("c0"))],
                10_000,
                Some((8, 0)),
            )],
            &cfg,
            &ctx,
        )
        .expect("append");
        log.append(
            &[keyed(&[("b", None), ("d", Some("d0"))], 10_000, None)],
            &cfg,
            &ctx,
        )
        .expect("append");
        log.append(
            &[keyed(&[("a", Some("a2")), ("c", Some("c1"))], 10_000, None)],
            &cfg,
            &ctx,
        )
        .expect("append");
        log.mark_durable(log.log_end_offset());
        // Nothing is cleaned beyond the checkpoint.
        assert!(log.compact(&cfg, 10_500).expect("compact").is_none());
        log.checkpoint().expect("checkpoint");
        let pass = log.compact(&cfg, 10_500).expect("compact").expect("due");
        assert_eq!(pass.cleaned_offset, 8);
        assert_eq!(
            visible(&log),
            vec![
                (4, "b".into(), None),
                (5, "d".into(), Some("d0".into())),
                (6, "a".into(), Some("a2".into())),
                (7, "c".into(), Some("c1".into())),
            ],
            "the latest record of each key, the tombstone still within delete.retention.ms"
        );
        // The first batch went whole; producer 8's last batch stays, empty, for its sequence.
        let s = log.summary();
        assert_eq!(
            (s.batch_count, s.log_end_offset, s.log_start_offset),
            (3, 8, 0)
        );
        let again = log
            .append(
                &[keyed(&[("e", Some("e0"))], 10_000, Some((8, 0)))],
                &cfg,
                &ctx,
            )
            .expect("retry");
        assert!(again.duplicate, "producer 8's state survived the cleaning");
        // Past delete.retention.ms the tombstone goes too, and a restart sees the same log.
        log.append(&[keyed(&[("d", Some("d1"))], 20_000, None)], &cfg, &ctx)
            .expect("append");
        log.mark_durable(log.log_end_offset());
        log.checkpoint().expect("checkpoint");
        log.compact(&cfg, 20_000).expect("compact").expect("due");
        let after = visible(&log);
        assert_eq!(
            after.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![6, 7, 8],
            "{after:?}"
        );
        let size = log.summary().size_bytes;
        drop(log);
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("open"), 0, 0).expect("recover");
        assert_eq!(visible(&log), after);
        assert_eq!(log.summary().size_bytes, size);
        assert_eq!(log.summary().log_end_offset, 9);
        // Records without a key are refused in a compacted topic.
        let mut keyless = BatchBuilder::new(Compression::None, 0);
        keyless.append(0, None, Some(b"v"), &[]);
        let e = log
            .append(&[keyless.build().expect("build")], &cfg, &ctx)
            .expect_err("keyless");
        assert!(
            matches!(e, LogError::KeylessInCompactedTopic { keyless: 1 }),
            "{e}"
        );
    }

    #[test]
    fn compaction_keeps_the_last_record_per_key_on_memory() {
        compaction_over(&MemoryStorage::default());
    }

    #[test]
    fn compaction_keeps_the_last_record_per_key_on_sled() {
        let dir = tempfile::tempdir().expect("dir");
        compaction_over(&crate::storage::SledStorage::open(dir.path()).expect("open"));
    }
}
