//! The metadata controller: for each [`Cluster`], the operator acts as Kafka's controller. It
//! places the partitions of every [`Topic`] of the Cluster ([`crate::assign`]), decides each
//! partition's replicas, in-sync replicas and leader from what the brokers report
//! ([`runnel_control::partition::plan`]: the ISR is the one the leader reports, as in Kafka),
//! sends the whole metadata to every broker with `Admin.ApplyMetadata` under a new epoch when
//! any broker holds something else, deletes partition data that no Topic claims, and writes
//! each Topic's status (per partition: leader, replicas, ISR, offsets, size; totals; `Ready`).
//!
//! It runs per Cluster, not per Topic, because the metadata is one document with one epoch:
//! two Topics reconciled at once would race for it. Topics are watched and mapped to their
//! Cluster. Topics carry no finalizer: a deleted Topic's data is data no Topic claims, deleted
//! from every broker that answers (a broker that is down deletes it when it is back: this is
//! done on every reconciliation), so that deleting a namespace never waits for the operator,
//! also when it was uninstalled first. The finalizer earlier versions put on Topics is
//! released here, or by the Topic controller when the Cluster no longer exists.
//!
//! The decisions are pure functions ([`decide`], [`needs_apply`], [`orphans`],
//! [`topic_status`]); [`reconcile`] does the I/O. [`partition`] converts between a partition's
//! entry in a Topic's status and the state [`runnel_control`] plans.

pub mod partition;

use super::{apply_status, cluster, condition, Context, Error, FIELD_MANAGER};
use crate::assign::{assign, Assignment, BrokerSlot, TopicRequest};
use crate::brokers::{BrokerConnection, Holdings};
use crate::crd::{
    CleanupPolicy, Cluster, PartitionStatus, TimestampType, Topic, TopicConfig, TopicStatus,
    TopicTotals,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use runnel_control::partition::{report_from, PartitionState, Report};
use runnel_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The finalizer earlier versions of the operator put on Topics; released where it is found.
pub const TOPIC_FINALIZER: &str = "runnel.dev/topic-data";
/// The field manager of the Cluster's `status.metadataEpoch` (the Cluster controller owns the
/// rest of the Cluster's status).
const EPOCH_MANAGER: &str = "runnel-operator-metadata";
/// Field manager of the producer id blocks in the Cluster's status.
const PRODUCER_IDS_MANAGER: &str = "runnel-operator-producer-ids";
/// The controller's name in metrics and logs.
const CONTROLLER: &str = "Metadata";

/// Runnel's internal topic of committed offsets, as the brokers name it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partitions (Kafka's default `offsets.topic.num.partitions`).
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 50;
/// Field manager of the internal topics' placement in the Cluster's status.
const INTERNAL_TOPICS_MANAGER: &str = "runnel-operator-internal-topics";

/// Copies of each partition of `__consumer_offsets`: Kafka's `offsets.topic.replication.factor`
/// (3), or every broker when there are fewer. It follows the Cluster's size: growing to three
/// brokers adds the copies (moves that complete once they are in sync), shrinking drops them.
pub fn offsets_topic_replicas(brokers: i32) -> i32 {
    brokers.clamp(1, 3)
}

/// The Cluster's internal topics as Topics that exist only in memory (never in the API), so
/// that they are placed like any other; their placement so far comes from the Cluster's
/// status.
pub fn internal_topics(cluster: &Cluster) -> Vec<Topic> {
    let mut t = Topic::new(
        OFFSETS_TOPIC,
        crate::crd::TopicSpec {
            cluster: cluster.name_any(),
            partitions: OFFSETS_TOPIC_PARTITIONS,
            replicas: offsets_topic_replicas(cluster.spec.brokers),
            topic_name: None,
            config: TopicConfig {
                cleanup_policy: Some(CleanupPolicy::Compact),
                retention_ms: Some(-1),
                retention_bytes: Some(-1),
                ..TopicConfig::default()
            },
        },
    );
    t.status = cluster
        .status
        .iter()
        .flat_map(|s| &s.internal_topics)
        .find(|i| i.name == OFFSETS_TOPIC)
        .map(|i| TopicStatus {
            topic_name: Some(OFFSETS_TOPIC.into()),
            partitions: i.partitions.clone(),
            ..TopicStatus::default()
        });
    vec![t]
}

/// The placement of an internal topic for the Cluster's status: leaders, replicas and ISR,
/// without the offsets, which change with every commit.
pub fn internal_status(name: &str, plans: &[PartitionState]) -> crate::crd::InternalTopicStatus {
    crate::crd::InternalTopicStatus {
        name: name.to_string(),
        partitions: plans
            .iter()
            .zip(0..)
            .map(|(plan, p)| partition::status(p, plan, None, None))
            .collect(),
    }
}

/// The topic's name in the cluster: `spec.topicName`, else `metadata.name`.
pub fn topic_name(topic: &Topic) -> String {
    topic
        .spec
        .topic_name
        .clone()
        .unwrap_or_else(|| topic.name_any())
}

/// A Topic's `spec.config` in the wire format.
pub fn wire_config(config: &TopicConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        cleanup_policy: config.cleanup_policy.map(|p| {
            match p {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
                CleanupPolicy::CompactDelete => "compact,delete",
            }
            .to_string()
        }),
        delete_retention_ms: config.delete_retention_ms,
        min_cleanable_dirty_ratio: config.min_cleanable_dirty_ratio,
        min_insync_replicas: config.min_insync_replicas,
        max_message_bytes: config.max_message_bytes,
        message_timestamp_type: config.message_timestamp_type.map(|t| {
            match t {
                TimestampType::CreateTime => "CreateTime",
                TimestampType::LogAppendTime => "LogAppendTime",
            }
            .to_string()
        }),
        unclean_leader_election_enable: config.unclean_leader_election_enable,
    }
}

