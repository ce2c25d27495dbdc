//! The broker's state: its metadata, its partition logs, and the group commit that makes them
//! durable. The gRPC services in [`crate::service`] are thin wrappers over this.

use crate::appender::Appenders;
use crate::durability::{GroupCommit, StorageHealth};
use crate::error::BrokerError;
use crate::log::{AppendContext, AppendOutcome, LogConfig, LogError, PartitionLog, ReadOutcome};
use crate::metadata::{self, find_topic};
use crate::metrics::Metrics;
use crate::producer_ids::{Next, ProducerIds};
use crate::storage::Storage;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use runnel_proto::v1::{ClusterMetadata, TopicConfig, TopicMetadata};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

const META_CLUSTER: &str = "cluster_metadata";
/// The watermark of the producer ids handed out (see [`crate::producer_ids`]).
const META_PRODUCER_ID_LIMIT: &str = "producer_id_limit";

/// The settings of one broker that its requests depend on.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// This broker's id.
    pub broker_id: i32,
    /// host:port clients use to reach it.
    pub advertised_address: String,
    /// Zone or rack.
    pub rack: String,
    /// Standalone: the broker is its own controller.
    pub standalone: bool,
    /// Create unknown topics on first produce (standalone only).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    pub default_partitions: i32,
    /// Log settings of topics that do not set their own.
    pub log_defaults: LogConfig,
    /// How long acks=all waits for durability.
    pub produce_timeout: Duration,
    /// How long an idle idempotent producer is remembered (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// Group commit linger.
    pub flush_linger: Duration,
    /// Appender threads (see [`crate::appender`]).
    pub append_threads: usize,
}

/// How durable a produce must be before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Answer without waiting for the append's result.
    None,
    /// Answer once appended on the leader.
    Leader,
    /// Answer once durable.
    All,
}

type Log<S> = Arc<PartitionLog<<S as Storage>::Log>>;

/// Metadata plus what the broker derives from it, swapped as one.
#[derive(Debug, Default)]
struct MetadataView {
    cluster: ClusterMetadata,
    log_configs: HashMap<String, LogConfig>,
}

/// One broker.
pub struct Broker<S: Storage> {
    settings: BrokerSettings,
    storage: Arc<S>,
    metadata: RwLock<Arc<MetadataView>>,
    logs: RwLock<HashMap<(String, i32), Log<S>>>,
    group_commit: Arc<GroupCommit<S>>,
    health: Arc<StorageHealth>,
    appenders: Appenders,
    producer_ids: Mutex<ProducerIds>,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    applied_epoch: AtomicI64,
    /// Serialises metadata changes (create, delete, apply).
    metadata_change: Mutex<()>,
    /// Turns of the keyless placement of plain records.
    keyless_turn: AtomicU64,
}

impl<S: Storage> std::fmt::Debug for Broker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lso_key(topic: &str, partition: i32) -> String {
    format!("log_start/{topic}/{partition}")
}

