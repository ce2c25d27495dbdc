//! Topic administration: create, delete, list, describe.

use std::collections::{BTreeMap, HashMap};

use runnel_proto::v1::{
    CreateTopicRequest, DeleteTopicRequest, DescribePartitionsRequest, ListTopicsRequest,
    MetadataResponse, OffsetSpec, TopicConfig, TopicMetadata,
};
use serde::Serialize;

use crate::connection::{admin_client, Cluster};
use crate::error::{Error, Result};

/// The topic configuration keys `create_topic` accepts, in Kafka's spelling.
pub const TOPIC_CONFIG_KEYS: [&str; 8] = [
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "min.insync.replicas",
    "max.message.bytes",
    "message.timestamp.type",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
];

/// Parses `key=value` (as given to `--config`) into its two halves.
pub fn parse_config_pair(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(Error::Config(format!(
            "topic config `{s}` is not of the form key=value"
        ))),
    }
}

/// Turns Kafka-style topic configs into the wire's [`TopicConfig`]; an unknown key or a value
/// of the wrong kind is an error naming the key.
pub fn topic_config(configs: &BTreeMap<String, String>) -> Result<TopicConfig> {
    fn int<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
        v.parse().map_err(|_| {
            Error::Config(format!(
                "topic config `{key}`: `{v}` is not a valid integer"
            ))
        })
    }
    let mut c = TopicConfig::default();
    for (key, value) in configs {
        match key.as_str() {
            "retention.ms" => c.retention_ms = Some(int(key, value)?),
            "retention.bytes" => c.retention_bytes = Some(int(key, value)?),
            "cleanup.policy" => match value.as_str() {
                "delete" | "compact" | "compact,delete" | "delete,compact" => {
                    c.cleanup_policy = Some(value.clone())
                }
                _ => {
                    return Err(Error::Config(format!(
                        "topic config `cleanup.policy`: `{value}` is not one of delete, compact, \
                         compact,delete"
                    )))
                }
            },
            "delete.retention.ms" => c.delete_retention_ms = Some(int(key, value)?),
            "min.cleanable.dirty.ratio" => {
                c.min_cleanable_dirty_ratio = Some(value.parse().map_err(|_| {
                    Error::Config(format!(
                        "topic config `{key}`: `{value}` is not a number between 0 and 1"
                    ))
                })?)
            }
            "min.insync.replicas" => c.min_insync_replicas = Some(int(key, value)?),
            "max.message.bytes" => c.max_message_bytes = Some(int(key, value)?),
            "message.timestamp.type" => match value.as_str() {
                "CreateTime" | "LogAppendTime" => c.message_timestamp_type = Some(value.clone()),
                _ => {
                    return Err(Error::Config(format!(
                        "topic config `message.timestamp.type`: `{value}` is not one of \
                         CreateTime, LogAppendTime"
                    )))
                }
            },
            other => {
                return Err(Error::Config(format!(
                    "unknown topic config `{other}` (known: {})",
                    TOPIC_CONFIG_KEYS.join(", ")
                )))
            }
        }
    }
    Ok(c)
}

/// A [`TopicConfig`] back as Kafka-style key/value pairs (only the fields that are set).
pub fn config_entries(c: &TopicConfig) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(v) = c.retention_ms {
        m.insert("retention.ms".into(), v.to_string());
    }
    if let Some(v) = c.retention_bytes {
        m.insert("retention.bytes".into(), v.to_string());
    }
    if let Some(v) = &c.cleanup_policy {
        m.insert("cleanup.policy".into(), v.clone());
    }
    if let Some(v) = c.min_insync_replicas {
        m.insert("min.insync.replicas".into(), v.to_string());
    }
    if let Some(v) = c.max_message_bytes {
        m.insert("max.message.bytes".into(), v.to_string());
    }
    if let Some(v) = &c.message_timestamp_type {
        m.insert("message.timestamp.type".into(), v.clone());
    }
    if let Some(v) = c.delete_retention_ms {
        m.insert("delete.retention.ms".into(), v.to_string());
    }
    if let Some(v) = c.min_cleanable_dirty_ratio {
        m.insert("min.cleanable.dirty.ratio".into(), v.to_string());
    }
    m
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: i32,
    /// Leader broker id (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// First offset in the log.
    pub log_start_offset: i64,
    /// One past the last offset visible to consumers.
    pub high_watermark: i64,
    /// Bytes of stored batches on the leader (-1 when the leader could not say).
    pub size_bytes: i64,
}