/// What was decided for one Topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDecision {
    /// The Topic's `metadata.name`.
    pub resource: String,
    /// Its name in the cluster.
    pub name: String,
    /// The planned state of each partition; empty when `error` is set.
    pub plans: Vec<PartitionState>,
    /// Why the Topic could not be placed.
    pub error: Option<String>,
}

/// The metadata to hold, and what it was made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The cluster metadata (epoch 0: the epoch is chosen when it is sent).
    pub metadata: pb::ClusterMetadata,
    /// One entry per Topic, in the order given.
    pub topics: Vec<TopicDecision>,
}

impl Decision {
    /// Names of topics that exist as Topics but could not be placed: their data is kept.
    fn unplaced(&self) -> BTreeSet<&str> {
        self.topics
            .iter()
            .filter(|t| t.error.is_some())
            .map(|t| t.name.as_str())
            .collect()
    }
}

/// What the brokers that answered report, indexed by partition: built once per
/// reconciliation, so that each lookup is a map access, not a scan over every broker's list
/// (a Cluster may hold thousands of partitions).
#[derive(Debug, Default)]
pub struct Reports {
    /// topic → partition → broker id → its copy (keyed by topic first, so that a lookup by
    /// `&str` allocates nothing).
    by_partition: HashMap<String, HashMap<i32, BTreeMap<i32, Report>>>,
    /// The brokers that answered.
    live: BTreeSet<i32>,
}

impl Reports {
    /// Indexes `holdings` (broker id → what it holds).
    pub fn new(holdings: &BTreeMap<i32, Holdings>) -> Self {
        let mut by_partition: HashMap<String, HashMap<i32, BTreeMap<i32, Report>>> = HashMap::new();
        for (id, h) in holdings {
            for p in &h.partitions.partitions {
                by_partition
                    .entry(p.topic.clone())
                    .or_default()
                    .entry(p.partition)
                    .or_default()
                    .insert(*id, report_from(p));
            }
        }
        Reports {
            by_partition,
            live: holdings.keys().copied().collect(),
        }
    }

    /// The copies of one partition, by broker id.
    fn of(&self, topic: &str, partition: i32) -> Option<&BTreeMap<i32, Report>> {
        self.by_partition.get(topic)?.get(&partition)
    }

    /// Whether broker `id` reports holding the partition.
    fn holds(&self, id: i32, topic: &str, partition: i32) -> bool {
        self.of(topic, partition)
            .is_some_and(|r| r.contains_key(&id))
    }
}

/// The target replicas recorded in a Topic's status: its replicas without those being removed.
fn current_assignment(topics: &[(String, &Topic)]) -> Assignment {
    let mut current = Assignment::default();
    for (name, topic) in topics {
        let Some(status) = &topic.status else {
            continue;
        };
        let mut partitions: Vec<&PartitionStatus> = status.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition);
        let lists: Vec<Vec<i32>> = partitions
            .iter()
            .enumerate()
            .take_while(|(i, p)| usize::try_from(p.partition).is_ok_and(|n| n == *i))
            .map(|(_, p)| {
                p.replicas
                    .iter()
                    .copied()
                    .filter(|b| !p.removing_replicas.contains(b))
                    .collect()
            })
            .collect();
        if !lists.is_empty() {
            current.topics.insert(name.clone(), lists);
        }
    }
    current
}

