//! The broker's errors, and the one place where they become gRPC statuses.

use crate::log::LogError;
use crate::storage::StorageError;
use tonic::{Code, Status};

/// Everything a broker request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No such topic.
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    /// No such partition of an existing topic.
    #[error("topic `{topic}` has {count} partitions, asked for partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many it has.
        count: usize,
    },
    /// This broker does not lead the partition.
    #[error("broker {broker} is not the leader of `{topic}` partition {partition}; the leader is broker {leader}{at}")]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// This broker.
        broker: i32,
        /// The leader's id (-1 when none).
        leader: i32,
        /// " at host:port" when known.
        at: String,
    },
    /// A topic name Kafka's rules refuse.
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A partition count of zero, negative or too large.
    #[error("invalid partition count {0}: a topic needs between 1 and 10000 partitions")]
    InvalidPartitionCount(i32),
    /// A replication factor the cluster cannot satisfy.
    #[error("invalid replication factor {factor}: {reason}")]
    InvalidReplicationFactor {
        /// The factor asked for.
        factor: i32,
        /// Why it is refused.
        reason: String,
    },
    /// A topic config value out of its domain.
    #[error("invalid topic config {key}={value}: {reason}")]
    InvalidConfig {
        /// The config key.
        key: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A topic that exists already.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// A produce request with both or neither of `batches` and `records`.
    #[error("{0}")]
    InvalidRequest(String),
    /// A produce request larger than the broker takes.
    #[error("produce request of {size} bytes exceeds the limit of {max} bytes")]
    RequestTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A topic call that only the controller may make.
    #[error("this broker is managed by the operator: change topics through Topic resources")]
    NotController,
    /// A partition log refused or failed.
    #[error("topic `{topic}` partition {partition}: {source}")]
    Log {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What the log said.
        #[source]
        source: LogError,
    },
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`: refused, nothing
    /// appended (Kafka's NOT_ENOUGH_REPLICAS).
    #[error("NOT_ENOUGH_REPLICAS: topic `{topic}` partition {partition} has {} in-sync replicas {isr:?}, min.insync.replicas is {min}; nothing was appended", isr.len())]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The in-sync replicas.
        isr: Vec<i32>,
        /// The topic's `min.insync.replicas`.
        min: i32,
    },
    /// A replication request with a leader epoch other than the partition's here.
    #[error("{topic}/{partition}: {code}: the request is for leader epoch {asked}, broker {broker} is at {current}")]
    LeaderEpoch {
        /// FENCED_LEADER_EPOCH (the request's is older) or UNKNOWN_LEADER_EPOCH (newer).
        code: &'static str,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The request's epoch.
        asked: i32,
        /// This broker's epoch.
        current: i32,
        /// This broker.
        broker: i32,
    },
    /// acks=all whose records committed while fewer copies than `min.insync.replicas` were in
    /// the ISR (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    #[error("NOT_ENOUGH_REPLICAS_AFTER_APPEND: topic `{topic}` partition {partition}: the records were appended and committed by {copies} in-sync replicas, fewer than min.insync.replicas {min}; a retry of an idempotent producer is deduplicated")]
    NotEnoughReplicasAfterAppend {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The copies that committed them.
        copies: usize,
        /// The topic's `min.insync.replicas`.
        min: i32,
    },
    /// DeletePartitions of a replicated partition's copy that the metadata still places here.
    #[error("topic `{topic}` partition {partition} is replicated on brokers {replicas:?} and metadata epoch {epoch} places a copy here: only copies the controller no longer places are deleted (remove the partition from the topic instead)")]
    StillAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Its replicas.
        replicas: Vec<i32>,
        /// The metadata epoch held.
        epoch: i64,
    },
    /// acks=all did not become durable in time.
    #[error("topic `{topic}` partition {partition}: records appended but not durable within {millis} ms")]
    DurabilityTimeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The timeout.
        millis: u64,
    },
    /// An append stopped with a bug (a panic), logged by its appender thread.
    #[error("topic `{topic}` partition {partition}: the append failed unexpectedly; the broker's log has the cause")]
    AppendAborted {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A stored batch that cannot be decoded (it was stored before records were checked, or
    /// the disk corrupted it).
    #[error("topic `{topic}` partition {partition}: the stored batch at offset {offset} cannot be read: {reason}")]
    CorruptBatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The batch's base offset.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// The block of producer ids the controller handed this broker is used up (or none came yet).
    #[error("this broker has handed out every producer id of its block ({first} to {end}, exclusive) or has none yet; the controller hands it the next within a status interval: retry")]
    ProducerIdsExhausted {
        /// The block's first id.
        first: i64,
        /// Its end.
        end: i64,
    },
    /// A plain-record produce over several partitions failed after some were appended.
    #[error("{source} (the records for partitions {appended:?} of the request were appended)")]
    PartlyAppended {
        /// The partitions whose records were appended.
        appended: Vec<i32>,
        /// Why the rest failed.
        source: Box<BrokerError>,
    },
    /// A consumer-group call refused by the group's rules.
    #[error(transparent)]
    Group(crate::groups::GroupError),
    /// No such consumer group.
    #[error("consumer group `{0}` does not exist (it has no members and no committed offsets)")]
    UnknownGroup(String),
    /// This broker does not coordinate the group.
    #[error("broker {broker} is not the coordinator of group `{group}`; the coordinator is broker {coordinator}{at}")]
    NotCoordinator {
        /// The group.
        group: String,
        /// This broker.
        broker: i32,
        /// The coordinator's id (-1 when none).
        coordinator: i32,
        /// " at host:port" when known.
        at: String,
    },
    /// Groups cannot be coordinated yet.
    #[error("no group coordinator is available: {0}")]
    CoordinatorNotAvailable(String),
    /// Storage failed outside a partition log.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The broker is stopping.
    #[error("broker is shutting down")]
    ShuttingDown,
}

impl BrokerError {
    /// The gRPC code a client sees.
    pub fn code(&self) -> Code {
        match self {
            BrokerError::PartlyAppended { source, .. } => source.code(),
            BrokerError::UnknownTopic(_)
            | BrokerError::UnknownPartition { .. }
            | BrokerError::UnknownGroup(_) => Code::NotFound,
            BrokerError::NotLeader { .. }
            | BrokerError::NotController
            | BrokerError::NotCoordinator { .. } => Code::FailedPrecondition,
            BrokerError::Group(e) => group_code(e),
            BrokerError::CoordinatorNotAvailable(_) => Code::Unavailable,
            BrokerError::InvalidTopicName { .. }
            | BrokerError::InvalidPartitionCount(_)
            | BrokerError::InvalidReplicationFactor { .. }
            | BrokerError::InvalidConfig { .. }
            | BrokerError::InvalidRequest(_) => Code::InvalidArgument,
            BrokerError::TopicExists(_) => Code::AlreadyExists,
            BrokerError::RequestTooLarge { .. } => Code::ResourceExhausted,
            BrokerError::Log { source, .. } => log_code(source),
            BrokerError::DurabilityTimeout { .. } => Code::DeadlineExceeded,
            BrokerError::NotEnoughReplicas { .. }
            | BrokerError::NotEnoughReplicasAfterAppend { .. } => Code::Unavailable,
            BrokerError::LeaderEpoch { .. } | BrokerError::StillAssigned { .. } => {
                Code::FailedPrecondition
            }
            BrokerError::CorruptBatch { .. } => Code::DataLoss,
            BrokerError::Storage(_) | BrokerError::AppendAborted { .. } => Code::Internal,
            BrokerError::ShuttingDown | BrokerError::ProducerIdsExhausted { .. } => {
                Code::Unavailable
            }
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self.code() {
            Code::NotFound => "not_found",
            Code::InvalidArgument => "invalid_argument",
            Code::OutOfRange => "out_of_range",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::AlreadyExists => "already_exists",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            _ => "internal",
        }
    }

    /// Wraps a log error with its partition.
    pub fn log(topic: &str, partition: i32, source: LogError) -> Self {
        BrokerError::Log {
            topic: topic.to_string(),
            partition,
            source,
        }
    }
}

/// The gRPC code of a group's refusal: a fenced member is told to join again (ABORTED).
fn group_code(e: &crate::groups::GroupError) -> Code {
    use crate::groups::GroupError;
    match e {
        GroupError::UnknownMember { .. }
        | GroupError::FencedEpoch { .. }
        | GroupError::NotOwned { .. } => Code::Aborted,
        GroupError::NotEmpty { .. } => Code::FailedPrecondition,
        GroupError::Invalid { .. } => Code::InvalidArgument,
    }
}

/// The gRPC code of a partition log's error.
fn log_code(e: &LogError) -> Code {
    match e {
        LogError::InBatch { source, .. } => log_code(source),
        LogError::InvalidBatch(_)
        | LogError::EmptyProduce
        | LogError::Unsupported(_)
        | LogError::OffsetDeltaMismatch { .. }
        | LogError::UnknownProducerId { .. }
        | LogError::KeylessInCompactedTopic { .. } => Code::InvalidArgument,
        LogError::BatchTooLarge { .. } => Code::ResourceExhausted,
        LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
        LogError::OutOfOrderSequence { .. } | LogError::ProducerFenced { .. } => Code::Aborted,
        LogError::Storage(_) => Code::Internal,
        LogError::Offline(_) => Code::Unavailable,
        LogError::NotLeader | LogError::Replication(_) => Code::FailedPrecondition,
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}
