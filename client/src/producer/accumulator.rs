//! The accumulator `send` appends to: one open batch per partition, the partitioner's choice
//! (explicit, murmur2 of the key, or sticky), and sealing by `batch_size` and `linger`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use runnel_codec::{BatchBuilder, NO_SEQUENCE};

use super::record::{BatchShared, DeliveryFuture, ProducerRecord};
use super::{lock, Producer};
use crate::error::{Error, Result};
use crate::partitioner::{next_sticky, partition_for_key, XorShift};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Bytes a record adds to a batch, an upper bound of the codec's exact count.
fn estimated_record_size(r: &ProducerRecord) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 10)
        .sum();
    r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len) + headers + 25
}

/// A batch being filled, then queued, then in flight.
pub(super) struct Batch {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// Until first shipped: the records. After: `None`, and `data` holds the built batch.
    pub(super) builder: Option<BatchBuilder>,
    pub(super) data: Option<Bytes>,
    pub(super) records: i32,
    pub(super) base_sequence: i32,
    pub(super) shared: Arc<BatchShared>,
    pub(super) created: Instant,
    /// The wall clock when the batch was opened, in ms since the epoch.
    created_ms: i64,
    /// Enqueue instants for the latency histogram (empty unless enabled).
    pub(super) enqueued: Vec<Instant>,
    /// Bytes counted in `buffered` while sealed and unresolved.
    pub(super) accounted: usize,
    pub(super) attempts: u32,
    pub(super) last_error: Option<Error>,
    /// An attempt ended without an answer that says the broker did not append it (a broken
    /// stream, a request timeout, an internal error): it may be stored. Its sequence numbers
    /// are then never given to other batches; the producer takes its next epoch instead.
    pub(super) maybe_appended: bool,
    /// acks=0 batches resolve when shipped.
    pub(super) resolved: bool,
}

impl Batch {
    pub(super) fn context(&self) -> String {
        format!("produce to `{}`/{}", self.topic, self.partition)
    }
}

/// Open batches of one topic.
pub(super) struct TopicAcc {
    name: Arc<str>,
    partitions: Vec<Option<Batch>>,
    /// The partition records without a key stick to, until its batch is sealed.
    sticky: Option<i32>,
    last_sticky: Option<i32>,
}

/// The per-producer accumulator `send` appends to.
pub(super) struct Accumulator {
    pub(super) topics: Vec<TopicAcc>,
    pub(super) index: HashMap<Arc<str>, usize>,
    pub(super) last_topic: usize,
    /// Sealed batches for the sender to pick up, in sealing order.
    pub(super) ready: VecDeque<Batch>,
    pub(super) rng: XorShift,
}

impl Accumulator {
    fn find_topic(&mut self, topic: &Arc<str>) -> Option<usize> {
        if let Some(t) = self.topics.get(self.last_topic) {
            if Arc::ptr_eq(&t.name, topic) || *t.name == **topic {
                return Some(self.last_topic);
            }
        }
        let i = *self.index.get(&**topic)?;
        self.last_topic = i;
        Some(i)
    }

    pub(super) fn add_topic(&mut self, name: &str, partitions: usize) {
        if let Some(&i) = self.index.get(name) {
            let t = &mut self.topics[i];
            if t.partitions.len() < partitions {
                t.partitions.resize_with(partitions, || None);
            }
            return;
        }
        let name: Arc<str> = Arc::from(name);
        self.index.insert(name.clone(), self.topics.len());
        self.topics.push(TopicAcc {
            name,
            partitions: (0..partitions).map(|_| None).collect(),
            sticky: None,
            last_sticky: None,
        });
    }

    /// Moves the open batch of `topic`/`partition` to `ready`. Returns its size.
    fn seal(&mut self, topic: usize, partition: usize) -> usize {
        let t = &mut self.topics[topic];
        let Some(mut batch) = t.partitions[partition].take() else {
            return 0;
        };
        if t.sticky == Some(partition as i32) {
            t.last_sticky = t.sticky.take();
        }
        let size = batch
            .builder
            .as_ref()
            .map_or(0, BatchBuilder::estimated_size);
        batch.accounted = size;
        self.ready.push_back(batch);
        size
    }