/// Decides the metadata of `cluster`.
///
/// * `brokers`: every broker with a known address (its pod has an IP), by id, with its rack.
/// * `topics`: the Cluster's Topics that are not being deleted.
/// * `reports`: what the brokers that answered (the live ones) hold.
pub fn decide(
    cluster: &Cluster,
    brokers: &[pb::BrokerInfo],
    topics: &[Topic],
    reports: &Reports,
) -> Decision {
    let size = cluster.spec.brokers.max(0);
    let rack_of = |id: i32| {
        brokers
            .iter()
            .find(|b| b.id == id && !b.rack.is_empty())
            .map(|b| b.rack.clone())
    };
    let slots: Vec<BrokerSlot> = (0..size)
        .map(|id| BrokerSlot {
            id,
            rack: rack_of(id),
        })
        .collect();

    // Topics the cluster can hold; the others get an error and keep their data.
    let mut decisions: Vec<TopicDecision> = Vec::new();
    let mut placeable: Vec<(String, &Topic)> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for topic in topics {
        let name = topic_name(topic);
        let resource = topic.name_any();
        let error = if name == OFFSETS_TOPIC && resource != OFFSETS_TOPIC {
            Some(format!(
                "`{OFFSETS_TOPIC}` is Runnel's internal topic of committed offsets, which the operator places itself: choose another topicName"
            ))
        } else if topic.spec.replicas > size {
            Some(format!(
                "replicas is {} but Cluster `{}` has {} brokers",
                topic.spec.replicas,
                cluster.name_any(),
                size
            ))
        } else {
            seen.get(&name).map(|other| {
                format!("topic `{name}` is already defined by Topic `{other}` in this Cluster")
            })
        };
        if error.is_none() {
            seen.insert(name.clone(), resource.clone());
            placeable.push((name.clone(), topic));
        }
        decisions.push(TopicDecision {
            resource,
            name,
            plans: Vec::new(),
            error,
        });
    }
    let requests: Vec<TopicRequest> = placeable
        .iter()
        .map(|(name, t)| TopicRequest {
            name: name.clone(),
            partitions: t.spec.partitions,
            replicas: t.spec.replicas,
        })
        .collect();
    let current = current_assignment(&placeable);
    let assignment = match assign(&slots, &requests, &current) {
        Ok(a) => a,
        Err(e) => {
            // Only reachable through inputs the checks above rule out; keep every topic's data.
            for d in &mut decisions {
                d.error.get_or_insert_with(|| e.to_string());
            }
            return Decision {
                metadata: pb::ClusterMetadata {
                    epoch: 0,
                    brokers: brokers.to_vec(),
                    topics: Vec::new(),
                    ..Default::default()
                },
                topics: decisions,
            };
        }
    };

    let mut wire_topics = Vec::new();
    for (name, topic) in &placeable {
        let targets = assignment.topics.get(name).cloned().unwrap_or_default();
        let previous: BTreeMap<i32, PartitionState> = topic
            .status
            .iter()
            .flat_map(|s| &s.partitions)
            .filter_map(|p| Some((p.partition, partition::state(p)?)))
            .collect();
        let unclean = topic
            .spec
            .config
            .unclean_leader_election_enable
            .unwrap_or(false);
        let no_reports = BTreeMap::new();
        let plans: Vec<PartitionState> = targets
            .iter()
            .zip(0..)
            .map(|(target, p)| {
                runnel_control::plan(
                    target,
                    previous.get(&p),
                    reports.of(name, p).unwrap_or(&no_reports),
                    &reports.live,
                    unclean,
                )
            })
            .collect();
        wire_topics.push(pb::TopicMetadata {
            name: name.clone(),
            partitions: plans
                .iter()
                .zip(0..)
                .map(|(plan, p)| pb::PartitionMetadata {
                    partition: p,
                    leader: plan.leader,
                    leader_epoch: plan.leader_epoch,
                    replicas: plan.replicas.clone(),
                    isr: plan.isr.clone(),
                })
                .collect(),
            replication_factor: topic.spec.replicas,
            config: Some(wire_config(&topic.spec.config)),
        });
        if let Some(d) = decisions
            .iter_mut()
            .find(|d| d.error.is_none() && d.name == *name)
        {
            d.plans = plans;
        }
    }
    wire_topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut brokers = brokers.to_vec();
    brokers.sort_by_key(|b| b.id);
    Decision {
        metadata: pb::ClusterMetadata {
            epoch: 0,
            brokers,
            topics: wire_topics,
            ..Default::default()
        },
        topics: decisions,
    }
}

