//! Kafka's `cleanup.policy` on a partition log: retention deletes batches from the front, the
//! cleaner compacts (see [`crate::compaction`]), and idle producers are forgotten. All of it
//! runs off the produce path, serialised by the log's maintenance lock, holding the partition's
//! lock only to change what readers see.

use super::*;

/// What a cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Batches rewritten with fewer records.
    pub batches_rewritten: usize,
    /// Batches left with no record, removed.
    pub batches_removed: usize,
    /// Bytes of the batches the pass covered, before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// The log is clean below this offset now.
    pub cleaned_offset: i64,
}

impl<L: BatchLog> PartitionLog<L> {
    /// Forgets the idempotent producers that have not appended for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), so that the state stays bounded; returns how many went. A
    /// forgotten producer that comes back is taken as new.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state.lock().producers.expire(now_ms, expiration_ms)
    }

    /// Deletes whole batches from the front that retention no longer keeps; returns the new
    /// log start offset when it moved. The new log start offset is made durable (`flush`) before
    /// any batch goes, so a restart never brings back an older one, and the batches are deleted
    /// outside the partition's lock, so appends and reads go on meanwhile.
    pub fn apply_retention(
        &self,
        config: &LogConfig,
        now_ms: i64,
        flush: &dyn Fn() -> Result<(), StorageError>,
    ) -> Result<Option<i64>, LogError> {
        if !config.delete {
            return Ok(None);
        }
        let _maintenance = self.maintenance.lock();
        let (cut, next) = {
            let s = self.state.lock();
            let committed = s
                .index
                .partition_point(|b| b.base_offset < s.high_watermark);
            let cut = retention_cut(
                s.index.iter().take(committed),
                s.size_bytes,
                now_ms,
                config.retention_ms,
                config.retention_bytes,
            );
            if cut == 0 {
                return Ok(None);
            }
            let log_start_offset = s
                .index
                .get(cut)
                .map_or_else(|| s.index[cut - 1].next_offset(), |b| b.base_offset);
            let end_offset = s.checkpoint.end_offset.max(log_start_offset);
            // Past the old checkpoint, the snapshot must cover the deleted batches' producers:
            // their state outlives their batches (until it expires).
            let producers = if end_offset > s.checkpoint.end_offset {
                s.producers.snapshot_below(end_offset)
            } else {
                s.checkpoint.producers.clone()
            };
            let next = Checkpoint {
                end_offset,
                log_start_offset,
                cleaned_offset: s.checkpoint.cleaned_offset.max(log_start_offset),
                high_watermark: s.checkpoint.high_watermark.max(log_start_offset),
                epochs: s.checkpoint.epochs.clone(),
                producers,
            };
            let cut: Vec<BatchMeta> = s.index.iter().take(cut).copied().collect();
            (cut, next)
        };
        // The index and the new log start first, durably: a restart deletes what is below it.
        let indexed: Vec<i64> = cut
            .iter()
            .map(|b| b.base_offset)
            .filter(|b| *b < self.state.lock().checkpoint.end_offset)
            .collect();
        self.store.write_index(&[], &indexed, &next.encode())?;
        flush()?;
        {
            let mut s = self.state.lock();
            for b in &cut {
                s.index.pop_front();
                s.size_bytes -= b.size;
            }
            s.unchecked_bytes = s.unchecked_bytes.saturating_sub(
                cut.iter()
                    .filter(|b| b.base_offset >= s.checkpoint.end_offset)
                    .map(|b| b.size)
                    .sum(),
            );
            s.log_start_offset = next.log_start_offset;
            s.checkpoint = next.clone();
        }
        for b in &cut {
            self.store.remove(b.base_offset)?;
        }
        Ok(Some(next.log_start_offset))
    }

    /// One batch as stored, if it is.
    fn stored_batch(&self, base_offset: i64) -> Result<Option<Bytes>, LogError> {
        Ok(self
            .store
            .read(base_offset, base_offset + 1, usize::MAX)?
            .into_iter()
            .next())
    }

    /// One pass of log compaction (see [`crate::compaction`]) when the topic is compacted and
    /// the dirty part of the log is large enough: keeps the last record of each key, drops
    /// expired tombstones, never moves an offset. It reads and rewrites batches outside the
    /// partition's lock (appends and reads go on), stores the result in atomic steps, and
    /// changes what readers see after each.
    pub fn compact(&self, config: &LogConfig, now_ms: i64) -> Result<Option<Cleaned>, LogError> {
        if !config.compact {
            return Ok(None);
        }
        let _maintenance = self.maintenance.lock();
        // What the pass covers: the checkpointed part, which is durable and committed.
        let (entries, checkpoint, last_of_producer) = {
            let s = self.state.lock();
            let end = s.checkpoint.end_offset.min(s.high_watermark);
            let to = s.index.partition_point(|b| b.base_offset < end);
            let entries: Vec<BatchMeta> = s.index.range(..to).copied().collect();
            let mut last: HashMap<i64, i64> = HashMap::new();
            for b in s.index.iter().filter(|b| b.producer_id != NO_PRODUCER_ID) {
                last.insert(b.producer_id, b.base_offset);
            }
            (entries, s.checkpoint.clone(), last)
        };
        let cleaned_from = checkpoint.cleaned_offset;
        let dirty: u64 = entries
            .iter()
            .filter(|b| b.base_offset >= cleaned_from)
            .map(|b| b.size)
            .sum();
        let total: u64 = entries.iter().map(|b| b.size).sum();
        if !compaction::due(dirty, total, config.min_cleanable_dirty_ratio) {
            return Ok(None);
        }
        // The latest offset of each key of the dirty part. A map that fills up ends the pass
        // at the batch where it did: the rest is cleaned next time.
        let mut map = KeyMap::default();
        let mut dirty_end = checkpoint.end_offset;
        for b in entries.iter().filter(|b| b.base_offset >= cleaned_from) {
            let Some(batch) = self.stored_batch(b.base_offset)? else {
                continue;
            };
            let mut full = false;
            codec::retain_records(&batch, codec::MAX_UNCOMPRESSED_LEN, |r| {
                if let Some(key) = r.key {
                    full |= !map.note(key, r.offset);
                }
                true
            })?;
            if full {
                dirty_end = b.base_offset;
                break;
            }
        }
        // Rewrite what is below the end of the map, in small chunks (see CLEANER_CHUNK_BATCHES),
        // each stored atomically. A chunk needs no flush of its own: any set of chunks, and any
        // prefix of the storage's writes, leaves a correct log (a record goes only when a later
        // one of its key stays), so a crash before the next group commit only brings back
        // records that a later one replaces; the cleaned offset moves with the last chunk.
        // Between chunks the cleaner rests as long as the chunk took, so that appends and their
        // flushes keep at least half of the machine and of the disk.
        let mut cleaned = Cleaned {
            cleaned_offset: dirty_end,
            ..Cleaned::default()
        };
        let mut chunk = Rewrite::default();
        let to_clean: Vec<&BatchMeta> = entries
            .iter()
            .filter(|b| b.base_offset < dirty_end)
            .collect();
        for (i, b) in to_clean.iter().enumerate() {
            let started = std::time::Instant::now();
            let Some(batch) = self.stored_batch(b.base_offset)? else {
                continue;
            };
            cleaned.bytes_before += batch.len() as u64;
            let kept = codec::retain_records(&batch, codec::MAX_UNCOMPRESSED_LEN, |r| {
                let candidate = Candidate {
                    offset: r.offset,
                    key: r.key,
                    tombstone: r.tombstone,
                    timestamp: r.timestamp,
                };
                compaction::keeps(&candidate, &map, now_ms, config.delete_retention_ms)
            })?;
            chunk.busy += started.elapsed();
            match kept {
                None => cleaned.bytes_after += batch.len() as u64,
                Some(rewritten) => {
                    let h = codec::read_header(&rewritten)?;
                    let producers_last = b.producer_id != NO_PRODUCER_ID
                        && last_of_producer.get(&b.producer_id) == Some(&b.base_offset);
                    if h.records_count == 0 && !producers_last {
                        chunk.remove.push(b.base_offset);
                        chunk.changed.insert(b.base_offset, None);
                        cleaned.batches_removed += 1;
                    } else {
                        let meta = BatchMeta::of(&h, rewritten.len());
                        cleaned.bytes_after += rewritten.len() as u64;
                        chunk.bytes += rewritten.len();
                        chunk
                            .index_put
                            .push((b.base_offset, encode_entry(&meta).to_vec()));
                        chunk.replace.push((b.base_offset, rewritten));
                        chunk.changed.insert(b.base_offset, Some(meta));
                        cleaned.batches_rewritten += 1;
                    }
                }
            }
            let last = i + 1 == to_clean.len();
            if chunk.bytes >= CLEANER_CHUNK || chunk.changed.len() >= CLEANER_CHUNK_BATCHES || last
            {
                let record = Checkpoint {
                    cleaned_offset: if last {
                        dirty_end
                    } else {
                        checkpoint.cleaned_offset
                    },
                    ..checkpoint.clone()
                };
                let rested = std::mem::take(&mut chunk).apply(self, record)?;
                if !last {
                    std::thread::sleep(rested);
                }
            }
        }
        if to_clean.is_empty() {
            let record = Checkpoint {
                cleaned_offset: dirty_end,
                ..checkpoint
            };
            Rewrite::default().apply(self, record)?;
        }
        Ok(Some(cleaned))
    }
}

