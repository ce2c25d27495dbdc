//! The group consumer: a member of a consumer group whose partitions the coordinator assigns
//! (Kafka's KIP-848 protocol). A background task heartbeats; `poll` applies what the
//! coordinator decided — it lets go of revoked partitions (committing them first), starts the
//! new ones from their committed offsets — and returns records. At-least-once by default:
//! offsets are committed automatically every `auto_commit_interval`, for the records that
//! earlier polls returned, and when partitions are revoked or the consumer closes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_proto::v1::{
    CommitOffsetsRequest, FetchOffsetsRequest, HeartbeatRequest, LeaveGroupRequest, OffsetCommit,
    PartitionSet, TopicPartitions,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::coordinator::GroupCoordinator;
use super::{by_topic, flatten, TopicPartition};
use crate::connection::Cluster;
use crate::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
use crate::error::{Error, Result};

/// Settings of a group consumer.
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// Fetch settings and the bootstrap brokers. Its `auto_offset_reset` applies to partitions
    /// without a committed offset too (Kafka's `auto.offset.reset`; `None` counts as latest).
    pub consumer: ConsumerConfig,
    /// The group (Kafka's `group.id`).
    pub group_id: String,
    /// Shown by `runnel group describe`.
    pub client_id: String,
    /// This consumer's rack, for rack-aware assignment.
    pub rack: String,
    /// "range", "roundrobin" or "uniform"; empty: the group's (default uniform).
    pub assignor: String,
    /// Removed from the group when silent this long; `None`: the broker's default.
    pub session_timeout: Option<Duration>,
    /// How long it may take to let go of a revoked partition (Kafka's
    /// `max.poll.interval.ms`): poll at least this often.
    pub rebalance_timeout: Duration,
    /// Commit automatically (Kafka's `enable.auto.commit`).
    pub enable_auto_commit: bool,
    /// How often (Kafka's `auto.commit.interval.ms`).
    pub auto_commit_interval: Duration,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        GroupConsumerConfig {
            consumer: ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Latest,
                ..ConsumerConfig::default()
            },
            group_id: String::new(),
            client_id: "runnel".into(),
            rack: String::new(),
            assignor: String::new(),
            session_timeout: None,
            rebalance_timeout: Duration::from_secs(60),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }
}

/// Told when partitions come and go, inside `poll` (Kafka's `ConsumerRebalanceListener`).
pub trait RebalanceListener: Send {
    /// Before partitions are let go (after their offsets are committed, when committing
    /// automatically): commit them here when committing by hand.
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// After partitions were assigned, before their records are returned.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions lost without a chance to commit (the member was fenced: its session timed
    /// out); other members may already consume them.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// What the heartbeat task shares with `poll`.
#[derive(Debug, Default, Clone)]
struct Membership {
    member_id: String,
    member_epoch: i32,
    /// The assignment of the last answer.
    assignment: BTreeSet<TopicPartition>,
    /// Bumped by every answer that changed something, and by a fence.
    version: u64,
    /// The member was fenced: what it owned is lost.
    fenced: bool,
    /// A problem the application must see.
    error: Option<String>,
}

/// What `poll` tells the heartbeat task.
#[derive(Debug, Default, Clone)]
struct Owned {
    partitions: BTreeSet<TopicPartition>,
    /// Bumped when it changes, so the next heartbeat reports it.
    version: u64,
    leaving: bool,
}

#[derive(Debug, Clone)]
struct Subscription {
    topics: Vec<String>,
    regex: Option<String>,
}

/// A consumer-group member.
pub struct GroupConsumer {
    config: Arc<GroupConsumerConfig>,
    coordinator: Arc<GroupCoordinator>,
    consumer: Consumer,
    membership: watch::Receiver<Membership>,
    owned_tx: watch::Sender<Owned>,
    wake: Arc<Notify>,
    heartbeat: Option<JoinHandle<()>>,
    /// What this member consumes now.
    owned: BTreeSet<TopicPartition>,
    /// The membership version applied.
    applied: u64,
    /// In a mutex only so that the consumer is `Sync` (and its futures `Send`) whatever the
    /// listener is; it is reached through `&mut self`.
    listener: std::sync::Mutex<Option<Box<dyn RebalanceListener>>>,
    /// Positions committed last, to skip commits that change nothing.
    committed: BTreeMap<TopicPartition, i64>,
    /// When offsets were last committed.
    last_commit: Instant,
}

impl fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl GroupConsumer {
    /// A member of `config.group_id`; it joins on [`subscribe`](Self::subscribe).
    pub async fn new(config: GroupConsumerConfig) -> Result<Self> {
        if config.group_id.is_empty() {
            return Err(Error::Config(
                "group_id: a group consumer needs a group id".into(),
            ));
        }
        let cluster = Cluster::new(&config.consumer.bootstrap)?;
        cluster.any_channel().await?;
        let consumer = Consumer::with_config(config.consumer.clone()).await?;
        let coordinator = Arc::new(GroupCoordinator::new(cluster, &config.group_id));
        let (_, membership) = watch::channel(Membership::default());
        let (owned_tx, _) = watch::channel(Owned::default());
        Ok(GroupConsumer {
            config: Arc::new(config),
            coordinator,
            consumer,
            membership,
            owned_tx,
            wake: Arc::new(Notify::new()),
            heartbeat: None,
            owned: BTreeSet::new(),
            applied: 0,
            listener: std::sync::Mutex::new(None),
            committed: BTreeMap::new(),
            last_commit: Instant::now(),
        })
    }

