//! Group administration in the words of Kafka's `kafka-consumer-groups`: list, describe (with
//! each partition's committed offset, log end offset and lag), reset offsets, delete.

use std::collections::{BTreeMap, BTreeSet};

use runnel_proto::v1::{
    reset_offsets_request::To, DeleteGroupRequest, DescribeGroupRequest, ListGroupsRequest,
    OffsetSpec, ResetOffsetsRequest,
};
use serde::Serialize;

use super::coordinator::{groups_client_at, GroupCoordinator};
use super::{flatten, TopicPartition};
use crate::admin::Admin;
use crate::error::{Error, Result};

/// A group as `runnel group list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// Empty, Assigning, Reconciling or Stable.
    pub state: String,
    /// Its members.
    pub members: i32,
    /// The broker that coordinates it.
    pub coordinator: i32,
}

/// A member as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMemberInfo {
    /// The member id.
    pub member_id: String,
    /// Its client id.
    pub client_id: String,
    /// Its host.
    pub host: String,
    /// Its rack.
    pub rack: String,
    /// Its epoch.
    pub member_epoch: i32,
    /// The partitions it owns.
    pub assignment: Vec<TopicPartition>,
    /// The partitions it is moving to.
    pub target_assignment: Vec<TopicPartition>,
}

/// One partition of a group: what it committed, how far the log is, who consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset (the next record the group reads), if any.
    pub committed_offset: Option<i64>,
    /// The log end offset consumers can read to (the high watermark).
    pub log_end_offset: i64,
    /// `log_end_offset - committed_offset`, when something is committed.
    pub lag: Option<i64>,
    /// The member that owns it now.
    pub member_id: Option<String>,
    /// That member's client id.
    pub client_id: Option<String>,
    /// That member's host.
    pub host: Option<String>,
}

/// A group as `runnel group describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Empty, Assigning, Reconciling or Stable.
    pub state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// The assignor in use.
    pub assignor: String,
    /// The broker that coordinates it.
    pub coordinator: i32,
    /// Its members.
    pub members: Vec<GroupMemberInfo>,
    /// Its partitions: those with a committed offset and those assigned.
    pub partitions: Vec<GroupPartitionLag>,
    /// The sum of the partitions' lag.
    pub total_lag: i64,
}

/// Where a reset moves a group's offsets (Kafka's `--to-earliest`, `--to-latest`,
/// `--to-datetime`, `--to-offset`, `--shift-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset at or after this time (ms since the epoch).
    Timestamp(i64),
    /// This offset, clamped to the log.
    Offset(i64),
    /// The committed offset moved by this many records, clamped to the log.
    ShiftBy(i64),
}

/// One partition of a reset plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetResetPlan {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What was committed (none: nothing).
    pub previous_offset: Option<i64>,
    /// What it becomes.
    pub new_offset: i64,
}

impl Admin {
    fn coordinator_of(&self, group: &str) -> GroupCoordinator {
        GroupCoordinator::new(self.cluster.clone(), group)
    }

