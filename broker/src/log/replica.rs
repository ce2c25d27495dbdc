//! A partition log as one copy of a replicated partition: the commit rule (which copies must
//! hold a batch before it is committed, below the high watermark), leader epochs, a follower's
//! appends of its leader's batches, truncation by leader epoch (Kafka's KIP-101 and KIP-279),
//! and the leader's reads for its followers.

use super::*;

/// Which copies must hold a batch durably before it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// This copy alone: one replica, or a leader alone in its ISR.
    Local,
    /// A leader with followers in its ISR: each other member (broker id) with the offset below
    /// which it last reported its copy durable. The high watermark is the smallest of them and
    /// this copy's.
    Replicated(BTreeMap<i32, i64>),
    /// A follower: committed is what its leader says, up to what this copy holds durably.
    Follower {
        /// The leader's high watermark, as last received.
        leader_high_watermark: i64,
    },
}

impl Commit {
    /// The high watermark this rule gives when this copy is durable below `durable_end`.
    pub fn high_watermark(&self, durable_end: i64) -> i64 {
        match self {
            Commit::Local => durable_end,
            Commit::Replicated(others) => others.values().fold(durable_end, |hw, d| hw.min(*d)),
            Commit::Follower {
                leader_high_watermark,
            } => durable_end.min(*leader_high_watermark),
        }
    }
}

/// What a copy takes: produced batches, or its leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes produce requests and stamps its leader epoch on their batches.
    Leader,
    /// Takes only the leader's batches, as they are.
    Follower,
}

/// Where a leader epoch ends in a log (Kafka's OffsetsForLeaderEpoch answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the one asked for, -1 when the log holds none.
    pub epoch: i32,
    /// The offset after its last batch: where the next epoch starts, or the log end offset.
    /// With no such epoch, where the log's first epoch starts (the log end offset if none).
    pub end_offset: i64,
}

/// Notes that a batch of leader epoch `epoch` starts at `base`.
pub(super) fn note_epoch(epochs: &mut Vec<(i32, i64)>, epoch: i32, base: i64) {
    if epochs.last().is_none_or(|(e, _)| *e < epoch) {
        epochs.push((epoch, base));
    }
}

/// The end of the largest epoch at or below `asked` in `epochs` (ascending (epoch, start)).
pub(crate) fn epoch_end(epochs: &[(i32, i64)], log_end_offset: i64, asked: i32) -> EpochEnd {
    let i = epochs.partition_point(|(e, _)| *e <= asked);
    if i == 0 {
        return EpochEnd {
            epoch: -1,
            end_offset: epochs.first().map_or(log_end_offset, |(_, s)| *s),
        };
    }
    EpochEnd {
        epoch: epochs[i - 1].0,
        end_offset: epochs.get(i).map_or(log_end_offset, |(_, s)| *s),
    }
}

/// Where a follower truncates, given its epochs and log end offset, the epoch it asked the
/// leader about (that of its last batch) and the leader's answer; and whether it is done (else
/// it asks again about its new last epoch). KIP-279: when the leader does not know the epoch
/// asked, the follower cuts at the end of the leader's largest epoch below it, or earlier where
/// its own copy of that epoch ends, and asks again.
pub fn truncation_point(
    epochs: &[(i32, i64)],
    log_end_offset: i64,
    asked: i32,
    answer: EpochEnd,
) -> (i64, bool) {
    if answer.epoch == asked || answer.epoch < 0 {
        return (answer.end_offset.min(log_end_offset), true);
    }
    let own = epoch_end(epochs, log_end_offset, answer.epoch).end_offset;
    (answer.end_offset.min(own).min(log_end_offset), false)
}

impl<L: BatchLog> PartitionLog<L> {
    /// Makes this copy the leader at `epoch`, committing by `commit`.
    pub fn become_leader(&self, epoch: i32, commit: Commit) {
        let mut s = self.state.lock();
        s.role = Role::Leader;
        s.leader_epoch = epoch;
        s.commit = commit;
        self.raise_high_watermark(&mut s);
    }

    /// Makes this copy a follower: produce is refused from now on. Batches already reserved
    /// are still being stored: wait with [`Self::wait_stored`] before truncating.
    pub fn become_follower(&self, epoch: i32) {
        let mut s = self.state.lock();
        s.role = Role::Follower;
        s.leader_epoch = epoch;
        let hw = s.high_watermark;
        if !matches!(s.commit, Commit::Follower { .. }) {
            s.commit = Commit::Follower {
                leader_high_watermark: hw,
            };
        }
    }

