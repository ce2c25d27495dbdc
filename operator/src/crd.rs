//! The custom resources of `runnel.dev/v1alpha1`: [`Cluster`], [`Topic`] and [`ConsumerGroup`].
//!
//! The schema the API server enforces is generated from these types (`crdgen` writes it to
//! `crds/`). Rules a single object can check are in the schema, so `kubectl apply` of a bad
//! manifest is refused before the operator sees it: bounds and patterns from `schemars`
//! attributes, and CEL rules (`x-kubernetes-validations`) for transitions such as "partitions may
//! grow but never shrink" and "the replication factor is immutable". Rules that need other
//! objects (does the Cluster exist, is a scale-down safe) are the controllers' job and show up as
//! conditions.

// kube's `KubeSchema` derive copies each struct it validates, `pub` and all, into the body of
// its `json_schema` function, where `unreachable_pub` fires on the copy; the lint cannot be
// scoped to the copy because the derive keeps only serde/schemars/doc attributes.
#![allow(unreachable_pub)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group of every Runnel resource.
pub const GROUP: &str = "runnel.dev";
/// The API version of every Runnel resource.
pub const VERSION: &str = "v1alpha1";

/// Kubernetes object names that also name a StatefulSet: its pods carry the label
/// `controller-revision-hash: <name>-<hash>`, and label values are limited to 63 characters.
pub const MAX_CLUSTER_NAME_LEN: usize = 52;

/// A Kafka topic name: `[a-zA-Z0-9._-]`, 1 to 249 characters (Kafka's own rule).
pub const TOPIC_NAME_PATTERN: &str = r"^[a-zA-Z0-9._-]{1,249}$";

/// A Cluster's name as other resources refer to it: a DNS-1123 label short enough for a
/// StatefulSet.
const CLUSTER_REF_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A storage quantity such as `10Gi` or `500M` (a positive Kubernetes quantity).
const STORAGE_SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// A Runnel cluster: a StatefulSet of brokers with their volumes, Services, ConfigMap and
/// PodDisruptionBudget.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "runnel.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    doc = "A Runnel cluster: a set of brokers run as a StatefulSet",
    status = "ClusterStatus",
    derive = "PartialEq",
    // `rc` as the design names it; kubectl resolves it to the core ReplicationController first,
    // so `rcl` is the one that works on a command line.
    shortname = "rc",
    shortname = "rcl",
    category = "runnel",
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".spec.brokers", description = "Desired number of brokers"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether every broker is ready"),
    printcolumn(name = "Ready Brokers", type_ = "integer", json_path = ".status.readyBrokers", priority = "1", description = "Brokers that are ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 52").message("Cluster names are limited to 52 characters (the StatefulSet's pods are named after it)"),
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of brokers (StatefulSet replicas). Brokers are numbered 0..brokers-1 after their
    /// pod ordinal. Scaling down is refused while it would drop the last replica of a partition.
    #[schemars(range(min = 1, max = 100))]
    pub brokers: i32,

    /// Broker container image. Defaults to the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Persistent storage of each broker's data directory (a volume claim template).
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Broker configuration defaults, in Kafka's names (for example `log.retention.ms`).
    /// A Topic's own `config` overrides them for that topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// Rack (zone) awareness: brokers learn their rack from this node label, and the replicas
    /// of each partition are spread over as many racks as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<RackSpec>,
}

/// Persistent storage of each broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's volume, a Kubernetes quantity such as `10Gi`. It may grow (when the
    /// storage class allows volume expansion) but never shrink.
    #[schemars(pattern(STORAGE_SIZE_PATTERN))]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage size may not shrink"))]
    pub size: String,

    /// Storage class of the volumes; the cluster's default class when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClassName is immutable"))]
    pub storage_class_name: Option<String>,
}

/// Rack awareness, as in Strimzi's `rack.topologyKey`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RackSpec {
    /// Node label whose value is the broker's rack, for example `topology.kubernetes.io/zone`.
    #[schemars(length(min = 1, max = 316))]
    pub topology_key: String,
}

