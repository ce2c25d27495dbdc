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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use runnel_codec::{BatchBuilder, Compression, Header, ProducerInfo, NO_SEQUENCE};
use runnel_proto::v1::{InitProducerIdRequest, ProduceRequest, ProduceResponse};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::connection::{broker_client, transport_message, Cluster, ClusterInfo};
use crate::error::{Error, Result};
use crate::partitioner::{next_sticky, partition_for_key, XorShift};

/// How many acknowledgements the producer waits for (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=all`: durable on every in-sync replica.
    #[default]
    All,
    /// `acks=1`: appended by the leader.
    Leader,
    /// `acks=0`: fire and forget; delivery futures resolve with offset -1 once shipped.
    None,
}

impl Acks {
    fn wire(self) -> runnel_proto::v1::Acks {
        match self {
            Acks::All => runnel_proto::v1::Acks::All,
            Acks::Leader => runnel_proto::v1::Acks::Leader,
            Acks::None => runnel_proto::v1::Acks::None,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "all" | "-1" => Ok(Acks::All),
            "1" | "leader" => Ok(Acks::Leader),
            "0" | "none" => Ok(Acks::None),
            _ => Err(Error::Config(format!("acks `{s}` is not one of all, 1, 0"))),
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        })
    }
}

/// The most batches an idempotent producer may have in flight per partition: the broker
/// remembers the last 64 batches of each producer to recognise retries.
pub const MAX_IDEMPOTENT_IN_FLIGHT: usize = 64;

/// A shared latency histogram (microseconds) the producer records into.
pub type LatencyHistogram = Arc<Mutex<Histogram<u64>>>;

/// Producer settings, in Kafka's terms.
#[derive(Clone)]
pub struct ProducerConfig {
    /// `host:port[,host:port…]` of one or more brokers.
    pub bootstrap: String,
    /// Acknowledgements to wait for.
    pub acks: Acks,
    /// Target size of a batch in bytes (uncompressed). Keep it below 128 KiB: larger batches
    /// are stored out of line by the broker's storage.
    pub batch_size: usize,
    /// How long a batch may wait for more records before it is shipped.
    pub linger: Duration,
    /// Compression of batches.
    pub compression: Compression,
    /// Idempotent producer (producer id + sequence numbers; the broker drops duplicates).
    pub idempotent: bool,
    /// Most batches outstanding per partition (pipelined on the connection). Default 48, not
    /// Kafka's 5: an `acks=all` answer here waits for the data to be on disk, so the more
    /// batches share one flush, the more a single producer writes (on the benchmark machine,
    /// 1 KiB records went from ~150 MB/s with 16 to ~190 MB/s with 48). At most 64: the broker
    /// remembers 64 batches per producer for deduplication, and 48 leaves a margin.
    pub max_in_flight: usize,
    /// Most resends of a batch; delivery is bounded by `delivery_timeout` as well.
    pub retries: u32,
    /// Time after which an unacknowledged record fails (from `send`).
    pub delivery_timeout: Duration,
    /// Time a request may stay unanswered before the connection is considered broken.
    pub request_timeout: Duration,
    /// Bytes of sealed batches waiting or in flight before `send` waits (back-pressure).
    pub buffer_memory: usize,
    /// When set, every record's enqueue-to-acknowledgement time is recorded (µs).
    pub latency: Option<LatencyHistogram>,
}

impl fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("bootstrap", &self.bootstrap)
            .field("acks", &self.acks)
            .field("batch_size", &self.batch_size)
            .field("linger", &self.linger)
            .field("compression", &self.compression)
            .field("idempotent", &self.idempotent)
            .field("max_in_flight", &self.max_in_flight)
            .field("retries", &self.retries)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("buffer_memory", &self.buffer_memory)
            .field("latency", &self.latency.is_some())
            .finish()
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap: "127.0.0.1:9092".into(),
            acks: Acks::All,
            batch_size: 64 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            idempotent: true,
            max_in_flight: 48,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            buffer_memory: 32 << 20,
            latency: None,
        }
    }
}

