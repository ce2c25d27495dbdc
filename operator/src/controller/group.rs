//! The ConsumerGroup controller: asks the group's coordinator (through any broker of the
//! Cluster) for the group's state, members and committed offsets, and the brokers for the
//! topic's offsets, and writes them to the resource's status every couple of seconds, so that
//! `kubectl get rcg` shows the lag live. `spec.lagThreshold` sets `LagHigh` (with an Event when
//! crossed, and another when the group catches up); `spec.resetOffsets` moves the committed
//! offsets once per change of it, only while the group has no members (else the condition
//! `OffsetsReset` says why it waits).
//!
//! No finalizer: the resource only observes a group, whose offsets live in the brokers; a group
//! with offsets but no resource is left alone, and deleting the resource (or its namespace)
//! never waits for the operator.
//!
//! The decisions are pure ([`observe`], [`status`], [`reset_plan`]); [`reconcile`] does the I/O.

use super::metadata::topic_name;
use super::{apply_status, condition, Context, Error, FIELD_MANAGER};
use crate::crd::{
    Cluster, ConsumerGroup, ConsumerGroupStatus, GroupMemberStatus, GroupPartitionStatus,
    GroupState, ResetOffsets, ResetTo, Topic,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use runnel_client::group::ResetTo as WireReset;
use runnel_client::{Admin, GroupDescription, OffsetQuery};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The controller's name in metrics and logs.
const CONTROLLER: &str = "ConsumerGroup";
/// How often a group's status is refreshed at most (lag no more than this behind, plus a call).
const REFRESH: Duration = Duration::from_secs(2);

/// The group id: `spec.groupId`, else `metadata.name`.
pub fn group_id(group: &ConsumerGroup) -> String {
    group
        .spec
        .group_id
        .clone()
        .unwrap_or_else(|| group.name_any())
}

/// What the operator saw of a group and its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The group as its coordinator describes it; `None` when it does not exist (Dead).
    pub group: Option<GroupDescription>,
    /// Per partition of the topic: (log start offset, high watermark).
    pub offsets: BTreeMap<i32, (i64, i64)>,
}

/// What the status should hold, and what a person should be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The new status.
    pub status: ConsumerGroupStatus,
    /// `LagHigh` crossed upwards (true) or cleared (false), with the Event's note.
    pub lag_event: Option<(bool, String)>,
}

fn state_of(name: &str) -> GroupState {
    match name {
        "Empty" => GroupState::Empty,
        "Assigning" => GroupState::Assigning,
        "Reconciling" => GroupState::Reconciling,
        "Stable" => GroupState::Stable,
        "Dead" => GroupState::Dead,
        _ => GroupState::Unknown,
    }
}

/// The status of `group` on `topic` from an observation.
pub fn status(group: &ConsumerGroup, topic: &str, seen: &Observation, now: Timestamp) -> Decided {
    let previous = group.status.clone().unwrap_or_default();
    let generation = group.metadata.generation;
    let committed: BTreeMap<i32, i64> = seen
        .group
        .iter()
        .flat_map(|g| &g.partitions)
        .filter(|p| p.topic == topic)
        .filter_map(|p| p.committed_offset.map(|c| (p.partition, c)))
        .collect();
    let partitions: Vec<GroupPartitionStatus> = seen
        .offsets
        .iter()
        .map(|(p, (start, end))| {
            let committed_offset = committed.get(p).copied();
            // Nothing committed: everything from the log start is still to be read.
            let from = committed_offset.unwrap_or(*start);
            GroupPartitionStatus {
                partition: *p,
                committed_offset,
                log_end_offset: *end,
                lag: (end - from).max(0),
            }
        })
        .collect();
    let total_lag: i64 = partitions.iter().map(|p| p.lag).sum();
    let members: Vec<GroupMemberStatus> = seen
        .group
        .iter()
        .flat_map(|g| &g.members)
        .map(|m| GroupMemberStatus {
            member_id: m.member_id.clone(),
            client_id: m.client_id.clone(),
            host: m.host.clone(),
            partitions: m
                .assignment
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect(),
        })
        .collect();
    let state = seen
        .group
        .as_ref()
        .map_or(GroupState::Dead, |g| state_of(&g.state));
    let mut conditions = vec![condition(
        &previous.conditions,
        "Ready",
        true,
        "GroupObserved",
        match &seen.group {
            Some(g) => format!(
                "group `{}` is {} with {} member(s); coordinator broker {}",
                g.group_id,
                g.state,
                g.members.len(),
                g.coordinator
            ),
            None => format!(
                "group `{}` has no members and no committed offsets yet",
                group_id(group)
            ),
        },
        generation,
        now,
    )];
    let mut lag_event = None;
    if let Some(threshold) = group.spec.lag_threshold {
        let high = total_lag > threshold;
        let was_high = previous
            .conditions
            .iter()
            .any(|c| c.type_ == "LagHigh" && c.status == "True");
        let message = format!("total lag {total_lag} against a threshold of {threshold}");
        if high != was_high {
            lag_event = Some((high, message.clone()));
        }
        conditions.push(condition(
            &previous.conditions,
            "LagHigh",
            high,
            if high {
                "LagAboveThreshold"
            } else {
                "LagWithinThreshold"
            },
            message,
            generation,
            now,
        ));
    }
    if let Some(c) = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "OffsetsReset")
    {
        conditions.push(c.clone());
    }
    Decided {
        status: ConsumerGroupStatus {
            observed_generation: generation,
            conditions,
            state: Some(state),
            member_count: members.len() as i32,
            members,
            applied_reset_offsets: previous.applied_reset_offsets,
            partitions,
            total_lag: Some(total_lag),
        },
        lag_event,
    }
}

