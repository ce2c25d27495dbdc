//! A partition log: Kafka's rules over a [`BatchLog`].
//!
//! The log validates each produced batch, assigns offsets (patching the batch's base offset in
//! place; the bytes are otherwise stored as they came), deduplicates idempotent producers'
//! retries, tracks the log start offset, the log end offset and the high watermark, answers
//! reads and offset queries, and applies retention. The high watermark only moves when the
//! group commit ([`crate::durability`]) has made the batches below it durable: a consumer never
//! sees a record that a crash could take back.

mod checks;
pub mod index;
#[cfg(test)]
mod model_tests;
mod producer;

pub use checks::check_batch;

use crate::compaction::{self, Candidate, KeyMap};
use crate::retention::retention_cut;
use crate::storage::{BatchLog, StorageError};
use bytes::Bytes;
use index::{decode_entry, encode_entry, BatchMeta, Checkpoint};
use parking_lot::Mutex;
use producer::{Producers, SequenceCheck};
use runnel_codec::{self as codec, CodecError, NO_PRODUCER_ID};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// A partition log's failure, without the topic/partition (the service edge adds those).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The batch bytes are not a valid RecordBatch v2.
    #[error("{0}")]
    InvalidBatch(#[from] CodecError),
    /// A produce request carried no batch and no record.
    #[error("produce request carries no records")]
    EmptyProduce,
    /// One batch of a request with several failed; the request was refused whole.
    #[error("batch {index} of {count} in the request: {source}")]
    InBatch {
        /// Its place in the request, from 0.
        index: usize,
        /// How many batches the request carried.
        count: usize,
        /// What is wrong with it.
        source: Box<LogError>,
    },
    /// `lastOffsetDelta` does not match the records count: a batch's offsets are its own.
    #[error("lastOffsetDelta {last_offset_delta} does not match the batch's {records_count} records (it must be the records count minus one)")]
    OffsetDeltaMismatch {
        /// The header's `lastOffsetDelta`.
        last_offset_delta: i32,
        /// The header's `recordsCount`.
        records_count: i32,
    },
    /// A batch is larger than the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes of {max}")]
    BatchTooLarge {
        /// Size of the offending batch.
        size: usize,
        /// The topic's limit.
        max: usize,
    },
    /// A batch uses a feature the broker does not offer.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A read or offset query outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range: the log holds offsets {log_start_offset} to {log_end_offset}")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first offset held.
        log_start_offset: i64,
        /// The offset the next record gets.
        log_end_offset: i64,
    },
    /// An idempotent producer skipped or reordered a sequence number.
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence that was due.
        expected: i32,
        /// The sequence that came.
        got: i32,
    },
    /// A producer with an older epoch than one already seen.
    #[error("producer {producer_id} is fenced: epoch {epoch} is older than {current}")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// Its epoch in the request.
        epoch: i16,
        /// The newest epoch seen.
        current: i16,
    },
    /// A record without a key for a compacted topic, which keeps the last record of each key.
    #[error("a compacted topic (cleanup.policy=compact) takes only records with a key; {keyless} records of the batch have none")]
    KeylessInCompactedTopic {
        /// How many records have no key.
        keyless: u32,
    },
    /// A batch carries a producer id that no broker of the cluster issued.
    #[error("unknown producer id {producer_id}: it was never issued; ask the broker for one with InitProducerId")]
    UnknownProducerId {
        /// The producer id in the batch.
        producer_id: i64,
    },
    /// The storage underneath failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A store failed earlier: the log takes no more appends (as Kafka takes a failed log
    /// directory offline).
    #[error("the log is offline since a write failed: {0}")]
    Offline(String),
}

/// The per-topic settings a log obeys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
    /// `retention.ms`; negative keeps batches forever.
    pub retention_ms: i64,
    /// `retention.bytes`; negative means no size limit.
    pub retention_bytes: i64,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches.
    pub log_append_time: bool,
    /// `cleanup.policy` has `delete`: retention deletes old batches.
    pub delete: bool,
    /// `cleanup.policy` has `compact`: the cleaner keeps the last record of each key, and
    /// records without a key are refused.
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone (a record with a null value) is kept, by its
    /// timestamp, before compaction removes it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of the cleanable log written since the last
    /// cleaning that starts the next one.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1_048_588,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            log_append_time: false,
            delete: true,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

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

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The broker's stamp for log-append-time topics, else -1.
    pub log_append_time_ms: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
    /// True when every batch was a retry of one already stored (nothing was written).
    pub duplicate: bool,
}

