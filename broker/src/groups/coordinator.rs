//! The group coordinator: the groups whose partition of `__consumer_offsets` this broker leads,
//! their members (in memory, as [`Group`]s) and their committed offsets (records of that
//! partition, materialised in memory and rebuilt from the log when the broker becomes its
//! leader). The decisions are the pure [`Group`] and [`offsets`](super::offsets) functions;
//! this is the I/O around them.

use super::assignor::{TopicPartition, TopicSpec};
use super::group::{Group, GroupError, GroupSettings, GroupState, Heartbeat, HeartbeatReply};
use super::offsets::{self, Committed, OffsetRecord, ResetTo};
use crate::broker::{now_ms, Acks, Broker};
use crate::error::BrokerError;
use crate::log::LogError;
use crate::metadata::find_topic;
use crate::storage::Storage;
use bytes::Bytes;
use parking_lot::Mutex;
use runnel_codec::{decode_batch_bytes, split_batches, BatchBuilder, Compression};
use runnel_proto::v1::{BrokerInfo, TopicConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The internal topic of committed offsets, as Kafka names it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The longest group id accepted (offset keys carry it in a 16-bit length).
const MAX_GROUP_ID_LEN: usize = 255;
/// The longest commit metadata (Kafka's `offset.metadata.max.bytes`).
const MAX_METADATA_BYTES: usize = 4096;
/// How much of the offsets log one read takes while loading.
const LOAD_READ_BYTES: usize = 4 << 20;

/// The config of `__consumer_offsets`: compacted, kept forever otherwise.
pub fn offsets_topic_config() -> TopicConfig {
    TopicConfig {
        cleanup_policy: Some("compact".into()),
        retention_ms: Some(-1),
        retention_bytes: Some(-1),
        ..Default::default()
    }
}

/// One partition's reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReset {
    /// The partition.
    pub partition: TopicPartition,
    /// What was committed (-1: nothing).
    pub previous: i64,
    /// What it becomes.
    pub new: i64,
}

/// A group as `describe` shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// The group, with its members.
    pub group: Group,
    /// Its state.
    pub state: GroupState,
    /// Its committed offsets.
    pub offsets: BTreeMap<TopicPartition, Committed>,
}

/// The groups of one partition of `__consumer_offsets`.
#[derive(Debug)]
struct Shard {
    /// Woken whenever a member of one of its groups gains or loses partitions or an epoch,
    /// for the heartbeats that wait for that.
    changed: Arc<Notify>,
    /// The partition's leader epoch when it was loaded: another epoch means another broker
    /// may have written it since, so it is loaded again.
    leader_epoch: i32,
    groups: BTreeMap<String, Group>,
    offsets: BTreeMap<String, BTreeMap<TopicPartition, Committed>>,
}

impl Shard {
    fn group(&mut self, id: &str, settings: GroupSettings) -> &mut Group {
        self.groups
            .entry(id.to_string())
            .or_insert_with(|| Group::new(id, settings))
    }

    fn apply(&mut self, group: &str, partition: TopicPartition, value: Option<Committed>) {
        offsets_apply(&mut self.offsets, group, partition, value);
    }
}

fn offsets_apply(
    view: &mut BTreeMap<String, BTreeMap<TopicPartition, Committed>>,
    group: &str,
    partition: TopicPartition,
    value: Option<Committed>,
) {
    match value {
        Some(c) => {
            view.entry(group.to_string())
                .or_default()
                .insert(partition, c);
        }
        None => {
            if let Some(g) = view.get_mut(group) {
                g.remove(&partition);
                if g.is_empty() {
                    view.remove(group);
                }
            }
        }
    }
}

/// The coordinator of the groups this broker is responsible for.
pub struct Coordinator<S: Storage> {
    broker: Arc<Broker<S>>,
    settings: GroupSettings,
    partitions: i32,
    shards: Mutex<HashMap<i32, Arc<Mutex<Shard>>>>,
    /// The cluster's topics as the assignors see them, with the metadata epoch they are from.
    topics: Mutex<(i64, Arc<BTreeMap<String, TopicSpec>>)>,
    member_seed: u64,
    members_made: AtomicU64,
}