/// The resets to ask of the coordinator for `spec.resetOffsets`: one per target (explicit
/// offsets are one per distinct offset).
pub fn reset_plan(reset: &ResetOffsets) -> Vec<(Vec<i32>, WireReset)> {
    match reset.to {
        ResetTo::Earliest => vec![(Vec::new(), WireReset::Earliest)],
        ResetTo::Latest => vec![(Vec::new(), WireReset::Latest)],
        ResetTo::Timestamp => vec![(
            Vec::new(),
            WireReset::Timestamp(reset.timestamp.unwrap_or(0)),
        )],
        ResetTo::Explicit => {
            let mut by_offset: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
            for (p, o) in reset.offsets.iter().flatten() {
                if let Ok(p) = p.parse::<i32>() {
                    by_offset.entry(*o).or_default().push(p);
                }
            }
            by_offset
                .into_iter()
                .map(|(o, parts)| (parts, WireReset::Offset(o)))
                .collect()
        }
    }
}

/// What a reconciliation found, before the status is written.
fn unready(
    group: &ConsumerGroup,
    reason: &str,
    message: String,
    now: Timestamp,
) -> ConsumerGroupStatus {
    let previous = group.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != "Ready")
        .cloned()
        .collect();
    conditions.insert(
        0,
        condition(
            &previous.conditions,
            "Ready",
            false,
            reason,
            message,
            group.metadata.generation,
            now,
        ),
    );
    ConsumerGroupStatus {
        observed_generation: group.metadata.generation,
        conditions,
        state: Some(GroupState::Unknown),
        ..previous
    }
}

/// Refreshes one ConsumerGroup's status, performing a pending reset.
#[tracing::instrument(skip_all, fields(group = %group.name_any(), namespace = ?group.namespace()))]
pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = sync(&group, &ctx).await;
    if let Err(e) = &result {
        ctx.metrics.failure(CONTROLLER, e);
    }
    result
}

