//! The producer: batches records per partition, ships batches pipelined on one `ProduceStream`
//! per broker, retries, and (by default) is idempotent, as Kafka's producer is.
//!
//! Shape, chosen for low CPU per record:
//! - [`Producer::send`] appends the record straight into the partition's open
//!   [`BatchBuilder`] under one short mutex (no channel hop, no per-record allocation beyond the
//!   caller's own buffers) and hands back a [`DeliveryFuture`], which is an `Arc` clone of the
//!   batch's shared completion state plus the record's index.
//! - A background task (the *sender*) seals batches that lingered long enough, builds them
//!   (compression, CRC) and ships them on one bidirectional `ProduceStream` per broker
//!   connection, up to `max_in_flight` outstanding per partition. Answers come back in order;
//!   each resolves one batch (one lock, one wake-up per batch).
//! - Retries resend in-flight batches in order with their original sequence numbers, so the
//!   broker's idempotence check drops duplicates.
//!
//! Where things are: `config` (settings, `acks`), `record` (records in, delivery futures out),
//! `accumulator` (batching per partition), `sender` (the sender task), `retry` (retry rounds,
//! the delivery timeout, sequence numbers) and `connection` (one stream per broker).
//!
//! [`BatchBuilder`]: runnel_codec::BatchBuilder

mod accumulator;
mod config;
mod connection;
mod record;
mod retry;
mod sender;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use runnel_proto::v1::InitProducerIdRequest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::connection::{Cluster, ClusterInfo};
use crate::error::{Error, Result};
use crate::partitioner::XorShift;

use accumulator::{Accumulator, Append, Batch};
use record::BatchAck;
use sender::Sender;

pub use config::{Acks, LatencyHistogram, ProducerConfig, MAX_IDEMPOTENT_IN_FLIGHT};
pub use record::{DeliveryFuture, ProducerRecord, RecordMetadata};

/// Locks a std mutex, ignoring poisoning (no invariant of ours spans a panic).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the producer handles and the sender task.
struct Shared {
    config: ProducerConfig,
    cluster: Cluster,
    producer_id: i64,
    producer_epoch: i16,
    acc: Mutex<Accumulator>,
    metadata: RwLock<ClusterInfo>,
    /// Wakes the sender: a batch was opened or sealed, a flush or close was asked for.
    wake_sender: Notify,
    /// Bytes of sealed, unresolved batches (back-pressure).
    buffered: AtomicUsize,
    space: Notify,
    /// Batches opened and not yet resolved (flush waits for zero).
    pending_batches: AtomicUsize,
    idle: Notify,
    closing: AtomicBool,
    /// Records whose delivery failed, and the first error seen.
    failed_records: AtomicU64,
    first_error: Mutex<Option<Error>>,
}

impl Shared {
    fn complete(&self, batch: &mut Batch, result: Result<BatchAck>) {
        if !batch.resolved {
            batch.resolved = true;
            if let (Some(h), true) = (&self.config.latency, result.is_ok()) {
                if !batch.enqueued.is_empty() {
                    let now = Instant::now();
                    let mut h = lock(h);
                    // Records were enqueued in order, many within the same microsecond: equal
                    // latencies are recorded together.
                    let mut run: Option<(u64, u64)> = None;
                    for t in &batch.enqueued {
                        let us = now.saturating_duration_since(*t).as_micros() as u64;
                        run = match run {
                            Some((v, n)) if v == us => Some((v, n + 1)),
                            Some((v, n)) => {
                                h.saturating_record_n(v, n);
                                Some((us, 1))
                            }
                            None => Some((us, 1)),
                        };
                    }
                    if let Some((v, n)) = run {
                        h.saturating_record_n(v, n);
                    }
                }
            }
            if let Err(e) = &result {
                self.failed_records
                    .fetch_add(batch.records as u64, Ordering::AcqRel);
                lock(&self.first_error).get_or_insert_with(|| e.clone());
            }
            batch.shared.resolve(result);
            self.buffered.fetch_sub(batch.accounted, Ordering::AcqRel);
            batch.accounted = 0;
            self.space.notify_waiters();
            if self.pending_batches.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.idle.notify_waiters();
            }
        }
    }
}

/// A Kafka-style producer. Cheap to clone: clones share the batches and connections.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Handle>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.shared.config)
            .field("producer_id", &self.inner.shared.producer_id)
            .finish()
    }
}

/// Owns the sender task; dropping the last producer handle lets it deliver what is left and
/// stop.
struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_sender.notify_one();
    }
}