/// Bytes of rewritten batches a cleaning step stores at once.
const CLEANER_CHUNK: usize = 256 << 10;
/// Batches a cleaning step changes at most. A step is one storage transaction, which holds up
/// every append while it runs (sled's transactions exclude all other writes): removing 256
/// batches at once took 6-10 ms and put the produce p99 at 23 ms during compaction in
/// `make bench`; 4 at a time take well under a millisecond each.
const CLEANER_CHUNK_BATCHES: usize = 4;

/// One atomic step of a cleaning pass.
#[derive(Debug, Default)]
struct Rewrite {
    replace: Vec<(i64, Vec<u8>)>,
    remove: Vec<i64>,
    index_put: Vec<(i64, Vec<u8>)>,
    changed: HashMap<i64, Option<BatchMeta>>,
    bytes: usize,
    /// Time spent building it.
    busy: std::time::Duration,
}

impl Rewrite {
    /// Stores the step with `record` as the checkpoint, then changes what readers see; returns
    /// how long the step kept the cleaner busy (to rest as long).
    fn apply<L: BatchLog>(
        self,
        log: &PartitionLog<L>,
        record: Checkpoint,
    ) -> Result<std::time::Duration, LogError> {
        let started = std::time::Instant::now();
        log.store.rewrite(
            &self.replace,
            &self.remove,
            &self.index_put,
            &record.encode(),
        )?;
        let mut s = log.state.lock();
        let mut freed = 0u64;
        let changed = &self.changed;
        s.index.retain_mut(|b| match changed.get(&b.base_offset) {
            None => true,
            Some(None) => {
                freed += b.size;
                false
            }
            Some(Some(meta)) => {
                freed += b.size - meta.size;
                *b = *meta;
                true
            }
        });
        s.size_bytes -= freed;
        s.checkpoint = record;
        Ok(self.busy + started.elapsed())
    }
}
