//! A partition log: Kafka's rules over a [`BatchLog`].
//!
//! The log validates each produced batch, assigns offsets (patching the batch's base offset in
//! place; the bytes are otherwise stored as they came), deduplicates idempotent producers'
//! retries, tracks the log start offset, the log end offset and the high watermark, answers
//! reads and offset queries, and applies retention. The high watermark only moves when the
//! group commit ([`crate::durability`]) has made the batches below it durable: a consumer never
//! sees a record that a crash could take back.

mod checks;
mod cleanup;
pub mod index;
#[cfg(test)]
mod model_tests;
mod producer;
mod recovery;
mod replica;
#[cfg(test)]
mod tests;

pub use checks::check_batch;
pub use cleanup::Cleaned;
use replica::note_epoch;
pub use replica::{truncation_point, Commit, EpochEnd, Role};

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
    /// Produced batches came to a copy that follows another broker.
    #[error("this copy of the partition follows the leader and takes no produce")]
    NotLeader,
    /// Batches from the leader that do not continue this copy.
    #[error("replicated batches refused: {0}")]
    Replication(String),
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
    /// `min.insync.replicas`: acks=all is refused with fewer in-sync replicas.
    pub min_insync_replicas: i32,
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
            min_insync_replicas: 1,
        }
    }
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
    /// Every batch below this offset is on disk (flushed).
    durable_end: i64,
    /// Which copies must hold a batch before it is committed.
    commit: Commit,
    /// Whether this copy takes produced batches (leader) or the leader's (follower).
    role: Role,
    /// The leader epoch stamped on produced batches (-1: none, the client's value stays).
    leader_epoch: i32,
    /// (leader epoch, offset of its first batch) for each epoch in the log, ascending.
    epochs: Vec<(i32, i64)>,
    index: VecDeque<BatchMeta>,
    size_bytes: u64,
    producers: Producers,
    /// The last checkpoint written.
    checkpoint: Checkpoint,
    /// Bytes appended at or after the checkpoint's end: what a restart would read.
    unchecked_bytes: u64,
    /// Where the first gap past the durable checkpoint starts, in a follower's copy (the
    /// leader's compaction leaves gaps between batches). Recovery truncates a tail at its
    /// first gap, as a crash can leave one, so the copy counts as durable only up to here
    /// until a checkpoint through the gap is on disk ([`PartitionLog::gaps_checkpointed`]).
    tail_gap: Option<i64>,
}

impl LogState {
    /// The durable end a restart would find: [`Self::durable_end`], and no further than a gap
    /// recovery would truncate at.
    fn safe_durable_end(&self) -> i64 {
        self.tail_gap
            .map_or(self.durable_end, |g| g.min(self.durable_end))
    }

    /// The first gap in the batches at or after `from` (where the checkpoint ends): an offset
    /// no batch starts at although the one before ends there, as recovery reads the tail.
    fn first_gap_from(&self, from: i64) -> Option<i64> {
        let at = self.index.partition_point(|b| b.base_offset < from);
        let mut expect = at
            .checked_sub(1)
            .map_or(from, |i| self.index[i].next_offset().max(from));
        for b in self.index.range(at..) {
            if b.base_offset != expect {
                return Some(expect);
            }
            expect = b.next_offset();
        }
        None
    }

    /// Refuses an offset outside `[log_start_offset, log_end_offset]`.
    fn check_offset(&self, offset: i64) -> Result<(), LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        Ok(())
    }

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
        if state.role == Role::Follower {
            return Err(LogError::NotLeader);
        }
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
                // A retried batch answers with where it was stored before: the request's
                // answer spans from its lowest offset to its highest, whatever their order.
                first = Some(first.map_or(seen.base_offset, |f| f.min(seen.base_offset)));
                last = last.max(seen.last_offset);
                continue;
            }
            let base = state.log_end_offset;
            codec::set_base_offset(batch.as_mut(), base);
            let epoch = state.leader_epoch;
            if epoch >= 0 {
                codec::set_partition_leader_epoch(batch.as_mut(), epoch);
                note_epoch(&mut state.epochs, epoch, base);
            }
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
            first = Some(first.map_or(base, |f| f.min(base)));
            last = last.max(stored.last_offset());
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
            if let Err(why) = self.put_guarded(base, batch) {
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

    /// Stores one batch; a failure or a panic of the storage comes back as its cause.
    fn put_guarded(&self, base: i64, batch: L::Buf) -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| self.store.put(base, batch))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!(
                "storing the batch at offset {base} panicked: {}",
                panic_message(&*panic)
            )),
        }
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

    /// Records that the storage has made every batch below `offset` durable (never past the
    /// stored prefix), and moves the high watermark as the commit rule allows (see
    /// [`Commit`]): with this copy alone, up to `offset`.
    pub fn mark_durable(&self, offset: i64) {
        let mut state = self.state.lock();
        let to = offset.min(state.stored_end);
        if to > state.durable_end {
            state.durable_end = to;
            self.raise_high_watermark(&mut state);
        }
    }

    /// Moves the high watermark to what the commit rule gives, never down, and wakes readers
    /// and waiters.
    fn raise_high_watermark(&self, state: &mut LogState) {
        let to = state.commit.high_watermark(state.safe_durable_end());
        if to > state.high_watermark {
            state.high_watermark = to;
            self.high_watermark.send_replace(to);
        }
    }

    /// The offset below which this copy is durable, and would still be after a restart: up
    /// to the first gap past its durable checkpoint, if it has one.
    pub fn durable_end_offset(&self) -> i64 {
        self.state.lock().safe_durable_end()
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
            s.check_offset(offset)?;
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
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}
