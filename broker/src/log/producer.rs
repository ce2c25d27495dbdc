//! Idempotent producers' state in one partition: the epoch and the recent sequence ranges of
//! each producer id, which drop retried batches and refuse gaps and zombies (Kafka's
//! `ProducerStateManager`). Pure: the log feeds it headers and offsets.

use super::LogError;
use runnel_codec::BatchHeader;
use std::collections::{HashMap, VecDeque};

/// How many recent batches per producer and partition are remembered for duplicate detection.
/// Kafka keeps 5 and caps in-flight requests at 5; acks=all here waits for an fsync, so
/// producers keep more batches in flight to fill the pipe, and the window covers them.
pub(crate) const PRODUCER_WINDOW: usize = 64;

/// The sequence numbers and offsets of one stored batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SequenceRange {
    pub(crate) first_seq: i32,
    pub(crate) last_seq: i32,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
}

/// One producer id's state in a partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ProducerState {
    pub(crate) epoch: i16,
    pub(crate) recent: VecDeque<SequenceRange>,
    /// When the producer last appended here (broker clock), for expiry.
    pub(crate) last_append_ms: i64,
}

/// What the check of one batch decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// New: append it.
    Append,
    /// A retry of a batch already stored: answer with its offsets, store nothing.
    Duplicate(SequenceRange),
}

/// Sequences wrap from `i32::MAX` to 0, as in Kafka.
pub(crate) fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The last sequence number of a batch.
fn last_sequence(h: &BatchHeader) -> i32 {
    h.base_sequence.wrapping_add(h.last_offset_delta) & i32::MAX
}

/// Every producer's state in one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Producers {
    by_id: HashMap<i64, ProducerState>,
}

/// What a batch is checked against: the state as the request's earlier batches leave it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    epoch: i16,
    last_seq: Option<i32>,
}