    /// The role and the leader epoch this copy is at.
    pub fn role(&self) -> (Role, i32) {
        let s = self.state.lock();
        (s.role, s.leader_epoch)
    }

    /// Changes the commit rule (the leader's ISR changed) and moves the high watermark.
    pub fn set_commit(&self, commit: Commit) {
        let mut s = self.state.lock();
        s.commit = commit;
        self.raise_high_watermark(&mut s);
    }

    /// The commit rule in force.
    pub fn commit(&self) -> Commit {
        self.state.lock().commit.clone()
    }

    /// On a leader: follower `id` has its copy durable below `durable_end`.
    pub fn follower_durable(&self, id: i32, durable_end: i64) {
        let mut s = self.state.lock();
        let Commit::Replicated(others) = &mut s.commit else {
            return;
        };
        match others.get_mut(&id) {
            Some(d) if durable_end > *d => *d = durable_end,
            _ => return,
        }
        self.raise_high_watermark(&mut s);
    }

    /// On a follower: the leader's high watermark.
    pub fn set_leader_high_watermark(&self, hw: i64) {
        let mut s = self.state.lock();
        match &mut s.commit {
            Commit::Follower {
                leader_high_watermark,
            } if hw > *leader_high_watermark => *leader_high_watermark = hw,
            _ => return,
        }
        self.raise_high_watermark(&mut s);
    }

    /// After a restart: a copy of a replicated partition only knows that what its last
    /// checkpoint covers was committed; what lies above may not be on the other copies.
    pub fn restart_high_watermark(&self) {
        let mut s = self.state.lock();
        let to = s
            .checkpoint
            .high_watermark
            .max(s.log_start_offset)
            .min(s.high_watermark);
        s.high_watermark = to;
        self.high_watermark.send_replace(to);
    }