async fn sync(group: &ConsumerGroup, ctx: &Context) -> Result<Action, Error> {
    let name = group.name_any();
    let namespace = group.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "ConsumerGroup",
        name: name.clone(),
    })?;
    let every = ctx.status_interval.min(REFRESH);
    if group.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let groups: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = Timestamp::now();
    let write = |status: ConsumerGroupStatus| {
        let groups = groups.clone();
        let name = name.clone();
        async move {
            if group.status.as_ref() != Some(&status) {
                apply_status(&groups, &name, &status, FIELD_MANAGER).await?;
            }
            Ok::<(), Error>(())
        }
    };

    let retry = every.max(Duration::from_secs(5));
    let Some(cluster) = referenced::<Cluster>(ctx, &namespace, &group.spec.cluster).await? else {
        let message = missing("Cluster", &group.spec.cluster);
        write(unready(group, "ClusterNotFound", message, now)).await?;
        return Ok(Action::requeue(retry));
    };
    let Some(topic) = referenced::<Topic>(ctx, &namespace, &group.spec.topic).await? else {
        let message = missing("Topic", &group.spec.topic);
        write(unready(group, "TopicNotFound", message, now)).await?;
        return Ok(Action::requeue(retry));
    };
    let topic = topic_name(&topic);
    let addresses: Vec<String> = cluster
        .status
        .iter()
        .flat_map(|s| &s.brokers)
        .filter(|b| b.ready)
        .filter_map(|b| b.address.clone())
        .collect();
    if addresses.is_empty() {
        let message = format!("Cluster `{}` has no ready broker", group.spec.cluster);
        write(unready(group, "NoBrokers", message, now)).await?;
        return Ok(Action::requeue(every));
    }
    let id = group_id(group);
    let observed = match observe(&addresses.join(","), &id, &topic).await {
        Ok(o) => o,
        Err(e) => {
            let message = format!("asking the brokers about group `{id}`: {e}");
            write(unready(group, "CoordinatorUnavailable", message, now)).await?;
            return Ok(Action::requeue(every));
        }
    };
    let (admin, seen) = observed;
    let mut decided = status(group, &topic, &seen, now);

    // A reset asked for and not performed yet.
    if let Some(reset) = group.spec.reset_offsets.as_ref() {
        if decided.status.applied_reset_offsets.as_ref() != Some(reset) {
            let previous = decided.status.conditions.clone();
            let members = decided.status.member_count;
            let outcome = if members > 0 {
                Err((
                    "MembersActive",
                    format!(
                        "group `{id}` has {members} active member(s): the reset waits until they stop (offsets are reset only in a group without members)"
                    ),
                ))
            } else {
                perform_reset(&admin, &id, &topic, reset)
                    .await
                    .map_err(|e| ("ResetFailed", e.to_string()))
            };
            let c = match &outcome {
                Ok(summary) => condition(
                    &previous,
                    "OffsetsReset",
                    true,
                    "Reset",
                    summary.clone(),
                    group.metadata.generation,
                    now,
                ),
                Err((reason, message)) => condition(
                    &previous,
                    "OffsetsReset",
                    false,
                    reason,
                    message.clone(),
                    group.metadata.generation,
                    now,
                ),
            };
            let changed = !previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason);
            decided
                .status
                .conditions
                .retain(|x| x.type_ != "OffsetsReset");
            decided.status.conditions.push(c);
            match outcome {
                Ok(summary) => {
                    decided.status.applied_reset_offsets = Some(reset.clone());
                    ctx.inform(&group.object_ref(&()), "OffsetsReset", summary)
                        .await;
                    // Show the offsets as they are now.
                    if let Ok((_, seen)) = observe(&addresses.join(","), &id, &topic).await {
                        let again = status(group, &topic, &seen, now);
                        decided.status.partitions = again.status.partitions;
                        decided.status.total_lag = again.status.total_lag;
                    }
                }
                Err((_, message)) if changed => {
                    ctx.warn(&group.object_ref(&()), "OffsetsResetRefused", message)
                        .await;
                }
                Err(_) => {}
            }
        }
    }

    if let Some((high, note)) = &decided.lag_event {
        let object = group.object_ref(&());
        if *high {
            ctx.warn(&object, "LagHigh", note.clone()).await;
        } else {
            ctx.inform(&object, "LagRecovered", note.clone()).await;
        }
    }
    ctx.metrics.record_group(&id, &topic, &decided.status);
    write(decided.status).await?;
    Ok(Action::requeue(every))
}

/// The object of kind `K` named `name` in `namespace`, which a ConsumerGroup refers to; `None`
/// while it does not exist.
async fn referenced<K>(ctx: &Context, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            action: format!("reading {} `{name}`", K::kind(&())),
            source,
        })
}

fn missing(kind: &str, name: &str) -> String {
    format!("{kind} `{name}` does not exist in this namespace")
}