impl Producers {
    /// Checks the producer batches of one request in order, as if each earlier one had been
    /// appended, without changing anything: a request is appended whole or not at all. Returns
    /// one decision per header (`None` for batches without a producer id).
    pub(crate) fn check_all(
        &self,
        headers: &[BatchHeader],
    ) -> Result<Vec<Option<SequenceCheck>>, (usize, LogError)> {
        let mut pending: HashMap<i64, Pending> = HashMap::new();
        let mut out = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            if h.producer_id == runnel_codec::NO_PRODUCER_ID {
                out.push(None);
                continue;
            }
            let known = self.by_id.get(&h.producer_id);
            let before = pending.get(&h.producer_id).copied().unwrap_or(Pending {
                epoch: known.map_or(i16::MIN, |p| p.epoch),
                last_seq: known.and_then(|p| p.recent.back()).map(|r| r.last_seq),
            });
            let decision = check(h, before, known).map_err(|e| (i, e))?;
            if decision == SequenceCheck::Append {
                pending.insert(
                    h.producer_id,
                    Pending {
                        epoch: h.producer_epoch,
                        last_seq: Some(last_sequence(h)),
                    },
                );
            }
            out.push(Some(decision));
        }
        Ok(out)
    }

    /// Records a batch appended at `base_offset`.
    pub(crate) fn record(&mut self, h: &BatchHeader, base_offset: i64, now_ms: i64) {
        self.record_range(
            h.producer_id,
            h.producer_epoch,
            SequenceRange {
                first_seq: h.base_sequence,
                last_seq: last_sequence(h),
                base_offset,
                last_offset: base_offset + i64::from(h.last_offset_delta),
            },
            now_ms,
        );
    }

    /// Records a stored batch from its index entry (a truncated log rebuilds its state so).
    pub(crate) fn record_meta(&mut self, m: &super::index::BatchMeta, now_ms: i64) {
        let delta = (m.last_offset - m.base_offset) as i32;
        self.record_range(
            m.producer_id,
            m.producer_epoch,
            SequenceRange {
                first_seq: m.base_sequence,
                last_seq: m.base_sequence.wrapping_add(delta) & i32::MAX,
                base_offset: m.base_offset,
                last_offset: m.last_offset,
            },
            now_ms,
        );
    }

    fn record_range(&mut self, producer_id: i64, epoch: i16, range: SequenceRange, now_ms: i64) {
        let p = self.by_id.entry(producer_id).or_default();
        if epoch != p.epoch {
            p.epoch = epoch;
            p.recent.clear();
        }
        if p.recent.len() == PRODUCER_WINDOW {
            p.recent.pop_front();
        }
        p.recent.push_back(range);
        p.last_append_ms = p.last_append_ms.max(now_ms);
    }

    /// Forgets producers that have not appended for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many went.
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.by_id.len();
        self.by_id
            .retain(|_, p| now_ms.saturating_sub(p.last_append_ms) < expiration_ms);
        before - self.by_id.len()
    }

    /// How many producers are remembered.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The state as it stood at offset `end`, encoded for a checkpoint: every producer's epoch,
    /// expiry clock and the window of its batches below `end`. (Batches a window had already
    /// dropped for later ones are not brought back: the state after replaying the batches from
    /// `end` on is the state of now.)
    pub(crate) fn snapshot_below(&self, end: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.by_id.len() * 40);
        out.extend_from_slice(&(self.by_id.len() as u32).to_be_bytes());
        for (pid, p) in &self.by_id {
            let window: Vec<&SequenceRange> =
                p.recent.iter().filter(|r| r.base_offset < end).collect();
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&p.last_append_ms.to_be_bytes());
            out.extend_from_slice(&(window.len() as u16).to_be_bytes());
            for r in window {
                out.extend_from_slice(&r.first_seq.to_be_bytes());
                out.extend_from_slice(&r.last_seq.to_be_bytes());
                out.extend_from_slice(&r.base_offset.to_be_bytes());
                out.extend_from_slice(&r.last_offset.to_be_bytes());
            }
        }
        out
    }

    /// The state a checkpoint's snapshot holds.
    pub(crate) fn restore(mut b: &[u8]) -> Result<Self, String> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if b.len() < n {
                return Err(format!(
                    "producer snapshot ends {} bytes early",
                    n - b.len()
                ));
            }
            let (head, tail) = b.split_at(n);
            *b = tail;
            Ok(head)
        }
        fn int<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], String> {
            let mut a = [0u8; N];
            a.copy_from_slice(take(b, N)?);
            Ok(a)
        }
        let mut producers = Producers::default();
        if b.is_empty() {
            return Ok(producers);
        }
        let count = u32::from_be_bytes(int(&mut b)?);
        for _ in 0..count {
            let pid = i64::from_be_bytes(int(&mut b)?);
            let epoch = i16::from_be_bytes(int(&mut b)?);
            let last_append_ms = i64::from_be_bytes(int(&mut b)?);
            let n = u16::from_be_bytes(int(&mut b)?);
            let mut recent = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                recent.push_back(SequenceRange {
                    first_seq: i32::from_be_bytes(int(&mut b)?),
                    last_seq: i32::from_be_bytes(int(&mut b)?),
                    base_offset: i64::from_be_bytes(int(&mut b)?),
                    last_offset: i64::from_be_bytes(int(&mut b)?),
                });
            }
            producers.by_id.insert(
                pid,
                ProducerState {
                    epoch,
                    recent,
                    last_append_ms,
                },
            );
        }
        if !b.is_empty() {
            return Err(format!("{} bytes after the producer snapshot", b.len()));
        }
        Ok(producers)
    }
}