/// Whether any live broker needs the metadata sent again: it holds other metadata, or it lacks
/// a partition it should hold (its data was deleted behind the operator's back).
pub fn needs_apply(
    desired: &pb::ClusterMetadata,
    holdings: &BTreeMap<i32, Holdings>,
    reports: &Reports,
) -> bool {
    let other_metadata = holdings.iter().any(|(id, h)| {
        let held = &h.metadata;
        let block = desired
            .producer_id_blocks
            .iter()
            .find(|b| b.broker_id == *id);
        held.epoch == 0
            || held.brokers != desired.brokers
            || held.topics != desired.topics
            || h.partitions.producer_id_block.as_ref() != block
    });
    other_metadata
        || desired.topics.iter().any(|t| {
            t.partitions.iter().any(|p| {
                p.replicas.iter().any(|id| {
                    reports.live.contains(id) && !reports.holds(*id, &t.name, p.partition)
                })
            })
        })
}

/// Partition data a broker holds that nothing claims: a topic with no Topic (deleted, or
/// deleted while the broker was down), or a partition whose replicas no longer include the
/// broker (a finished move). Topics that exist but could not be placed keep their data.
/// Returns `(broker id, topic, partitions)`.
pub fn orphans(
    decision: &Decision,
    holdings: &BTreeMap<i32, Holdings>,
) -> Vec<(i32, String, Vec<i32>)> {
    let unplaced = decision.unplaced();
    let replicas: HashMap<(&str, i32), &[i32]> = decision
        .metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.as_str(), p.partition), p.replicas.as_slice()))
        })
        .collect();
    let mut out = Vec::new();
    for (id, h) in holdings {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for d in &h.partitions.partitions {
            if unplaced.contains(d.topic.as_str()) {
                continue;
            }
            let claimed = replicas
                .get(&(d.topic.as_str(), d.partition))
                .is_some_and(|r| r.contains(id));
            if !claimed {
                by_topic.entry(&d.topic).or_default().push(d.partition);
            }
        }
        for (topic, mut partitions) in by_topic {
            partitions.sort_unstable();
            out.push((*id, topic.to_string(), partitions));
        }
    }
    out
}

/// The status of a Topic from its decision and the brokers' reports, at `now`. The `Ready`
/// condition keeps its `lastTransitionTime` while its status does not change.
pub fn topic_status(
    topic: &Topic,
    decision: &TopicDecision,
    reports: &Reports,
    now: Timestamp,
) -> TopicStatus {
    let previous: BTreeMap<i32, &PartitionStatus> = topic
        .status
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| (p.partition, p))
        .collect();
    let partitions: Vec<PartitionStatus> = if decision.error.is_some() {
        previous.values().map(|p| (*p).clone()).collect()
    } else {
        decision
            .plans
            .iter()
            .zip(0..)
            .map(|(plan, p)| {
                partition::status(
                    p,
                    plan,
                    reports
                        .of(&decision.name, p)
                        .and_then(|r| r.get(&plan.leader)),
                    previous.get(&p).copied(),
                )
            })
            .collect()
    };
    let totals = TopicTotals {
        records: partitions
            .iter()
            .map(|p| p.high_watermark - p.log_start_offset)
            .sum(),
        size_bytes: partitions.iter().map(|p| p.size_bytes).sum(),
        under_replicated_partitions: count(
            partitions.iter().filter(|p| p.isr.len() < p.replicas.len()),
        ),
        offline_partitions: count(partitions.iter().filter(|p| p.leader.is_none())),
    };
    let served = |plan: &PartitionState, p: i32| reports.holds(plan.leader, &decision.name, p);
    let (ready, reason, message) = if let Some(error) = &decision.error {
        (false, "NotPlaced", error.clone())
    } else if reports.live.is_empty() {
        (
            false,
            "NoBrokers",
            "no broker of the Cluster answers".to_string(),
        )
    } else {
        let waiting: Vec<String> = decision
            .plans
            .iter()
            .zip(0..)
            .filter(|(plan, p)| !served(plan, *p))
            .map(|(_, p)| p.to_string())
            .collect();
        if waiting.is_empty() {
            (
                true,
                "PartitionsReady",
                format!(
                    "{} partitions, each served by its leader",
                    decision.plans.len()
                ),
            )
        } else {
            (
                false,
                "PartitionsOffline",
                format!(
                    "partitions without a serving leader: {}",
                    waiting.join(", ")
                ),
            )
        }
    };
    TopicStatus {
        observed_generation: topic.metadata.generation,
        conditions: vec![condition(
            topic.status.as_ref().map_or(&[][..], |s| &s.conditions),
            "Ready",
            ready,
            reason,
            message,
            topic.metadata.generation,
            now,
        )],
        topic_name: Some(decision.name.clone()),
        partitions,
        totals: Some(totals),
    }
}