/// A topic with its configuration and per-partition state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configs that are set (Kafka's keys).
    pub configs: BTreeMap<String, String>,
    /// Partitions in order.
    pub partitions: Vec<PartitionInfo>,
}

/// A summary row of `list_topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: usize,
    /// Replication factor.
    pub replication_factor: i32,
}

impl From<&TopicMetadata> for TopicSummary {
    fn from(t: &TopicMetadata) -> Self {
        TopicSummary {
            name: t.name.clone(),
            partitions: t.partitions.len(),
            replication_factor: t.replication_factor,
        }
    }
}

/// Administration client: talks to the `Admin` service of a (standalone) broker and to
/// `Broker.Metadata`/`ListOffsets` for descriptions.
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) cluster: Cluster,
}

impl Admin {
    /// Connects to the first reachable bootstrap broker.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        let cluster = Cluster::new(bootstrap)?;
        cluster.any_channel().await?;
        Ok(Admin { cluster })
    }

    /// Creates a topic; `configs` are Kafka-style keys (see [`TOPIC_CONFIG_KEYS`]).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<TopicMetadata> {
        if partitions < 1 {
            return Err(Error::Config(format!(
                "topic `{name}`: partitions must be at least 1, got {partitions}"
            )));
        }
        if replication_factor < 1 {
            return Err(Error::Config(format!(
                "topic `{name}`: replication factor must be at least 1, got {replication_factor}"
            )));
        }
        let config = topic_config(configs)?;
        let resp = self
            .cluster
            .admin()
            .await?
            .create_topic(CreateTopicRequest {
                name: name.to_owned(),
                partitions,
                replication_factor,
                config: Some(config),
            })
            .await
            .map_err(|s| Error::rpc("", s))?
            .into_inner();
        resp.topic
            .ok_or_else(|| Error::Protocol("CreateTopic answered without the topic".into()))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.cluster
            .admin()
            .await?
            .delete_topic(DeleteTopicRequest {
                name: name.to_owned(),
            })
            .await
            .map_err(|s| Error::rpc("", s))?;
        Ok(())
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>> {
        let mut topics = self
            .cluster
            .admin()
            .await?
            .list_topics(ListTopicsRequest {})
            .await
            .map_err(|s| Error::rpc("", s))?
            .into_inner()
            .topics;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// The cluster metadata (brokers, topics, leaders) for `topics`, all when empty.
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        self.cluster.metadata(topics).await
    }

    /// A topic's metadata with each partition's log start offset, high watermark (from
    /// `ListOffsets`) and size (from the leader's `Admin.DescribePartitions`).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let info = self.cluster.cluster_info(&[name.to_owned()]).await?;
        let Some(topic) = info.topics.get(name).cloned() else {
            return Err(Error::UnknownTopic(name.to_owned()));
        };

        let mut offsets: HashMap<i32, (i64, i64)> = HashMap::new();
        for spec in [OffsetSpec::Earliest, OffsetSpec::Latest] {
            let parts = self
                .cluster
                .list_offsets(&info, name, &[], spec, 0)
                .await
                .map_err(|e| match e {
                    Error::Rpc { status, .. } => {
                        Error::rpc(format!("list offsets of `{name}`"), status)
                    }
                    other => other,
                })?;
            for p in parts {
                let e = offsets.entry(p.partition).or_insert((-1, -1));
                match spec {
                    OffsetSpec::Earliest => e.0 = p.offset,
                    _ => e.1 = p.offset,
                }
            }
        }

        // Sizes come from each partition's leader (the only broker that knows for sure).
        let mut sizes: HashMap<i32, i64> = HashMap::new();
        let mut leaders: Vec<String> = topic
            .partitions
            .iter()
            .map(|p| info.leader_address(name, p.partition, self.cluster.bootstrap_address()))
            .collect();
        leaders.sort();
        leaders.dedup();
        for addr in leaders {
            let Ok(channel) = self.cluster.pool().get(&addr).await else {
                continue;
            };
            let Ok(resp) = admin_client(channel)
                .describe_partitions(DescribePartitionsRequest {
                    topics: vec![name.to_owned()],
                })
                .await
            else {
                continue;
            };
            for p in resp.into_inner().partitions {
                if p.topic == name && (p.is_leader || !sizes.contains_key(&p.partition)) {
                    sizes.insert(p.partition, p.size_bytes);
                }
            }
        }

        let mut partitions: Vec<PartitionInfo> = topic
            .partitions
            .iter()
            .map(|p| {
                let (start, hw) = offsets.get(&p.partition).copied().unwrap_or((-1, -1));
                PartitionInfo {
                    partition: p.partition,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    log_start_offset: start,
                    high_watermark: hw,
                    size_bytes: sizes.get(&p.partition).copied().unwrap_or(-1),
                }
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(TopicDescription {
            name: topic.name.clone(),
            replication_factor: topic.replication_factor,
            configs: topic
                .config
                .as_ref()
                .map(config_entries)
                .unwrap_or_default(),
            partitions,
        })
    }

    /// Offsets of every partition of `topic` for `query` (earliest, latest or a timestamp),
    /// each asked of the partition's leader, sorted by partition; the offset is -1 where no
    /// record matches a timestamp.
    pub async fn list_offsets(
        &self,
        topic: &str,
        query: crate::consumer::OffsetQuery,
    ) -> Result<Vec<runnel_proto::v1::PartitionOffset>> {
        let info = self.cluster.cluster_info(&[topic.to_owned()]).await?;
        if !info.topics.contains_key(topic) {
            return Err(Error::UnknownTopic(topic.to_owned()));
        }
        let (spec, ts) = query.to_wire();
        self.cluster.list_offsets(&info, topic, &[], spec, ts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn config_pairs_parse() {
        assert_eq!(
            parse_config_pair("retention.ms=1000").expect("valid"),
            ("retention.ms".into(), "1000".into())
        );
        assert_eq!(
            parse_config_pair("a=b=c").expect("valid"),
            ("a".into(), "b=c".into())
        );
        assert!(parse_config_pair("novalue").is_err());
        assert!(parse_config_pair("=x").is_err());
    }

    #[test]
    fn known_configs_map_to_fields() {
        let c = topic_config(&map(&[
            ("retention.ms", "60000"),
            ("retention.bytes", "-1"),
            ("cleanup.policy", "compact"),
            ("min.insync.replicas", "2"),
            ("max.message.bytes", "1048576"),
            ("message.timestamp.type", "LogAppendTime"),
        ]))
        .expect("valid");
        assert_eq!(c.retention_ms, Some(60000));
        assert_eq!(c.retention_bytes, Some(-1));
        assert_eq!(c.cleanup_policy.as_deref(), Some("compact"));
        assert_eq!(c.min_insync_replicas, Some(2));
        assert_eq!(c.max_message_bytes, Some(1_048_576));
        assert_eq!(c.message_timestamp_type.as_deref(), Some("LogAppendTime"));
        assert_eq!(config_entries(&c).len(), 6);
        assert_eq!(topic_config(&config_entries(&c)).expect("roundtrip"), c);
    }

    #[test]
    fn unknown_config_key_is_named() {
        let e = topic_config(&map(&[("segment.bytes", "1")])).expect_err("unknown");
        assert!(e.to_string().contains("`segment.bytes`"), "{e}");
        let e = topic_config(&map(&[("retention.ms", "soon")])).expect_err("bad int");
        assert!(e.to_string().contains("`retention.ms`"), "{e}");
        let e = topic_config(&map(&[("cleanup.policy", "shred")])).expect_err("bad policy");
        assert!(e.to_string().contains("cleanup.policy"), "{e}");
    }
}