    /// Blocks until every reserved batch is stored (or the log is offline), at most `limit`.
    pub fn wait_stored(&self, limit: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        loop {
            {
                let s = self.state.lock();
                if s.stored_end == s.log_end_offset {
                    return true;
                }
            }
            if self.offline.get().is_some() || std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The leader epoch of the last batch held, -1 when none is.
    pub fn last_batch_epoch(&self) -> i32 {
        let s = self.state.lock();
        if s.index.is_empty() {
            return -1;
        }
        s.epochs.last().map_or(-1, |(e, _)| *e)
    }

    /// The leader epochs in the log: (epoch, offset of its first batch).
    pub fn epochs(&self) -> Vec<(i32, i64)> {
        self.state.lock().epochs.clone()
    }

    /// Where epoch `asked` ends here. A leader answers its own current epoch with its log end
    /// offset, also before it has appended a batch in it.
    pub fn epoch_end(&self, asked: i32) -> EpochEnd {
        let s = self.state.lock();
        if s.role == Role::Leader && asked == s.leader_epoch && asked >= 0 {
            return EpochEnd {
                epoch: asked,
                end_offset: s.log_end_offset,
            };
        }
        epoch_end(&s.epochs, s.log_end_offset, asked)
    }

    /// Reads stored batches from `offset` for a follower: past the high watermark too, up to
    /// the stored prefix, up to `max_bytes` (at least one batch when any is stored).
    pub fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        if let Some(why) = self.offline.get() {
            return Err(LogError::Offline(why.clone()));
        }
        let (from, end) = {
            let s = self.state.lock();
            s.check_offset(offset)?;
            match s.batch_at(offset) {
                Some(b) if b.base_offset < s.stored_end => (b.base_offset, s.stored_end),
                _ => return Ok(Vec::new()),
            }
        };
        Ok(self.store.read(from, end, max_bytes)?)
    }

    /// On a follower: appends the leader's batches byte for byte, with their offsets and
    /// epochs. Each must be one whole batch with a CRC that holds, continue the log (a base
    /// offset at or past its end: compaction leaves gaps) and not go back in leader epoch; a
    /// chunk with one that does not is refused whole. Returns the new log end offset.
    pub fn append_replicated(&self, batches: &[Bytes], now_ms: i64) -> Result<i64, LogError> {
        if let Some(why) = self.offline.get() {
            return Err(LogError::Offline(why.clone()));
        }
        // The lock is held through the stores: a follower's copy has no other writer, and a
        // change of role waits for the appends under way.
        let mut s = self.state.lock();
        if s.role != Role::Follower {
            return Err(LogError::Replication(
                "this copy leads the partition".to_string(),
            ));
        }
        let mut expect = s.log_end_offset;
        let mut gap = None;
        let mut last_epoch = s.epochs.last().map(|(e, _)| *e);
        let mut headers = Vec::with_capacity(batches.len());
        for b in batches {
            let h = codec::validate_batch(b)?;
            if h.total_len() != b.len() {
                return Err(LogError::Replication(format!(
                    "the entry at offset {} holds {} bytes, its batch {}",
                    h.base_offset,
                    b.len(),
                    h.total_len()
                )));
            }
            if h.base_offset < expect {
                return Err(LogError::Replication(format!(
                    "a batch at offset {} does not continue the log, which ends at {expect}",
                    h.base_offset
                )));
            }
            if let Some(e) = last_epoch.filter(|e| h.partition_leader_epoch < *e) {
                return Err(LogError::Replication(format!(
                    "the batch at offset {} has leader epoch {}, older than the log's {e}",
                    h.base_offset, h.partition_leader_epoch
                )));
            }
            if h.base_offset > expect {
                gap = gap.or(Some(expect));
            }
            last_epoch = Some(h.partition_leader_epoch);
            expect = h.next_offset();
            headers.push(h);
        }
        for (h, batch) in headers.iter().zip(batches) {
            let base = h.base_offset;
            if let Err(why) = self.put_guarded(base, L::buffer(batch)) {
                drop(s);
                self.take_offline(&why);
                return Err(LogError::Offline(why));
            }
            if h.producer_id != NO_PRODUCER_ID {
                s.producers.record(h, base, now_ms);
            }
            note_epoch(&mut s.epochs, h.partition_leader_epoch, base);
            s.index.push_back(BatchMeta::of(h, batch.len()));
            s.size_bytes += batch.len() as u64;
            s.unchecked_bytes += batch.len() as u64;
            s.log_end_offset = h.next_offset();
            s.stored_end = s.log_end_offset;
        }
        s.tail_gap = s.tail_gap.or(gap);
        Ok(s.log_end_offset)
    }

    /// Removes every batch at or after `offset` (from the batch holding it), so that the copy
    /// ends where its leader's epoch does; the idempotent producers' state, the leader epochs,
    /// the checkpoint and the high watermark follow. Returns the new log end offset. Only for
    /// a copy with nothing in flight ([`Self::wait_stored`]).
    pub fn truncate_to(&self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let _maintenance = self.maintenance.lock();
        let mut s = self.state.lock();
        if offset >= s.log_end_offset {
            return Ok(s.log_end_offset);
        }
        if s.stored_end != s.log_end_offset {
            return Err(LogError::Replication(format!(
                "cannot truncate to {offset} while batches up to {} are being stored",
                s.log_end_offset
            )));
        }
        let at = s.index.partition_point(|b| b.last_offset < offset);
        let cut = s
            .index
            .get(at)
            .map_or(offset, |b| b.base_offset.min(offset))
            .max(s.log_start_offset);
        let removed: Vec<BatchMeta> = s.index.drain(at..).collect();
        let checkpoint_end = s.checkpoint.end_offset;
        let indexed: Vec<i64> = removed
            .iter()
            .map(|b| b.base_offset)
            .filter(|b| *b < checkpoint_end)
            .collect();
        s.epochs.retain(|(_, start)| *start < cut);
        // The producers' state below the cut: from the checkpoint's snapshot and the entries
        // after it while the checkpoint stays below the cut, else from every entry left.
        let mut producers = if checkpoint_end <= cut {
            Producers::restore(&s.checkpoint.producers).map_err(|e| {
                StorageError::Corrupt(format!("producer snapshot of the checkpoint: {e}"))
            })?
        } else {
            Producers::default()
        };
        let replay_from = if checkpoint_end <= cut {
            checkpoint_end
        } else {
            i64::MIN
        };
        for m in s.index.iter().filter(|m| m.base_offset >= replay_from) {
            if m.producer_id != NO_PRODUCER_ID {
                producers.record_meta(m, now_ms);
            }
        }
        s.producers = producers;
        if checkpoint_end > cut {
            let next = Checkpoint {
                end_offset: cut,
                cleaned_offset: s.checkpoint.cleaned_offset.min(cut),
                high_watermark: s.checkpoint.high_watermark.min(cut),
                epochs: s.epochs.clone(),
                producers: s.producers.snapshot_below(cut),
                ..s.checkpoint.clone()
            };
            self.store.write_index(&[], &indexed, &next.encode())?;
            s.checkpoint = next;
        }
        for b in &removed {
            self.store.remove(b.base_offset)?;
        }
        s.size_bytes -= removed.iter().map(|b| b.size).sum::<u64>();
        let from = s
            .index
            .partition_point(|b| b.base_offset < s.checkpoint.end_offset);
        s.unchecked_bytes = s.index.range(from..).map(|b| b.size).sum();
        s.log_end_offset = cut;
        s.stored_end = cut;
        s.durable_end = s.durable_end.min(cut);
        s.tail_gap = s.first_gap_from(s.checkpoint.end_offset);
        if s.high_watermark > cut {
            s.high_watermark = cut;
            self.high_watermark.send_replace(cut);
        }
        tracing::info!(
            offset = cut,
            batches = removed.len(),
            "truncated the copy to its leader's epoch"
        );
        Ok(cut)
    }

    /// Empties the copy and starts it at `offset`: the leader's log starts past this copy's
    /// end (retention deleted what this copy lacks), so nothing held here is of use.
    pub fn reset_to(&self, offset: i64) -> Result<(), LogError> {
        let _maintenance = self.maintenance.lock();
        let mut s = self.state.lock();
        if s.stored_end != s.log_end_offset {
            return Err(LogError::Replication(format!(
                "cannot reset to {offset} while batches up to {} are being stored",
                s.log_end_offset
            )));
        }
        let indexed: Vec<i64> = s
            .index
            .iter()
            .map(|b| b.base_offset)
            .filter(|b| *b < s.checkpoint.end_offset)
            .collect();
        let next = Checkpoint {
            end_offset: offset,
            log_start_offset: offset,
            cleaned_offset: offset,
            high_watermark: offset,
            epochs: Vec::new(),
            producers: Producers::default().snapshot_below(offset),
        };
        self.store.write_index(&[], &indexed, &next.encode())?;
        let removed: Vec<BatchMeta> = s.index.drain(..).collect();
        for b in &removed {
            self.store.remove(b.base_offset)?;
        }
        s.checkpoint = next;
        s.producers = Producers::default();
        s.epochs.clear();
        s.size_bytes = 0;
        s.unchecked_bytes = 0;
        s.tail_gap = None;
        s.log_start_offset = offset;
        s.log_end_offset = offset;
        s.stored_end = offset;
        s.durable_end = offset;
        s.high_watermark = offset;
        self.high_watermark.send_replace(offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SledStorage, Storage};
    use runnel_codec::{BatchBuilder, Compression, ProducerInfo};

    fn batch(n: usize, producer: Option<(i64, i32)>) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None, 1);
        if let Some((pid, seq)) = producer {
            b = b.with_producer(ProducerInfo {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: seq,
            });
        }
        for i in 0..n {
            b.append(1, Some(format!("k{i}").as_bytes()), Some(b"value"), &[]);
        }
        b.build().expect("build")
    }