/// What the operator observed of a Cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and others explaining what is not (for example a refused scale-down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Number of brokers that are ready.
    #[serde(default)]
    pub ready_brokers: i32,
    /// Every broker the operator knows of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub brokers: Vec<BrokerStatus>,
    /// Epoch of the newest metadata the operator sent to the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_epoch: Option<i64>,
    /// The block of idempotent producer ids each broker hands out (Kafka's KIP-730), so that no
    /// two producers of the cluster share an id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["brokerId".into()]))]
    pub producer_id_blocks: Vec<ProducerIdBlockStatus>,
    /// Every producer id below this has been handed to a broker; the next block starts here.
    /// Recorded before a block is sent, so that no id is handed out twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id_block_end: Option<i64>,
    /// Runnel's own topics, which have no Topic resource: `__consumer_offsets` (the committed
    /// offsets of consumer groups), placed like Topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub internal_topics: Vec<InternalTopicStatus>,
}

/// One of Runnel's own topics, as the operator placed it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InternalTopicStatus {
    /// The topic's name.
    pub name: String,
    /// One entry per partition: leader, replicas, ISR, offsets.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
}

/// The producer ids one broker hands out: `firstId` to `firstId + count - 1`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProducerIdBlockStatus {
    /// The broker.
    pub broker_id: i32,
    /// The block's first id.
    pub first_id: i64,
    /// How many ids it holds.
    pub count: i64,
}

/// One broker of a Cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Broker id (the pod's StatefulSet ordinal).
    pub id: i32,
    /// `host:port` of its gRPC listener (the pod IP), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether the broker answers and its pod is ready.
    pub ready: bool,
    /// Its rack, when rack awareness is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Topic
// ---------------------------------------------------------------------------------------------

/// A topic of a Runnel cluster: partitions, replication factor and per-topic configuration.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "runnel.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    doc = "A topic of a Runnel cluster",
    status = "TopicStatus",
    derive = "PartialEq",
    shortname = "rt",
    category = "runnel",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster", description = "The Cluster the topic lives in"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", description = "Replication factor"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName", priority = "1", description = "The topic's name in the cluster"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.topicName) || self.metadata.name.size() <= 249").message("metadata.name is longer than a topic name may be (249 characters): set spec.topicName"),
)]
#[x_kube(validation = Rule::new("has(self.topicName) == has(oldSelf.topicName)").message("topicName is immutable"))]
#[x_kube(validation = Rule::new("!has(self.config) || !has(self.config.minInsyncReplicas) || self.config.minInsyncReplicas <= self.replicas").message("config.minInsyncReplicas may not exceed replicas"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// Name of the Cluster (in the same namespace) the topic lives in. Immutable.
    #[schemars(length(min = 1, max = 52), pattern(CLUSTER_REF_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,

    /// Number of partitions. May grow, never shrink.
    #[schemars(range(min = 1, max = 10000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions may not shrink"))]
    pub partitions: i32,

    /// Replication factor: how many brokers hold a copy of each partition. Immutable.
    #[schemars(range(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicas (replication factor) is immutable"))]
    pub replicas: i32,

    /// The topic's name in the cluster, when it differs from `metadata.name` (Kafka allows
    /// upper case and `_`, Kubernetes names do not). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), pattern(TOPIC_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topicName is immutable"))]
    #[x_kube(validation = Rule::new("self != '.' && self != '..'").message("topicName may not be '.' or '..'"))]
    #[x_kube(validation = Rule::new("!self.startsWith('__')").message("topic names starting with '__' are reserved for internal topics"))]
    pub topic_name: Option<String>,

    /// Per-topic configuration, overriding the Cluster's defaults.
    #[serde(default)]
    pub config: TopicConfig,
}