impl<S: Storage> std::fmt::Debug for Coordinator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("settings", &self.settings)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Checks a group id: 1 to 255 characters.
fn validate_group_id(group: &str) -> Result<(), BrokerError> {
    if group.is_empty() || group.len() > MAX_GROUP_ID_LEN {
        return Err(BrokerError::InvalidRequest(format!(
            "group id `{group}` must have 1 to {MAX_GROUP_ID_LEN} bytes"
        )));
    }
    Ok(())
}

impl<S: Storage> Coordinator<S> {
    /// The coordinator of `broker`, with its group settings.
    pub fn new(broker: Arc<Broker<S>>) -> Self {
        let settings = broker.settings().groups;
        let partitions = broker.settings().offsets_topic_partitions;
        Coordinator {
            broker,
            settings,
            partitions,
            shards: Mutex::new(HashMap::new()),
            topics: Mutex::new((-1, Arc::new(BTreeMap::new()))),
            member_seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            members_made: AtomicU64::new(0),
        }
    }

    /// The broker it runs on.
    pub fn broker(&self) -> &Arc<Broker<S>> {
        &self.broker
    }

    fn new_member_id(&self) -> String {
        let n = self.members_made.fetch_add(1, Ordering::Relaxed);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(self.member_seed);
        h.write_u64(n);
        format!(
            "{:016x}{:016x}",
            self.member_seed ^ now_ms() as u64,
            h.finish()
        )
    }