impl<S: Storage> Broker<S> {
    /// Opens the broker over `storage`: loads the persisted metadata and recovers every
    /// partition log found.
    pub fn open(
        settings: BrokerSettings,
        storage: Arc<S>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BrokerError> {
        let cluster = match storage.get_meta(META_CLUSTER)? {
            Some(bytes) => ClusterMetadata::decode(&bytes[..]).map_err(|e| {
                crate::storage::StorageError::Corrupt(format!("persisted cluster metadata: {e}"))
            })?,
            None => ClusterMetadata::default(),
        };
        let limit = match storage.get_meta(META_PRODUCER_ID_LIMIT)? {
            Some(b) if b.len() == 8 => i64::from_be_bytes(b[..].try_into().unwrap_or_default()),
            _ => 0,
        };
        let health = Arc::new(StorageHealth::new(metrics.clone()));
        let group_commit = Arc::new(GroupCommit::start(
            storage.clone(),
            settings.flush_linger,
            metrics.clone(),
            health.clone(),
        ));
        let (shutdown, _) = watch::channel(false);
        let broker = Self {
            metadata: RwLock::new(Arc::new(MetadataView::default())),
            logs: RwLock::new(HashMap::new()),
            group_commit,
            health,
            appenders: Appenders::start(settings.append_threads),
            // Ids already handed out may have been used: start after the persisted watermark.
            producer_ids: Mutex::new(if settings.standalone {
                ProducerIds::standalone(limit)
            } else {
                ProducerIds::in_cluster(limit)
            }),
            shutdown,
            metrics,
            applied_epoch: AtomicI64::new(cluster.epoch),
            metadata_change: Mutex::new(()),
            keyless_turn: AtomicU64::new(0),
            settings,
            storage,
        };
        for (topic, partition) in broker.storage.list_logs()? {
            broker.open_log(&topic, partition)?;
        }
        broker.install_metadata(cluster);
        Ok(broker)
    }

    /// The broker's settings.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Metrics shared with the HTTP endpoint.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A receiver that turns true when the broker starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts shutting down: streams end, new requests are refused.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Makes everything appended durable, stops the flusher, and checkpoints every partition
    /// so that the next start reads no tail.
    pub fn close(&self) {
        self.group_commit.stop();
        if let Err(e) = self.checkpoint_logs(0, true) {
            tracing::warn!(error = %e, "the last checkpoint failed; the next start reads more");
        }
    }

    /// Why the storage is failed, while it is (every partition is offline meanwhile).
    pub fn storage_failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Takes the storage offline with `why`: every partition refuses appends and reads with the
    /// cause, and every waiter wakes. One database holds every partition, so a store or flush
    /// that fails fails them all; a restart reopens the storage (see [`crate::server`]).
    pub fn fail_storage(&self, why: &str) {
        self.health.fail(why);
        for (_, log) in self.held_logs() {
            log.take_offline(why);
        }
    }

    /// Takes the storage offline when a flush has not finished within `limit` (a disk that
    /// stopped answering): the waiters get their answer instead of a timeout.
    pub fn check_flush_stall(&self, limit: Duration) {
        if let Some(running) = self.group_commit.flush_running_for() {
            if running >= limit && self.health.failure().is_none() {
                self.fail_storage(&format!(
                    "a flush has not completed for {} s: the disk does not answer",
                    running.as_secs()
                ));
            }
        }
    }

    fn open_log(&self, topic: &str, partition: i32) -> Result<Log<S>, BrokerError> {
        if let Some(l) = self.logs.read().get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        let mut logs = self.logs.write();
        if let Some(l) = logs.get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        let log = self.recover_log(topic, partition)?;
        logs.insert((topic.to_string(), partition), log.clone());
        self.metrics.partitions.set(logs.len() as i64);
        Ok(log)
    }

    /// Opens a partition's log and recovers its state from storage.
    fn recover_log(&self, topic: &str, partition: i32) -> Result<Log<S>, BrokerError> {
        let floor = match self.storage.get_meta(&lso_key(topic, partition))? {
            Some(b) if b.len() == 8 => i64::from_be_bytes(b[..].try_into().unwrap_or_default()),
            _ => 0,
        };
        let store = self.storage.open_log(topic, partition)?;
        Ok(Arc::new(
            PartitionLog::recover(store, floor, now_ms())
                .map_err(|e| BrokerError::log(topic, partition, e))?,
        ))
    }

    fn install_metadata(&self, cluster: ClusterMetadata) {
        let log_configs = cluster
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    metadata::log_config(t.config.as_ref(), &self.settings.log_defaults),
                )
            })
            .collect();
        self.applied_epoch.store(cluster.epoch, Ordering::SeqCst);
        let me = self.settings.broker_id;
        let block = cluster
            .producer_id_blocks
            .iter()
            .find(|b| b.broker_id == me)
            .map(|b| (b.first_id, b.count));
        self.producer_ids
            .lock()
            .set_block(block, cluster.producer_id_end);
        *self.metadata.write() = Arc::new(MetadataView {
            cluster,
            log_configs,
        });
    }

    fn persist_metadata(&self, cluster: &ClusterMetadata) -> Result<(), BrokerError> {
        self.storage
            .put_meta(META_CLUSTER, &cluster.encode_to_vec())?;
        self.storage.flush()?;
        Ok(())
    }

    /// The metadata this broker holds now.
    pub fn cluster_metadata(&self) -> ClusterMetadata {
        self.metadata.read().cluster.clone()
    }

    /// The partition `topic`/`partition` if this broker leads it, with its log settings.
    pub fn leader_log(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Log<S>, LogConfig), BrokerError> {
        if let Some(why) = self.health.failure() {
            return Err(BrokerError::log(topic, partition, LogError::Offline(why)));
        }
        let view = self.metadata.read().clone();
        let Some(t) = find_topic(&view.cluster, topic) else {
            return Err(BrokerError::UnknownTopic(topic.to_string()));
        };
        let Some(p) = t.partitions.iter().find(|p| p.partition == partition) else {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count: t.partitions.len(),
            });
        };
        if p.leader != self.settings.broker_id {
            let at = view
                .cluster
                .brokers
                .iter()
                .find(|b| b.id == p.leader)
                .map_or(String::new(), |b| format!(" at {}", b.address));
            return Err(BrokerError::NotLeader {
                topic: topic.to_string(),
                partition,
                broker: self.settings.broker_id,
                leader: p.leader,
                at,
            });
        }
        let config = view
            .log_configs
            .get(topic)
            .copied()
            .unwrap_or(self.settings.log_defaults);
        Ok((self.open_log(topic, partition)?, config))
    }

    /// Standalone with `auto_create_topics`: creates the unknown `topic` and says so.
    fn auto_create(&self, topic: &str) -> Result<bool, BrokerError> {
        if !(self.settings.standalone && self.settings.auto_create_topics) {
            return Ok(false);
        }
        match self.create_topic(
            topic,
            self.settings.default_partitions,
            1,
            TopicConfig::default(),
        ) {
            Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// How many partitions `topic` has (creating it first where topics are created on first
    /// produce).
    pub fn partition_count(&self, topic: &str) -> Result<usize, BrokerError> {
        let count = |md: &ClusterMetadata| find_topic(md, topic).map(|t| t.partitions.len());
        if let Some(n) = count(&self.metadata.read().cluster) {
            return Ok(n);
        }
        if self.auto_create(topic)? {
            if let Some(n) = count(&self.metadata.read().cluster) {
                return Ok(n);
            }
        }
        Err(BrokerError::UnknownTopic(topic.to_string()))
    }

    /// The partition for the keyless records of the next plain-record produce: the partitions
    /// in turn, one request after another.
    pub fn next_keyless_partition(&self, partitions: usize) -> i32 {
        let n = self.keyless_turn.fetch_add(1, Ordering::Relaxed);
        (n % partitions.max(1) as u64) as i32
    }

    /// Appends to a partition this broker leads and waits as `acks` asks.
    pub async fn produce(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        batches: &[Bytes],
        acks: Acks,
    ) -> Result<AppendOutcome, BrokerError> {
        self.queue_append(topic, partition, batches)?
            .acked(acks)
            .await
    }

    /// Checks the batches and assigns their offsets now, on the calling thread, then queues
    /// the store on the partition's appender thread (see [`crate::appender`]). The handle waits
    /// for the store or for durability; ProduceStream pipelines these.
    pub fn queue_append(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        batches: &[Bytes],
    ) -> Result<PendingAppend, BrokerError> {
        let (reserved, mut pending) = self.reserve(topic, partition, batches)?;
        if let Some(r) = reserved {
            let broker = self.clone();
            pending.stored = Some(
                self.appenders
                    .run(topic, partition, move || broker.store(r)),
            );
        }
        Ok(pending)
    }

    /// Checks batches and assigns their offsets; what is left to store (none for duplicates)
    /// and the handle that waits for its durability.
    fn reserve(
        &self,
        topic: &str,
        partition: i32,
        batches: &[Bytes],
    ) -> Result<(Option<Reserved<S>>, PendingAppend), BrokerError> {
        if *self.shutdown.borrow() {
            return Err(BrokerError::ShuttingDown);
        }
        let (log, config) = match self.leader_log(topic, partition) {
            Err(BrokerError::UnknownTopic(_)) if self.auto_create(topic)? => {
                self.leader_log(topic, partition)?
            }
            other => other?,
        };
        let reservation = log
            .reserve(
                batches,
                &config,
                &AppendContext {
                    now_ms: now_ms(),
                    producer_id_end: self.producer_id_end(),
                },
            )
            .map_err(|e| BrokerError::log(topic, partition, e))?;
        let outcome = reservation.outcome;
        let pending = PendingAppend {
            topic: topic.to_string(),
            partition,
            outcome,
            high_watermark: log.watch_high_watermark(),
            offline: log.offline(),
            timeout: self.settings.produce_timeout,
            stored: None,
        };
        if reservation.is_empty() {
            return Ok((None, pending));
        }
        let bytes: usize = batches.iter().map(|b| b.len()).sum();
        self.metrics.record_produce(
            topic,
            (outcome.last_offset - outcome.base_offset + 1) as u64,
            bytes as u64,
        );
        let reserved = Reserved {
            topic: pending.topic.clone(),
            partition,
            log,
            reservation,
        };
        Ok((Some(reserved), pending))
    }

    /// Stores reserved batches and marks their partition for the next group commit. Stored
    /// outside the partition's lock: the high watermark only passes a contiguous stored prefix.
    fn store(&self, r: Reserved<S>) -> Result<(), BrokerError> {
        if let Err(e) = r.log.write(r.reservation) {
            self.fail_storage(&e.to_string());
            return Err(BrokerError::log(&r.topic, r.partition, e));
        }
        self.group_commit.mark_dirty(&r.topic, r.partition, &r.log);
        Ok(())
    }

    /// Reads committed batches, long-polling up to `max_wait` until at least `min_bytes` exist.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<ReadOutcome, BrokerError> {
        let (log, _) = self.leader_log(topic, partition)?;
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut hw = log.watch_high_watermark();
        let mut shutdown = self.shutdown_signal();
        loop {
            hw.borrow_and_update();
            let out = log
                .read(offset, max_bytes)
                .map_err(|e| BrokerError::log(topic, partition, e))?;
            let got: usize = out.batches.iter().map(|b| b.len()).sum();
            if got >= min_bytes.max(1)
                || tokio::time::Instant::now() >= deadline
                || *shutdown.borrow()
            {
                self.metrics.record_fetch(topic, got as u64);
                return Ok(out);
            }
            tokio::select! {
                r = hw.changed() => { if r.is_err() { return Ok(out); } }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Hands out a new idempotent producer id at epoch 0 (persisted in blocks, so ids never
    /// repeat), or, for a producer that names its id and epoch, the next epoch of that id
    /// (Kafka's KIP-360), which fences the older one on every partition.
    pub fn init_producer_id(&self, current: Option<(i64, i32)>) -> Result<(i64, i16), BrokerError> {
        if let Some((id, epoch)) = current {
            if !(0..self.producer_id_end()).contains(&id) {
                return Err(BrokerError::InvalidRequest(format!(
                    "producer id {id} was never issued: ask for a new one without an id"
                )));
            }
            let Ok(epoch) = i16::try_from(epoch).map(|e| e.max(0)) else {
                return Err(BrokerError::InvalidRequest(format!(
                    "producer epoch {epoch} is out of range (0 to {})",
                    i16::MAX
                )));
            };
            // The last epoch is used up: a new id, as Kafka does.
            if epoch < i16::MAX - 1 {
                return Ok((id, epoch + 1));
            }
        }
        let mut ids = self.producer_ids.lock();
        match ids.next() {
            Next::Exhausted { first, end } => Err(BrokerError::ProducerIdsExhausted { first, end }),
            Next::Id { id, persist } => {
                if let Some(watermark) = persist {
                    self.storage
                        .put_meta(META_PRODUCER_ID_LIMIT, &watermark.to_be_bytes())?;
                    self.storage.flush()?;
                }
                ids.issued(id, persist);
                Ok((id, 0))
            }
        }
    }

    /// Producer ids below this may have been issued in the cluster; batches with others are
    /// refused.
    pub fn producer_id_end(&self) -> i64 {
        self.producer_ids.lock().cluster_end()
    }

    /// The block of producer ids the controller handed this broker, and how many are left.
    pub fn producer_id_block(&self) -> Option<(runnel_proto::v1::ProducerIdBlock, i64)> {
        let me = self.settings.broker_id;
        self.producer_ids
            .lock()
            .block()
            .map(|((first_id, count), left)| {
                (
                    runnel_proto::v1::ProducerIdBlock {
                        broker_id: me,
                        first_id,
                        count,
                    },
                    left,
                )
            })
    }

    /// Standalone: creates a topic whose partitions this broker leads.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        config: TopicConfig,
    ) -> Result<TopicMetadata, BrokerError> {
        if !self.settings.standalone {
            return Err(BrokerError::NotController);
        }
        metadata::validate_topic_name(name)?;
        metadata::validate_partition_count(partitions)?;
        if !(0..=1).contains(&replication_factor) {
            return Err(BrokerError::InvalidReplicationFactor {
                factor: replication_factor,
                reason: "a standalone broker is a cluster of one broker, so the factor must be 1"
                    .into(),
            });
        }
        metadata::validate_topic_config(&config)?;
        let _change = self.metadata_change.lock();
        let mut cluster = self.cluster_metadata();
        if find_topic(&cluster, name).is_some() {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let topic =
            metadata::single_broker_topic(name, partitions, self.settings.broker_id, config);
        cluster.topics.push(topic.clone());
        cluster.epoch += 1;
        cluster.brokers = vec![self.self_info()];
        self.persist_metadata(&cluster)?;
        self.install_metadata(cluster);
        for p in 0..partitions {
            self.open_log(name, p)?;
        }
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Standalone: deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if !self.settings.standalone {
            return Err(BrokerError::NotController);
        }
        let _change = self.metadata_change.lock();
        let mut cluster = self.cluster_metadata();
        let before = cluster.topics.len();
        cluster.topics.retain(|t| t.name != name);
        if cluster.topics.len() == before {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        cluster.epoch += 1;
        self.persist_metadata(&cluster)?;
        self.install_metadata(cluster);
        self.delete_partitions(name, &[])?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Deletes the data of a topic's partitions held here (all when `partitions` is empty).
    pub fn delete_partitions(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<i32>, BrokerError> {
        let held: Vec<(String, i32)> = self
            .storage
            .list_logs()?
            .into_iter()
            .filter(|(t, p)| t == topic && (partitions.is_empty() || partitions.contains(p)))
            .collect();
        let mut deleted = Vec::new();
        for (t, p) in held {
            let mut logs = self.logs.write();
            logs.remove(&(t.clone(), p));
            self.metrics.partitions.set(logs.len() as i64);
            drop(logs);
            self.storage.drop_log(&t, p)?;
            self.storage
                .put_meta(&lso_key(&t, p), &0i64.to_be_bytes())?;
            deleted.push(p);
        }
        self.storage.flush()?;
        deleted.sort_unstable();
        Ok(deleted)
    }

    /// Installs metadata from the controller; returns whether it was newer, and the epoch held.
    pub fn apply_metadata(&self, cluster: ClusterMetadata) -> Result<(bool, i64), BrokerError> {
        let _change = self.metadata_change.lock();
        let current = self.applied_epoch.load(Ordering::SeqCst);
        if cluster.epoch <= current {
            return Ok((false, current));
        }
        self.persist_metadata(&cluster)?;
        let me = self.settings.broker_id;
        let mine: Vec<(String, i32)> = cluster
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&me))
                    .map(move |p| (t.name.clone(), p.partition))
            })
            .collect();
        let epoch = cluster.epoch;
        self.install_metadata(cluster);
        for (t, p) in mine {
            self.open_log(&t, p)?;
        }
        Ok((true, epoch))
    }

    /// This broker as the metadata lists it.
    pub fn self_info(&self) -> runnel_proto::v1::BrokerInfo {
        runnel_proto::v1::BrokerInfo {
            id: self.settings.broker_id,
            address: self.settings.advertised_address.clone(),
            rack: self.settings.rack.clone(),
        }
    }

    /// Every partition log held here.
    pub fn held_logs(&self) -> Vec<((String, i32), Log<S>)> {
        let mut v: Vec<_> = self
            .logs
            .read()
            .iter()
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Applies retention to every partition held, and forgets idle idempotent producers.
    pub fn apply_retention(&self) -> Result<(), BrokerError> {
        let view = self.metadata.read().clone();
        let now = now_ms();
        for ((topic, partition), log) in self.held_logs() {
            let expired = log.expire_producers(now, self.settings.producer_id_expiration_ms);
            if expired > 0 {
                tracing::info!(topic, partition, expired, "forgot idle producers");
            }
            let config = view
                .log_configs
                .get(&topic)
                .copied()
                .unwrap_or(self.settings.log_defaults);
            let storage = self.storage.clone();
            let retained = log.apply_retention(&config, now, &move || storage.flush());
            if let Err(e) = &retained {
                if matches!(e, LogError::Storage(_)) {
                    self.fail_storage(&format!("retention failed: {e}"));
                }
            }
            if let Some(start) = retained.map_err(|e| BrokerError::log(&topic, partition, e))? {
                tracing::info!(
                    topic,
                    partition,
                    log_start_offset = start,
                    "retention deleted batches"
                );
            }
        }
        // The deletions: a restart must not find them again.
        self.storage.flush()?;
        Ok(())
    }

    /// Runs a compaction pass over every compacted partition that is due (see
    /// [`crate::compaction`]); returns how many were cleaned.
    pub fn compact_logs(&self) -> Result<usize, BrokerError> {
        if self.health.failure().is_some() {
            return Ok(0);
        }
        let view = self.metadata.read().clone();
        let now = now_ms();
        let mut cleaned = 0;
        for ((topic, partition), log) in self.held_logs() {
            let config = view
                .log_configs
                .get(&topic)
                .copied()
                .unwrap_or(self.settings.log_defaults);
            if !config.compact {
                continue;
            }
            // What is durable is cleanable: checkpoint it first (made durable, with the pass, by
            // the next flush).
            let pass = log.checkpoint().and_then(|_| log.compact(&config, now));
            match pass {
                Ok(Some(pass)) => {
                    cleaned += 1;
                    tracing::info!(
                        topic,
                        partition,
                        bytes_before = pass.bytes_before,
                        bytes_after = pass.bytes_after,
                        batches_removed = pass.batches_removed,
                        cleaned_offset = pass.cleaned_offset,
                        "compacted"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    if matches!(e, LogError::Storage(_)) {
                        self.fail_storage(&format!("compaction failed: {e}"));
                    }
                    return Err(BrokerError::log(&topic, partition, e));
                }
            }
        }
        Ok(cleaned)
    }

    /// Checkpoints every partition with anything appended beyond its checkpoint once the
    /// partitions together hold at least `bytes` beyond theirs, or when `all`; then makes the
    /// checkpoints durable. Returns how many were written. This bounds what a restart reads, for
    /// the broker as a whole (see [`crate::log::index`]).
    pub fn checkpoint_logs(&self, bytes: u64, all: bool) -> Result<usize, BrokerError> {
        if self.health.failure().is_some() {
            return Ok(0);
        }
        let logs = self.held_logs();
        let total: u64 = logs.iter().map(|(_, log)| log.unchecked().0).sum();
        if total == 0 || (total < bytes && !all) {
            return Ok(0);
        }
        let mut written = 0;
        for ((topic, partition), log) in logs {
            if log.unchecked().0 == 0 {
                continue;
            }
            match log.checkpoint() {
                Ok(Some(_)) => written += 1,
                Ok(None) => {}
                Err(e) => {
                    self.fail_storage(&format!("checkpoint failed: {e}"));
                    return Err(BrokerError::log(&topic, partition, e));
                }
            }
        }
        if written > 0 {
            self.storage.flush()?;
        }
        Ok(written)
    }
}

/// Batches checked and given offsets, not stored yet.
struct Reserved<S: Storage> {
    topic: String,
    partition: i32,
    log: Log<S>,
    reservation: crate::log::Reservation<<S::Log as crate::storage::BatchLog>::Buf>,
}

/// An append made, whose store and durability can be awaited.
#[derive(Debug)]
pub struct PendingAppend {
    topic: String,
    partition: i32,
    /// What the append did.
    pub outcome: AppendOutcome,
    high_watermark: watch::Receiver<i64>,
    offline: Arc<OnceLock<String>>,
    timeout: Duration,
    /// The store's result, from the appender thread (none for a duplicate: nothing to store).
    stored: Option<oneshot::Receiver<Result<(), BrokerError>>>,
}

impl PendingAppend {
    /// Waits as `acks` asks: durable for acks=all, stored otherwise (acks=0 too, so that what
    /// a producer has in flight bounds what is queued for the appenders).
    pub async fn acked(self, acks: Acks) -> Result<AppendOutcome, BrokerError> {
        match acks {
            Acks::All => self.durable().await,
            Acks::Leader | Acks::None => self.stored().await,
        }
    }

    /// Waits until the appended records are stored (acks=1).
    pub async fn stored(self) -> Result<AppendOutcome, BrokerError> {
        if let Some(stored) = self.stored {
            stored.await.unwrap_or(Err(BrokerError::AppendAborted {
                topic: self.topic,
                partition: self.partition,
            }))?;
        }
        Ok(self.outcome)
    }

    /// Waits until the appended records are durable (below the high watermark), which implies
    /// stored. It does not wait on the store's own answer: that would wake the waiting task
    /// once more per batch, and a failed store takes the log offline, which wakes it anyway.
    pub async fn durable(mut self) -> Result<AppendOutcome, BrokerError> {
        let last = self.outcome.last_offset;
        let offline = &self.offline;
        let wait = self
            .high_watermark
            .wait_for(|hw| *hw > last || offline.get().is_some());
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(hw)) if *hw > last => Ok(self.outcome),
            Ok(Ok(_)) => Err(BrokerError::log(
                &self.topic,
                self.partition,
                LogError::Offline(self.offline.get().cloned().unwrap_or_default()),
            )),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::DurabilityTimeout {
                topic: self.topic,
                partition: self.partition,
                millis: self.timeout.as_millis() as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;
    use crate::storage::faulty::{Faults, FaultyStorage};
    use crate::storage::MemoryStorage;
    use runnel_codec::{BatchBuilder, Compression};
    use tonic::Code;

    type Faulty = FaultyStorage<MemoryStorage>;

    fn broker() -> (Arc<Broker<Faulty>>, Arc<Faults>) {
        let settings = ConfigLayer {
            standalone: Some(true),
            ..ConfigLayer::defaults()
        }
        .validate(|_| None)
        .expect("config")
        .settings;
        let storage = Arc::new(Faulty::default());
        let faults = storage.faults.clone();
        let broker =
            Broker::open(settings, storage, Arc::new(Metrics::default())).expect("open broker");
        broker
            .create_topic("t", 2, 1, TopicConfig::default())
            .expect("topic");
        (Arc::new(broker), faults)
    }

    /// Closes `broker` and opens a new one over its storage, as a restart does.
    fn restart(broker: Arc<Broker<Faulty>>) -> Arc<Broker<Faulty>> {
        let settings = broker.settings().clone();
        let storage = broker.storage.clone();
        broker.close();
        drop(broker);
        Arc::new(Broker::open(settings, storage, Arc::new(Metrics::default())).expect("reopen"))
    }

    fn batch(value: &str) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None, 1);
        b.append(1, None, Some(value.as_bytes()), &[]);
        b.build().expect("build")
    }

    /// acks=all on `partition`, answered within a few seconds either way.
    async fn produce(
        broker: &Arc<Broker<Faulty>>,
        partition: i32,
        value: &str,
    ) -> Result<AppendOutcome, BrokerError> {
        tokio::time::timeout(
            Duration::from_secs(5),
            broker.produce("t", partition, &[batch(value)], Acks::All),
        )
        .await
        .expect("answered promptly, not left waiting for a flush that cannot happen")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_takes_the_partitions_offline_until_the_storage_reopens() {
        let (broker, faults) = broker();
        assert_eq!(
            produce(&broker, 0, "kept").await.expect("ok").base_offset,
            0
        );

        Faults::set(&faults.fail_flush, true);
        let e = produce(&broker, 0, "refused")
            .await
            .expect_err("flush fails");
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(e.to_string().contains("flush failed"), "{e}");
        // Every partition is offline, reads too, and the metrics say so.
        let e = produce(&broker, 1, "refused").await.expect_err("offline");
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        let e = broker
            .fetch("t", 0, 0, 1 << 20, 0, Duration::ZERO)
            .await
            .expect_err("offline");
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        let metrics = broker.metrics().render();
        assert!(
            metrics.contains("runnel_broker_storage_offline 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("runnel_broker_offline_partitions 2"),
            "{metrics}"
        );
        assert!(broker.storage_failure().is_some());

        // Recovery is a restart over the same storage: what was durable is there, and the
        // partitions serve again.
        Faults::set(&faults.fail_flush, false);
        let broker = restart(broker);
        assert!(broker.storage_failure().is_none());
        let next = produce(&broker, 0, "after").await.expect("serves again");
        let read = broker
            .fetch("t", 0, 0, 1 << 20, 0, Duration::ZERO)
            .await
            .expect("read");
        let values: Vec<Bytes> = read
            .batches
            .iter()
            .flat_map(|b| runnel_codec::decode_batch(b).expect("decode").1)
            .filter_map(|r| r.value)
            .collect();
        assert_eq!(values.first().map(|v| &v[..]), Some(&b"kept"[..]));
        assert_eq!(values.last().map(|v| &v[..]), Some(&b"after"[..]));
        assert_eq!(next.base_offset as usize, values.len() - 1);

        // Stopping with a failed disk does not hang.
        Faults::set(&faults.fail_flush, true);
        produce(&broker, 1, "refused").await.expect_err("fails");
        let b = broker.clone();
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || b.close()),
        )
        .await
        .expect("close returns")
        .expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_store_takes_the_storage_offline_and_recovery_closes_the_hole() {
        let (broker, faults) = broker();
        produce(&broker, 0, "a").await.expect("ok");
        Faults::set(&faults.panic_puts, true);
        let e = produce(&broker, 0, "b").await.expect_err("panics");
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(e.to_string().contains("panicked"), "{e}");
        Faults::set(&faults.panic_puts, false);
        let broker = restart(broker);
        // The offset the failed append had reserved is given again: no hole.
        assert_eq!(produce(&broker, 0, "c").await.expect("ok").base_offset, 1);
    }
}
