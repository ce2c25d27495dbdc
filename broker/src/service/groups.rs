//! The `Groups` service: consumer-group membership, commits and administration, over the
//! [`Coordinator`].

use super::status;
use crate::error::BrokerError;
use crate::groups::assignor::TopicPartition;
use crate::groups::{Committed, Coordinator, Heartbeat, ResetTo, Subscription};
use crate::storage::Storage;
use runnel_proto::v1::groups_server::Groups as GroupsRpc;
use runnel_proto::v1::{
    reset_offsets_request::To, CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset,
    DeleteGroupRequest, DeleteGroupResponse, DescribeGroupRequest, DescribeGroupResponse,
    FetchOffsetsRequest, FetchOffsetsResponse, GroupListing, GroupMember, HeartbeatRequest,
    HeartbeatResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetReset, PartitionSet, ResetOffsetsRequest, ResetOffsetsResponse,
    TopicPartitions,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The longest a heartbeat waits for a change of its member's assignment.
const MAX_HEARTBEAT_WAIT_MS: u64 = 30_000;

/// The `runnel.v1.Groups` service.
#[derive(Debug)]
pub struct GroupsService<S: Storage> {
    coordinator: Arc<Coordinator<S>>,
}

impl<S: Storage> GroupsService<S> {
    /// Serves `coordinator`.
    pub fn new(coordinator: Arc<Coordinator<S>>) -> Self {
        Self { coordinator }
    }

    fn err(&self, rpc: &str) -> impl Fn(BrokerError) -> Status + '_ {
        let rpc = rpc.to_string();
        move |e| status(self.coordinator.broker(), &rpc, e)
    }
}

fn by_topic<'a>(parts: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<TopicPartitions> {
    TopicPartitions::group(parts)
}

fn flatten(list: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    TopicPartitions::flatten(list)
}

fn subscription(
    group: &str,
    topics: Vec<String>,
    regex: Option<String>,
) -> Result<Option<Subscription>, BrokerError> {
    let regex = match regex.filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => Some(
            // Matched whole, as Kafka's pattern subscriptions are.
            regex::Regex::new(&format!("^(?:{r})$")).map_err(|e| {
                BrokerError::InvalidRequest(format!(
                    "group `{group}`: the subscription's regular expression `{r}` is invalid: {e}"
                ))
            })?,
        ),
    };
    if topics.is_empty() && regex.is_none() {
        return Ok(None);
    }
    Ok(Some(Subscription {
        topics: topics.into_iter().collect(),
        regex,
    }))
}

fn committed_offset((topic, partition): &TopicPartition, c: Option<&Committed>) -> CommittedOffset {
    CommittedOffset {
        topic: topic.clone(),
        partition: *partition,
        offset: c.map_or(-1, |c| c.offset),
        leader_epoch: c.map_or(-1, |c| c.leader_epoch),
        metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
        commit_timestamp_ms: c.map_or(-1, |c| c.commit_timestamp_ms),
    }
}