    /// Creates `__consumer_offsets` where this broker is its own controller; elsewhere the
    /// controller (the operator) creates it.
    fn ensure_offsets_topic(&self) -> Result<(), BrokerError> {
        if find_topic(&self.broker.cluster_metadata_view(), OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        if !self.broker.settings().standalone {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "the offsets topic `{OFFSETS_TOPIC}` does not exist yet; the operator creates it with the cluster's metadata: retry"
            )));
        }
        match self.broker.create_internal_topic(
            OFFSETS_TOPIC,
            self.partitions,
            offsets_topic_config(),
        ) {
            Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The group's partition of `__consumer_offsets`.
    pub fn partition_of(&self, group: &str) -> Result<i32, BrokerError> {
        validate_group_id(group)?;
        self.ensure_offsets_topic()?;
        let count = self.broker.partition_count(OFFSETS_TOPIC)?;
        Ok(offsets::partition_for_group(group, count as i32))
    }

    /// The coordinator of `group`: its partition's leader.
    pub fn find(&self, group: &str) -> Result<(BrokerInfo, i32), BrokerError> {
        let p = self.partition_of(group)?;
        let md = self.broker.cluster_metadata_view();
        let leader = find_topic(&md, OFFSETS_TOPIC)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .map_or(-1, |x| x.leader);
        if leader == self.broker.settings().broker_id {
            return Ok((self.broker.self_info(), p));
        }
        md.brokers
            .iter()
            .find(|b| b.id == leader)
            .cloned()
            .map(|b| (b, p))
            .ok_or_else(|| {
                BrokerError::CoordinatorNotAvailable(format!(
                    "partition {p} of `{OFFSETS_TOPIC}`, which holds group `{group}`, has no leader now: retry"
                ))
            })
    }

    /// The shard of `group`, loaded, if this broker coordinates it.
    fn shard_of(&self, group: &str) -> Result<(i32, Arc<Mutex<Shard>>), BrokerError> {
        let p = self.partition_of(group)?;
        let shard = self.shard(p).map_err(|e| match e {
            BrokerError::NotLeader {
                leader, at, broker, ..
            } => BrokerError::NotCoordinator {
                group: group.to_string(),
                broker,
                coordinator: leader,
                at,
            },
            e => e,
        })?;
        Ok((p, shard))
    }

    fn shard(&self, p: i32) -> Result<Arc<Mutex<Shard>>, BrokerError> {
        let (log, _) = self.broker.leader_log(OFFSETS_TOPIC, p)?;
        let epoch = self.broker.leader_epoch(OFFSETS_TOPIC, p);
        let mut shards = self.shards.lock();
        if let Some(s) = shards.get(&p) {
            if s.lock().leader_epoch == epoch {
                return Ok(s.clone());
            }
        }
        // A new leader holds every committed record, but its high watermark may still be
        // rising to its log end as its followers report under the new epoch: load once it is
        // there, so that no commit acknowledged by the previous leader is missed (Kafka's
        // COORDINATOR_LOAD_IN_PROGRESS until then). Only the coordinator appends here, and it
        // does not before the load, so the high watermark gets there.
        let summary = log.summary();
        if summary.high_watermark < summary.log_end_offset {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "partition {p} of `{OFFSETS_TOPIC}` is loading (high watermark {} of log end {}): retry",
                summary.high_watermark, summary.log_end_offset
            )));
        }
        // Load the partition: every record up to the high watermark, in order.
        let mut view = BTreeMap::new();
        let mut offset = log.summary().log_start_offset;
        loop {
            let out = log
                .read(offset, LOAD_READ_BYTES)
                .map_err(|e| BrokerError::log(OFFSETS_TOPIC, p, e))?;
            if out.batches.is_empty() {
                break;
            }
            for batch in &out.batches {
                for b in split_batches(batch) {
                    let b = b.map_err(|e| corrupt(p, offset, e.to_string()))?;
                    let b = batch.slice_ref(b);
                    let (header, records) =
                        decode_batch_bytes(&b).map_err(|e| corrupt(p, offset, e.to_string()))?;
                    for r in records {
                        let Some(key) = r.key.as_deref() else {
                            continue;
                        };
                        match offsets::decode(key, r.value.as_deref()) {
                            Ok(OffsetRecord::Commit {
                                group,
                                partition,
                                value,
                            }) => offsets_apply(&mut view, &group, partition, value),
                            Ok(OffsetRecord::Other) => {}
                            Err(e) => tracing::warn!(partition = p, offset = r.offset, error = %e,
                                "skipping an unreadable record of the offsets topic"),
                        }
                    }
                    offset = offset.max(header.next_offset());
                }
            }
            offset = offset.max(out.next_offset);
        }
        let groups: usize = view.len();
        tracing::info!(
            partition = p,
            leader_epoch = epoch,
            groups,
            "loaded committed offsets"
        );
        let shard = Arc::new(Mutex::new(Shard {
            changed: Arc::new(Notify::new()),
            leader_epoch: epoch,
            groups: BTreeMap::new(),
            offsets: view,
        }));
        shards.insert(p, shard.clone());
        Ok(shard)
    }

    /// The cluster's topics as the assignors see them (internal ones too: a member may name
    /// them, though regular expressions never match them).
    fn topic_specs(&self) -> Arc<BTreeMap<String, TopicSpec>> {
        let md = self.broker.cluster_metadata_view();
        let mut cached = self.topics.lock();
        if cached.0 == md.epoch {
            return cached.1.clone();
        }
        let racks: HashMap<i32, &str> =
            md.brokers.iter().map(|b| (b.id, b.rack.as_str())).collect();
        let specs: BTreeMap<String, TopicSpec> = md
            .topics
            .iter()
            .map(|t| {
                let mut parts: Vec<_> = t.partitions.iter().collect();
                parts.sort_by_key(|p| p.partition);
                (
                    t.name.clone(),
                    TopicSpec {
                        partitions: t.partitions.len() as i32,
                        replica_racks: parts
                            .iter()
                            .map(|p| {
                                p.replicas
                                    .iter()
                                    .filter_map(|r| racks.get(r))
                                    .filter(|r| !r.is_empty())
                                    .map(|r| r.to_string())
                                    .collect::<BTreeSet<String>>()
                            })
                            .collect(),
                    },
                )
            })
            .collect();
        *cached = (md.epoch, Arc::new(specs));
        cached.1.clone()
    }

    /// One heartbeat of a member of `group`, answered at once; also the shard's change signal
    /// and the member's session timeout.
    fn heartbeat_now(
        &self,
        group: &str,
        hb: Heartbeat,
    ) -> Result<(HeartbeatReply, Arc<Notify>, u32), BrokerError> {
        let (_, shard) = self.shard_of(group)?;
        let topics = self.topic_specs();
        let mut s = shard.lock();
        let joining = hb.member_epoch == 0;
        let settings = self.settings;
        let g = s.group(group, settings);
        let before = g.ownership_digest();
        let reply = g.heartbeat(hb, || self.new_member_id(), &topics, now_ms())?;
        let changed = g.ownership_digest() != before;
        let session = g
            .session_timeout_of(&reply.member_id)
            .unwrap_or(settings.session_timeout_ms);
        if changed {
            s.changed.notify_waiters();
        }
        if joining {
            tracing::info!(
                group,
                member = reply.member_id,
                epoch = reply.member_epoch,
                "member joined"
            );
        }
        Ok((reply, s.changed.clone(), session))
    }

    /// One heartbeat of a member of `group`. With `wait`, a member that owns exactly what the
    /// answer gives it, at the epoch it sent, is answered only once that changes (another
    /// member joined or left, a partition it waits for was let go) or `wait` passed (at most
    /// half its session timeout): members learn of a rebalance at once rather than at their
    /// next heartbeat.
    pub async fn heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
        wait: Duration,
    ) -> Result<HeartbeatReply, BrokerError> {
        let (epoch_in, owned_in) = (hb.member_epoch, hb.owned.clone());
        let member_id = hb.member_id.clone();
        let (reply, changed, session_ms) = self.heartbeat_now(group, hb)?;
        let settled = |r: &HeartbeatReply| {
            r.member_epoch == epoch_in && owned_in.as_ref() == Some(&r.assignment)
        };
        if wait.is_zero() || member_id.is_empty() || !settled(&reply) {
            return Ok(reply);
        }
        let wait = wait.min(Duration::from_millis(u64::from(session_ms / 2)));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A heartbeat with nothing new: it keeps the session and shows what changed.
            let (again, _, _) = self.heartbeat_now(
                group,
                Heartbeat {
                    member_id: member_id.clone(),
                    member_epoch: epoch_in,
                    ..Heartbeat::default()
                },
            )?;
            if !settled(&again) {
                return Ok(again);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(again),
            }
        }
    }

    /// A member leaves `group`.
    pub fn leave(&self, group: &str, member: &str) -> Result<(), BrokerError> {
        let (_, shard) = self.shard_of(group)?;
        let mut s = shard.lock();
        s.group(group, self.settings).leave(member)?;
        s.changed.notify_waiters();
        tracing::info!(group, member, "member left");
        Ok(())
    }

    /// Commits offsets of `group`: checked against the member's epoch and partitions, written
    /// to the group's partition of `__consumer_offsets`, and answered once durable.
    pub async fn commit(
        &self,
        group: &str,
        member: &str,
        member_epoch: i32,
        commits: Vec<(TopicPartition, Committed)>,
    ) -> Result<(), BrokerError> {
        if commits.is_empty() {
            return Ok(());
        }
        for ((topic, partition), c) in &commits {
            if c.offset < 0 {
                return Err(BrokerError::InvalidRequest(format!(
                    "group `{group}`: offset {} for `{topic}` partition {partition} is negative",
                    c.offset
                )));
            }
            if c.metadata.len() > MAX_METADATA_BYTES {
                return Err(BrokerError::InvalidRequest(format!(
                    "group `{group}`: commit metadata of {} bytes exceeds {MAX_METADATA_BYTES}",
                    c.metadata.len()
                )));
            }
        }
        let (p, shard) = self.shard_of(group)?;
        let pending = {
            let mut s = shard.lock();
            s.group(group, self.settings).check_commit(
                member,
                member_epoch,
                commits.iter().map(|((t, p), _)| (t.as_str(), *p)),
            )?;
            let records = commits
                .iter()
                .map(|((t, tp), c)| {
                    (
                        offsets::encode_key(group, t, *tp),
                        Some(offsets::encode_value(c)),
                    )
                })
                .collect::<Vec<_>>();
            let pending = self.append(p, &records)?;
            // Applied in the order of the log (under the shard's lock); answered once durable.
            for (tp, c) in commits {
                s.apply(group, tp, Some(c));
            }
            pending
        };
        pending.acked(Acks::All).await?;
        Ok(())
    }

    /// Queues one batch of offset records on partition `p` of `__consumer_offsets`.
    fn append(
        &self,
        p: i32,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<crate::broker::PendingAppend, BrokerError> {
        let now = now_ms();
        let mut b = BatchBuilder::new(Compression::None, now);
        for (k, v) in records {
            b.append(now, Some(k), v.as_deref(), &[]);
        }
        let batch: Bytes = b
            .build()
            .map_err(|e| BrokerError::InvalidRequest(format!("offset records: {e}")))?;
        self.broker.queue_append(
            OFFSETS_TOPIC,
            p,
            std::slice::from_ref(&batch),
            crate::broker::Acks::All,
        )
    }

    /// The committed offsets of `group` (all, or those of `only`).
    pub fn fetch_offsets(
        &self,
        group: &str,
        only: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<Committed>)>, BrokerError> {
        let (_, shard) = self.shard_of(group)?;
        let s = shard.lock();
        let empty = BTreeMap::new();
        let held = s.offsets.get(group).unwrap_or(&empty);
        Ok(if only.is_empty() {
            held.iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect()
        } else {
            only.iter()
                .map(|tp| (tp.clone(), held.get(tp).cloned()))
                .collect()
        })
    }

    /// The group with its members, state and offsets.
    pub fn describe(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        let (_, shard) = self.shard_of(group)?;
        let s = shard.lock();
        let offsets = s.offsets.get(group).cloned().unwrap_or_default();
        let g = s
            .groups
            .get(group)
            .cloned()
            .unwrap_or_else(|| Group::new(group, self.settings));
        let mut state = g.state();
        if state == GroupState::Empty && offsets.is_empty() {
            state = GroupState::Dead;
        }
        if state == GroupState::Dead {
            return Err(BrokerError::UnknownGroup(group.to_string()));
        }
        Ok(GroupDescription {
            group: g,
            state,
            offsets,
        })
    }

    /// The groups this broker coordinates: (id, state, members).
    pub fn list(&self) -> Result<Vec<(String, GroupState, usize)>, BrokerError> {
        if find_topic(&self.broker.cluster_metadata_view(), OFFSETS_TOPIC).is_none() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for p in self.led_partitions() {
            let shard = match self.shard(p) {
                Ok(s) => s,
                Err(BrokerError::NotLeader { .. }) => continue,
                Err(e) => return Err(e),
            };
            let s = shard.lock();
            let ids: BTreeSet<&String> = s
                .offsets
                .keys()
                .chain(
                    s.groups
                        .iter()
                        .filter(|(_, g)| !g.members().is_empty())
                        .map(|(k, _)| k),
                )
                .collect();
            for id in ids {
                let (state, members) = match s.groups.get(id) {
                    Some(g) => (g.state(), g.members().len()),
                    None => (GroupState::Empty, 0),
                };
                out.push((id.clone(), state, members));
            }
        }
        out.sort();
        Ok(out)
    }

    fn led_partitions(&self) -> Vec<i32> {
        let md = self.broker.cluster_metadata_view();
        let me = self.broker.settings().broker_id;
        find_topic(&md, OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.leader == me)
                    .map(|p| p.partition)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes a group without members, writing a tombstone for each of its offsets.
    pub async fn delete(&self, group: &str) -> Result<usize, BrokerError> {
        let (p, shard) = self.shard_of(group)?;
        let (pending, count) = {
            let mut s = shard.lock();
            let known = s.groups.contains_key(group) || s.offsets.contains_key(group);
            if !known {
                return Err(BrokerError::UnknownGroup(group.to_string()));
            }
            s.group(group, self.settings).require_empty("can delete")?;
            let held: Vec<TopicPartition> = s
                .offsets
                .get(group)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let pending = if held.is_empty() {
                None
            } else {
                let records: Vec<_> = held
                    .iter()
                    .map(|(t, tp)| (offsets::encode_key(group, t, *tp), None))
                    .collect();
                Some(self.append(p, &records)?)
            };
            s.offsets.remove(group);
            s.groups.remove(group);
            (pending, held.len())
        };
        if let Some(pending) = pending {
            pending.acked(Acks::All).await?;
        }
        tracing::info!(group, offsets = count, "group deleted");
        Ok(count)
    }

    /// Plans, and with `execute` commits, a reset of `group`'s offsets. `partitions` names
    /// topics with some (or, empty, all) of their partitions; none: every partition the group
    /// has an offset for.
    pub async fn reset_offsets(
        &self,
        group: &str,
        partitions: &[(String, Vec<i32>)],
        to: ResetTo,
        execute: bool,
    ) -> Result<Vec<PlannedReset>, BrokerError> {
        let (p, shard) = self.shard_of(group)?;
        let committed = {
            let mut s = shard.lock();
            s.group(group, self.settings)
                .require_empty("offsets can be reset for")?;
            s.offsets.get(group).cloned().unwrap_or_default()
        };
        let md = self.broker.cluster_metadata_view();
        let mut targets: BTreeSet<TopicPartition> = BTreeSet::new();
        if partitions.is_empty() {
            targets.extend(committed.keys().cloned());
        }
        for (topic, list) in partitions {
            let Some(t) = find_topic(&md, topic) else {
                return Err(BrokerError::UnknownTopic(topic.clone()));
            };
            if list.is_empty() {
                targets.extend(t.partitions.iter().map(|x| (topic.clone(), x.partition)));
            }
            for x in list {
                if !t.partitions.iter().any(|y| y.partition == *x) {
                    return Err(BrokerError::UnknownPartition {
                        topic: topic.clone(),
                        partition: *x,
                        count: t.partitions.len(),
                    });
                }
                targets.insert((topic.clone(), *x));
            }
        }
        let mut plan = Vec::with_capacity(targets.len());
        for tp in targets {
            let range = self.log_range(&tp, to).await?;
            let previous = committed.get(&tp).map_or(-1, |c| c.offset);
            plan.push(PlannedReset {
                new: offsets::reset_target(to, previous, range),
                previous,
                partition: tp,
            });
        }
        if !execute || plan.is_empty() {
            return Ok(plan);
        }
        let now = now_ms();
        let pending = {
            let mut s = shard.lock();
            // Members may have joined while the log was asked.
            s.group(group, self.settings)
                .require_empty("offsets can be reset for")?;
            let records: Vec<_> = plan
                .iter()
                .map(|r| {
                    let c = Committed {
                        offset: r.new,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp_ms: now,
                    };
                    (
                        offsets::encode_key(group, &r.partition.0, r.partition.1),
                        Some(offsets::encode_value(&c)),
                    )
                })
                .collect();
            let pending = self.append(p, &records)?;
            for r in &plan {
                s.apply(
                    group,
                    r.partition.clone(),
                    Some(Committed {
                        offset: r.new,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp_ms: now,
                    }),
                );
            }
            pending
        };
        pending.acked(Acks::All).await?;
        tracing::info!(group, partitions = plan.len(), ?to, "offsets reset");
        Ok(plan)
    }

    /// The log start offset, high watermark, and (for a timestamp reset) the offset of that
    /// time, of a partition: from this broker's log when it leads it, else from its leader.
    async fn log_range(
        &self,
        tp: &TopicPartition,
        to: ResetTo,
    ) -> Result<offsets::LogRange, BrokerError> {
        let ts = match to {
            ResetTo::Timestamp(ts) => Some(ts),
            _ => None,
        };
        match self.broker.leader_log(&tp.0, tp.1) {
            Ok((log, _)) => {
                let s = log.summary();
                let at_time = match ts {
                    Some(ts) => log
                        .offset_for_timestamp(ts)
                        .map_err(|e| BrokerError::log(&tp.0, tp.1, e))?
                        .map(|(o, _)| o),
                    None => None,
                };
                Ok(offsets::LogRange {
                    log_start_offset: s.log_start_offset,
                    high_watermark: s.high_watermark,
                    at_time,
                })
            }
            Err(BrokerError::NotLeader { at, .. }) if !at.is_empty() => {
                let address = at.trim_start_matches(" at ").to_string();
                peer_log_range(&address, tp, ts).await
            }
            Err(e) => Err(e),
        }
    }

    /// Removes members whose session or rebalance timed out; forgets shards this broker no
    /// longer leads. Returns how many members were removed.
    pub fn expire(&self) -> usize {
        let now = now_ms();
        let led: BTreeSet<i32> = self.led_partitions().into_iter().collect();
        let shards: Vec<(i32, Arc<Mutex<Shard>>)> = {
            let mut all = self.shards.lock();
            all.retain(|p, _| led.contains(p));
            all.iter().map(|(p, s)| (*p, s.clone())).collect()
        };
        let mut removed = 0;
        for (_, shard) in shards {
            let mut s = shard.lock();
            let mut gone = 0;
            for (id, g) in s.groups.iter_mut() {
                for (member, why) in g.expire(now) {
                    tracing::info!(group = id.as_str(), member, ?why, "member removed");
                    gone += 1;
                }
            }
            if gone > 0 {
                s.changed.notify_waiters();
            }
            removed += gone;
            s.groups.retain(|_, g| !g.members().is_empty());
        }
        removed
    }

    /// Sets the offset metrics: the high watermark of every partition led here (internal
    /// ones aside), and the committed offsets (and, for partitions led here, the lag) of every
    /// group coordinated here.
    pub fn update_metrics(&self) {
        let me = self.broker.settings().broker_id;
        let md = self.broker.cluster_metadata_view();
        let led: BTreeSet<(&str, i32)> = md
            .topics
            .iter()
            .filter(|t| t.name != OFFSETS_TOPIC)
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.leader == me)
                    .map(move |p| (t.name.as_str(), p.partition))
            })
            .collect();
        let partitions: Vec<(String, i32, i64)> = self
            .broker
            .held_logs()
            .into_iter()
            .filter(|((t, p), _)| led.contains(&(t.as_str(), *p)))
            .map(|((t, p), log)| (t, p, log.summary().high_watermark))
            .collect();
        // Groups with offsets show up without waiting for a group call to load their partition.
        if find_topic(&md, OFFSETS_TOPIC).is_some() {
            for p in self.led_partitions() {
                if let Err(e) = self.shard(p) {
                    tracing::debug!(partition = p, error = %e, "offsets partition not loaded");
                }
            }
        }
        let shards: Vec<Arc<Mutex<Shard>>> = self.shards.lock().values().cloned().collect();
        let mut groups = Vec::new();
        for shard in shards {
            let s = shard.lock();
            for (g, offsets) in &s.offsets {
                for ((t, p), c) in offsets {
                    groups.push((g.clone(), t.clone(), *p, c.offset));
                }
            }
        }
        self.broker.metrics().set_offsets(&partitions, &groups);
    }
}