/// Kafka's sequence rules for one batch of a producer whose state before it is `before`.
/// `known` is the stored state, whose window answers retries.
fn check(
    h: &BatchHeader,
    before: Pending,
    known: Option<&ProducerState>,
) -> Result<SequenceCheck, LogError> {
    if h.producer_epoch < before.epoch {
        return Err(LogError::ProducerFenced {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            current: before.epoch,
        });
    }
    // An unknown producer (new here, or expired) starts where it likes, as in Kafka, whose
    // producers may outlive the broker's memory of them.
    let Some(last_seq) = before.last_seq else {
        return Ok(SequenceCheck::Append);
    };
    // A new epoch of a known producer starts again at 0.
    if h.producer_epoch > before.epoch {
        if h.base_sequence != 0 {
            return Err(LogError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected: 0,
                got: h.base_sequence,
            });
        }
        return Ok(SequenceCheck::Append);
    }
    if let Some(seen) = known
        .filter(|k| k.epoch == h.producer_epoch)
        .and_then(|k| k.recent.iter().find(|r| r.first_seq == h.base_sequence))
    {
        return Ok(SequenceCheck::Duplicate(*seen));
    }
    let expected = next_sequence(last_seq);
    if h.base_sequence != expected {
        return Err(LogError::OutOfOrderSequence {
            producer_id: h.producer_id,
            expected,
            got: h.base_sequence,
        });
    }
    Ok(SequenceCheck::Append)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_codec::{read_header, BatchBuilder, Compression, ProducerInfo};

    fn header(pid: i64, epoch: i16, seq: i32, records: usize) -> BatchHeader {
        let mut b = BatchBuilder::new(Compression::None, 0).with_producer(ProducerInfo {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        });
        for _ in 0..records {
            b.append(0, None, Some(b"v"), &[]);
        }
        read_header(&b.build().expect("build")).expect("header")
    }

    #[test]
    fn a_request_is_checked_as_a_whole_without_changing_state() {
        let mut p = Producers::default();
        p.record(&header(1, 0, 0, 2), 0, 0);
        let before = p.clone();
        // The second batch continues the first; the third skips a sequence.
        let r = p.check_all(&[header(1, 0, 2, 3), header(1, 0, 5, 1), header(1, 0, 9, 1)]);
        let (at, e) = r.expect_err("gap");
        assert_eq!(at, 2);
        assert!(
            matches!(
                e,
                LogError::OutOfOrderSequence {
                    expected: 6,
                    got: 9,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(p, before, "a refused request changes nothing");
        let ok = p
            .check_all(&[header(1, 0, 2, 3), header(1, 0, 5, 1)])
            .expect("in sequence");
        assert_eq!(ok, vec![Some(SequenceCheck::Append); 2]);
    }

    #[test]
    fn a_snapshot_holds_the_state_below_its_offset() {
        let mut p = Producers::default();
        p.record(&header(1, 0, 0, 2), 0, 5);
        p.record(&header(1, 0, 2, 1), 2, 6);
        p.record(&header(2, 3, 0, 1), 3, 7);
        let all = Producers::restore(&p.snapshot_below(i64::MAX)).expect("restore");
        assert_eq!(all, p);
        // Below offset 2: producer 1 has only its first batch; replaying the rest gives it back.
        let mut below = Producers::restore(&p.snapshot_below(2)).expect("restore");
        assert_eq!(below.by_id[&1].recent.len(), 1);
        assert_eq!(below.by_id[&2].recent.len(), 0);
        below.record(&header(1, 0, 2, 1), 2, 6);
        below.record(&header(2, 3, 0, 1), 3, 7);
        assert_eq!(below, p);
        assert!(Producers::restore(&[0, 0, 0, 1, 9]).is_err());
        assert_eq!(
            Producers::restore(&[]).expect("empty"),
            Producers::default()
        );
    }

    #[test]
    fn retries_fencing_and_expiry() {
        let mut p = Producers::default();
        p.record(&header(1, 3, 0, 2), 10, 1_000);
        let dup = p.check_all(&[header(1, 3, 0, 2)]).expect("retry");
        assert!(matches!(dup[0], Some(SequenceCheck::Duplicate(r)) if r.base_offset == 10));
        let (_, e) = p.check_all(&[header(1, 2, 2, 1)]).expect_err("older epoch");
        assert!(
            matches!(e, LogError::ProducerFenced { current: 3, .. }),
            "{e}"
        );
        // A new epoch starts again at 0.
        assert!(p.check_all(&[header(1, 4, 0, 1)]).is_ok());
        assert!(p.check_all(&[header(1, 4, 7, 1)]).is_err());
        assert_eq!(p.expire(1_000 + 500, 1_000), 0);
        assert_eq!(p.expire(1_000 + 1_000, 1_000), 1);
        assert_eq!(p.len(), 0);
    }
}