#[tonic::async_trait]
impl<S: Storage> GroupsRpc for GroupsService<S> {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let err = self.err("Heartbeat");
        let subscription = subscription(&r.group_id, r.subscribed_topics, r.subscribed_topic_regex)
            .map_err(&err)?;
        let hb = Heartbeat {
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            subscription,
            owned: r.owned_partitions.map(|o: PartitionSet| flatten(&o.topics)),
            rack: r.rack,
            assignor: r.assignor,
            session_timeout_ms: r.session_timeout_ms,
            rebalance_timeout_ms: r.rebalance_timeout_ms,
            client_id: r.client_id,
            client_host: r.client_host,
        };
        let wait =
            std::time::Duration::from_millis(u64::from(r.wait_ms).min(MAX_HEARTBEAT_WAIT_MS));
        let reply = self
            .coordinator
            .heartbeat(&r.group_id, hb, wait)
            .await
            .map_err(&err)?;
        Ok(Response::new(HeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.member_epoch,
            heartbeat_interval_ms: reply.heartbeat_interval_ms,
            assignment: by_topic(&reply.assignment),
        }))
    }

    async fn leave_group(
        &self,
        request: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        let r = request.into_inner();
        self.coordinator
            .leave(&r.group_id, &r.member_id)
            .map_err(self.err("LeaveGroup"))?;
        Ok(Response::new(LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let r = request.into_inner();
        let now = crate::broker::now_ms();
        let commits = r
            .offsets
            .into_iter()
            .map(|o| {
                (
                    (o.topic, o.partition),
                    Committed {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata,
                        commit_timestamp_ms: now,
                    },
                )
            })
            .collect();
        self.coordinator
            .commit(&r.group_id, &r.member_id, r.member_epoch, commits)
            .await
            .map_err(self.err("CommitOffsets"))?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let r = request.into_inner();
        let only: Vec<TopicPartition> = flatten(&r.partitions).into_iter().collect();
        let offsets = self
            .coordinator
            .fetch_offsets(&r.group_id, &only)
            .map_err(self.err("FetchOffsets"))?;
        Ok(Response::new(FetchOffsetsResponse {
            offsets: offsets
                .iter()
                .map(|(tp, c)| committed_offset(tp, c.as_ref()))
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let r = request.into_inner();
        let d = self
            .coordinator
            .describe(&r.group_id)
            .map_err(self.err("DescribeGroup"))?;
        let g = &d.group;
        Ok(Response::new(DescribeGroupResponse {
            group_id: r.group_id,
            state: d.state.name().to_string(),
            group_epoch: g.epoch(),
            assignment_epoch: g.assignment_epoch(),
            assignor: g.assignor().name().to_string(),
            members: g
                .members()
                .values()
                .map(|m| GroupMember {
                    member_id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rack: m.rack.clone(),
                    member_epoch: m.epoch,
                    subscribed_topics: m.subscription.topics.iter().cloned().collect(),
                    subscribed_topic_regex: m.subscription.regex_source().map(|s| {
                        s.strip_prefix("^(?:")
                            .and_then(|s| s.strip_suffix(")$"))
                            .unwrap_or(s)
                            .to_string()
                    }),
                    assignment: by_topic(m.assigned.iter().chain(m.revoking.iter())),
                    target_assignment: by_topic(&g.target_of(&m.id)),
                })
                .collect(),
            offsets: d
                .offsets
                .iter()
                .map(|(tp, c)| committed_offset(tp, Some(c)))
                .collect(),
            coordinator: self.coordinator.broker().settings().broker_id,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let groups = self.coordinator.list().map_err(self.err("ListGroups"))?;
        Ok(Response::new(ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|(group_id, state, members)| GroupListing {
                    group_id,
                    state: state.name().to_string(),
                    members: members as i32,
                })
                .collect(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let r = request.into_inner();
        self.coordinator
            .delete(&r.group_id)
            .await
            .map_err(self.err("DeleteGroup"))?;
        Ok(Response::new(DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let r = request.into_inner();
        let err = self.err("ResetOffsets");
        let to =
            match r.to {
                Some(To::Earliest(_)) => ResetTo::Earliest,
                Some(To::Latest(_)) => ResetTo::Latest,
                Some(To::TimestampMs(ts)) => ResetTo::Timestamp(ts),
                Some(To::Offset(o)) => ResetTo::Offset(o),
                Some(To::ShiftBy(n)) => ResetTo::ShiftBy(n),
                None => return Err(err(BrokerError::InvalidRequest(
                    "a reset needs a target: earliest, latest, timestamp_ms, offset or shift_by"
                        .into(),
                ))),
            };
        let partitions: Vec<(String, Vec<i32>)> = r
            .partitions
            .into_iter()
            .map(|t| (t.topic, t.partitions))
            .collect();
        let plan = self
            .coordinator
            .reset_offsets(&r.group_id, &partitions, to, r.execute)
            .await
            .map_err(&err)?;
        Ok(Response::new(ResetOffsetsResponse {
            offsets: plan
                .into_iter()
                .map(|p| OffsetReset {
                    topic: p.partition.0,
                    partition: p.partition.1,
                    previous_offset: p.previous,
                    new_offset: p.new,
                })
                .collect(),
            executed: r.execute,
        }))
    }
}