/// Per-topic configuration, named after Kafka's topic configs (`retention.ms` is
/// `retentionMs`). Unset fields take the Cluster's (then the broker's) defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    /// `retention.ms`: delete record batches older than this; `-1` keeps them forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete the oldest batches of a partition beyond this size; `-1` means
    /// no size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    /// `cleanup.policy`: `delete` old batches, `compact` to the last record per key (records
    /// without a key are refused), or both (`compact,delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_policy: Option<CleanupPolicy>,
    /// `delete.retention.ms`: how long compaction keeps a tombstone (a record with a null value)
    /// after its timestamp. Default one day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub delete_retention_ms: Option<i64>,
    /// `min.cleanable.dirty.ratio`: the share of a partition written since its last cleaning
    /// that starts the next one. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_cleanable_dirty_ratio: Option<f64>,
    /// `min.insync.replicas`: a produce with `acks=all` is refused with `NOT_ENOUGH_REPLICAS`
    /// while fewer replicas than this are in sync. At most `replicas`. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub min_insync_replicas: Option<i32>,
    /// `max.message.bytes`: the largest record batch the topic accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<i32>,
    /// `message.timestamp.type`: the producer's timestamp, or the broker's append time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_timestamp_type: Option<TimestampType>,
    /// `unclean.leader.election.enable`: when no in-sync replica of a partition is left alive,
    /// make the most caught-up live replica the leader, losing what only the lost replicas
    /// held. Default false: the partition stays offline until an in-sync replica is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unclean_leader_election_enable: Option<bool>,
}

/// Kafka's `cleanup.policy`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Delete whole batches by age and size.
    Delete,
    /// Keep the last record of each key.
    Compact,
    /// Both: compact, and delete by age and size.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

/// Kafka's `message.timestamp.type`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// The timestamp the producer set.
    CreateTime,
    /// The time the leader appended the batch.
    LogAppendTime,
}

/// What the operator observed of a Topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every partition has a leader and its replicas), and others explaining what is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The topic's name in the cluster (`spec.topicName`, else `metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// One entry per partition, as the brokers report it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["partition".into()]))]
    pub partitions: Vec<PartitionStatus>,
    /// Sums over all partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<TopicTotals>,
}

/// One partition of a Topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition number, from 0.
    pub partition: i32,
    /// Broker id of the leader; unset while the partition has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    /// The leader epoch, bumped on every leadership change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<i32>,
    /// Brokers holding a replica; the first is the preferred leader.
    #[serde(default)]
    pub replicas: Vec<i32>,
    /// In-sync replicas: those the leader reports caught up with it (less the brokers that
    /// stopped answering); only they may be elected leader.
    #[serde(default)]
    pub isr: Vec<i32>,
    /// While the partition moves: replicas being added, which join the replica list once they
    /// are in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    /// While the partition moves: replicas being removed once the added ones are in sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
    /// Offset of the first record still stored.
    #[serde(default)]
    pub log_start_offset: i64,
    /// Offset the next appended record gets.
    #[serde(default)]
    pub log_end_offset: i64,
    /// Offset up to which records are replicated to every in-sync replica (readable).
    #[serde(default)]
    pub high_watermark: i64,
    /// Bytes stored on the leader.
    #[serde(default)]
    pub size_bytes: i64,
}

/// Sums over the partitions of a Topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicTotals {
    /// Records stored: the sum of `highWatermark - logStartOffset`.
    pub records: i64,
    /// Bytes stored on the leaders.
    pub size_bytes: i64,
    /// Partitions whose in-sync replicas are fewer than their replicas.
    pub under_replicated_partitions: i32,
    /// Partitions without a leader.
    pub offline_partitions: i32,
}

// ---------------------------------------------------------------------------------------------
// ConsumerGroup
// ---------------------------------------------------------------------------------------------

/// A consumer group: its state, members and lag, an alert threshold, and offset resets.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "runnel.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    doc = "A consumer group of a Runnel cluster",
    status = "ConsumerGroupStatus",
    derive = "PartialEq",
    shortname = "rcg",
    category = "runnel",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster", priority = "1"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".spec.topic"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.memberCount"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.totalLag", description = "Records not yet consumed, over all partitions"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.groupId) || self.metadata.name.size() <= 255").message("metadata.name is longer than a group id may be (255 characters): set spec.groupId"),
)]
#[x_kube(validation = Rule::new("has(self.groupId) == has(oldSelf.groupId)").message("groupId is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    /// Name of the Cluster (in the same namespace). Immutable.
    #[schemars(length(min = 1, max = 52), pattern(CLUSTER_REF_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,

    /// Name of the Topic resource (in the same namespace) whose lag this resource reports.
    #[schemars(length(min = 1, max = 253))]
    pub topic: String,

    /// The group id consumers use, when it differs from `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("groupId is immutable"))]
    pub group_id: Option<String>,

    /// Total lag above which the group gets the condition `LagHigh` and an Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub lag_threshold: Option<i64>,

    /// Moves the group's committed offsets. Applied once per change of this field, and only
    /// while the group has no members (as Kafka's `--reset-offsets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_offsets: Option<ResetOffsets>,
}