fn count<T>(it: impl Iterator<Item = T>) -> i32 {
    i32::try_from(it.count()).unwrap_or(i32::MAX)
}

fn kube_error(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// The brokers of a Cluster as its pods show them: id, `podIP:9092`, rack (from the Cluster's
/// status), and whether the pod is ready.
fn pod_brokers(cluster: &Cluster, pods: &[Pod]) -> Vec<(pb::BrokerInfo, bool)> {
    let sts = cluster::statefulset_name(&cluster.name_any());
    let racks: BTreeMap<i32, String> = cluster
        .status
        .iter()
        .flat_map(|s| &s.brokers)
        .filter_map(|b| b.rack.clone().map(|r| (b.id, r)))
        .collect();
    let mut out: Vec<(pb::BrokerInfo, bool)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let id = cluster::broker_id(&sts, &pod.name_any())?;
            Some((
                pb::BrokerInfo {
                    id,
                    address: cluster::broker_address(pod)?,
                    rack: racks.get(&id).cloned().unwrap_or_default(),
                },
                cluster::pod_ready(pod),
            ))
        })
        .collect();
    out.sort_by_key(|(b, _)| b.id);
    out
}

/// What the ready brokers hold, by id, with a connection to each (brokers that do not answer
/// are left out and logged).
async fn observe(
    brokers: &[(pb::BrokerInfo, bool)],
) -> (BTreeMap<i32, Holdings>, BTreeMap<i32, BrokerConnection>) {
    let calls = brokers
        .iter()
        .filter(|(_, ready)| *ready)
        .map(|(b, _)| async move {
            let result = async {
                let conn = BrokerConnection::connect(&b.address).await?;
                let holdings = conn.holdings().await?;
                Ok::<_, crate::brokers::BrokerCallError>((conn, holdings))
            }
            .await;
            (b.id, result)
        });
    let mut holdings = BTreeMap::new();
    let mut connections = BTreeMap::new();
    for (id, result) in futures::future::join_all(calls).await {
        match result {
            Ok((conn, h)) => {
                holdings.insert(id, h);
                connections.insert(id, conn);
            }
            Err(e) => tracing::warn!(broker = id, error = %e, "broker does not answer"),
        }
    }
    (holdings, connections)
}

/// Re-reads what the connected brokers hold (after new metadata).
async fn refresh(
    connections: &BTreeMap<i32, BrokerConnection>,
    holdings: &mut BTreeMap<i32, Holdings>,
) {
    for (id, conn) in connections {
        match conn.holdings().await {
            Ok(h) => {
                holdings.insert(*id, h);
            }
            Err(e) => {
                tracing::warn!(broker = id, error = %e, "broker stopped answering");
                holdings.remove(id);
            }
        }
    }
}

/// Places a Cluster's Topics, sends the metadata, deletes unclaimed data (that of deleted
/// Topics too) and writes the Topics' status.
#[tracing::instrument(skip_all, fields(cluster = %cluster.name_any(), namespace = ?cluster.namespace()))]
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = sync(&cluster, &ctx).await;
    if let Err(error) = &result {
        ctx.metrics.failure(CONTROLLER, error);
        ctx.warn(
            &cluster.object_ref(&()),
            "MetadataFailed",
            error.to_string(),
        )
        .await;
    }
    result
}

