//! Opening a partition log from what storage holds, and checkpointing it so that the next
//! opening reads little (see [`super::index`]).

use super::*;

impl<L: BatchLog> PartitionLog<L> {
    /// Opens the log and recovers its state: from the index below its checkpoint, and from the
    /// batches stored after it (the tail). `legacy_log_start` is the log start offset of a log
    /// that has no checkpoint yet. Finishes what a crash interrupted: batches below the log
    /// start offset are deleted, and the tail is truncated at the first gap.
    pub fn recover(store: L, legacy_log_start: i64, now_ms: i64) -> Result<Self, LogError> {
        let corrupt = |e: index::IndexCorrupt| StorageError::Corrupt(e.0);
        let (stored_checkpoint, entries) = store.read_index()?;
        let checkpointed = stored_checkpoint.is_some();
        let checkpoint = match stored_checkpoint {
            Some(b) => Checkpoint::decode(&b).map_err(corrupt)?,
            None => Checkpoint {
                end_offset: 0,
                log_start_offset: legacy_log_start,
                cleaned_offset: 0,
                high_watermark: 0,
                epochs: Vec::new(),
                producers: Vec::new(),
            },
        };
        let log_start_floor = checkpoint.log_start_offset;
        let mut index: VecDeque<BatchMeta> = VecDeque::with_capacity(entries.len());
        let mut size_bytes = 0u64;
        let mut producers = Producers::restore(&checkpoint.producers).map_err(|e| {
            StorageError::Corrupt(format!("producer snapshot of the checkpoint: {e}"))
        })?;
        let mut stale_entries = Vec::new();
        for (base, entry) in entries {
            if base < log_start_floor || base >= checkpoint.end_offset {
                stale_entries.push(base);
                continue;
            }
            let meta = decode_entry(base, &entry).map_err(corrupt)?;
            size_bytes += meta.size;
            index.push_back(meta);
        }
        // Batches that retention was deleting when the broker stopped.
        let mut stale_batches = Vec::new();
        store.scan_from(0, &mut |base, _| {
            if base < log_start_floor {
                stale_batches.push(base);
            }
            Ok(base < log_start_floor)
        })?;
        // The tail: batches stored since the checkpoint. They are stored concurrently, so a
        // crash can leave a batch stored after one that is missing. Nothing after a gap was
        // ever visible or acknowledged (the high watermark stops at the stored prefix): the log
        // is truncated at the first gap.
        let last_indexed = index.back().map(BatchMeta::next_offset);
        let mut expected = match (last_indexed, checkpointed) {
            (Some(next), _) => Some(next.max(checkpoint.end_offset)),
            (None, true) => Some(checkpoint.end_offset.max(log_start_floor)),
            (None, false) => None,
        };
        let mut unchecked_bytes = 0u64;
        let mut truncated = Vec::new();
        let mut epochs: Vec<(i32, i64)> = checkpoint
            .epochs
            .iter()
            .copied()
            .filter(|(_, start)| *start < checkpoint.end_offset)
            .collect();
        let tail_from = checkpoint.end_offset.max(log_start_floor);
        store.scan_from(tail_from, &mut |base, batch| {
            if !truncated.is_empty() || expected.is_some_and(|e| base != e) {
                if truncated.is_empty() {
                    tracing::warn!(
                        offset = expected.unwrap_or(base),
                        "truncating the log at a gap left by a crash"
                    );
                }
                truncated.push(base);
                return Ok(true);
            }
            let h = codec::read_header(batch).map_err(|e| {
                StorageError::Corrupt(format!("stored batch at offset {base}: {e}"))
            })?;
            let meta = BatchMeta::of(&h, batch.len());
            if h.producer_id != NO_PRODUCER_ID {
                producers.record(&h, base, now_ms);
            }
            note_epoch(&mut epochs, h.partition_leader_epoch, base);
            size_bytes += meta.size;
            unchecked_bytes += meta.size;
            expected = Some(meta.next_offset());
            index.push_back(meta);
            Ok(true)
        })?;
        for base in stale_batches.iter().chain(&truncated) {
            store.remove(*base)?;
        }
        if !stale_entries.is_empty() {
            store.write_index(&[], &stale_entries, &checkpoint.encode())?;
        }
        let log_end_offset = index
            .back()
            .map_or(tail_from, BatchMeta::next_offset)
            .max(tail_from);
        let log_start_offset = if checkpointed {
            log_start_floor
        } else {
            index
                .front()
                .map_or(log_end_offset, |b| b.base_offset)
                .max(log_start_floor)
        };
        // Everything found on disk at start is durable: it is what a crash left. A copy of a
        // replicated partition lowers its high watermark to the checkpoint's
        // ([`Self::restart_high_watermark`]): what lies above it may not be on the other copies.
        let (high_watermark, _) = watch::channel(log_end_offset);
        let leader_epoch = epochs.last().map_or(-1, |(e, _)| *e);
        Ok(Self {
            store,
            state: Mutex::new(LogState {
                log_start_offset,
                log_end_offset,
                stored_end: log_end_offset,
                stored_out_of_order: BTreeMap::new(),
                high_watermark: log_end_offset,
                durable_end: log_end_offset,
                commit: Commit::Local,
                role: Role::Leader,
                leader_epoch,
                epochs,
                index,
                size_bytes,
                producers,
                checkpoint,
                unchecked_bytes,
                tail_gap: None,
            }),
            high_watermark,
            offline: Arc::default(),
            maintenance: Mutex::new(()),
        })
    }