    /// Seals every open batch older than `linger` (all when `linger` is `None`); returns the
    /// bytes sealed and the instant the oldest remaining open batch is due.
    pub(super) fn seal_due(
        &mut self,
        now: Instant,
        linger: Option<Duration>,
    ) -> (usize, Option<Instant>) {
        let mut sealed = 0;
        let mut next: Option<Instant> = None;
        for ti in 0..self.topics.len() {
            for pi in 0..self.topics[ti].partitions.len() {
                let Some(b) = &self.topics[ti].partitions[pi] else {
                    continue;
                };
                match linger {
                    Some(l) if b.created + l > now => {
                        let due = b.created + l;
                        next = Some(next.map_or(due, |n| n.min(due)));
                    }
                    _ => sealed += self.seal(ti, pi),
                }
            }
        }
        (sealed, next)
    }
}

/// Outcome of one append attempt.
pub(super) enum Append {
    Done(DeliveryFuture),
    UnknownTopic,
}

impl Producer {
    pub(super) fn try_append(&self, record: &ProducerRecord) -> Result<Append> {
        let shared = &*self.inner.shared;
        let config = &shared.config;
        let mut wake = false;
        let fut = {
            let mut acc = lock(&shared.acc);
            let Some(ti) = acc.find_topic(&record.topic) else {
                return Ok(Append::UnknownTopic);
            };
            let partitions = acc.topics[ti].partitions.len();
            if partitions == 0 {
                return Ok(Append::UnknownTopic);
            }
            let size = estimated_record_size(record);
            let partition = match (record.partition, &record.key) {
                (Some(p), _) => {
                    if p < 0 || p as usize >= partitions {
                        return Err(Error::UnknownPartition {
                            topic: record.topic.to_string(),
                            partition: p,
                            partitions,
                        });
                    }
                    p
                }
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => {
                    let sticky = match acc.topics[ti].sticky {
                        Some(p) if (p as usize) < partitions => Some(p),
                        _ => None,
                    };
                    // A sticky batch this record would overflow is shipped now, and the
                    // record starts the next sticky partition's batch (KIP-480).
                    let full = sticky.filter(|&p| {
                        acc.topics[ti].partitions[p as usize]
                            .as_ref()
                            .is_some_and(|b| {
                                b.records > 0
                                    && b.builder.as_ref().map_or(0, BatchBuilder::estimated_size)
                                        + size
                                        > config.batch_size
                            })
                    });
                    if let Some(p) = full {
                        let sealed = acc.seal(ti, p as usize);
                        shared.buffered.fetch_add(sealed, Ordering::AcqRel);
                        wake = true;
                    }
                    match acc.topics[ti].sticky {
                        Some(p) if (p as usize) < partitions => p,
                        _ => {
                            let prev = acc.topics[ti].last_sticky;
                            let p = next_sticky(&mut acc.rng, partitions, prev);
                            acc.topics[ti].sticky = Some(p);
                            p
                        }
                    }
                }
            };
            let pi = partition as usize;
            if let Some(open) = &acc.topics[ti].partitions[pi] {
                let current = open
                    .builder
                    .as_ref()
                    .map_or(0, BatchBuilder::estimated_size);
                if open.records > 0 && current + size > config.batch_size {
                    let sealed = acc.seal(ti, pi);
                    shared.buffered.fetch_add(sealed, Ordering::AcqRel);
                    wake = true;
                }
            }
            // One clock read per record: a batch notes the wall clock once when it opens, and
            // its records' create times follow the monotonic clock from there (a batch lives
            // for milliseconds, so the two cannot drift apart in between).
            let now = Instant::now();
            let topic_acc = &mut acc.topics[ti];
            let slot = &mut topic_acc.partitions[pi];
            if slot.is_none() {
                let capacity = config.batch_size.max(size);
                let opened_ms = now_ms();
                let builder = BatchBuilder::with_capacity(
                    config.compression,
                    record.timestamp.unwrap_or(opened_ms),
                    capacity,
                );
                *slot = Some(Batch {
                    topic: topic_acc.name.clone(),
                    partition,
                    builder: Some(builder),
                    data: None,
                    records: 0,
                    base_sequence: NO_SEQUENCE,
                    shared: Arc::new(BatchShared::new(topic_acc.name.clone(), partition)),
                    created: now,
                    created_ms: opened_ms,
                    enqueued: if config.latency.is_some() {
                        Vec::with_capacity(capacity / size.max(1) + 1)
                    } else {
                        Vec::new()
                    },
                    accounted: 0,
                    attempts: 0,
                    last_error: None,
                    maybe_appended: false,
                    resolved: false,
                });
                shared.pending_batches.fetch_add(1, Ordering::AcqRel);
                wake = true;
            }
            let Some(batch) = slot.as_mut() else {
                return Err(Error::Protocol("open batch vanished".into()));
            };
            let Some(builder) = batch.builder.as_mut() else {
                return Err(Error::Protocol("open batch without a builder".into()));
            };
            let timestamp = record.timestamp.unwrap_or_else(|| {
                batch.created_ms + now.saturating_duration_since(batch.created).as_millis() as i64
            });
            builder.append(
                timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.headers,
            );
            let index = batch.records as u32;
            batch.records += 1;
            if config.latency.is_some() {
                batch.enqueued.push(now);
            }
            let fut = DeliveryFuture {
                batch: batch.shared.clone(),
                index,
                timestamp,
            };
            if builder.estimated_size() >= config.batch_size {
                let sealed = acc.seal(ti, pi);
                shared.buffered.fetch_add(sealed, Ordering::AcqRel);
                wake = true;
            }
            fut
        };
        if wake {
            shared.wake_sender.notify_one();
        }
        Ok(Append::Done(fut))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    use std::sync::{Mutex, RwLock};

    use tokio::sync::Notify;

    use super::*;
    use crate::connection::{Cluster, ClusterInfo};
    use crate::producer::{block_on, Handle, ProducerConfig, Shared};

    /// A producer with a known topic layout and no sender task: `send` only accumulates.
    fn offline_producer(config: ProducerConfig, topics: &[(&str, usize)]) -> Producer {
        let mut acc = Accumulator {
            topics: Vec::new(),
            index: HashMap::new(),
            last_topic: 0,
            ready: VecDeque::new(),
            rng: XorShift::new(7),
        };
        for (name, n) in topics {
            acc.add_topic(name, *n);
        }
        let shared = Arc::new(Shared {
            cluster: Cluster::new(&config.bootstrap).expect("bootstrap"),
            config,
            producer_id: 9,
            producer_epoch: 0,
            acc: Mutex::new(acc),
            metadata: RwLock::new(ClusterInfo::default()),
            wake_sender: Notify::new(),
            buffered: AtomicUsize::new(0),
            space: Notify::new(),
            pending_batches: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: AtomicBool::new(false),
            failed_records: AtomicU64::new(0),
            first_error: Mutex::new(None),
        });
        Producer {
            inner: Arc::new(Handle {
                shared,
                task: Mutex::new(None),
            }),
        }
    }

    fn ready(p: &Producer) -> Vec<(i32, i32, usize)> {
        lock(&p.inner.shared.acc)
            .ready
            .iter()
            .map(|b| {
                (
                    b.partition,
                    b.records,
                    b.builder.as_ref().map_or(0, BatchBuilder::estimated_size),
                )
            })
            .collect()
    }

    #[test]
    fn batches_are_sealed_at_batch_size() {
        let p = offline_producer(
            ProducerConfig {
                batch_size: 1000,
                ..ProducerConfig::new("127.0.0.1:1")
            },
            &[("t", 1)],
        );
        block_on(async {
            for _ in 0..25 {
                p.send(ProducerRecord::new("t", vec![b'x'; 100]))
                    .await
                    .expect("send");
            }
        });
        let sealed = ready(&p);
        assert!(sealed.len() >= 2, "{sealed:?}");
        for (_, records, size) in &sealed {
            assert!(*size <= 1000, "batch of {size} bytes exceeds batch_size");
            assert!(*records >= 7, "batch of only {records} records");
        }
        let total: i32 = sealed.iter().map(|b| b.1).sum();
        assert!(total < 25, "the last batch should still be open");
        assert_eq!(
            p.inner.shared.pending_batches.load(Ordering::Acquire),
            sealed.len() + 1
        );
        let buffered: usize = sealed.iter().map(|b| b.2).sum();
        assert_eq!(p.inner.shared.buffered.load(Ordering::Acquire), buffered);
    }

    #[test]
    fn records_get_the_wall_clock_create_time_unless_they_carry_one() {
        let p = offline_producer(ProducerConfig::new("127.0.0.1:1"), &[("t", 1)]);
        let before = now_ms();
        let (a, b, c) = block_on(async {
            let a = p.send(ProducerRecord::new("t", "a")).await.expect("send");
            tokio::time::sleep(Duration::from_millis(30)).await;
            let b = p.send(ProducerRecord::new("t", "b")).await.expect("send");
            let mut own = ProducerRecord::new("t", "c");
            own.timestamp = Some(1_234);
            let c = p.send(own).await.expect("send");
            (a, b, c)
        });
        let after = now_ms();
        assert!(
            (before..=after).contains(&a.timestamp),
            "{before} <= {} <= {after}",
            a.timestamp
        );
        assert!(
            b.timestamp >= a.timestamp + 30 && b.timestamp <= after,
            "the second record was sent 30 ms later: {} then {} (done at {after})",
            a.timestamp,
            b.timestamp
        );
        assert_eq!(c.timestamp, 1_234, "an explicit timestamp is kept");
    }

    #[test]
    fn a_record_larger_than_batch_size_gets_its_own_batch() {
        let p = offline_producer(
            ProducerConfig {
                batch_size: 1000,
                ..ProducerConfig::new("127.0.0.1:1")
            },
            &[("t", 1)],
        );
        block_on(async {
            p.send(ProducerRecord::new("t", vec![b'x'; 10]))
                .await
                .expect("send");
            p.send(ProducerRecord::new("t", vec![b'y'; 5000]))
                .await
                .expect("send");
        });
        let sealed = ready(&p);
        assert_eq!(sealed.len(), 2, "{sealed:?}");
        assert_eq!(sealed[0].1, 1);
        assert_eq!(sealed[1].1, 1);
        assert!(sealed[1].2 > 5000);
    }

    #[test]
    fn linger_seals_only_batches_that_waited_long_enough() {
        let linger = Duration::from_millis(50);
        let p = offline_producer(
            ProducerConfig {
                linger,
                ..ProducerConfig::new("127.0.0.1:1")
            },
            &[("t", 4)],
        );
        block_on(async {
            for k in 0..20u8 {
                p.send(ProducerRecord::new("t", vec![1u8]).key(vec![k]))
                    .await
                    .expect("send");
            }
        });
        assert!(ready(&p).is_empty());
        let now = Instant::now();
        let mut acc = lock(&p.inner.shared.acc);
        let (bytes, next) = acc.seal_due(now, Some(linger));
        assert_eq!(bytes, 0);
        let next = next.expect("open batches are due later");
        assert!(next > now && next <= now + linger);
        let (bytes, next) = acc.seal_due(now + linger, Some(linger));
        assert!(bytes > 0);
        assert!(next.is_none());
        let partitions: std::collections::BTreeSet<i32> =
            acc.ready.iter().map(|b| b.partition).collect();
        let records: i32 = acc.ready.iter().map(|b| b.records).sum();
        assert_eq!(records, 20);
        assert!(partitions.len() > 1, "keys spread over partitions");
    }

    #[test]
    fn keyed_records_follow_murmur2_and_null_keys_stick() {
        let p = offline_producer(
            ProducerConfig {
                batch_size: 300,
                ..ProducerConfig::new("127.0.0.1:1")
            },
            &[("t", 8)],
        );
        block_on(async {
            let f = p
                .send(ProducerRecord::new("t", "v").key("foobar"))
                .await
                .expect("send");
            assert_eq!(f.partition(), partition_for_key(b"foobar", 8));
            let f = p
                .send(ProducerRecord::new("t", "v").partition(5))
                .await
                .expect("send");
            assert_eq!(f.partition(), 5);
            // No key: the same partition until its batch is sealed, then another one.
            let first = p
                .send(ProducerRecord::new("t", vec![0u8; 100]))
                .await
                .expect("send")
                .partition();
            let mut switched = None;
            for _ in 0..10 {
                let q = p
                    .send(ProducerRecord::new("t", vec![0u8; 100]))
                    .await
                    .expect("send")
                    .partition();
                if q != first {
                    switched = Some(q);
                    break;
                }
            }
            assert!(switched.is_some(), "sticky partition never moved on");
            let e = p
                .send(ProducerRecord::new("t", "v").partition(8))
                .await
                .expect_err("out of range");
            assert!(e
                .to_string()
                .contains("has 8 partitions, asked for partition 8"));
        });
    }

    #[test]
    fn sticky_batches_fill_up_before_the_partition_changes() {
        let p = offline_producer(
            ProducerConfig {
                batch_size: 1000,
                ..ProducerConfig::new("127.0.0.1:1")
            },
            &[("t", 4)],
        );
        block_on(async {
            for _ in 0..60 {
                p.send(ProducerRecord::new("t", vec![b'x'; 100]))
                    .await
                    .expect("send");
            }
        });
        let sealed = ready(&p);
        assert!(sealed.len() >= 5, "{sealed:?}");
        for w in sealed.windows(2) {
            assert_ne!(
                w[0].0, w[1].0,
                "each sealed sticky batch moves to another partition"
            );
        }
        for (_, records, _) in &sealed {
            assert!(*records >= 7, "no tiny batches when switching: {sealed:?}");
        }
    }
}