async fn sync(cluster: &Cluster, ctx: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "Cluster",
        name: name.clone(),
    })?;
    let client = ctx.client.clone();
    let topics_api: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    // A fresh list, not a cache: data no Topic claims is deleted below, so a Topic must never
    // be missed because a watch lagged.
    let topics: Vec<Topic> = topics_api
        .list(&ListParams::default())
        .await
        .map_err(kube_error(format!(
            "listing the Topics of namespace `{namespace}`"
        )))?
        .items
        .into_iter()
        .filter(|t| t.spec.cluster == name)
        .collect();
    let (deleting, active): (Vec<Topic>, Vec<Topic>) = topics
        .into_iter()
        .partition(|t| t.metadata.deletion_timestamp.is_some());

    // Topics carry no finalizer: a deleted Topic's data is deleted below as data no Topic
    // claims, so that deleting a namespace, or a Topic after the operator was uninstalled, never
    // waits for the operator. A Topic that carries the finalizer of an earlier version of the
    // operator loses it.
    for topic in &active {
        if topic.finalizers().iter().any(|f| f == TOPIC_FINALIZER) {
            super::topic::release(&topics_api, topic).await?;
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = pods
        .list(&ListParams::default().labels(&cluster::selector(&name)))
        .await
        .map_err(kube_error(format!("listing the pods of Cluster `{name}`")))?
        .items;
    let brokers = pod_brokers(cluster, &pods);
    let (mut holdings, connections) = observe(&brokers).await;
    let infos: Vec<pb::BrokerInfo> = brokers.iter().map(|(b, _)| b.clone()).collect();
    let mut reports = Reports::new(&holdings);
    // The Topics, then the internal topics (placed sticky like any Topic: a Cluster whose Topics
    // were placed before keeps them where they are).
    let placed: Vec<Topic> = active
        .iter()
        .cloned()
        .chain(internal_topics(cluster))
        .collect();
    let mut decision = decide(cluster, &infos, &placed, &reports);

    // Producer id blocks: a new one for a broker that has none or has used half of its own,
    // recorded in the Cluster's status before any broker gets it.
    let status = cluster.status.clone().unwrap_or_default();
    let left: BTreeMap<i32, i64> = holdings
        .iter()
        .filter(|(_, h)| h.partitions.producer_id_block.is_some())
        .map(|(id, h)| (*id, h.partitions.producer_ids_left))
        .collect();
    let (blocks, id_end, changed) = crate::producer_ids::allocate(
        cluster.spec.brokers,
        &status.producer_id_blocks,
        status.producer_id_block_end.unwrap_or(0),
        &left,
    );
    if changed || status.producer_id_block_end != Some(id_end) {
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
        let ids_status = serde_json::json!({
            "producerIdBlocks": blocks,
            "producerIdBlockEnd": id_end,
        });
        apply_status(&clusters, &name, ids_status, PRODUCER_IDS_MANAGER).await?;
        tracing::info!(end = id_end, "handed out producer id blocks");
    }
    decision.metadata.producer_id_blocks = crate::producer_ids::wire(&blocks);
    decision.metadata.producer_id_end = id_end;

    let mut epoch = cluster
        .status
        .as_ref()
        .and_then(|s| s.metadata_epoch)
        .unwrap_or(0);
    if !holdings.is_empty() && needs_apply(&decision.metadata, &holdings, &reports) {
        let held = holdings
            .values()
            .map(|h| h.metadata.epoch)
            .max()
            .unwrap_or(0);
        epoch = epoch.max(held) + 1;
        let metadata = pb::ClusterMetadata {
            epoch,
            ..decision.metadata.clone()
        };
        let mut sent = Vec::new();
        for (id, conn) in &connections {
            match conn.apply(metadata.clone()).await {
                Ok((true, _)) => sent.push(id.to_string()),
                Ok((false, held)) => {
                    tracing::warn!(broker = id, held, epoch, "broker holds a newer epoch");
                    epoch = epoch.max(held);
                }
                Err(e) => tracing::warn!(broker = id, error = %e, "sending metadata failed"),
            }
        }
        tracing::info!(epoch, brokers = %sent.join(","), "metadata applied");
        ctx.inform(
            &cluster.object_ref(&()),
            "MetadataApplied",
            format!("metadata epoch {epoch} sent to brokers {}", sent.join(", ")),
        )
        .await;
        refresh(&connections, &mut holdings).await;
        reports = Reports::new(&holdings);
    }

    let before = ctx
        .decided
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            (namespace.clone(), name.clone()),
            pb::ClusterMetadata {
                epoch,
                ..decision.metadata.clone()
            },
        );
    // Topics gone from the metadata since this operator last decided it (a Topic deleted).
    for gone in before.iter().flat_map(|md| &md.topics).filter(|t| {
        !decision
            .metadata
            .topics
            .iter()
            .any(|now| now.name == t.name)
    }) {
        ctx.inform(
            &cluster.object_ref(&()),
            "TopicDeleted",
            format!(
                "topic `{}` removed from the metadata; its data is deleted from every broker that answers",
                gone.name
            ),
        )
        .await;
    }

    for (id, topic, partitions) in orphans(&decision, &holdings) {
        let Some(conn) = connections.get(&id) else {
            continue;
        };
        match conn.delete_partitions(&topic, partitions.clone()).await {
            Ok(deleted) => {
                tracing::info!(
                    broker = id,
                    topic,
                    ?deleted,
                    "deleted partition data no Topic claims"
                );
            }
            Err(e) => {
                tracing::warn!(broker = id, topic, error = %e, "deleting partition data failed")
            }
        }
    }

    // Deleted Topics: gone from the metadata, their data deleted above on every broker that
    // answers (the others delete it when they are back). One still held by the finalizer of an
    // earlier version of the operator is released.
    for topic in &deleting {
        if topic.finalizers().iter().any(|f| f == TOPIC_FINALIZER) {
            super::topic::release(&topics_api, topic).await?;
        }
    }

    let now = Timestamp::now();
    // `decision.topics` follows `placed`: the Topics first, then the internal topics.
    let (for_topics, for_internal) = decision
        .topics
        .split_at(active.len().min(decision.topics.len()));
    for (topic, d) in active.iter().zip(for_topics) {
        leader_events(ctx, topic, d).await;
        let status = topic_status(topic, d, &reports, now);
        if topic.status.as_ref() != Some(&status) {
            apply_status(&topics_api, &topic.name_any(), &status, FIELD_MANAGER).await?;
        }
    }
    let internal: Vec<crate::crd::InternalTopicStatus> = for_internal
        .iter()
        .filter(|d| d.error.is_none())
        .map(|d| internal_status(&d.name, &d.plans))
        .collect();
    let held_internal = cluster.status.as_ref().map(|s| &s.internal_topics);
    if !internal.is_empty() && held_internal != Some(&internal) {
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
        let status = serde_json::json!({ "internalTopics": internal });
        apply_status(&clusters, &name, status, INTERNAL_TOPICS_MANAGER).await?;
    }

    if cluster.status.as_ref().and_then(|s| s.metadata_epoch) != Some(epoch) && epoch > 0 {
        let clusters: Api<Cluster> = Api::namespaced(client, &namespace);
        let epoch_status = serde_json::json!({ "metadataEpoch": epoch });
        apply_status(&clusters, &name, epoch_status, EPOCH_MANAGER).await?;
    }
    Ok(Action::requeue(ctx.status_interval))
}

