//! Model-based property test of [`PartitionLog`]: random sequences of appends (one batch or
//! several, valid and invalid, several idempotent producers with retries, gaps, fenced epochs
//! and new epochs), flushes, store failures, checkpoints, retention, compaction and reopens run
//! against the log and against a simple model of Kafka's rules written independently of it;
//! both must agree on every answer (offsets or the kind of error), on the high watermark, the
//! log start and end offsets, and on the records a reader sees.

use super::*;
use crate::storage::faulty::{Faults, FaultyStorage};
use crate::storage::{MemoryStorage, Storage};
use proptest::prelude::*;
use runnel_codec::{BatchBuilder, Compression, ProducerInfo};
use std::collections::HashMap;

/// What a producer does with its next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seq {
    /// The sequence number that is due.
    Next,
    /// Sends its last accepted batch again (a retry).
    Retry,
    /// Skips sequence numbers.
    Gap,
    /// An epoch older than its current one (a zombie).
    OldEpoch,
    /// Bumps its epoch and starts again at 0.
    NewEpoch,
}

/// A batch the test builds.
#[derive(Debug, Clone)]
struct Spec {
    records: usize,
    /// Keys (from a small set, so compaction has work) and whether the value is null.
    keys: Vec<(u8, bool)>,
    timestamp: i64,
    producer: Option<(i64, Seq)>,
    corrupt: Option<Corruption>,
}

#[derive(Debug, Clone, Copy)]
enum Corruption {
    Crc,
    LastOffsetDelta,
    RecordsCount,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Spec>),
    Flush,
    Checkpoint,
    Retention(i64),
    Compact,
    FailStores,
    Reopen,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec((0u8..6, prop::bool::weighted(0.1)), 1..5),
        0i64..10_000,
        prop::option::weighted(
            0.6,
            (
                1i64..3,
                prop_oneof![
                    6 => Just(Seq::Next),
                    2 => Just(Seq::Retry),
                    1 => Just(Seq::Gap),
                    1 => Just(Seq::OldEpoch),
                    1 => Just(Seq::NewEpoch),
                ],
            ),
        ),
        prop::option::weighted(
            0.08,
            prop_oneof![
                Just(Corruption::Crc),
                Just(Corruption::LastOffsetDelta),
                Just(Corruption::RecordsCount),
            ],
        ),
    )
        .prop_map(|(keys, timestamp, producer, corrupt)| Spec {
            records: keys.len(),
            keys,
            timestamp,
            producer,
            corrupt,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => prop::collection::vec(spec(), 1..4).prop_map(Op::Append),
        4 => Just(Op::Flush),
        2 => Just(Op::Checkpoint),
        1 => (0i64..12_000).prop_map(Op::Retention),
        2 => Just(Op::Compact),
        1 => Just(Op::FailStores),
        2 => Just(Op::Reopen),
    ]
}

/// The kind of an answer, as both sides give it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Appended {
        base: i64,
        last: i64,
        duplicate: bool,
    },
    Invalid,
    OutOfOrder,
    Fenced,
    Offline,
}

fn answer_of(r: Result<AppendOutcome, LogError>) -> Answer {
    match r {
        Ok(o) => Answer::Appended {
            base: o.base_offset,
            last: o.last_offset,
            duplicate: o.duplicate,
        },
        Err(LogError::InBatch { source, .. }) => answer_of(Err(*source)),
        Err(LogError::OutOfOrderSequence { .. }) => Answer::OutOfOrder,
        Err(LogError::ProducerFenced { .. }) => Answer::Fenced,
        Err(LogError::Offline(_)) => Answer::Offline,
        Err(_) => Answer::Invalid,
    }
}

/// The producer fields a built batch carries: (id, epoch, base sequence).
type Sent = Option<(i64, i16, i32)>;

/// One producer's state in the model: its epoch and the window of its batches, each as (first
/// sequence, last sequence, base offset, last offset).
type ModelProducer = (i16, Vec<(i32, i32, i64, i64)>);

/// A producer as the test's client sees it.
#[derive(Debug, Clone, Default)]
struct Client {
    epoch: i16,
    next_seq: i32,
    /// Its last accepted batch (for retries).
    last: Option<(Spec, Bytes)>,
}

/// One record of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: u8,
    tombstone: bool,
}