/// What an append needs to know of the broker around the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendContext {
    /// The broker's clock, for log-append time and producer expiry.
    pub now_ms: i64,
    /// Producer ids below this may have been issued in the cluster; batches with a producer
    /// id at or above it are refused (the broker never issued it).
    pub producer_id_end: i64,
}

impl AppendContext {
    /// A context at `now_ms` in which every producer id may have been issued.
    pub fn at(now_ms: i64) -> Self {
        Self {
            now_ms,
            producer_id_end: i64::MAX,
        }
    }
}

/// Batches with offsets assigned, not yet stored; see [`PartitionLog::reserve`].
#[derive(Debug)]
pub struct Reservation<B> {
    /// What the append will answer.
    pub outcome: AppendOutcome,
    /// (base offset, next offset, patched batch bytes) to store.
    writes: Vec<(i64, i64, B)>,
}

impl<B> Reservation<B> {
    /// True when every batch was a duplicate: there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// What a read returned.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Whole stored batches; the first may start before the offset asked for.
    pub batches: Vec<Bytes>,
    /// The high watermark when the read was made.
    pub high_watermark: i64,
    /// The log start offset when the read was made.
    pub log_start_offset: i64,
    /// Where the next read should start.
    pub next_offset: i64,
}

/// A partition's offsets and size, as `DescribePartitions` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSummary {
    /// First offset held.
    pub log_start_offset: i64,
    /// Offset the next record gets.
    pub log_end_offset: i64,
    /// Last durable offset + 1; what consumers can read.
    pub high_watermark: i64,
    /// Bytes of stored batches.
    pub size_bytes: u64,
    /// Number of stored batches.
    pub batch_count: u64,
}

#[derive(Debug)]
struct LogState {
    log_start_offset: i64,
    log_end_offset: i64,
    /// Every batch below this offset is in storage.
    stored_end: i64,
    /// Batches stored ahead of a batch still being written: base offset -> next offset.
    stored_out_of_order: BTreeMap<i64, i64>,
    high_watermark: i64,
    index: VecDeque<BatchMeta>,
    size_bytes: u64,
    producers: Producers,
    /// The last checkpoint written.
    checkpoint: Checkpoint,
    /// Bytes appended at or after the checkpoint's end: what a restart would read.
    unchecked_bytes: u64,
}

impl LogState {
    /// The first batch that holds `offset` or anything after it.
    fn batch_at(&self, offset: i64) -> Option<&BatchMeta> {
        let i = self.index.partition_point(|b| b.last_offset < offset);
        self.index.get(i)
    }
}