impl Producer {
    /// Connects to the bootstrap brokers, fetches the cluster metadata and, when idempotent,
    /// a producer id; then starts the sender task.
    pub async fn connect(config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let cluster = Cluster::new(&config.bootstrap)?;
        let info = cluster.cluster_info(&[]).await?;
        let (producer_id, producer_epoch) = if config.idempotent {
            let resp = init_producer_id(&cluster, config.delivery_timeout).await?;
            let epoch = i16::try_from(resp.producer_epoch).map_err(|_| {
                Error::Protocol(format!(
                    "producer epoch {} does not fit 16 bits",
                    resp.producer_epoch
                ))
            })?;
            (resp.producer_id, epoch)
        } else {
            (
                runnel_codec::NO_PRODUCER_ID,
                runnel_codec::NO_PRODUCER_EPOCH,
            )
        };
        let mut acc = Accumulator {
            topics: Vec::new(),
            index: HashMap::new(),
            last_topic: 0,
            ready: VecDeque::new(),
            rng: XorShift::from_entropy(),
        };
        for (name, t) in &info.topics {
            acc.add_topic(name, t.partitions.len());
        }
        let shared = Arc::new(Shared {
            config,
            cluster,
            producer_id,
            producer_epoch,
            acc: Mutex::new(acc),
            metadata: RwLock::new(info),
            wake_sender: Notify::new(),
            buffered: AtomicUsize::new(0),
            space: Notify::new(),
            pending_batches: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: AtomicBool::new(false),
            failed_records: AtomicU64::new(0),
            first_error: Mutex::new(None),
        });
        let task = tokio::spawn(Sender::new(shared.clone()).run());
        Ok(Producer {
            inner: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The producer id the broker assigned (-1 when not idempotent).
    pub fn producer_id(&self) -> i64 {
        self.inner.shared.producer_id
    }

    /// How many records failed delivery so far, and the first error (for callers that do not
    /// keep every delivery future, such as benchmarks and the console producer).
    pub fn delivery_failures(&self) -> (u64, Option<Error>) {
        let shared = &self.inner.shared;
        (
            shared.failed_records.load(Ordering::Acquire),
            lock(&shared.first_error).clone(),
        )
    }

    /// Number of partitions of `topic` as the producer knows it (fetching metadata if needed).
    pub async fn partition_count(&self, topic: &str) -> Result<usize> {
        if let Some(n) = self
            .inner
            .shared
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .partition_count(topic)
        {
            return Ok(n);
        }
        self.learn_topic(topic).await
    }

    /// Enqueues a record. Waits only when the producer's buffer is full (back-pressure) or the
    /// topic's metadata must be fetched first. The returned future resolves when the record is
    /// acknowledged; it need not be awaited (use [`flush`](Self::flush)).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        // A caller sending in a tight loop rarely waits here, and would hold its thread until
        // the buffer is full; the sender and the connection, which ship and acknowledge what it
        // appends, often share that thread. Every so many sends it yields to them.
        tokio::task::coop::consume_budget().await;
        let shared = &self.inner.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if shared.buffered.load(Ordering::Acquire) >= shared.config.buffer_memory {
            self.wait_for_space().await?;
        }
        match self.try_append(&record)? {
            Append::Done(f) => Ok(f),
            Append::UnknownTopic => {
                self.learn_topic(&record.topic).await?;
                match self.try_append(&record)? {
                    Append::Done(f) => Ok(f),
                    Append::UnknownTopic => Err(Error::UnknownTopic(record.topic.to_string())),
                }
            }
        }
    }

    async fn wait_for_space(&self) -> Result<()> {
        let shared = &self.inner.shared;
        loop {
            let notified = shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.buffered.load(Ordering::Acquire) < shared.config.buffer_memory {
                return Ok(());
            }
            if shared.closing.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            notified.await;
        }
    }

    /// Fetches metadata of `topic` into the producer's view; the topic's partition count.
    async fn learn_topic(&self, topic: &str) -> Result<usize> {
        let shared = &self.inner.shared;
        let info = shared.cluster.cluster_info(&[topic.to_owned()]).await?;
        let Some(t) = info.topics.get(topic) else {
            return Err(Error::UnknownTopic(topic.to_owned()));
        };
        let n = t.partitions.len();
        {
            let mut md = shared.metadata.write().unwrap_or_else(|e| e.into_inner());
            md.brokers.extend(info.brokers.clone());
            md.topics.insert(topic.to_owned(), t.clone());
        }
        lock(&shared.acc).add_topic(topic, n);
        Ok(n)
    }

    /// Ships every open batch now and waits until everything sent so far is acknowledged (or
    /// failed; failures are reported by the delivery futures).
    pub async fn flush(&self) {
        let shared = &self.inner.shared;
        {
            let mut acc = lock(&shared.acc);
            let (sealed, _) = acc.seal_due(Instant::now(), None);
            shared.buffered.fetch_add(sealed, Ordering::AcqRel);
        }
        shared.wake_sender.notify_one();
        loop {
            let idle = shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if shared.pending_batches.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Flushes, then stops the sender task. Sends after `close` fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.flush().await;
        let shared = &self.inner.shared;
        shared.closing.store(true, Ordering::Release);
        shared.wake_sender.notify_one();
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Runs a future to completion on a fresh current-thread runtime (for the unit tests).
#[cfg(test)]
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Asks the bootstrap brokers in turn for a producer id, again after a backoff while they
/// answer with a retriable error (a broker whose block of ids is used up, or that waits for its
/// first block, answers UNAVAILABLE until the controller sends one), for at most `patience`.
async fn init_producer_id(
    cluster: &Cluster,
    patience: std::time::Duration,
) -> Result<runnel_proto::v1::InitProducerIdResponse> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut attempt = 0u32;
    loop {
        let mut last = None;
        for address in cluster.bootstrap_addresses() {
            let answer = match cluster.broker_at(address).await {
                Ok(mut b) => b
                    .init_producer_id(InitProducerIdRequest::default())
                    .await
                    .map_err(|s| Error::rpc("init producer id (idempotent producer)", s)),
                Err(e) => Err(e),
            };
            match answer {
                Ok(r) => return Ok(r.into_inner()),
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        attempt += 1;
        let wait = retry::backoff(attempt);
        match last {
            Some(e) if tokio::time::Instant::now() + wait > deadline => return Err(e),
            Some(_) => tokio::time::sleep(wait).await,
            None => return Err(Error::Config("no bootstrap address".into())),
        }
    }
}