/// One batch of the model: what retention by time needs.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: i64,
    last: i64,
    max_timestamp: i64,
}

/// Kafka's rules, kept as plainly as possible.
#[derive(Debug, Default, Clone)]
struct Model {
    records: Vec<Rec>,
    batches: Vec<ModelBatch>,
    log_start: i64,
    log_end: i64,
    high_watermark: i64,
    checkpoint: i64,
    cleaned: i64,
    /// producer -> (epoch, window of (first seq, last seq, base, last)).
    producers: HashMap<i64, ModelProducer>,
    offline: bool,
}

const RETENTION_MS: i64 = 1_000;

impl Model {
    fn append(&mut self, batches: &[(Spec, Sent)]) -> Answer {
        if self.offline {
            return Answer::Offline;
        }
        if batches.iter().any(|(s, _)| s.corrupt.is_some()) {
            return Answer::Invalid;
        }
        // Check the whole request against the state as its earlier batches leave it.
        let mut staged: HashMap<i64, (i16, Option<i32>)> = HashMap::new();
        let mut decisions = Vec::new();
        for (spec, producer) in batches {
            let Some((pid, epoch, seq)) = *producer else {
                decisions.push(None);
                continue;
            };
            let known = self.producers.get(&pid);
            let (cur_epoch, last_seq) = staged.get(&pid).copied().unwrap_or((
                known.map_or(i16::MIN, |k| k.0),
                known.and_then(|k| k.1.last()).map(|w| w.1),
            ));
            if epoch < cur_epoch {
                return Answer::Fenced;
            }
            let last = seq + spec.records as i32 - 1;
            let decision = match last_seq {
                None => None,
                Some(_) if epoch > cur_epoch => {
                    if seq != 0 {
                        return Answer::OutOfOrder;
                    }
                    None
                }
                Some(last_seq) => {
                    let dup = known
                        .filter(|k| k.0 == epoch)
                        .and_then(|k| k.1.iter().find(|w| w.0 == seq))
                        .copied();
                    match dup {
                        Some(d) => Some(d),
                        None if seq != last_seq + 1 => return Answer::OutOfOrder,
                        None => None,
                    }
                }
            };
            if decision.is_none() {
                staged.insert(pid, (epoch, Some(last)));
            }
            decisions.push(Some(decision));
        }
        let (mut first, mut last_offset, mut wrote) = (None, -1, false);
        for ((spec, producer), decision) in batches.iter().zip(decisions) {
            if let Some(Some(dup)) = decision {
                // A retried batch answers with its earlier offsets; the request's answer spans
                // from its lowest offset to its highest.
                first = Some(first.map_or(dup.2, |f: i64| f.min(dup.2)));
                last_offset = last_offset.max(dup.3);
                continue;
            }
            let base = self.log_end;
            for (i, (key, tombstone)) in spec.keys.iter().enumerate() {
                self.records.push(Rec {
                    offset: base + i as i64,
                    key: *key,
                    tombstone: *tombstone,
                });
            }
            self.log_end += spec.records as i64;
            self.batches.push(ModelBatch {
                base,
                last: self.log_end - 1,
                max_timestamp: spec.timestamp,
            });
            if let Some((pid, epoch, seq)) = *producer {
                let p = self.producers.entry(pid).or_insert((epoch, Vec::new()));
                if p.0 != epoch {
                    *p = (epoch, Vec::new());
                }
                if p.1.len() == producer::PRODUCER_WINDOW {
                    p.1.remove(0);
                }
                p.1.push((seq, seq + spec.records as i32 - 1, base, self.log_end - 1));
            }
            first = Some(first.map_or(base, |f: i64| f.min(base)));
            last_offset = last_offset.max(self.log_end - 1);
            wrote = true;
        }
        Answer::Appended {
            base: first.unwrap_or(-1),
            last: last_offset,
            duplicate: !wrote,
        }
    }

    fn retention(&mut self, now: i64) {
        if self.offline {
            return;
        }
        let mut cut = 0;
        for b in &self.batches {
            if b.base >= self.high_watermark || b.max_timestamp >= now - RETENTION_MS {
                break;
            }
            cut += 1;
        }
        if cut == 0 {
            return;
        }
        self.log_start = self
            .batches
            .get(cut)
            .map_or(self.batches[cut - 1].last + 1, |b| b.base);
        self.batches.drain(..cut);
        let start = self.log_start;
        self.records.retain(|r| r.offset >= start);
    }

