//! The broker's state: its metadata, its partition logs, and the group commit that makes them
//! durable. The gRPC services in [`crate::service`] are thin wrappers over this.

mod control;
mod maintenance;
mod pending;
mod roles;
#[cfg(test)]
mod tests;

pub use pending::PendingAppend;

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
    /// Consumer-group timeouts and intervals.
    pub groups: crate::groups::GroupSettings,
    /// Partitions of `__consumer_offsets` when this broker creates it (standalone).
    pub offsets_topic_partitions: i32,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the
    /// ISR.
    pub replica_lag_time_max_ms: i64,
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
/// The followers' state of a partition led here.
type LeaderState = Arc<Mutex<crate::replication::IsrTracker>>;

/// Metadata plus what the broker derives from it, swapped as one.
#[derive(Debug, Default)]
struct MetadataView {
    cluster: ClusterMetadata,
    log_configs: HashMap<String, LogConfig>,
}

/// A shared view of the metadata a broker holds.
#[derive(Debug, Clone)]
pub struct MetadataRef(Arc<MetadataView>);

impl std::ops::Deref for MetadataRef {
    type Target = ClusterMetadata;
    fn deref(&self) -> &ClusterMetadata {
        &self.0.cluster
    }
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
    /// The partitions led here, with their followers' state.
    leading: Mutex<HashMap<(String, i32), LeaderState>>,
    /// Counts stored appends: the streams to followers wait on it.
    appended: watch::Sender<u64>,
    /// Counts metadata changes: the followers' fetchers wait on it.
    metadata_changed: watch::Sender<u64>,
    /// Replicated partitions this broker led when it started, with that leader epoch: it does
    /// not lead them again under an epoch up to that one (it may have lost batches its
    /// followers hold; see [`runnel_control`]'s rule of the restarted leader).
    fenced_epochs: Mutex<HashMap<(String, i32), i32>>,
    /// Whether a controller's metadata has been applied since this broker started.
    metadata_received: std::sync::atomic::AtomicBool,
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
            Some(b) if b.len() == 8 => {
                Some(i64::from_be_bytes(b[..].try_into().unwrap_or_default()))
            }
            _ => None,
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
                ProducerIds::standalone(limit.unwrap_or(0))
            } else {
                ProducerIds::in_cluster(limit)
            }),
            shutdown,
            metrics,
            applied_epoch: AtomicI64::new(cluster.epoch),
            metadata_change: Mutex::new(()),
            keyless_turn: AtomicU64::new(0),
            leading: Mutex::new(HashMap::new()),
            appended: watch::channel(0).0,
            metadata_changed: watch::channel(0).0,
            fenced_epochs: Mutex::new(HashMap::new()),
            metadata_received: std::sync::atomic::AtomicBool::new(false),
            settings,
            storage,
        };
        if !broker.settings.standalone {
            let me = broker.settings.broker_id;
            let mut fenced = broker.fenced_epochs.lock();
            for t in &cluster.topics {
                for p in &t.partitions {
                    if p.leader == me && p.replicas.len() > 1 {
                        fenced.insert((t.name.clone(), p.partition), p.leader_epoch);
                    }
                }
            }
        }
        for (topic, partition) in broker.storage.list_logs()? {
            let log = broker.open_log(&topic, partition)?;
            // What a copy of a replicated partition holds above its checkpoint may not be on
            // the other copies: it is not committed until they say so.
            if roles::partition_of(&cluster, &topic, partition)
                .is_some_and(|p| p.replicas.len() > 1)
            {
                log.restart_high_watermark();
            }
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

    pub(crate) fn open_log(&self, topic: &str, partition: i32) -> Result<Log<S>, BrokerError> {
        if let Some(l) = self.logs.read().get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        let mut logs = self.logs.write();
        if let Some(l) = logs.get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        let log = self.recover_log(topic, partition)?;
        // Under the logs' lock: a metadata change either sees this copy or is seen here.
        self.apply_role(
            &self.metadata.read().cluster.clone(),
            topic,
            partition,
            &log,
        );
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
        let under_replicated = cluster
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == me && p.isr.len() < p.replicas.len())
            .count();
        self.metrics
            .under_replicated_partitions
            .set(i64::try_from(under_replicated).unwrap_or(i64::MAX));
        *self.metadata.write() = Arc::new(MetadataView {
            cluster,
            log_configs,
        });
        self.apply_roles();
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

    /// The metadata this broker holds now, without copying it.
    pub fn cluster_metadata_view(&self) -> MetadataRef {
        MetadataRef(self.metadata.read().clone())
    }

    /// The leader epoch of a partition in the metadata (-1 when unknown).
    pub fn leader_epoch(&self, topic: &str, partition: i32) -> i32 {
        let view = self.metadata.read();
        find_topic(&view.cluster, topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .map_or(-1, |p| p.leader_epoch)
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
        self.queue_append(topic, partition, batches, acks)?
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
        acks: Acks,
    ) -> Result<PendingAppend, BrokerError> {
        let (reserved, mut pending) = self.reserve(topic, partition, batches, acks)?;
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
        acks: Acks,
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
        if acks == Acks::All {
            self.check_min_isr(topic, partition, &config)?;
        }
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
        let in_sync = (acks == Acks::All && config.min_insync_replicas > 1).then(|| {
            let log = log.clone();
            pending::InSync {
                copies: Box::new(move || match log.commit() {
                    crate::log::Commit::Local => 1,
                    crate::log::Commit::Replicated(others) => others.len() + 1,
                    crate::log::Commit::Follower { .. } => 0,
                }),
                min: config.min_insync_replicas,
            }
        });
        let pending = PendingAppend {
            in_sync,
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
        self.note_appended();
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
}

/// Batches checked and given offsets, not stored yet.
struct Reserved<S: Storage> {
    topic: String,
    partition: i32,
    log: Log<S>,
    reservation: crate::log::Reservation<<S::Log as crate::storage::BatchLog>::Buf>,
}