/// An offset reset of a consumer group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.to != 'timestamp' || has(self.timestamp)").message("resetOffsets.timestamp is required when resetOffsets.to is timestamp"))]
#[x_kube(validation = Rule::new("self.to != 'explicit' || has(self.offsets)").message("resetOffsets.offsets is required when resetOffsets.to is explicit"))]
#[serde(rename_all = "camelCase")]
pub struct ResetOffsets {
    /// Where to move the committed offsets.
    pub to: ResetTo,
    /// For `to: timestamp`: milliseconds since the Unix epoch; each partition moves to the first
    /// record at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub timestamp: Option<i64>,
    /// For `to: explicit`: partition number (as a string key) → offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 10000))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[0-9]+$'))").message("resetOffsets.offsets keys are partition numbers"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k] >= 0)").message("resetOffsets.offsets values are offsets (>= 0)"))]
    pub offsets: Option<BTreeMap<String, i64>>,
}

/// Where an offset reset moves a group.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResetTo {
    /// The log start offset of each partition.
    Earliest,
    /// The log end offset of each partition.
    Latest,
    /// The first offset at or after `timestamp`.
    Timestamp,
    /// The offsets given in `offsets`.
    Explicit,
}

/// State of a consumer group, in the terms of Kafka's KIP-848 group protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// The operator could not ask the coordinator.
    Unknown,
    /// No members (committed offsets may exist).
    Empty,
    /// The coordinator is computing a new assignment.
    Assigning,
    /// Members are moving to a new assignment.
    Reconciling,
    /// Every member has its assignment.
    Stable,
    /// No members and no committed offsets: the group does not exist at its coordinator (yet,
    /// or any more), as Kafka reports it.
    Dead,
}

/// What the operator observed of a ConsumerGroup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `LagHigh` (total lag above `spec.lagThreshold`), `OffsetsReset`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The group's state at the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<GroupState>,
    /// Number of members.
    #[serde(default)]
    pub member_count: i32,
    /// The members, with the partitions of the topic each consumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["memberId".into()]))]
    pub members: Vec<GroupMemberStatus>,
    /// The last `spec.resetOffsets` performed (a reset is performed once per change of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_reset_offsets: Option<ResetOffsets>,
    /// One entry per partition of the topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["partition".into()]))]
    pub partitions: Vec<GroupPartitionStatus>,
    /// Sum of the partitions' lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_lag: Option<i64>,
}

/// A member of a consumer group.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberStatus {
    /// The id the coordinator gave it.
    pub member_id: String,
    /// Its client id.
    #[serde(default)]
    pub client_id: String,
    /// The host it runs on.
    #[serde(default)]
    pub host: String,
    /// The partitions of the topic it consumes.
    #[serde(default)]
    pub partitions: Vec<i32>,
}

/// The group's position in one partition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupPartitionStatus {
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset; unset when it never committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_offset: Option<i64>,
    /// The partition's log end offset.
    pub log_end_offset: i64,
    /// `logEndOffset - committedOffset` (from the log start offset when nothing is committed).
    pub lag: i64,
}

// ---------------------------------------------------------------------------------------------
// Generated manifests
// ---------------------------------------------------------------------------------------------

/// The first line of every generated manifest.
pub const GENERATED_HEADER: &str =
    "# Generated by `cargo run -p runnel-operator --bin crdgen` from operator/src/crd.rs: do not edit.\n";