    fn produce<L: BatchLog>(log: &PartitionLog<L>, n: usize, producer: Option<(i64, i32)>) {
        log.append(
            &[batch(n, producer)],
            &LogConfig::default(),
            &AppendContext::at(1),
        )
        .expect("append");
    }

    fn stored<L: BatchLog>(log: &PartitionLog<L>) -> Vec<Bytes> {
        log.read_replica(log.summary().log_start_offset, usize::MAX)
            .expect("read")
    }

    #[test]
    fn a_follower_copies_the_leaders_batches_byte_for_byte_and_commits_by_the_leader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SledStorage::open(dir.path()).expect("open");
        let leader =
            PartitionLog::recover(storage.open_log("t", 0).expect("log"), 0, 0).expect("recover");
        let follower =
            PartitionLog::recover(storage.open_log("t", 1).expect("log"), 0, 0).expect("recover");
        leader.become_leader(4, Commit::Replicated(BTreeMap::from([(1, 0)])));
        follower.become_follower(4);
        produce(&leader, 3, Some((7, 0)));
        produce(&leader, 2, Some((7, 3)));
        let sent = leader
            .read_replica(0, usize::MAX)
            .expect("read past the high watermark");
        assert_eq!(sent.len(), 2);
        assert_eq!(
            codec::read_header(&sent[0])
                .expect("h")
                .partition_leader_epoch,
            4
        );
        assert_eq!(follower.append_replicated(&sent, 1).expect("append"), 5);
        assert_eq!(stored(&follower), sent, "byte for byte");
        assert_eq!(follower.epochs(), vec![(4, 0)]);
        // The leader commits once both copies are durable.
        leader.mark_durable(5);
        assert_eq!(leader.summary().high_watermark, 0);
        leader.follower_durable(1, 5);
        assert_eq!(leader.summary().high_watermark, 5);
        // The follower's high watermark is the leader's, up to what it holds durably.
        follower.set_leader_high_watermark(5);
        assert_eq!(follower.summary().high_watermark, 0);
        follower.mark_durable(5);
        assert_eq!(follower.summary().high_watermark, 5);
        // A follower takes no produce, and refuses batches that do not continue it.
        let e = follower
            .append(
                &[batch(1, None)],
                &LogConfig::default(),
                &AppendContext::at(1),
            )
            .expect_err("follower");
        assert!(matches!(e, LogError::NotLeader), "{e}");
        let e = follower
            .append_replicated(&sent[..1], 1)
            .expect_err("overlap");
        assert!(e.to_string().contains("does not continue"), "{e}");
        let mut torn = sent[1].to_vec();
        let last = torn.len() - 1;
        torn[last] ^= 1;
        assert!(follower.append_replicated(&[Bytes::from(torn)], 1).is_err());
        assert_eq!(follower.log_end_offset(), 5, "nothing of a refused chunk");
    }

    /// `n` records at `base`, stamped with leader epoch 1.
    fn batch_at(base: i64, n: usize) -> Bytes {
        let mut v = batch(n, None).to_vec();
        codec::set_base_offset(&mut v, base);
        codec::set_partition_leader_epoch(&mut v, 1);
        Bytes::from(v)
    }

    #[test]
    fn a_copy_counts_as_durable_past_a_compaction_gap_once_a_checkpoint_covers_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SledStorage::open(dir.path()).expect("open");
        let open = |storage: &SledStorage| {
            PartitionLog::recover(storage.open_log("t", 0).expect("log"), 0, 0).expect("recover")
        };
        let follower = open(&storage);
        follower.become_follower(1);
        // The leader compacted offsets 3 and 4 away: its batches at 0..3 and 5..7.
        let sent = [batch_at(0, 3), batch_at(5, 2)];
        assert_eq!(follower.append_replicated(&sent, 1).expect("append"), 7);
        follower.mark_durable(7);
        // On disk, but a restart would truncate at the gap: durable up to it only.
        assert_eq!(follower.durable_end_offset(), 3);
        assert!(follower.wants_gap_checkpoint());
        drop(follower);
        let restarted = open(&storage);
        assert_eq!(
            restarted.log_end_offset(),
            3,
            "recovery truncates at the gap"
        );
        drop(restarted);

        let follower = open(&storage);
        follower.restart_high_watermark();
        follower.become_follower(1);
        assert_eq!(
            follower.append_replicated(&sent[1..], 1).expect("append"),
            7
        );
        follower.mark_durable(7);
        assert_eq!(follower.durable_end_offset(), 3);
        // A checkpoint through the gap, made durable by a flush: the copy counts to its end,
        // though the leader has committed nothing yet.
        assert_eq!(follower.checkpoint().expect("checkpoint"), Some(7));
        let (_, end) = follower.unchecked();
        storage.flush().expect("flush");
        follower.gaps_checkpointed(end);
        assert_eq!(follower.durable_end_offset(), 7);
        assert!(!follower.wants_gap_checkpoint());
        drop(follower);
        let restarted = open(&storage);
        assert_eq!(restarted.log_end_offset(), 7, "the gap is kept");
        assert_eq!(stored(&restarted), sent, "byte for byte");
        // Its high watermark after the restart is what was committed, not the checkpoint.
        restarted.restart_high_watermark();
        assert_eq!(restarted.summary().high_watermark, 0);
    }

    #[test]
    fn truncation_rolls_back_batches_producers_epochs_and_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SledStorage::open(dir.path()).expect("open");
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("log"), 0, 0).expect("recover");
        log.become_leader(1, Commit::Local);
        produce(&log, 2, Some((9, 0)));
        log.become_leader(2, Commit::Local);
        produce(&log, 2, Some((9, 2)));
        produce(&log, 2, Some((9, 4)));
        log.mark_durable(6);
        log.checkpoint().expect("checkpoint");
        assert_eq!(log.epochs(), vec![(1, 0), (2, 2)]);
        assert_eq!(
            log.epoch_end(1),
            EpochEnd {
                epoch: 1,
                end_offset: 2
            }
        );
        assert_eq!(
            log.epoch_end(2),
            EpochEnd {
                epoch: 2,
                end_offset: 6
            }
        );
        log.become_follower(3);
        assert_eq!(
            log.truncate_to(3, 1).expect("truncate"),
            2,
            "from the batch holding 3"
        );
        let s = log.summary();
        assert_eq!(
            (s.log_end_offset, s.high_watermark, s.batch_count),
            (2, 2, 1)
        );
        assert_eq!(log.epochs(), vec![(1, 0)]);
        assert_eq!(log.last_batch_epoch(), 1);
        // The producer is back at sequence 2: its batch at 2 may come again from the leader.
        log.become_leader(3, Commit::Local);
        produce(&log, 2, Some((9, 2)));
        assert_eq!(log.log_end_offset(), 4);
        log.mark_durable(4);
        // And a restart sees the truncated log.
        drop(log);
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("log"), 0, 0).expect("recover");
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(log.epochs(), vec![(1, 0), (3, 2)]);
    }

    #[test]
    fn a_reset_copy_starts_at_the_leaders_log_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SledStorage::open(dir.path()).expect("open");
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("log"), 0, 0).expect("recover");
        produce(&log, 3, None);
        log.become_follower(1);
        log.reset_to(100).expect("reset");
        let s = log.summary();
        assert_eq!(
            (s.log_start_offset, s.log_end_offset, s.batch_count),
            (100, 100, 0)
        );
        drop(log);
        let log =
            PartitionLog::recover(storage.open_log("t", 0).expect("log"), 0, 0).expect("recover");
        assert_eq!(log.summary().log_start_offset, 100);
        assert_eq!(log.log_end_offset(), 100);
    }

    #[test]
    fn epoch_ends_follow_kafka() {
        let epochs = [(0, 0), (2, 50), (5, 80)];
        let end = |asked| epoch_end(&epochs, 100, asked);
        assert_eq!(
            end(0),
            EpochEnd {
                epoch: 0,
                end_offset: 50
            }
        );
        assert_eq!(
            end(1),
            EpochEnd {
                epoch: 0,
                end_offset: 50
            }
        );
        assert_eq!(
            end(4),
            EpochEnd {
                epoch: 2,
                end_offset: 80
            }
        );
        assert_eq!(
            end(7),
            EpochEnd {
                epoch: 5,
                end_offset: 100
            }
        );
        assert_eq!(
            end(-1),
            EpochEnd {
                epoch: -1,
                end_offset: 0
            }
        );
        assert_eq!(
            epoch_end(&[], 7, 3),
            EpochEnd {
                epoch: -1,
                end_offset: 7
            }
        );
    }

    #[test]
    fn a_follower_cuts_where_the_leaders_epoch_ends() {
        // Follower: epochs 0 from 0, 1 from 40, 3 from 60 (epoch 3 never reached the new
        // leader, which led epoch 2 from 55).
        let mine = [(0, 0), (1, 40), (3, 60)];
        // Asked about 3, the leader answers with its largest epoch below: 2, ending at 70.
        let (cut, done) = truncation_point(
            &mine,
            90,
            3,
            EpochEnd {
                epoch: 2,
                end_offset: 70,
            },
        );
        // Epoch 2 is not in the follower's copy: its largest below is 1, ending at 60.
        assert_eq!((cut, done), (60, false));
        // Asked about 1 then, the leader says epoch 1 ends at 55: cut there, done.
        let (cut, done) = truncation_point(
            &mine[..2],
            60,
            1,
            EpochEnd {
                epoch: 1,
                end_offset: 55,
            },
        );
        assert_eq!((cut, done), (55, true));
        // A leader that holds more of the epoch than the follower: nothing to cut.
        assert_eq!(
            truncation_point(
                &mine,
                90,
                3,
                EpochEnd {
                    epoch: 3,
                    end_offset: 120
                }
            ),
            (90, true)
        );
    }
}