    /// One pass over what is checkpointed: the latest record of each key (tombstones never
    /// expire in this test: delete.retention.ms is long).
    fn compact(&mut self) {
        if self.offline {
            return;
        }
        // The pass checkpoints first.
        self.checkpoint = self.checkpoint.max(self.high_watermark);
        let end = self.checkpoint;
        if !self
            .records
            .iter()
            .any(|r| r.offset >= self.cleaned && r.offset < end)
        {
            return;
        }
        let mut latest: HashMap<u8, i64> = HashMap::new();
        for r in self
            .records
            .iter()
            .filter(|r| r.offset >= self.cleaned && r.offset < end)
        {
            latest.insert(r.key, r.offset);
        }
        self.records
            .retain(|r| r.offset >= end || latest.get(&r.key).is_none_or(|l| r.offset >= *l));
        self.cleaned = end;
    }

    fn visible(&self) -> Vec<Rec> {
        self.records
            .iter()
            .filter(|r| r.offset >= self.log_start && r.offset < self.high_watermark)
            .cloned()
            .collect()
    }
}

/// Builds the bytes of a batch; returns them with the producer fields it carries, and the spec
/// of what was built (a retry resends an earlier batch, whatever the spec said).
fn build(spec: &Spec, client: &mut HashMap<i64, Client>) -> (Spec, Bytes, Sent) {
    let mut producer = None;
    if let Some((pid, mode)) = spec.producer {
        let c = client.entry(pid).or_default();
        if mode == Seq::Retry && spec.corrupt.is_none() {
            if let Some((last_spec, last)) = &c.last {
                let h = codec::read_header(last).expect("header");
                return (
                    last_spec.clone(),
                    last.clone(),
                    Some((pid, h.producer_epoch, h.base_sequence)),
                );
            }
        }
        let (epoch, seq) = match mode {
            Seq::Next | Seq::Retry => (c.epoch, c.next_seq),
            Seq::Gap => (c.epoch, c.next_seq + 5),
            Seq::OldEpoch => (c.epoch - 1, c.next_seq),
            Seq::NewEpoch => (c.epoch + 1, 0),
        };
        producer = Some((pid, epoch, seq));
    }
    let mut b = BatchBuilder::new(Compression::None, spec.timestamp);
    if let Some((producer_id, producer_epoch, base_sequence)) = producer {
        b = b.with_producer(ProducerInfo {
            producer_id,
            producer_epoch,
            base_sequence,
        });
    }
    for (key, tombstone) in &spec.keys {
        let value: Option<&[u8]> = if *tombstone { None } else { Some(b"v") };
        b.append(spec.timestamp, Some(&[*key]), value, &[]);
    }
    let mut bytes = b.build().expect("build").to_vec();
    let fix_crc = |b: &mut Vec<u8>| {
        let crc = codec::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    };
    match spec.corrupt {
        Some(Corruption::Crc) => {
            let n = bytes.len();
            bytes[n - 1] ^= 0x40;
        }
        Some(Corruption::LastOffsetDelta) => {
            bytes[23..27].copy_from_slice(&(spec.records as i32 + 3).to_be_bytes());
            fix_crc(&mut bytes);
        }
        Some(Corruption::RecordsCount) => {
            let n = spec.records as i32 + 1;
            bytes[57..61].copy_from_slice(&n.to_be_bytes());
            bytes[23..27].copy_from_slice(&(n - 1).to_be_bytes());
            fix_crc(&mut bytes);
        }
        None => {}
    }
    (spec.clone(), Bytes::from(bytes), producer)
}

/// What a reader sees of the log: every committed record from the log start offset.
fn read_all(log: &PartitionLog<impl BatchLog>) -> Vec<Rec> {
    let mut out = Vec::new();
    let s = log.summary();
    let mut offset = s.log_start_offset;
    while offset < s.high_watermark {
        let r = log.read(offset, 1 << 16).expect("read");
        if r.batches.is_empty() {
            break;
        }
        for b in &r.batches {
            for rec in codec::decode_batch(b)
                .expect("every stored batch decodes")
                .1
            {
                if rec.offset >= offset && rec.offset < s.high_watermark {
                    out.push(Rec {
                        offset: rec.offset,
                        key: rec.key.as_ref().map_or(255, |k| k[0]),
                        tombstone: rec.value.is_none(),
                    });
                }
            }
        }
        offset = r.next_offset;
    }
    out
}

