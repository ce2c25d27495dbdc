//! The broker's state: its metadata, its partition logs, and the group commit that makes them
//! durable. The gRPC services in [`crate::service`] are thin wrappers over this.

use crate::appender::Appenders;
use crate::durability::GroupCommit;
use crate::error::BrokerError;
use crate::log::{AppendOutcome, LogConfig, LogError, PartitionLog, ReadOutcome};
use crate::metadata::{self, find_topic};
use crate::metrics::Metrics;
use crate::storage::Storage;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use runnel_proto::v1::{ClusterMetadata, TopicConfig, TopicMetadata};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

const META_CLUSTER: &str = "cluster_metadata";
const META_PRODUCER_ID_LIMIT: &str = "producer_id_limit";
const PRODUCER_ID_BLOCK: i64 = 1000;

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
    appenders: Appenders,
    next_producer_id: Mutex<(i64, i64)>,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    applied_epoch: AtomicI64,
    /// Serialises metadata changes (create, delete, apply).
    metadata_change: Mutex<()>,
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
        let group_commit = Arc::new(GroupCommit::start(
            storage.clone(),
            settings.flush_linger,
            metrics.clone(),
        ));
        let (shutdown, _) = watch::channel(false);
        let broker = Self {
            metadata: RwLock::new(Arc::new(MetadataView::default())),
            logs: RwLock::new(HashMap::new()),
            group_commit,
            appenders: Appenders::start(settings.append_threads),
            // Ids already handed out may have been used: start after the persisted limit.
            next_producer_id: Mutex::new((limit, limit)),
            shutdown,
            metrics,
            applied_epoch: AtomicI64::new(cluster.epoch),
            metadata_change: Mutex::new(()),
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

    /// Makes everything appended durable and stops the flusher.
    pub fn close(&self) {
        self.group_commit.stop();
    }

    fn open_log(&self, topic: &str, partition: i32) -> Result<Log<S>, BrokerError> {
        if let Some(l) = self.logs.read().get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        let mut logs = self.logs.write();
        if let Some(l) = logs.get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        let floor = match self.storage.get_meta(&lso_key(topic, partition))? {
            Some(b) if b.len() == 8 => i64::from_be_bytes(b[..].try_into().unwrap_or_default()),
            _ => 0,
        };
        let store = self.storage.open_log(topic, partition)?;
        let log = Arc::new(
            PartitionLog::recover(store, floor)
                .map_err(|e| BrokerError::log(topic, partition, e))?,
        );
        logs.insert((topic.to_string(), partition), log.clone());
        self.metrics.partitions.set(logs.len() as i64);
        Ok(log)
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
            Err(BrokerError::UnknownTopic(_))
                if self.settings.standalone && self.settings.auto_create_topics =>
            {
                self.create_topic(
                    topic,
                    self.settings.default_partitions,
                    1,
                    TopicConfig::default(),
                )
                .or_else(|e| {
                    if matches!(e, BrokerError::TopicExists(_)) {
                        Ok(TopicMetadata::default())
                    } else {
                        Err(e)
                    }
                })?;
                self.leader_log(topic, partition)?
            }
            other => other?,
        };
        let reservation = log
            .reserve(batches, &config, now_ms())
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
        r.log
            .write(r.reservation)
            .map_err(|e| BrokerError::log(&r.topic, r.partition, e))?;
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

    /// Hands out a new idempotent producer id (persisted in blocks, so ids never repeat).
    pub fn init_producer_id(&self) -> Result<i64, BrokerError> {
        let mut ids = self.next_producer_id.lock();
        if ids.0 >= ids.1 {
            let limit = ids.0 + PRODUCER_ID_BLOCK;
            self.storage
                .put_meta(META_PRODUCER_ID_LIMIT, &limit.to_be_bytes())?;
            self.storage.flush()?;
            ids.1 = limit;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
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

    /// Applies retention to every partition held.
    pub fn apply_retention(&self) -> Result<(), BrokerError> {
        let view = self.metadata.read().clone();
        let now = now_ms();
        for ((topic, partition), log) in self.held_logs() {
            let config = view
                .log_configs
                .get(&topic)
                .copied()
                .unwrap_or(self.settings.log_defaults);
            if let Some(start) = log
                .apply_retention(&config, now)
                .map_err(|e| BrokerError::log(&topic, partition, e))?
            {
                self.storage
                    .put_meta(&lso_key(&topic, partition), &start.to_be_bytes())?;
                tracing::info!(
                    topic,
                    partition,
                    log_start_offset = start,
                    "retention deleted batches"
                );
            }
        }
        Ok(())
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