    /// Every group of the cluster: each broker lists those it coordinates.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let md = self.cluster.metadata(&[]).await?;
        let brokers: Vec<(i32, String)> = if md.brokers.is_empty() {
            vec![(md.broker_id, self.cluster.bootstrap_address().to_owned())]
        } else {
            md.brokers
                .iter()
                .map(|b| (b.id, b.address.clone()))
                .collect()
        };
        let mut out = Vec::new();
        for (id, address) in brokers {
            let resp = groups_client_at(&self.cluster, &address)
                .await?
                .list_groups(ListGroupsRequest {})
                .await
                .map_err(|s| Error::rpc(format!("list the groups of broker {id} at {address}"), s))?
                .into_inner();
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id,
                state: g.state,
                members: g.members,
                coordinator: id,
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// The group's state, members and, per partition, committed offset, log end offset and lag.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = self.coordinator_of(group);
        let d = coordinator
            .call("describe", |mut c| {
                let req = DescribeGroupRequest {
                    group_id: group.to_owned(),
                };
                async move { c.describe_group(req).await }
            })
            .await?;
        let mut owner: BTreeMap<TopicPartition, usize> = BTreeMap::new();
        let members: Vec<GroupMemberInfo> = d
            .members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let assignment: Vec<TopicPartition> = flatten(&m.assignment).into_iter().collect();
                for tp in &assignment {
                    owner.insert(tp.clone(), i);
                }
                GroupMemberInfo {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    host: m.client_host,
                    rack: m.rack,
                    member_epoch: m.member_epoch,
                    assignment,
                    target_assignment: flatten(&m.target_assignment).into_iter().collect(),
                }
            })
            .collect();
        let committed: BTreeMap<TopicPartition, i64> = d
            .offsets
            .iter()
            .map(|o| ((o.topic.clone(), o.partition), o.offset))
            .collect();
        let all: BTreeSet<TopicPartition> = committed.keys().chain(owner.keys()).cloned().collect();
        let ends = self.log_end_offsets(&all).await?;
        let mut total_lag = 0;
        let partitions = all
            .into_iter()
            .map(|tp| {
                let committed_offset = committed.get(&tp).copied().filter(|o| *o >= 0);
                let log_end_offset = ends.get(&tp).copied().unwrap_or(-1);
                let lag = committed_offset
                    .filter(|_| log_end_offset >= 0)
                    .map(|c| (log_end_offset - c).max(0));
                total_lag += lag.unwrap_or(0);
                let m = owner.get(&tp).map(|i| &members[*i]);
                GroupPartitionLag {
                    committed_offset,
                    log_end_offset,
                    lag,
                    member_id: m.map(|m| m.member_id.clone()),
                    client_id: m.map(|m| m.client_id.clone()),
                    host: m.map(|m| m.host.clone()),
                    topic: tp.0,
                    partition: tp.1,
                }
            })
            .collect();
        Ok(GroupDescription {
            group_id: d.group_id,
            state: d.state,
            group_epoch: d.group_epoch,
            assignor: d.assignor,
            coordinator: d.coordinator,
            members,
            partitions,
            total_lag,
        })
    }

    /// The high watermark of each partition (topics that no longer exist are left out).
    async fn log_end_offsets(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            topics.entry(t.as_str()).or_default().push(*p);
        }
        let names: Vec<String> = topics.keys().map(|t| t.to_string()).collect();
        let info = self.cluster.cluster_info(&names).await?;
        let mut out = BTreeMap::new();
        for (topic, parts) in topics {
            let Some(t) = info.topics.get(topic) else {
                continue;
            };
            let known: Vec<i32> = parts
                .into_iter()
                .filter(|p| t.partitions.iter().any(|x| x.partition == *p))
                .collect();
            let offsets = self
                .cluster
                .list_offsets(&info, topic, &known, OffsetSpec::Latest, 0)
                .await?;
            for o in offsets {
                out.insert((topic.to_owned(), o.partition), o.high_watermark);
            }
        }
        Ok(out)
    }

    /// Plans (or, with `execute`, makes) a reset of a group without members. `topics` names
    /// topics with some partitions, or none for all; empty: every partition the group has an
    /// offset for.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topics: &[(String, Vec<i32>)],
        to: ResetTo,
        execute: bool,
    ) -> Result<Vec<OffsetResetPlan>> {
        let to = match to {
            ResetTo::Earliest => To::Earliest(true),
            ResetTo::Latest => To::Latest(true),
            ResetTo::Timestamp(ts) => To::TimestampMs(ts),
            ResetTo::Offset(o) => To::Offset(o),
            ResetTo::ShiftBy(n) => To::ShiftBy(n),
        };
        let partitions: Vec<_> = topics
            .iter()
            .map(|(t, p)| runnel_proto::v1::TopicPartitions {
                topic: t.clone(),
                partitions: p.clone(),
            })
            .collect();
        let resp = self
            .coordinator_of(group)
            .call("reset the offsets", |mut c| {
                let req = ResetOffsetsRequest {
                    group_id: group.to_owned(),
                    partitions: partitions.clone(),
                    to: Some(to),
                    execute,
                };
                async move { c.reset_offsets(req).await }
            })
            .await?;
        Ok(resp
            .offsets
            .into_iter()
            .map(|o| OffsetResetPlan {
                topic: o.topic,
                partition: o.partition,
                previous_offset: (o.previous_offset >= 0).then_some(o.previous_offset),
                new_offset: o.new_offset,
            })
            .collect())
    }

    /// Deletes a group without members and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.coordinator_of(group)
            .call("delete", |mut c| {
                let req = DeleteGroupRequest {
                    group_id: group.to_owned(),
                };
                async move { c.delete_group(req).await }
            })
            .await?;
        Ok(())
    }
}