fn corrupt(partition: i32, offset: i64, reason: String) -> BrokerError {
    BrokerError::CorruptBatch {
        topic: OFFSETS_TOPIC.to_string(),
        partition,
        offset,
        reason,
    }
}

/// Asks the leader of a partition for its log range.
async fn peer_log_range(
    address: &str,
    tp: &TopicPartition,
    ts: Option<i64>,
) -> Result<offsets::LogRange, BrokerError> {
    use runnel_proto::v1::broker_client::BrokerClient;
    use runnel_proto::v1::{ListOffsetsRequest, OffsetSpec};
    let unavailable = |e: String| {
        BrokerError::log(
            &tp.0,
            tp.1,
            LogError::Offline(format!("asking its leader at {address}: {e}")),
        )
    };
    let mut client = BrokerClient::connect(format!("http://{address}"))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (spec, timestamp_ms) = match ts {
        Some(ts) => (OffsetSpec::Timestamp, ts),
        None => (OffsetSpec::Earliest, 0),
    };
    let resp = client
        .list_offsets(ListOffsetsRequest {
            topic: tp.0.clone(),
            partitions: vec![tp.1],
            spec: spec as i32,
            timestamp_ms,
        })
        .await
        .map_err(|s| unavailable(s.message().to_string()))?
        .into_inner();
    let o = resp
        .partitions
        .into_iter()
        .find(|o| o.partition == tp.1)
        .ok_or_else(|| unavailable("no answer for the partition".into()))?;
    Ok(offsets::LogRange {
        log_start_offset: o.log_start_offset,
        high_watermark: o.high_watermark,
        at_time: ts.and_then(|_| (o.offset >= 0).then_some(o.offset)),
    })
}

impl From<GroupError> for BrokerError {
    fn from(e: GroupError) -> Self {
        BrokerError::Group(e)
    }
}
