//! Cluster metadata as a broker holds it: topic names, partition leaders, topic configuration.
//! Pure helpers; the broker persists and swaps whole [`ClusterMetadata`] values.

use crate::error::BrokerError;
use crate::log::LogConfig;
use runnel_proto::v1::{ClusterMetadata, PartitionMetadata, TopicConfig, TopicMetadata};

/// The longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// The most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Checks a topic name with Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not allowed".to_string())
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some(format!(
            "it is {} characters long, the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("character {c:?} is not allowed (use a-z, A-Z, 0-9, '.', '_', '-')"))
    };
    match reason {
        Some(reason) => Err(BrokerError::InvalidTopicName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a partition count for a new topic.
pub fn validate_partition_count(partitions: i32) -> Result<(), BrokerError> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(BrokerError::InvalidPartitionCount(partitions));
    }
    Ok(())
}

/// The log settings of a topic: its config over the broker's defaults.
pub fn log_config(config: Option<&TopicConfig>, defaults: &LogConfig) -> LogConfig {
    let Some(c) = config else { return *defaults };
    LogConfig {
        max_message_bytes: c
            .max_message_bytes
            .filter(|m| *m > 0)
            .map_or(defaults.max_message_bytes, |m| m as usize),
        retention_ms: c.retention_ms.unwrap_or(defaults.retention_ms),
        retention_bytes: c.retention_bytes.unwrap_or(defaults.retention_bytes),
        log_append_time: c
            .message_timestamp_type
            .as_deref()
            .map_or(defaults.log_append_time, |t| t == "LogAppendTime"),
        delete: c.cleanup_policy.as_deref().map_or(defaults.delete, |p| {
            cleanup_policies(p).any(|p| p == "delete")
        }),
        compact: c.cleanup_policy.as_deref().map_or(defaults.compact, |p| {
            cleanup_policies(p).any(|p| p == "compact")
        }),
        delete_retention_ms: c
            .delete_retention_ms
            .unwrap_or(defaults.delete_retention_ms),
        min_cleanable_dirty_ratio: c
            .min_cleanable_dirty_ratio
            .unwrap_or(defaults.min_cleanable_dirty_ratio),
        min_insync_replicas: c
            .min_insync_replicas
            .unwrap_or(defaults.min_insync_replicas),
    }
}

/// The policies of a `cleanup.policy` value: Kafka's comma-separated list.
fn cleanup_policies(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// Checks a topic config's values, naming the first bad one.
pub fn validate_topic_config(c: &TopicConfig) -> Result<(), BrokerError> {
    let bad = |key: &str, value: String, why: &str| {
        Err(BrokerError::InvalidConfig {
            key: key.to_string(),
            value,
            reason: why.to_string(),
        })
    };
    if let Some(v) = c.retention_ms.filter(|v| *v < -1) {
        return bad(
            "retention.ms",
            v.to_string(),
            "must be -1 (forever) or at least 0",
        );
    }
    if let Some(v) = c.retention_bytes.filter(|v| *v < -1) {
        return bad(
            "retention.bytes",
            v.to_string(),
            "must be -1 (no limit) or at least 0",
        );
    }
    if let Some(v) = c
        .cleanup_policy
        .as_deref()
        .filter(|v| v.is_empty() || cleanup_policies(v).any(|p| !matches!(p, "delete" | "compact")))
    {
        return bad(
            "cleanup.policy",
            v.to_string(),
            "must be `delete`, `compact` or both (`compact,delete`)",
        );
    }
    if let Some(v) = c.delete_retention_ms.filter(|v| *v < 0) {
        return bad("delete.retention.ms", v.to_string(), "must be at least 0");
    }
    if let Some(v) = c
        .min_cleanable_dirty_ratio
        .filter(|v| !(0.0..=1.0).contains(v))
    {
        return bad(
            "min.cleanable.dirty.ratio",
            v.to_string(),
            "must be between 0 and 1",
        );
    }
    if let Some(v) = c.min_insync_replicas.filter(|v| *v < 1) {
        return bad("min.insync.replicas", v.to_string(), "must be at least 1");
    }
    if let Some(v) = c.max_message_bytes.filter(|v| *v < 1) {
        return bad("max.message.bytes", v.to_string(), "must be at least 1");
    }
    if let Some(v) = c
        .message_timestamp_type
        .as_deref()
        .filter(|v| !matches!(*v, "CreateTime" | "LogAppendTime"))
    {
        return bad(
            "message.timestamp.type",
            v.to_string(),
            "must be `CreateTime` or `LogAppendTime`",
        );
    }
    Ok(())
}

/// A topic whose partitions all live on one broker (standalone mode).
pub fn single_broker_topic(
    name: &str,
    partitions: i32,
    broker_id: i32,
    config: TopicConfig,
) -> TopicMetadata {
    TopicMetadata {
        name: name.to_string(),
        partitions: (0..partitions)
            .map(|p| PartitionMetadata {
                partition: p,
                leader: broker_id,
                leader_epoch: 0,
                replicas: vec![broker_id],
                isr: vec![broker_id],
            })
            .collect(),
        replication_factor: 1,
        config: Some(config),
    }
}

/// Finds a topic.
pub fn find_topic<'a>(md: &'a ClusterMetadata, name: &str) -> Option<&'a TopicMetadata> {
    md.topics.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["orders", "a.b_c-d", "X9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/name",
            "ünïcode",
            &"x".repeat(250),
        ] {
            let err = validate_topic_name(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid topic name"), "{err}");
        }
    }

    #[test]
    fn partition_counts_are_bounded() {
        assert!(validate_partition_count(1).is_ok());
        assert!(validate_partition_count(0).is_err());
        assert!(validate_partition_count(-3).is_err());
        assert!(validate_partition_count(MAX_PARTITIONS + 1).is_err());
    }

    #[test]
    fn topic_config_overrides_defaults_and_bad_values_are_named() {
        let d = LogConfig::default();
        let c = TopicConfig {
            retention_ms: Some(5),
            max_message_bytes: Some(100),
            ..Default::default()
        };
        let l = log_config(Some(&c), &d);
        assert_eq!(
            (l.retention_ms, l.max_message_bytes, l.retention_bytes),
            (5, 100, d.retention_bytes)
        );
        let bad = TopicConfig {
            cleanup_policy: Some("shred".into()),
            ..Default::default()
        };
        let err = validate_topic_config(&bad).expect_err("bad").to_string();
        assert!(err.contains("cleanup.policy"), "{err}");
    }
}