fn run(ops: Vec<Op>, compacted: bool) -> Result<(), TestCaseError> {
    let config = LogConfig {
        retention_ms: RETENTION_MS,
        retention_bytes: -1,
        delete: !compacted,
        compact: compacted,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: i64::MAX / 2,
        ..LogConfig::default()
    };
    let storage = FaultyStorage::<MemoryStorage>::default();
    let open = |s: &FaultyStorage<MemoryStorage>| {
        PartitionLog::recover(s.open_log("t", 0).expect("open"), 0, 0).expect("recover")
    };
    let mut log = open(&storage);
    let mut model = Model::default();
    let mut clients: HashMap<i64, Client> = HashMap::new();
    for op in ops {
        match op {
            Op::Append(specs) => {
                let built: Vec<(Spec, Bytes, Sent)> =
                    specs.iter().map(|s| build(s, &mut clients)).collect();
                let bytes: Vec<Bytes> = built.iter().map(|b| b.1.clone()).collect();
                let got = answer_of(log.append(&bytes, &config, &AppendContext::at(0)));
                let model_batches: Vec<(Spec, Sent)> =
                    built.iter().map(|b| (b.0.clone(), b.2)).collect();
                let want = model.append(&model_batches);
                prop_assert_eq!(&got, &want, "append of {:?}", specs);
                if let Answer::Appended { .. } = got {
                    // The client moves on from what was accepted.
                    for (spec, bytes, producer) in &built {
                        if let Some((pid, epoch, seq)) = producer {
                            let c = clients.entry(*pid).or_default();
                            if *epoch >= c.epoch {
                                c.epoch = *epoch;
                                c.next_seq = c.next_seq.max(seq + spec.records as i32);
                                if *epoch > c.epoch || *seq == 0 {
                                    c.next_seq = seq + spec.records as i32;
                                }
                                c.last = Some((spec.clone(), bytes.clone()));
                            }
                        }
                    }
                }
            }
            Op::Flush => {
                if !model.offline {
                    log.mark_durable(log.log_end_offset());
                    model.high_watermark = model.log_end;
                }
            }
            Op::Checkpoint => {
                if !model.offline {
                    log.checkpoint().expect("checkpoint");
                    model.checkpoint = model.checkpoint.max(model.high_watermark);
                }
            }
            Op::Retention(now) => {
                if !model.offline {
                    log.apply_retention(&config, now, &|| Ok(()))
                        .expect("retention");
                    if !compacted {
                        model.retention(now);
                    }
                }
            }
            Op::Compact => {
                if !model.offline {
                    log.checkpoint().expect("checkpoint");
                    log.compact(&config, 0).expect("compact");
                    if compacted {
                        model.compact();
                    } else {
                        model.checkpoint = model.checkpoint.max(model.high_watermark);
                    }
                }
            }
            Op::FailStores => {
                Faults::set(&storage.faults.fail_puts, true);
                let (_, bytes, _) = build(
                    &Spec {
                        records: 1,
                        keys: vec![(0, false)],
                        timestamp: 0,
                        producer: None,
                        corrupt: None,
                    },
                    &mut clients,
                );
                let got = answer_of(log.append(&[bytes], &config, &AppendContext::at(0)));
                prop_assert_eq!(got, Answer::Offline);
                model.offline = true;
                Faults::set(&storage.faults.fail_puts, false);
            }
            Op::Reopen => {
                drop(log);
                log = open(&storage);
                // What a restart finds is durable: here everything stored.
                model.offline = false;
                model.high_watermark = model.log_end;
            }
        }
        let s = log.summary();
        if !model.offline {
            prop_assert_eq!(
                (s.log_start_offset, s.log_end_offset, s.high_watermark),
                (model.log_start, model.log_end, model.high_watermark)
            );
            prop_assert_eq!(read_all(&log), model.visible());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_log_follows_kafkas_rules(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, false)?;
    }

    #[test]
    fn a_compacted_log_follows_kafkas_rules(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, true)?;
    }
}