/// Describes the group (a group that does not exist is `None`) and the topic's offsets.
async fn observe(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Result<(Admin, Observation), runnel_client::Error> {
    let admin = Admin::connect(bootstrap).await?;
    let described = match admin.describe_group(group).await {
        Ok(d) => Some(d),
        Err(e) if e.code() == Some(tonic::Code::NotFound) => None,
        Err(e) => return Err(e),
    };
    let earliest = admin.list_offsets(topic, OffsetQuery::Earliest).await?;
    let offsets = earliest
        .iter()
        .map(|o| (o.partition, (o.log_start_offset, o.high_watermark)))
        .collect();
    Ok((
        admin,
        Observation {
            group: described,
            offsets,
        },
    ))
}

async fn perform_reset(
    admin: &Admin,
    group: &str,
    topic: &str,
    reset: &ResetOffsets,
) -> Result<String, runnel_client::Error> {
    let mut moved = Vec::new();
    for (partitions, to) in reset_plan(reset) {
        let plan = admin
            .reset_offsets(group, &[(topic.to_string(), partitions)], to, true)
            .await?;
        moved.extend(plan.into_iter().map(|p| (p.partition, p.new_offset)));
    }
    moved.sort_unstable();
    let list: Vec<String> = moved.iter().map(|(p, o)| format!("{p}→{o}")).collect();
    Ok(format!(
        "committed offsets of `{topic}` moved ({}): {}",
        match reset.to {
            ResetTo::Earliest => "to the earliest",
            ResetTo::Latest => "to the latest",
            ResetTo::Timestamp => "to a timestamp",
            ResetTo::Explicit => "to the given offsets",
        },
        list.join(", ")
    ))
}

/// What to do after a failed reconciliation: try again soon.
pub fn error_policy(group: Arc<ConsumerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(group = %group.name_any(), %error, "consumer group reconcile failed");
    ctx.retry_after_failure("ConsumerGroup", &*group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConsumerGroupSpec;
    use runnel_client::group::{GroupMemberInfo, GroupPartitionLag};

    fn resource(threshold: Option<i64>) -> ConsumerGroup {
        let mut g = ConsumerGroup::new(
            "order-processors",
            ConsumerGroupSpec {
                cluster: "events".into(),
                topic: "orders".into(),
                group_id: None,
                lag_threshold: threshold,
                reset_offsets: None,
            },
        );
        g.metadata.generation = Some(1);
        g
    }

    fn described(committed: &[(i32, i64)]) -> GroupDescription {
        GroupDescription {
            group_id: "order-processors".into(),
            state: "Stable".into(),
            group_epoch: 3,
            assignor: "uniform".into(),
            coordinator: 0,
            members: vec![GroupMemberInfo {
                member_id: "m1".into(),
                client_id: "c1".into(),
                host: "h".into(),
                rack: String::new(),
                member_epoch: 3,
                assignment: vec![
                    ("orders".into(), 0),
                    ("orders".into(), 1),
                    ("other".into(), 0),
                ],
                target_assignment: vec![],
            }],
            partitions: committed
                .iter()
                .map(|(p, c)| GroupPartitionLag {
                    topic: "orders".into(),
                    partition: *p,
                    committed_offset: Some(*c),
                    log_end_offset: 100,
                    lag: Some(100 - c),
                    member_id: None,
                    client_id: None,
                    host: None,
                })
                .collect(),
            total_lag: 0,
        }
    }

    #[test]
    fn lag_is_per_partition_and_counts_uncommitted_from_the_log_start() {
        let seen = Observation {
            group: Some(described(&[(0, 40)])),
            offsets: [(0, (0, 100)), (1, (10, 100))].into_iter().collect(),
        };
        let d = status(&resource(None), "orders", &seen, Timestamp::now());
        assert_eq!(d.status.state, Some(GroupState::Stable));
        assert_eq!(d.status.total_lag, Some(60 + 90));
        assert_eq!(d.status.partitions[0].committed_offset, Some(40));
        assert_eq!(d.status.partitions[1].committed_offset, None);
        assert_eq!(d.status.member_count, 1);
        assert_eq!(
            d.status.members[0].partitions,
            vec![0, 1],
            "only the topic's partitions"
        );
        assert!(d.status.conditions.iter().all(|c| c.type_ != "LagHigh"));
        // No group at the coordinator: Dead, and all of the topic is lag.
        let seen = Observation {
            group: None,
            offsets: seen.offsets.clone(),
        };
        let d = status(&resource(None), "orders", &seen, Timestamp::now());
        assert_eq!(d.status.state, Some(GroupState::Dead));
        assert_eq!(d.status.total_lag, Some(190));
    }

    #[test]
    fn lag_high_is_set_once_and_cleared_once() {
        let mut g = resource(Some(50));
        let behind = Observation {
            group: Some(described(&[(0, 0)])),
            offsets: [(0, (0, 100))].into_iter().collect(),
        };
        let d = status(&g, "orders", &behind, Timestamp::now());
        assert_eq!(d.lag_event.as_ref().map(|e| e.0), Some(true));
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "LagHigh")
            .cloned();
        assert_eq!(c.map(|c| c.status), Some("True".to_string()));
        g.status = Some(d.status);
        // Still behind: no new Event.
        assert_eq!(
            status(&g, "orders", &behind, Timestamp::now()).lag_event,
            None
        );
        let caught_up = Observation {
            group: Some(described(&[(0, 100)])),
            offsets: [(0, (0, 100))].into_iter().collect(),
        };
        let d = status(&g, "orders", &caught_up, Timestamp::now());
        assert_eq!(d.lag_event.as_ref().map(|e| e.0), Some(false));
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "LagHigh")
            .cloned();
        assert_eq!(c.map(|c| c.status), Some("False".to_string()));
    }

    #[test]
    fn explicit_resets_are_grouped_by_offset() {
        let reset = ResetOffsets {
            to: ResetTo::Explicit,
            timestamp: None,
            offsets: Some(
                [
                    ("0".to_string(), 5),
                    ("1".to_string(), 5),
                    ("2".to_string(), 9),
                ]
                .into_iter()
                .collect(),
            ),
        };
        assert_eq!(
            reset_plan(&reset),
            vec![
                (vec![0, 1], WireReset::Offset(5)),
                (vec![2], WireReset::Offset(9))
            ]
        );
    }
}