/// An Event on the Topic for each partition whose leader changed since its status.
async fn leader_events(ctx: &Context, topic: &Topic, d: &TopicDecision) {
    let Some(before) = topic.status.as_ref() else {
        return;
    };
    for (p, plan) in d.plans.iter().enumerate() {
        let Some(was) = before.partitions.iter().find(|s| s.partition == p as i32) else {
            continue;
        };
        let was_leader = was.leader.unwrap_or(-1);
        if was_leader == plan.leader {
            continue;
        }
        let reference = topic.object_ref(&());
        let was = if was_leader < 0 {
            "none".to_string()
        } else {
            format!("broker {was_leader}")
        };
        if plan.leader < 0 {
            ctx.warn(
                &reference,
                "PartitionOffline",
                format!(
                    "partition {p}: no in-sync replica is live (was led by {was}); it waits for one at leader epoch {}",
                    plan.leader_epoch
                ),
            )
            .await;
        } else {
            ctx.inform(
                &reference,
                "LeaderElected",
                format!(
                    "partition {p}: broker {} leads at leader epoch {} (was {was}); ISR {:?}",
                    plan.leader, plan.leader_epoch, plan.isr
                ),
            )
            .await;
        }
    }
}

/// What to do after a failed reconciliation: try again soon.
pub fn error_policy(cluster: Arc<Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "metadata reconcile failed");
    ctx.retry_after_failure("Metadata", &*cluster)
}

#[cfg(test)]
mod tests;