/// One partition's log over a [`BatchLog`].
#[derive(Debug)]
pub struct PartitionLog<L> {
    store: L,
    state: Mutex<LogState>,
    high_watermark: watch::Sender<i64>,
    /// Why the log went offline, once a store failed.
    offline: Arc<OnceLock<String>>,
    /// Serialises checkpoints, retention and compaction: the only changes to the front and the
    /// middle of the index.
    maintenance: Mutex<()>,
}

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
        // Everything found on disk at start is durable: it is what a crash left.
        let (high_watermark, _) = watch::channel(log_end_offset);
        Ok(Self {
            store,
            state: Mutex::new(LogState {
                log_start_offset,
                log_end_offset,
                stored_end: log_end_offset,
                stored_out_of_order: BTreeMap::new(),
                high_watermark: log_end_offset,
                index,
                size_bytes,
                producers,
                checkpoint,
                unchecked_bytes,
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
            let end = s.high_watermark;
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
                producers: s.producers.snapshot_below(end),
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

    /// Validates and appends the batches of one produce request, all or none:
    /// [`Self::reserve`] then [`Self::write`]. The caller makes them durable and advances the
    /// high watermark.
    pub fn append(
        &self,
        batches: &[Bytes],
        config: &LogConfig,
        ctx: &AppendContext,
    ) -> Result<AppendOutcome, LogError> {
        let reservation = self.reserve(batches, config, ctx)?;
        self.write(reservation)
    }

    /// Validates the batches of one produce request and assigns their offsets (in request
    /// order; idempotent duplicates are answered from the producer state). Every batch is
    /// checked, its records and its producer's sequence included, before anything changes: a
    /// request that fails changes nothing, and its error names the batch and why. Nothing is
    /// stored yet: [`Self::write`] stores them, possibly on another thread and concurrently
    /// with later reservations, since the high watermark only passes batches once every batch
    /// below them is stored.
    pub fn reserve(
        &self,
        batches: &[Bytes],
        config: &LogConfig,
        ctx: &AppendContext,
    ) -> Result<Reservation<L::Buf>, LogError> {
        if let Some(why) = self.offline.get() {
            return Err(LogError::Offline(why.clone()));
        }
        let headers = checks::check_batches(batches, config)?;
        for (i, h) in headers.iter().enumerate() {
            if h.producer_id != NO_PRODUCER_ID && !(0..ctx.producer_id_end).contains(&h.producer_id)
            {
                return Err(checks::in_batch(
                    i,
                    headers.len(),
                    LogError::UnknownProducerId {
                        producer_id: h.producer_id,
                    },
                ));
            }
        }

        // Copied into storage's buffers before taking the partition's lock, which the store of
        // earlier batches and the flusher need meanwhile. A duplicate's copy is wasted; rare.
        let buffers: Vec<L::Buf> = batches.iter().map(|b| L::buffer(b)).collect();
        let mut state = self.state.lock();
        let decisions = state
            .producers
            .check_all(&headers)
            .map_err(|(i, e)| checks::in_batch(i, headers.len(), e))?;
        // From here on nothing fails: the request is appended whole.
        let mut first: Option<i64> = None;
        let mut last = -1;
        let mut writes = Vec::with_capacity(batches.len());
        let append_time = if config.log_append_time {
            ctx.now_ms
        } else {
            -1
        };
        for ((mut batch, h), decision) in buffers.into_iter().zip(&headers).zip(decisions) {
            if let Some(SequenceCheck::Duplicate(seen)) = decision {
                first.get_or_insert(seen.base_offset);
                last = seen.last_offset;
                continue;
            }
            let base = state.log_end_offset;
            codec::set_base_offset(batch.as_mut(), base);
            let mut stored = *h;
            stored.base_offset = base;
            if config.log_append_time {
                // The batch was checked above; stamping rewrites the CRC over checked bytes.
                if codec::set_log_append_time(batch.as_mut(), ctx.now_ms).is_ok() {
                    stored.max_timestamp = ctx.now_ms;
                }
            }
            if h.producer_id != NO_PRODUCER_ID {
                state.producers.record(h, base, ctx.now_ms);
            }
            state.log_end_offset = stored.next_offset();
            let len = batch.as_ref().len();
            state.size_bytes += len as u64;
            state.unchecked_bytes += len as u64;
            state.index.push_back(BatchMeta::of(&stored, len));
            first.get_or_insert(base);
            last = stored.last_offset();
            writes.push((base, stored.next_offset(), batch));
        }
        Ok(Reservation {
            outcome: AppendOutcome {
                base_offset: first.unwrap_or(-1),
                last_offset: last,
                log_append_time_ms: append_time,
                log_start_offset: state.log_start_offset,
                duplicate: writes.is_empty(),
            },
            writes,
        })
    }

    /// Stores reserved batches. A failed or panicking store takes the log offline: appends are
    /// refused from then on with the cause, waiters for the high watermark wake and see why it
    /// will not pass the hole, as a Kafka partition whose log directory failed goes offline.
    pub fn write(&self, reservation: Reservation<L::Buf>) -> Result<AppendOutcome, LogError> {
        for (base, next, batch) in reservation.writes {
            let put = catch_unwind(AssertUnwindSafe(|| self.store.put(base, batch)));
            let failure = match put {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!(
                    "storing the batch at offset {base} panicked: {}",
                    panic_message(&*panic)
                )),
            };
            if let Some(why) = failure {
                self.take_offline(&why);
                return Err(LogError::Offline(
                    self.offline.get().cloned().unwrap_or(why),
                ));
            }
            let mut s = self.state.lock();
            if base == s.stored_end {
                s.stored_end = next;
                loop {
                    let end = s.stored_end;
                    match s.stored_out_of_order.remove(&end) {
                        Some(next) => s.stored_end = next,
                        None => break,
                    }
                }
            } else {
                s.stored_out_of_order.insert(base, next);
            }
        }
        Ok(reservation.outcome)
    }

    /// Takes the log offline with `why` (the first cause is kept) and wakes every waiter.
    pub fn take_offline(&self, why: &str) {
        if self.offline.set(why.to_string()).is_ok() {
            tracing::error!(cause = why, "partition log offline");
        }
        self.high_watermark.send_modify(|_| {});
    }

    /// The log end offset: the offset the next record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.state.lock().log_end_offset
    }

    /// The end of the stored prefix of the log: what the high watermark may advance to once
    /// the storage is flushed.
    pub fn stored_end_offset(&self) -> i64 {
        self.state.lock().stored_end
    }

    /// Moves the high watermark up to `offset` (never down, never past the stored prefix) and
    /// wakes readers and waiters.
    pub fn advance_high_watermark(&self, offset: i64) {
        let mut state = self.state.lock();
        let to = offset.min(state.stored_end);
        if to > state.high_watermark {
            state.high_watermark = to;
            self.high_watermark.send_replace(to);
        }
    }

    /// A receiver that sees every high watermark change (long-poll fetch, acks=all, subscribe).
    /// It is also woken when the log goes offline.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Set, with the reason, once a store failed and the log went offline.
    pub fn offline(&self) -> Arc<OnceLock<String>> {
        self.offline.clone()
    }

    /// Reads committed batches (below the high watermark) from `offset`, up to `max_bytes`
    /// (at least one batch when any is available).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, LogError> {
        if let Some(why) = self.offline.get() {
            return Err(LogError::Offline(why.clone()));
        }
        let (from_base, hw, lso) = {
            let s = self.state.lock();
            if offset < s.log_start_offset || offset > s.log_end_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start_offset: s.log_start_offset,
                    log_end_offset: s.log_end_offset,
                });
            }
            let from = match s.batch_at(offset) {
                Some(b) if b.base_offset < s.high_watermark => b.base_offset,
                _ => {
                    return Ok(ReadOutcome {
                        batches: Vec::new(),
                        high_watermark: s.high_watermark,
                        log_start_offset: s.log_start_offset,
                        next_offset: offset,
                    })
                }
            };
            (from, s.high_watermark, s.log_start_offset)
        };
        let batches = self.store.read(from_base, hw, max_bytes)?;
        let next_offset = match batches.last() {
            Some(b) => codec::read_header(b)?.next_offset().max(offset),
            None => offset,
        };
        Ok(ReadOutcome {
            batches,
            high_watermark: hw,
            log_start_offset: lso,
            next_offset,
        })
    }

    /// Forgets the idempotent producers that have not appended for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), so that the state stays bounded; returns how many went. A
    /// forgotten producer that comes back is taken as new.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state.lock().producers.expire(now_ms, expiration_ms)
    }

    /// How many idempotent producers the log remembers.
    pub fn producer_count(&self) -> usize {
        self.state.lock().producers.len()
    }

    /// Offsets and size.
    pub fn summary(&self) -> LogSummary {
        let s = self.state.lock();
        LogSummary {
            log_start_offset: s.log_start_offset,
            log_end_offset: s.log_end_offset,
            high_watermark: s.high_watermark,
            size_bytes: s.size_bytes,
            batch_count: s.index.len() as u64,
        }
    }

    /// The first committed offset whose record timestamp is at or after `timestamp_ms`, with
    /// that record's timestamp; `None` when no record is that new.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let base = {
            let s = self.state.lock();
            match s
                .index
                .iter()
                .find(|b| b.max_timestamp >= timestamp_ms && b.base_offset < s.high_watermark)
            {
                Some(b) => b.base_offset,
                None => return Ok(None),
            }
        };
        let Some(batch) = self.store.read(base, base + 1, 1)?.into_iter().next() else {
            return Ok(None);
        };
        let (_, records) = codec::decode_batch(&batch)?;
        Ok(records
            .iter()
            .find(|r| r.timestamp >= timestamp_ms)
            .map(|r| (r.offset, r.timestamp)))
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

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
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
            log.advance_high_watermark(log.log_end_offset());
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
        log.advance_high_watermark(log.log_end_offset());
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
        log.advance_high_watermark(2);
        let r = log.read(0, 1 << 20).expect("read");
        let h = codec::validate_batch(&r.batches[0]).expect("valid after stamping");
        assert_eq!(h.max_timestamp, 123_456);
    }
}

#[cfg(test)]
mod concurrent_store_tests {
    use super::*;
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
        log.advance_high_watermark(5);
        assert_eq!(log.summary().high_watermark, 0);
        log.write(first).expect("write");
        assert_eq!(log.stored_end_offset(), 5);
        log.advance_high_watermark(5);
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
        log.advance_high_watermark(log.log_end_offset());
        assert_eq!(log.checkpoint().expect("checkpoint"), Some(100));
        assert_eq!(log.checkpoint().expect("again"), None, "nothing new");
        for seq in 100..103 {
            log.append(&[idempotent(1, seq)], &cfg, &AppendContext::at(0))
                .expect("append");
        }
        log.advance_high_watermark(log.log_end_offset());
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
        log.advance_high_watermark(10);
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
        log.advance_high_watermark(log.log_end_offset());
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
        log.advance_high_watermark(log.log_end_offset());
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