    /// Sets the listener told of revoked, assigned and lost partitions.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        *self.listener_mut() = Some(listener);
    }

    fn listener_mut(&mut self) -> &mut Option<Box<dyn RebalanceListener>> {
        // A listener that panicked leaves the lock poisoned; its state is the listener's own.
        self.listener
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins the group consuming `topics` (replacing an earlier subscription).
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        if topics.is_empty() {
            return Err(Error::Config("subscribe: name at least one topic".into()));
        }
        self.start(Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            regex: None,
        });
        Ok(())
    }

    /// Joins the group consuming every topic whose whole name matches `regex` (internal
    /// topics excepted), including topics created later.
    pub fn subscribe_pattern(&mut self, regex: &str) -> Result<()> {
        if regex.is_empty() {
            return Err(Error::Config(
                "subscribe_pattern: the expression is empty".into(),
            ));
        }
        self.start(Subscription {
            topics: Vec::new(),
            regex: Some(regex.to_owned()),
        });
        Ok(())
    }

    fn start(&mut self, subscription: Subscription) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let (tx, rx) = watch::channel(self.membership.borrow().clone());
        self.membership = rx;
        self.heartbeat = Some(tokio::spawn(heartbeat_loop(
            self.config.clone(),
            self.coordinator.clone(),
            subscription,
            tx,
            self.owned_tx.subscribe(),
            self.wake.clone(),
        )));
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The member id the coordinator gave (empty before the first answer).
    pub fn member_id(&self) -> String {
        self.membership.borrow().member_id.clone()
    }

    /// The member epoch of the last answer.
    pub fn member_epoch(&self) -> i32 {
        self.membership.borrow().member_epoch
    }

    /// The partitions this member consumes now, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The offset of the next record `poll` returns for a partition it owns.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.consumer.position(topic, partition)
    }

    /// Moves the position of an owned partition (the next commit commits it).
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        self.consumer.seek(topic, partition, offset)
    }

    /// Stops returning records of these owned partitions until [`resume`](Self::resume).
    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        self.consumer.pause(partitions);
    }

    /// Returns records of paused partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        self.consumer.resume(partitions);
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.consumer.paused()
    }

    /// Waits up to `timeout` for records of the partitions this member owns, applying the
    /// coordinator's assignment first. With automatic commit, commits what earlier polls
    /// returned once the interval has passed.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.heartbeat.is_none() {
            return Err(Error::Config("poll before subscribe".into()));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.reconcile().await?;
            if self.config.enable_auto_commit
                && self.last_commit.elapsed() >= self.config.auto_commit_interval
            {
                if let Err(e) = self.commit().await {
                    tracing::warn!(group = %self.config.group_id, error = %e, "automatic commit failed");
                }
            }
            let mut changed = self.membership.clone();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                r = self.consumer.poll_assigned(left) => return r,
                _ = changed.changed() => {
                    if tokio::time::Instant::now() >= deadline {
                        self.reconcile().await?;
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }

    /// Applies the latest answer of the coordinator: lost, revoked and new partitions.
    async fn reconcile(&mut self) -> Result<()> {
        let m = self.membership.borrow_and_update().clone();
        if let Some(e) = m.error {
            return Err(Error::Config(e));
        }
        if m.version == self.applied {
            return Ok(());
        }
        self.applied = m.version;
        if m.fenced {
            let lost: Vec<TopicPartition> = self.owned.iter().cloned().collect();
            if !lost.is_empty() {
                tracing::warn!(group = %self.config.group_id, partitions = ?lost,
                    "fenced by the coordinator: partitions lost, joining again");
                self.consumer.unassign_partitions(&lost);
                self.owned.clear();
                if let Some(l) = self.listener_mut().as_mut() {
                    l.on_partitions_lost(&lost);
                }
            }
            self.publish_owned();
            return Ok(());
        }
        let revoked: Vec<TopicPartition> = self.owned.difference(&m.assignment).cloned().collect();
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                if let Err(e) = self.commit_partitions(&revoked).await {
                    tracing::warn!(group = %self.config.group_id, error = %e,
                        "committing revoked partitions failed");
                }
            }
            if let Some(l) = self.listener_mut().as_mut() {
                l.on_partitions_revoked(&revoked);
            }
            self.consumer.unassign_partitions(&revoked);
            for tp in &revoked {
                self.owned.remove(tp);
                self.committed.remove(tp);
            }
        }
        let added: Vec<TopicPartition> = m.assignment.difference(&self.owned).cloned().collect();
        if !added.is_empty() {
            self.start_partitions(&added).await?;
            self.owned.extend(added.iter().cloned());
            if let Some(l) = self.listener_mut().as_mut() {
                l.on_partitions_assigned(&added);
            }
        }
        if !revoked.is_empty() || !added.is_empty() {
            tracing::debug!(group = %self.config.group_id, ?revoked, ?added, "assignment applied");
            self.publish_owned();
        }
        Ok(())
    }

    fn publish_owned(&self) {
        let owned = self.owned.clone();
        self.owned_tx.send_modify(|o| {
            o.partitions = owned;
            o.version += 1;
        });
        self.wake.notify_one();
    }

    /// Starts new partitions at their committed offsets, or where `auto_offset_reset` says.
    async fn start_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let committed = self.fetch_committed(partitions).await?;
        let mut by_topic_missing: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            match committed.get(tp) {
                Some(o) if *o >= 0 => {
                    self.consumer.assign_at(&Arc::from(tp.0.as_str()), tp.1, *o);
                    self.committed.insert(tp.clone(), *o);
                }
                _ => by_topic_missing.entry(tp.0.clone()).or_default().push(tp.1),
            }
        }
        let start = match self.config.consumer.auto_offset_reset {
            AutoOffsetReset::Earliest => StartOffset::Earliest,
            AutoOffsetReset::Latest | AutoOffsetReset::None => StartOffset::Latest,
        };
        for (topic, parts) in by_topic_missing {
            let offsets = self.consumer.resolve_start(&topic, &parts, start).await?;
            let t: Arc<str> = Arc::from(topic.as_str());
            for (p, o) in parts.into_iter().zip(offsets) {
                self.consumer.assign_at(&t, p, o);
            }
        }
        Ok(())
    }

    async fn fetch_committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let group = self.config.group_id.clone();
        let list = by_topic(partitions);
        let resp = self
            .coordinator
            .call("fetch the committed offsets", |mut c| {
                let req = FetchOffsetsRequest {
                    group_id: group.clone(),
                    partitions: list.clone(),
                };
                async move { c.fetch_offsets(req).await }
            })
            .await?;
        Ok(resp
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect())
    }

    /// Commits the positions of every owned partition: what earlier polls returned. Waits
    /// until the commit is durable.
    pub async fn commit(&mut self) -> Result<()> {
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        self.last_commit = Instant::now();
        self.commit_partitions(&owned).await
    }

    async fn commit_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let offsets: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .filter_map(|tp| {
                let pos = self.consumer.position(&tp.0, tp.1)?;
                (self.committed.get(tp) != Some(&pos)).then(|| (tp.clone(), pos))
            })
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits these offsets (each the offset of the next record to consume) of partitions
    /// this member owns.
    pub async fn commit_offsets(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = {
            let m = self.membership.borrow();
            (m.member_id.clone(), m.member_epoch)
        };
        let req = CommitOffsetsRequest {
            group_id: self.config.group_id.clone(),
            member_id,
            member_epoch,
            offsets: offsets
                .iter()
                .map(|((topic, partition), offset)| OffsetCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.coordinator
            .call("commit offsets", |mut c| {
                let req = req.clone();
                async move { c.commit_offsets(req).await }
            })
            .await?;
        for (tp, o) in offsets {
            self.committed.insert(tp.clone(), *o);
        }
        Ok(())
    }

    /// Commits in the background (errors are logged): for callers that do not wait.
    pub fn commit_async(&mut self) {
        let (member_id, member_epoch) = {
            let m = self.membership.borrow();
            (m.member_id.clone(), m.member_epoch)
        };
        let offsets: Vec<OffsetCommit> = self
            .owned
            .iter()
            .filter_map(|(t, p)| {
                let pos = self.consumer.position(t, *p)?;
                Some(OffsetCommit {
                    topic: t.clone(),
                    partition: *p,
                    offset: pos,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
            })
            .collect();
        for o in &offsets {
            self.committed
                .insert((o.topic.clone(), o.partition), o.offset);
        }
        let req = CommitOffsetsRequest {
            group_id: self.config.group_id.clone(),
            member_id,
            member_epoch,
            offsets,
        };
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            let r = coordinator
                .call("commit offsets", |mut c| {
                    let req = req.clone();
                    async move { c.commit_offsets(req).await }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(group = coordinator.group(), error = %e, "asynchronous commit failed");
            }
        });
    }

    /// Leaves the group: commits (when committing automatically), stops, and tells the
    /// coordinator, so that the partitions go to the other members at once.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.config.enable_auto_commit && !self.owned.is_empty() {
            result = self.commit().await;
        }
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        if !owned.is_empty() {
            if let Some(l) = self.listener_mut().as_mut() {
                l.on_partitions_revoked(&owned);
            }
        }
        self.consumer.unassign();
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let member_id = self.membership.borrow().member_id.clone();
        if !member_id.is_empty() {
            let req = LeaveGroupRequest {
                group_id: self.config.group_id.clone(),
                member_id,
            };
            let left = self
                .coordinator
                .call("leave", |mut c| {
                    let req = req.clone();
                    async move { c.leave_group(req).await }
                })
                .await;
            // Already gone (fenced) is as good as left.
            if let Err(e) = left {
                if e.code() != Some(tonic::Code::Aborted) && result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

/// How long a heartbeat waits at the coordinator for a change of the member's assignment.
const LONG_POLL_MS: u32 = 5_000;
/// A waiting heartbeat answered sooner than this did not wait (a coordinator that answers at
/// once): the next one keeps to the heartbeat interval.
const MIN_LONG_POLL: Duration = Duration::from_millis(50);

/// Heartbeats until aborted: joins, reports what `poll` owns, and publishes each answer.
async fn heartbeat_loop(
    config: Arc<GroupConsumerConfig>,
    coordinator: Arc<GroupCoordinator>,
    subscription: Subscription,
    membership: watch::Sender<Membership>,
    mut owned: watch::Receiver<Owned>,
    wake: Arc<Notify>,
) {
    let host = hostname();
    let mut member_id = membership.borrow().member_id.clone();
    let mut epoch = 0;
    let mut interval = Duration::from_millis(0);
    let mut reported_owned: Option<u64> = None;
    let mut send_subscription = true;
    // The assignment of the last answer: once poll owns exactly that, heartbeats wait at the
    // coordinator for the next change instead of asking every interval.
    let mut last_assignment: Option<BTreeSet<TopicPartition>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
            r = owned.changed() => { if r.is_err() { return; } }
        }
        let now_owned = owned.borrow().clone();
        if now_owned.leaving {
            return;
        }
        let settled = epoch != 0 && last_assignment.as_ref() == Some(&now_owned.partitions);
        let report = settled || reported_owned != Some(now_owned.version) || epoch == 0;
        let req = HeartbeatRequest {
            group_id: config.group_id.clone(),
            member_id: member_id.clone(),
            member_epoch: epoch,
            subscribed_topics: if send_subscription || epoch == 0 {
                subscription.topics.clone()
            } else {
                Vec::new()
            },
            subscribed_topic_regex: if send_subscription || epoch == 0 {
                subscription.regex.clone()
            } else {
                None
            },
            owned_partitions: report.then(|| PartitionSet {
                topics: if epoch == 0 {
                    Vec::<TopicPartitions>::new()
                } else {
                    by_topic(&now_owned.partitions)
                },
            }),
            rack: config.rack.clone(),
            assignor: config.assignor.clone(),
            session_timeout_ms: config
                .session_timeout
                .map_or(0, |d| d.as_millis().min(u128::from(u32::MAX)) as u32),
            rebalance_timeout_ms: config
                .rebalance_timeout
                .as_millis()
                .min(u128::from(u32::MAX)) as u32,
            client_id: config.client_id.clone(),
            client_host: host.clone(),
            wait_ms: if settled { LONG_POLL_MS } else { 0 },
        };
        let started = Instant::now();
        let call = coordinator.call("heartbeat", |mut c| {
            let req = req.clone();
            async move { c.heartbeat(req).await }
        });
        // While it waits, poll may let go of partitions: that is to be said at once.
        let result = tokio::select! {
            r = call => r,
            r = owned.changed(), if settled => {
                if r.is_err() {
                    return;
                }
                interval = Duration::ZERO;
                continue;
            }
        };
        match result {
            Ok(resp) => {
                send_subscription = false;
                if report {
                    reported_owned = Some(now_owned.version);
                }
                member_id = resp.member_id.clone();
                epoch = resp.member_epoch;
                let assignment = flatten(&resp.assignment);
                interval = if settled && started.elapsed() >= MIN_LONG_POLL {
                    // It waited at the coordinator: the next one waits there too.
                    Duration::ZERO
                } else {
                    Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(10)))
                        .saturating_sub(started.elapsed())
                };
                last_assignment = Some(assignment.clone());
                membership.send_if_modified(|m| {
                    let changed = m.assignment != assignment
                        || m.member_epoch != resp.member_epoch
                        || m.member_id != resp.member_id
                        || m.fenced;
                    m.member_id = resp.member_id.clone();
                    m.member_epoch = resp.member_epoch;
                    m.assignment = assignment;
                    m.fenced = false;
                    if changed {
                        m.version += 1;
                    }
                    changed
                });
            }
            Err(e) if e.code() == Some(tonic::Code::Aborted) => {
                // Fenced: what it owned is lost; join again with epoch 0 once poll let go.
                last_assignment = None;
                tracing::warn!(group = %config.group_id, error = %e, "fenced; joining again");
                epoch = 0;
                send_subscription = true;
                interval = Duration::from_millis(0);
                membership.send_modify(|m| {
                    m.member_epoch = 0;
                    m.assignment.clear();
                    m.fenced = true;
                    m.version += 1;
                });
                // Wait for poll to drop its partitions before joining again.
                let fenced_at = owned.borrow().version;
                while owned.borrow().version == fenced_at && !owned.borrow().partitions.is_empty() {
                    if owned.changed().await.is_err() {
                        return;
                    }
                }
            }
            Err(e) if e.is_retriable() => {
                tracing::warn!(group = %config.group_id, error = %e, "heartbeat failed; retrying");
                interval = Duration::from_millis(500);
            }
            Err(e) => {
                tracing::error!(group = %config.group_id, error = %e, "heartbeat refused");
                membership.send_modify(|m| {
                    m.error = Some(e.to_string());
                    m.version += 1;
                });
                return;
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer can be moved between threads and its futures spawned (checked when this
    /// compiles).
    #[test]
    fn its_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        fn check(mut c: GroupConsumer) {
            let poll = async move { c.poll(Duration::from_secs(1)).await };
            is_send(&poll);
        }
        let _ = check;
    }
}