/// One generated CustomResourceDefinition: the file it belongs in under `crds/`, and its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdManifest {
    /// File name, `<plural>.runnel.dev.yaml`.
    pub file_name: String,
    /// The manifest, starting with [`GENERATED_HEADER`].
    pub yaml: String,
}

/// What can go wrong while rendering the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The CRD object could not be serialised as YAML.
    #[error("rendering the CRD `{name}` as YAML: {source}")]
    Yaml {
        /// The CRD's name.
        name: String,
        /// What serde_yaml said.
        source: serde_yaml::Error,
    },
}

/// The CustomResourceDefinitions of [`Cluster`], [`Topic`] and [`ConsumerGroup`].
pub fn crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![Cluster::crd(), Topic::crd(), ConsumerGroup::crd()]
}

/// The manifests `crdgen` writes to `crds/`, one file per CRD.
pub fn manifests() -> Result<Vec<CrdManifest>, CrdError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_yaml::to_string(&crd).map_err(|source| CrdError::Yaml {
                name: name.clone(),
                source,
            })?;
            Ok(CrdManifest {
                file_name: format!("{name}.yaml"),
                yaml: format!("{GENERATED_HEADER}{body}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::Value;

    /// The `openAPIV3Schema` of a CRD as JSON.
    fn schema<K: CustomResourceExt>() -> Value {
        let crd = serde_json::to_value(K::crd()).unwrap_or(Value::Null);
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// The `x-kubernetes-validations` at a schema node, as (rule, message) pairs.
    fn rules(node: &Value) -> Vec<(String, String)> {
        node["x-kubernetes-validations"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|r| {
                        (
                            r["rule"].as_str().unwrap_or_default().to_string(),
                            r["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn has_rule(node: &Value, rule: &str, message: &str) -> bool {
        rules(node).contains(&(rule.to_string(), message.to_string()))
    }

    #[test]
    fn topic_partitions_grow_only_and_bounded() {
        let spec = &schema::<Topic>()["properties"]["spec"];
        let partitions = &spec["properties"]["partitions"];
        assert!(
            has_rule(partitions, "self >= oldSelf", "partitions may not shrink"),
            "{partitions}"
        );
        assert_eq!(partitions["minimum"], 1.0);
        assert_eq!(partitions["maximum"], 10000.0);
    }

    #[test]
    fn topic_replicas_immutable_and_bounded() {
        let spec = &schema::<Topic>()["properties"]["spec"];
        let replicas = &spec["properties"]["replicas"];
        assert!(
            has_rule(
                replicas,
                "self == oldSelf",
                "replicas (replication factor) is immutable"
            ),
            "{replicas}"
        );
        assert_eq!(replicas["minimum"], 1.0);
        assert_eq!(replicas["maximum"], 100.0);
        let min_isr = &spec["properties"]["config"]["properties"]["minInsyncReplicas"];
        assert_eq!(min_isr["minimum"], 1.0);
        assert!(rules(spec)
            .iter()
            .any(|(_, m)| m == "config.minInsyncReplicas may not exceed replicas"));
    }

    #[test]
    fn topic_name_pattern_and_immutability() {
        let root = schema::<Topic>();
        let spec = &root["properties"]["spec"];
        let name = &spec["properties"]["topicName"];
        assert_eq!(name["pattern"], TOPIC_NAME_PATTERN);
        assert_eq!(name["maxLength"], 249);
        assert!(has_rule(name, "self == oldSelf", "topicName is immutable"));
        // Setting or removing it is a change too.
        assert!(has_rule(
            spec,
            "has(self.topicName) == has(oldSelf.topicName)",
            "topicName is immutable"
        ));
        assert!(has_rule(
            &spec["properties"]["cluster"],
            "self == oldSelf",
            "cluster is immutable"
        ));
        assert!(rules(&root)
            .iter()
            .any(|(r, _)| r.contains("self.metadata.name.size() <= 249")));
    }

    #[test]
    fn topic_config_is_typed_with_kafka_names() {
        let config = &schema::<Topic>()["properties"]["spec"]["properties"]["config"];
        let fields: Vec<&String> = config["properties"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            fields,
            [
                "cleanupPolicy",
                "deleteRetentionMs",
                "maxMessageBytes",
                "messageTimestampType",
                "minCleanableDirtyRatio",
                "minInsyncReplicas",
                "retentionBytes",
                "retentionMs",
                "uncleanLeaderElectionEnable"
            ]
        );
        assert_eq!(
            config["properties"]["cleanupPolicy"]["enum"],
            serde_json::json!(["delete", "compact", "compact,delete"])
        );
        assert_eq!(config["properties"]["retentionMs"]["minimum"], -1.0);
    }

    #[test]
    fn cluster_bounds_and_storage_rules() {
        let root = schema::<Cluster>();
        let spec = &root["properties"]["spec"];
        assert_eq!(spec["properties"]["brokers"]["minimum"], 1.0);
        assert_eq!(spec["properties"]["brokers"]["maximum"], 100.0);
        let storage = &spec["properties"]["storage"]["properties"];
        assert!(storage["size"]["pattern"].is_string());
        assert!(has_rule(
            &storage["size"],
            "quantity(self).compareTo(quantity(oldSelf)) >= 0",
            "storage size may not shrink"
        ));
        assert!(has_rule(
            &storage["storageClassName"],
            "self == oldSelf",
            "storageClassName is immutable"
        ));
        assert!(rules(&root)
            .iter()
            .any(|(r, _)| r == "self.metadata.name.size() <= 52"));
        let required = spec["required"].as_array().cloned().unwrap_or_default();
        assert!(required.contains(&"brokers".into()) && required.contains(&"storage".into()));
    }

    #[test]
    fn consumer_group_reset_rules() {
        let spec = &schema::<ConsumerGroup>()["properties"]["spec"];
        let reset = &spec["properties"]["resetOffsets"];
        assert_eq!(
            reset["properties"]["to"]["enum"],
            serde_json::json!(["earliest", "latest", "timestamp", "explicit"])
        );
        assert!(rules(reset)
            .iter()
            .any(|(r, _)| r == "self.to != 'timestamp' || has(self.timestamp)"));
        assert!(rules(reset)
            .iter()
            .any(|(r, _)| r == "self.to != 'explicit' || has(self.offsets)"));
        assert_eq!(reset["properties"]["offsets"]["maxProperties"], 10000);
        assert_eq!(spec["properties"]["lagThreshold"]["minimum"], 0.0);
    }

    #[test]
    fn names_subresources_and_printer_columns() {
        let columns = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            let version = &crd.spec.versions[0];
            assert!(version.subresources.as_ref().is_some_and(|s| s.status.is_some()));
            version
                .additional_printer_columns
                .iter()
                .flatten()
                .filter(|c| c.priority.unwrap_or(0) == 0)
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        let (cluster, topic, group) = (Cluster::crd(), Topic::crd(), ConsumerGroup::crd());
        assert_eq!(
            columns(&topic),
            ["Cluster", "Partitions", "Replicas", "Ready", "Age"]
        );
        assert_eq!(columns(&cluster), ["Brokers", "Ready", "Age"]);
        assert_eq!(columns(&group), ["Topic", "State", "Members", "Lag", "Age"]);
        for (crd, short) in [(&cluster, "rc"), (&topic, "rt"), (&group, "rcg")] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.versions[0].name, VERSION);
            assert!(crd
                .spec
                .names
                .short_names
                .iter()
                .flatten()
                .any(|s| s == short));
            assert_eq!(crd.spec.names.categories, Some(vec!["runnel".to_string()]));
        }
    }

    #[test]
    fn status_lists_merge_by_key() {
        let status = &schema::<Topic>()["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            status["conditions"]["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert_eq!(
            status["partitions"]["x-kubernetes-list-map-keys"],
            serde_json::json!(["partition"])
        );
    }

    #[test]
    fn manifests_are_named_after_the_crds() {
        let names: Vec<String> = manifests()
            .map(|m| m.into_iter().map(|m| m.file_name).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            [
                "clusters.runnel.dev.yaml",
                "topics.runnel.dev.yaml",
                "consumergroups.runnel.dev.yaml"
            ]
        );
    }
}