impl ProducerConfig {
    /// Defaults with the given bootstrap.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ProducerConfig {
            bootstrap: bootstrap.into(),
            ..Default::default()
        }
    }

    /// Checks the values, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > (64 << 20) {
            return Err(Error::Config(format!(
                "batch_size must be between 1 and 64 MiB, got {}",
                self.batch_size
            )));
        }
        if self.idempotent && !(1..=MAX_IDEMPOTENT_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(Error::Config(format!(
                "max_in_flight must be between 1 and {MAX_IDEMPOTENT_IN_FLIGHT} for an idempotent producer (the broker deduplicates that many batches), got {}",
                self.max_in_flight
            )));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config("max_in_flight must be at least 1".into()));
        }
        if self.buffer_memory < self.batch_size {
            return Err(Error::Config(format!(
                "buffer_memory ({}) must be at least batch_size ({})",
                self.buffer_memory, self.batch_size
            )));
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// The topic (an `Arc<str>` so that sending many records to one topic copies nothing).
    pub topic: Arc<str>,
    /// The partition; `None` lets the partitioner choose (murmur2 of the key, or sticky).
    pub partition: Option<i32>,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Create time in ms since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        // Every field spelled out: `..Default::default()` would make a default `Arc<str>` (a
        // shared empty one, reference-counted) only to drop it, twice per record on hot paths.
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the create time (ms since the epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 with `acks=0`.
    pub offset: i64,
    /// The record's timestamp: its create time, or the broker's append time for
    /// log-append-time topics.
    pub timestamp: i64,
}

/// What the broker answered for a whole batch.
#[derive(Debug, Clone, Copy)]
struct BatchAck {
    base_offset: i64,
    log_append_time: i64,
}

/// Completion state of one batch, shared by the delivery futures of its records.
struct BatchShared {
    topic: Arc<str>,
    partition: i32,
    result: OnceLock<Result<BatchAck>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchShared {
    fn new(topic: Arc<str>, partition: i32) -> Self {
        BatchShared {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    fn resolve(&self, result: Result<BatchAck>) {
        let _ = self.result.set(result);
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves to the record's [`RecordMetadata`] once its batch is acknowledged (or to the error
/// that failed it). Dropping it does not cancel the send.
pub struct DeliveryFuture {
    batch: Arc<BatchShared>,
    index: u32,
    timestamp: i64,
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.batch.topic)
            .field("partition", &self.batch.partition)
            .field("index", &self.index)
            .field("done", &self.batch.result.get().is_some())
            .finish()
    }
}

impl DeliveryFuture {
    /// The partition the record was appended to.
    pub fn partition(&self) -> i32 {
        self.batch.partition
    }

    fn output(&self, r: &Result<BatchAck>) -> Result<RecordMetadata> {
        match r {
            Ok(ack) => Ok(RecordMetadata {
                topic: self.batch.topic.to_string(),
                partition: self.batch.partition,
                offset: if ack.base_offset >= 0 {
                    ack.base_offset + i64::from(self.index)
                } else {
                    -1
                },
                timestamp: if ack.log_append_time >= 0 {
                    ack.log_append_time
                } else {
                    self.timestamp
                },
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.batch.result.get() {
            return Poll::Ready(self.output(r));
        }
        {
            let mut wakers = lock(&self.batch.wakers);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        // Re-check: `resolve` sets the result before it takes the wakers.
        match self.batch.result.get() {
            Some(r) => Poll::Ready(self.output(r)),
            None => Poll::Pending,
        }
    }
}

/// Locks a std mutex, ignoring poisoning (no invariant of ours spans a panic).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
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
struct Batch {
    topic: Arc<str>,
    partition: i32,
    /// Until first shipped: the records. After: `None`, and `data` holds the built batch.
    builder: Option<BatchBuilder>,
    data: Option<Bytes>,
    records: i32,
    base_sequence: i32,
    shared: Arc<BatchShared>,
    created: Instant,
    /// The wall clock when the batch was opened, in ms since the epoch.
    created_ms: i64,
    /// Enqueue instants for the latency histogram (empty unless enabled).
    enqueued: Vec<Instant>,
    /// Bytes counted in `buffered` while sealed and unresolved.
    accounted: usize,
    attempts: u32,
    last_error: Option<Error>,
    /// acks=0 batches resolve when shipped.
    resolved: bool,
}

impl Batch {
    fn context(&self) -> String {
        format!("produce to `{}`/{}", self.topic, self.partition)
    }
}

/// Open batches of one topic.
struct TopicAcc {
    name: Arc<str>,
    partitions: Vec<Option<Batch>>,
    /// The partition records without a key stick to, until its batch is sealed.
    sticky: Option<i32>,
    last_sticky: Option<i32>,
}

/// The per-producer accumulator `send` appends to.
struct Accumulator {
    topics: Vec<TopicAcc>,
    index: HashMap<Arc<str>, usize>,
    last_topic: usize,
    /// Sealed batches for the sender to pick up, in sealing order.
    ready: VecDeque<Batch>,
    rng: XorShift,
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

    fn add_topic(&mut self, name: &str, partitions: usize) {
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
    fn seal_due(&mut self, now: Instant, linger: Option<Duration>) -> (usize, Option<Instant>) {
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

/// Outcome of one append attempt.
enum Append {
    Done(DeliveryFuture),
    UnknownTopic,
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
            let resp = cluster
                .broker()
                .await?
                .init_producer_id(InitProducerIdRequest::default())
                .await
                .map_err(|s| Error::rpc("init producer id (idempotent producer)", s))?
                .into_inner();
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

    fn try_append(&self, record: &ProducerRecord) -> Result<Append> {
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

// ---------------------------------------------------------------------------------------------
// The sender task.

enum Event {
    Response {
        conn: u64,
        response: ProduceResponse,
    },
    ConnFailed {
        conn: u64,
        error: Error,
    },
    Metadata(Result<ClusterInfo>),
}

/// One `ProduceStream` on one broker connection.
struct Conn {
    address: String,
    requests: mpsc::UnboundedSender<ProduceRequest>,
    /// (correlation id, partition index, sent at), in send order.
    in_flight: VecDeque<(u64, usize, Instant)>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A retry round of one partition: the batches that must be resent once every in-flight batch
/// of the partition has been answered.
struct Round {
    /// Sequence the first resent batch gets; later ones follow it (re-numbering over batches
    /// that failed for good, which the broker never appended).
    start_sequence: i32,
    retry: Vec<Batch>,
    refresh_metadata: bool,
}

struct PartitionState {
    topic: Arc<str>,
    partition: i32,
    queue: VecDeque<Batch>,
    in_flight: VecDeque<Batch>,
    conn: Option<u64>,
    /// The metadata generation `conn` was chosen under.
    address_generation: u64,
    next_sequence: i32,
    /// When set, batches with a sequence already are re-numbered from this cursor.
    resequence: Option<i32>,
    round: Option<Round>,
    backoff_until: Option<Instant>,
    attempts: u32,
}

struct Sender {
    shared: Arc<Shared>,
    partitions: Vec<PartitionState>,
    index: HashMap<(Arc<str>, i32), usize>,
    conns: HashMap<u64, Conn>,
    conn_by_address: HashMap<String, u64>,
    next_conn: u64,
    next_correlation: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    metadata_generation: u64,
    refreshing: bool,
    refresh_wanted: bool,
    last_refresh: Instant,
    /// Reused buffer for batches taken from the accumulator.
    scratch: VecDeque<Batch>,
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(4);
    (BACKOFF_BASE * factor).min(BACKOFF_MAX)
}

impl Sender {
    fn new(shared: Arc<Shared>) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Sender {
            shared,
            partitions: Vec::new(),
            index: HashMap::new(),
            conns: HashMap::new(),
            conn_by_address: HashMap::new(),
            next_conn: 1,
            next_correlation: 1,
            events_tx,
            events,
            metadata_generation: 0,
            refreshing: false,
            refresh_wanted: false,
            last_refresh: Instant::now(),
            scratch: VecDeque::new(),
        }
    }

    async fn run(mut self) {
        let linger = self.shared.config.linger;
        loop {
            let now = Instant::now();
            let closing = self.shared.closing.load(Ordering::Acquire);
            let next_linger = {
                let mut acc = lock(&self.shared.acc);
                let (bytes, next) = acc.seal_due(now, (!closing).then_some(linger));
                if bytes > 0 {
                    self.shared.buffered.fetch_add(bytes, Ordering::AcqRel);
                }
                std::mem::swap(&mut acc.ready, &mut self.scratch);
                next
            };
            while let Some(batch) = self.scratch.pop_front() {
                self.enqueue(batch);
            }
            self.expire(now);
            self.check_request_timeouts(now);
            self.dispatch(now);
            if now.duration_since(self.last_refresh) > METADATA_MAX_AGE {
                self.refresh_wanted = true;
            }
            if self.refresh_wanted && !self.refreshing {
                self.start_refresh();
            }
            if closing && next_linger.is_none() && self.idle() {
                break;
            }
            let mut wake_at = now + Duration::from_secs(1);
            if let Some(t) = next_linger {
                wake_at = wake_at.min(t);
            }
            for p in &self.partitions {
                if let (Some(t), false) = (p.backoff_until, p.queue.is_empty()) {
                    wake_at = wake_at.min(t);
                }
            }
            tokio::select! {
                _ = self.shared.wake_sender.notified() => {}
                ev = self.events.recv() => {
                    if let Some(ev) = ev {
                        self.handle(ev);
                        while let Ok(ev) = self.events.try_recv() {
                            self.handle(ev);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
        // A send that raced with close: nothing will ship it any more.
        let mut acc = lock(&self.shared.acc);
        let _ = acc.seal_due(Instant::now(), None);
        let left: Vec<Batch> = acc.ready.drain(..).collect();
        drop(acc);
        for mut b in left {
            self.shared.complete(&mut b, Err(Error::Closed));
        }
    }

    fn idle(&self) -> bool {
        self.partitions
            .iter()
            .all(|p| p.queue.is_empty() && p.in_flight.is_empty() && p.round.is_none())
    }

    fn enqueue(&mut self, batch: Batch) {
        let key = (batch.topic.clone(), batch.partition);
        let pi = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.partitions.len();
                self.partitions.push(PartitionState {
                    topic: batch.topic.clone(),
                    partition: batch.partition,
                    queue: VecDeque::new(),
                    in_flight: VecDeque::new(),
                    conn: None,
                    address_generation: u64::MAX,
                    next_sequence: 0,
                    resequence: None,
                    round: None,
                    backoff_until: None,
                    attempts: 0,
                });
                self.index.insert(key, i);
                i
            }
        };
        self.partitions[pi].queue.push_back(batch);
    }

    /// Fails queued batches that outlived the delivery timeout (oldest first, so order holds).
    fn expire(&mut self, now: Instant) {
        let timeout = self.shared.config.delivery_timeout;
        for p in &mut self.partitions {
            while p.queue.front().is_some_and(|b| b.created + timeout <= now) {
                let Some(mut batch) = p.queue.pop_front() else {
                    break;
                };
                if batch.data.is_some() && batch.base_sequence != NO_SEQUENCE {
                    // Never appended (it was answered with an error or never reached the broker
                    // for good): later batches take over its sequence numbers.
                    p.resequence.get_or_insert(batch.base_sequence);
                }
                let error = Error::DeliveryTimeout {
                    context: batch.context(),
                    timeout_ms: timeout.as_millis() as u64,
                    last_error: batch
                        .last_error
                        .as_ref()
                        .map_or_else(|| "none (still queued)".to_owned(), ToString::to_string),
                };
                self.shared.complete(&mut batch, Err(error));
            }
        }
    }

    fn check_request_timeouts(&mut self, now: Instant) {
        let timeout = self.shared.config.request_timeout;
        let stuck: Vec<(u64, String)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.in_flight.front().is_some_and(|f| f.2 + timeout <= now))
            .map(|(id, c)| (*id, c.address.clone()))
            .collect();
        for (id, address) in stuck {
            let error = Error::Transport {
                address,
                message: format!(
                    "no answer within the request timeout of {} ms",
                    timeout.as_millis()
                ),
            };
            self.fail_conn(id, error, now);
        }
    }

    fn dispatch(&mut self, now: Instant) {
        let max_in_flight = self.shared.config.max_in_flight;
        for pi in 0..self.partitions.len() {
            loop {
                let p = &self.partitions[pi];
                if p.queue.is_empty() || p.round.is_some() || p.in_flight.len() >= max_in_flight {
                    break;
                }
                if p.backoff_until.is_some_and(|t| t > now) {
                    break;
                }
                let Some(conn) = self.conn_for(pi) else {
                    break;
                };
                let Some(mut batch) = self.partitions[pi].queue.pop_front() else {
                    break;
                };
                if let Err(e) = self.prepare(pi, &mut batch) {
                    self.shared.complete(&mut batch, Err(e));
                    continue;
                }
                self.ship(pi, conn, batch, now);
            }
        }
    }

    /// The connection for partition `pi`: the one its in-flight batches went to, else the
    /// one to its leader (opened on demand).
    fn conn_for(&mut self, pi: usize) -> Option<u64> {
        let generation = self.metadata_generation;
        let p = &mut self.partitions[pi];
        if let Some(id) = p.conn {
            if !p.in_flight.is_empty()
                || (p.address_generation == generation && self.conns.contains_key(&id))
            {
                return Some(id);
            }
        }
        let address = self
            .shared
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leader_address(
                &p.topic,
                p.partition,
                self.shared.cluster.bootstrap_address(),
            );
        p.address_generation = generation;
        if let Some(&id) = self.conn_by_address.get(&address) {
            p.conn = Some(id);
            return Some(id);
        }
        match self.open_conn(&address) {
            Ok(id) => {
                self.partitions[pi].conn = Some(id);
                Some(id)
            }
            Err(e) => {
                tracing::warn!(%address, error = %e, "cannot open a produce stream");
                let p = &mut self.partitions[pi];
                p.attempts += 1;
                p.backoff_until = Some(Instant::now() + backoff(p.attempts));
                if let Some(b) = p.queue.front_mut() {
                    b.last_error = Some(e);
                }
                None
            }
        }
    }

    fn open_conn(&mut self, address: &str) -> Result<u64> {
        let channel = crate::connection::connect_lazy(address)?;
        let id = self.next_conn;
        self.next_conn += 1;
        let (requests, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_conn(
            id,
            address.to_owned(),
            channel,
            rx,
            self.events_tx.clone(),
        ));
        self.conns.insert(
            id,
            Conn {
                address: address.to_owned(),
                requests,
                in_flight: VecDeque::new(),
                task,
            },
        );
        self.conn_by_address.insert(address.to_owned(), id);
        tracing::debug!(%address, conn = id, "opened produce stream");
        Ok(id)
    }

    /// Numbers (idempotent producer) and builds the batch on its first shipping; re-numbers a
    /// resent batch when earlier ones were dropped.
    fn prepare(&mut self, pi: usize, batch: &mut Batch) -> Result<()> {
        let shared = &*self.shared;
        let idempotent = shared.producer_id >= 0;
        let p = &mut self.partitions[pi];
        if batch.data.is_none() {
            let sequence = if idempotent {
                let s = p.resequence.take().unwrap_or(p.next_sequence);
                p.next_sequence = increment_sequence(s, batch.records);
                s
            } else {
                NO_SEQUENCE
            };
            batch.base_sequence = sequence;
            let Some(builder) = batch.builder.take() else {
                return Err(Error::Protocol("batch without records".into()));
            };
            let data = builder
                .with_producer(ProducerInfo {
                    producer_id: shared.producer_id,
                    producer_epoch: shared.producer_epoch,
                    base_sequence: sequence,
                })
                .build()
                .map_err(|source| Error::Codec {
                    context: batch.context(),
                    source,
                })?;
            batch.data = Some(data);
        } else if idempotent {
            if let Some(cursor) = p.resequence {
                if cursor != batch.base_sequence {
                    if let Some(data) = &batch.data {
                        batch.data = Some(patch_sequence(data, cursor));
                    }
                    batch.base_sequence = cursor;
                }
                let next = increment_sequence(cursor, batch.records);
                p.resequence = Some(next);
                p.next_sequence = next;
            }
        }
        Ok(())
    }

    fn ship(&mut self, pi: usize, conn_id: u64, mut batch: Batch, now: Instant) {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let request = ProduceRequest {
            topic: batch.topic.to_string(),
            partition: Some(batch.partition),
            acks: self.shared.config.acks.wire() as i32,
            batches: batch.data.clone().unwrap_or_default(),
            correlation_id,
            ..Default::default()
        };
        let sent = match self.conns.get_mut(&conn_id) {
            Some(conn) if conn.requests.send(request).is_ok() => {
                conn.in_flight.push_back((correlation_id, pi, now));
                true
            }
            _ => false,
        };
        batch.attempts += 1;
        if self.shared.config.acks == Acks::None && sent {
            self.shared.complete(
                &mut batch,
                Ok(BatchAck {
                    base_offset: -1,
                    log_append_time: -1,
                }),
            );
        }
        let p = &mut self.partitions[pi];
        p.in_flight.push_back(batch);
        p.conn = Some(conn_id);
        if !sent {
            let error = Error::Transport {
                address: self
                    .conns
                    .get(&conn_id)
                    .map(|c| c.address.clone())
                    .unwrap_or_default(),
                message: "the produce stream is closed".into(),
            };
            self.fail_conn(conn_id, error, now);
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Response { conn, response } => self.on_response(conn, response, now),
            Event::ConnFailed { conn, error } => {
                if self.conns.contains_key(&conn) {
                    tracing::warn!(conn, error = %error, "produce stream failed");
                    self.fail_conn(conn, error, now);
                }
            }
            Event::Metadata(result) => {
                self.refreshing = false;
                self.last_refresh = now;
                match result {
                    Ok(info) => self.apply_metadata(info),
                    Err(e) => tracing::warn!(error = %e, "metadata refresh failed"),
                }
            }
        }
    }

    fn on_response(&mut self, conn_id: u64, response: ProduceResponse, now: Instant) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return; // a connection given up on already
        };
        let Some(&(correlation_id, pi, _)) = conn.in_flight.front() else {
            let e = Error::Protocol(format!(
                "answer with correlation id {} but no request is outstanding",
                response.correlation_id
            ));
            self.fail_conn(conn_id, e, now);
            return;
        };
        if correlation_id != response.correlation_id {
            let e = Error::Protocol(format!(
                "answer with correlation id {} while {} was expected next",
                response.correlation_id, correlation_id
            ));
            self.fail_conn(conn_id, e, now);
            return;
        }
        conn.in_flight.pop_front();
        let Some(mut batch) = self.partitions[pi].in_flight.pop_front() else {
            return;
        };
        match response.error {
            None => {
                self.partitions[pi].attempts = 0;
                self.partitions[pi].backoff_until = None;
                let ack = BatchAck {
                    base_offset: response.base_offset,
                    log_append_time: response.log_append_time_ms,
                };
                self.shared.complete(&mut batch, Ok(ack));
            }
            Some(err) => {
                // The broker's message usually names the topic and partition already.
                let context = if err.message.contains(&format!("`{}`", batch.topic)) {
                    String::new()
                } else {
                    batch.context()
                };
                let status = tonic::Status::new(tonic::Code::from_i32(err.code), err.message);
                let error = Error::rpc(context, status);
                self.on_batch_error(pi, batch, error, now);
            }
        }
        if self.partitions[pi].in_flight.is_empty() {
            self.finish_round(pi, now);
        }
    }

    /// A batch failed: keep it for the partition's retry round, or fail it for good.
    fn on_batch_error(&mut self, pi: usize, mut batch: Batch, error: Error, now: Instant) {
        let config = &self.shared.config;
        if batch.resolved {
            // acks=0: nobody waits for it any more.
            tracing::warn!(error = %error, "acks=0 batch failed");
            return;
        }
        let p = &mut self.partitions[pi];
        let code = error.code();
        let retriable =
            error.is_retriable() || (code == Some(tonic::Code::Aborted) && p.round.is_some());
        let round = p.round.get_or_insert_with(|| Round {
            start_sequence: batch.base_sequence,
            retry: Vec::new(),
            refresh_metadata: false,
        });
        if retriable
            && batch.attempts <= config.retries
            && batch.created + config.delivery_timeout > now
        {
            round.refresh_metadata |= matches!(
                code,
                Some(
                    tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::Unavailable
                )
            );
            tracing::debug!(error = %error, attempts = batch.attempts, "will retry batch");
            batch.last_error = Some(error);
            round.retry.push(batch);
        } else {
            let error = if retriable {
                Error::DeliveryTimeout {
                    context: batch.context(),
                    timeout_ms: config.delivery_timeout.as_millis() as u64,
                    last_error: error.to_string(),
                }
            } else {
                error
            };
            self.shared.complete(&mut batch, Err(error));
        }
    }

    /// Once a partition has no batch in flight, its retry round ends: the batches to resend go
    /// back to the front of its queue, in order, after a backoff.
    fn finish_round(&mut self, pi: usize, now: Instant) {
        let idempotent = self.shared.producer_id >= 0;
        let p = &mut self.partitions[pi];
        let Some(round) = p.round.take() else {
            return;
        };
        if idempotent && round.start_sequence != NO_SEQUENCE {
            p.resequence = Some(round.start_sequence);
        }
        if !round.retry.is_empty() {
            for b in round.retry.into_iter().rev() {
                p.queue.push_front(b);
            }
            p.attempts += 1;
            p.backoff_until = Some(now + backoff(p.attempts));
        }
        if round.refresh_metadata {
            self.refresh_wanted = true;
        }
    }

    /// A connection broke: every batch in flight on it is resent (same sequences, so the
    /// broker drops what it already has), or failed if the error is not retriable.
    fn fail_conn(&mut self, conn_id: u64, error: Error, now: Instant) {
        let Some(conn) = self.conns.remove(&conn_id) else {
            return;
        };
        if self.conn_by_address.get(&conn.address) == Some(&conn_id) {
            self.conn_by_address.remove(&conn.address);
        }
        drop(conn);
        for pi in 0..self.partitions.len() {
            if self.partitions[pi].conn != Some(conn_id) {
                continue;
            }
            self.partitions[pi].conn = None;
            let batches: Vec<Batch> = self.partitions[pi].in_flight.drain(..).collect();
            for batch in batches {
                self.on_batch_error(pi, batch, error.clone(), now);
            }
            self.finish_round(pi, now);
        }
        self.refresh_wanted = true;
    }

    fn start_refresh(&mut self) {
        self.refresh_wanted = false;
        self.refreshing = true;
        let cluster = self.shared.cluster.clone();
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = cluster.cluster_info(&[]).await;
            let _ = tx.send(Event::Metadata(result));
        });
    }

    fn apply_metadata(&mut self, info: ClusterInfo) {
        {
            let mut acc = lock(&self.shared.acc);
            for (name, t) in &info.topics {
                acc.add_topic(name, t.partitions.len());
            }
        }
        for p in &mut self.partitions {
            let error = match info.topics.get(&*p.topic) {
                None => Some(Error::UnknownTopic(p.topic.to_string())),
                Some(t) if !t.partitions.iter().any(|m| m.partition == p.partition) => {
                    Some(Error::UnknownPartition {
                        topic: p.topic.to_string(),
                        partition: p.partition,
                        partitions: t.partitions.len(),
                    })
                }
                Some(_) => None,
            };
            if let Some(error) = error {
                while let Some(mut b) = p.queue.pop_front() {
                    if b.data.is_some() && b.base_sequence != NO_SEQUENCE {
                        p.resequence.get_or_insert(b.base_sequence);
                    }
                    self.shared.complete(&mut b, Err(error.clone()));
                }
            }
        }
        *self
            .shared
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner()) = info;
        self.metadata_generation += 1;
    }
}

/// How often the sender refreshes metadata without being asked (Kafka's `metadata.max.age.ms`).
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// Drives one `ProduceStream`: forwards the broker's answers to the sender, then reports how
/// the stream ended.
async fn run_conn(
    id: u64,
    address: String,
    channel: tonic::transport::Channel,
    requests: mpsc::UnboundedReceiver<ProduceRequest>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut client = broker_client(channel);
    let error = match client
        .produce_stream(UnboundedReceiverStream::new(requests))
        .await
    {
        Err(status) => stream_error(&address, status),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if events.send(Event::Response { conn: id, response }).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        break Error::Transport {
                            address: address.clone(),
                            message: "the broker ended the produce stream".into(),
                        }
                    }
                    Err(status) => break stream_error(&address, status),
                }
            }
        }
    };
    let _ = events.send(Event::ConnFailed { conn: id, error });
}

/// A stream-level status: transport trouble (retriable) or the broker's own status.
fn stream_error(address: &str, status: tonic::Status) -> Error {
    use std::error::Error as _;
    match status.source() {
        Some(source)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown
            ) =>
        {
            Error::Transport {
                address: address.to_owned(),
                message: transport_message(source),
            }
        }
        _ => Error::rpc(format!("produce stream to {address}"), status),
    }
}

/// Rewrites the base sequence of a built batch (and its CRC): used when earlier batches of the
/// partition failed for good and later ones take over their sequence numbers.
fn patch_sequence(data: &Bytes, base_sequence: i32) -> Bytes {
    const BASE_SEQUENCE_AT: usize = 53;
    const CRC_AT: usize = 17;
    const ATTRIBUTES_AT: usize = 21;
    let mut v = data.to_vec();
    if v.len() < runnel_codec::BATCH_HEADER_LEN {
        return data.clone();
    }
    v[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = runnel_codec::crc32c(&v[ATTRIBUTES_AT..]);
    v[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
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

    #[test]
    fn delivery_future_resolves_per_record_offsets() {
        let shared = Arc::new(BatchShared::new(Arc::from("t"), 3));
        let f0 = DeliveryFuture {
            batch: shared.clone(),
            index: 0,
            timestamp: 10,
        };
        let f2 = DeliveryFuture {
            batch: shared.clone(),
            index: 2,
            timestamp: 12,
        };
        let waiter = std::thread::spawn(move || block_on(f2));
        std::thread::sleep(Duration::from_millis(20));
        shared.resolve(Ok(BatchAck {
            base_offset: 100,
            log_append_time: -1,
        }));
        let m2 = waiter.join().expect("thread").expect("delivered");
        assert_eq!((m2.partition, m2.offset, m2.timestamp), (3, 102, 12));
        let m0 = block_on(f0).expect("delivered");
        assert_eq!(m0.offset, 100);
        assert_eq!(m0.topic, "t");
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 2, 5), 2);
    }

    #[test]
    fn patched_sequence_keeps_the_batch_valid() {
        let mut b = BatchBuilder::new(Compression::None, 1).with_producer(ProducerInfo {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 10,
        });
        b.append(1, None, Some(b"a"), &[]);
        b.append(2, None, Some(b"b"), &[]);
        let data = b.build().expect("build");
        let patched = patch_sequence(&data, 4);
        let h = runnel_codec::validate_batch(&patched).expect("valid CRC");
        assert_eq!(h.base_sequence, 4);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.records_count, 2);
    }

    #[test]
    fn config_values_parse_and_validate() {
        assert_eq!("all".parse::<Acks>().ok(), Some(Acks::All));
        assert_eq!("-1".parse::<Acks>().ok(), Some(Acks::All));
        assert_eq!("1".parse::<Acks>().ok(), Some(Acks::Leader));
        assert_eq!("0".parse::<Acks>().ok(), Some(Acks::None));
        assert!("2".parse::<Acks>().is_err());
        let c = ProducerConfig::default();
        assert_eq!(c.batch_size, 64 * 1024);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert!(c.idempotent);
        assert_eq!(c.max_in_flight, 48);
        assert!(c.validate().is_ok());
        for max_in_flight in [0, MAX_IDEMPOTENT_IN_FLIGHT + 1] {
            let bad = ProducerConfig {
                max_in_flight,
                ..Default::default()
            };
            assert!(bad
                .validate()
                .expect_err("invalid")
                .to_string()
                .contains("max_in_flight"));
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(10), Duration::from_secs(1));
    }
}