    /// Bytes a restart would read beyond the checkpoint, and the checkpoint's end.
    pub fn unchecked(&self) -> (u64, i64) {
        let s = self.state.lock();
        (s.unchecked_bytes, s.checkpoint.end_offset)
    }

    /// Checkpoints the log: writes the index entries of the batches made durable since the
    /// last checkpoint, with a record of the offset they reach and the log start offset, in one
    /// atomic store write, without holding the partition's lock for it. The caller flushes the
    /// storage to make it durable (until then a restart uses the previous checkpoint). Returns
    /// the offset the new checkpoint covers, when one was written.
    pub fn checkpoint(&self) -> Result<Option<i64>, LogError> {
        let _maintenance = self.maintenance.lock();
        let (entries, next) = {
            let s = self.state.lock();
            // A follower's copy (and a copy that still holds a gap it took as a follower) is
            // checkpointed up to its own durable end, so that a gap the leader's compaction
            // left is covered before the copy counts as durable past it; the high watermark
            // goes into the record for a restart.
            let end = match (s.role, s.tail_gap) {
                (Role::Leader, None) => s.high_watermark,
                _ => s.durable_end.max(s.high_watermark),
            };
            if end <= s.checkpoint.end_offset {
                return Ok(None);
            }
            let from = s
                .index
                .partition_point(|b| b.base_offset < s.checkpoint.end_offset);
            let to = s.index.partition_point(|b| b.base_offset < end);
            let entries: Vec<(i64, Vec<u8>)> = s
                .index
                .range(from..to)
                .map(|m| (m.base_offset, encode_entry(m).to_vec()))
                .collect();
            let next = Checkpoint {
                end_offset: end,
                high_watermark: s.high_watermark.min(end),
                producers: s.producers.snapshot_below(end),
                epochs: s.epochs.clone(),
                ..s.checkpoint.clone()
            };
            (entries, next)
        };
        self.store.write_index(&entries, &[], &next.encode())?;
        let mut s = self.state.lock();
        let end = next.end_offset;
        let from = s.index.partition_point(|b| b.base_offset < end);
        s.checkpoint = next;
        s.unchecked_bytes = s.index.range(from..).map(|b| b.size).sum();
        Ok(Some(end))
    }

    /// After a flush that followed a checkpoint up to `end`: the gaps below `end` are covered
    /// on disk, and the copy counts as durable up to the next gap, if any.
    pub fn gaps_checkpointed(&self, end: i64) {
        let mut s = self.state.lock();
        if s.tail_gap.is_some_and(|g| g < end) {
            s.tail_gap = s.first_gap_from(end);
            self.raise_high_watermark(&mut s);
        }
    }

    /// Whether this copy holds batches on disk past a gap that no durable checkpoint covers
    /// yet: a checkpoint and a flush make them count ([`Self::gaps_checkpointed`]).
    pub fn wants_gap_checkpoint(&self) -> bool {
        let s = self.state.lock();
        s.tail_gap.is_some_and(|g| s.durable_end > g)
    }
}
