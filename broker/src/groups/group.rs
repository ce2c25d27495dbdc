//! One consumer group's membership and assignment, as a pure state machine in the style of
//! Kafka's KIP-848: members heartbeat with their subscription; a change of members or
//! subscriptions bumps the group epoch and computes a new target assignment; each member is
//! then moved to its target one step at a time, and a partition is given to a member only once
//! the member that had it has let it go, so no partition is ever owned by two members at once.
//!
//! Time comes in as milliseconds; nothing here does I/O.

use super::assignor::{assign, Assignor, MemberSpec, TopicPartition, TopicSpec};
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};

/// The group-wide settings (the broker's `group.*` configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// Session timeout of members that ask for none.
    pub session_timeout_ms: u32,
    /// The shortest session timeout a member may ask for.
    pub min_session_timeout_ms: u32,
    /// The longest.
    pub max_session_timeout_ms: u32,
    /// How often a member with its assignment heartbeats.
    pub heartbeat_interval_ms: u32,
    /// How often a member that waits for partitions (or must let some go) heartbeats.
    pub reconcile_interval_ms: u32,
    /// How long a member may take to let go of a revoked partition, when it asks for no limit.
    pub rebalance_timeout_ms: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            session_timeout_ms: 10_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            heartbeat_interval_ms: 500,
            reconcile_interval_ms: 100,
            rebalance_timeout_ms: 60_000,
        }
    }
}

/// Why a group call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member is not in the group (it left, or its session timed out).
    #[error("group `{group}` has no member `{member}`{}: it left or its session timed out, so it is fenced; join again with epoch 0", sent_epoch(*.epoch))]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// The epoch it sent, when it sent one.
        epoch: Option<i32>,
    },
    /// The member's epoch is not its current one.
    #[error("group `{group}`: member `{member}` sent epoch {epoch}, but its epoch is {current}: it is fenced; join again with epoch 0")]
    FencedEpoch {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// The epoch it sent.
        epoch: i32,
        /// Its epoch at the coordinator.
        current: i32,
    },
    /// A commit for a partition the member does not own.
    #[error("group `{group}`: member `{member}` at epoch {epoch} does not own `{topic}` partition {partition}, so it cannot commit its offset")]
    NotOwned {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// Its epoch.
        epoch: i32,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A call that needs a group without members.
    #[error("group `{group}` has {members} active member(s) ({names}); {what} only a group without members (stop its consumers first)")]
    NotEmpty {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
        /// Some of their ids.
        names: String,
        /// What was asked: "offsets can be reset for", ….
        what: &'static str,
    },
    /// Bad heartbeat input.
    #[error("group `{group}`: {reason}")]
    Invalid {
        /// The group.
        group: String,
        /// What is wrong.
        reason: String,
    },
}

fn sent_epoch(epoch: Option<i32>) -> String {
    epoch.map_or(String::new(), |e| format!(" (it sent epoch {e})"))
}

/// A group's state, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    /// No members (it may have committed offsets).
    Empty,
    /// The target assignment is being computed.
    Assigning,
    /// Members are moving to the target assignment.
    Reconciling,
    /// Every member owns its target.
    Stable,
    /// No members and no offsets: the group does not exist.
    Dead,
}

impl GroupState {
    /// The name `describe` and the ConsumerGroup status show.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a member subscribes to.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    /// Topic names.
    pub topics: BTreeSet<String>,
    /// Or a regular expression over topic names, matched whole.
    pub regex: Option<Regex>,
}

impl PartialEq for Subscription {
    fn eq(&self, other: &Self) -> bool {
        self.topics == other.topics
            && self.regex.as_ref().map(Regex::as_str) == other.regex.as_ref().map(Regex::as_str)
    }
}

impl Subscription {
    /// Whether it names `topic`. Internal topics (`__…`) match only by name, as in Kafka.
    pub fn matches(&self, topic: &str) -> bool {
        self.topics.contains(topic)
            || (!topic.starts_with("__") && self.regex.as_ref().is_some_and(|r| r.is_match(topic)))
    }

    /// The source of its regular expression.
    pub fn regex_source(&self) -> Option<&str> {
        self.regex.as_ref().map(|r| r.as_str())
    }
}

/// One heartbeat, as the service decodes it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// The member id; empty when joining.
    pub member_id: String,
    /// 0 to join, else the epoch of the last answer.
    pub member_epoch: i32,
    /// A new subscription, if it sent one.
    pub subscription: Option<Subscription>,
    /// What it owns now, if it said.
    pub owned: Option<BTreeSet<TopicPartition>>,
    /// Its rack.
    pub rack: String,
    /// The assignor it asks for ("" for the group's or the default).
    pub assignor: String,
    /// 0 for the default.
    pub session_timeout_ms: u32,
    /// 0 for the default.
    pub rebalance_timeout_ms: u32,
    /// Shown by describe.
    pub client_id: String,
    /// Shown by describe.
    pub client_host: String,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The member id (given on join).
    pub member_id: String,
    /// Its epoch.
    pub member_epoch: i32,
    /// When to heartbeat next.
    pub heartbeat_interval_ms: u32,
    /// What it may consume now.
    pub assignment: BTreeSet<TopicPartition>,
}

/// A member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Client id and host, for describe.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rack (empty: none).
    pub rack: String,
    /// What it subscribes to.
    pub subscription: Subscription,
    /// Its epoch: the assignment epoch it has reached.
    pub epoch: i32,
    /// The epoch before, still accepted for commits while the answer with the new one travels.
    pub previous_epoch: i32,
    /// The partitions it owns.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions it must let go of, still its own until it says it did.
    pub revoking: BTreeSet<TopicPartition>,
    /// Session timeout.
    pub session_timeout_ms: u32,
    /// How long it may take to let go.
    pub rebalance_timeout_ms: u32,
    /// When it last heartbeat.
    pub last_heartbeat_ms: i64,
    /// When it started having to let go of `revoking`.
    pub revoking_since_ms: Option<i64>,
}

impl Member {
    fn owns(&self, tp: &TopicPartition) -> bool {
        self.assigned.contains(tp) || self.revoking.contains(tp)
    }
}

/// Why a member left the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It sent LeaveGroup.
    Left,
    /// No heartbeat within its session timeout.
    SessionTimeout,
    /// It did not let go of revoked partitions within its rebalance timeout.
    RebalanceTimeout,
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    settings: GroupSettings,
    /// Bumped by every change of members, subscriptions or subscribed topics.
    epoch: i32,
    /// The group epoch the target assignment was computed for.
    assignment_epoch: i32,
    assignor: Option<Assignor>,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// The subscribed topics' partition counts the target was computed from.
    target_topics: BTreeMap<String, i32>,
}

impl Group {
    /// A group with no members.
    pub fn new(id: &str, settings: GroupSettings) -> Self {
        Group {
            id: id.to_string(),
            settings,
            epoch: 0,
            assignment_epoch: 0,
            assignor: None,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            target_topics: BTreeMap::new(),
        }
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The group epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The epoch of the target assignment.
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    /// The assignor in use (the default when the group has none yet).
    pub fn assignor(&self) -> Assignor {
        self.assignor.unwrap_or_default()
    }

    /// The members, by id.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// A member's target partitions.
    pub fn target_of(&self, member: &str) -> BTreeSet<TopicPartition> {
        self.target.get(member).cloned().unwrap_or_default()
    }

    /// Its state (`Empty` rather than `Dead`: whether it has offsets is not known here).
    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.epoch > self.assignment_epoch {
            GroupState::Assigning
        } else if self.members.values().all(|m| {
            m.epoch == self.assignment_epoch
                && m.revoking.is_empty()
                && m.assigned == self.target_of(&m.id)
        }) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// A digest of who owns what at which epoch: it changes whenever a member's epoch,
    /// partitions or partitions to let go of change, which is when a member waiting in a
    /// long-polled heartbeat has something to learn.
    pub fn ownership_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.epoch, self.assignment_epoch).hash(&mut h);
        for m in self.members.values() {
            (&m.id, m.epoch, &m.assigned, &m.revoking).hash(&mut h);
        }
        h.finish()
    }

    /// The session timeout of a member.
    pub fn session_timeout_of(&self, member: &str) -> Option<u32> {
        self.members.get(member).map(|m| m.session_timeout_ms)
    }

    /// Errors with `NotEmpty` when the group has members.
    pub fn require_empty(&self, what: &'static str) -> Result<(), GroupError> {
        if self.members.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.members.keys().take(3).map(String::as_str).collect();
        Err(GroupError::NotEmpty {
            group: self.id.clone(),
            members: self.members.len(),
            names: names.join(", "),
            what,
        })
    }

    fn invalid(&self, reason: String) -> GroupError {
        GroupError::Invalid {
            group: self.id.clone(),
            reason,
        }
    }

    /// Handles one heartbeat at `now_ms`. `new_member_id` names a joining member that brings
    /// no id; `topics` are the cluster's topics, for subscriptions and the assignor.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        new_member_id: impl FnOnce() -> String,
        topics: &BTreeMap<String, TopicSpec>,
        now_ms: i64,
    ) -> Result<HeartbeatReply, GroupError> {
        let assignor = match hb.assignor.as_str() {
            "" => None,
            name => Some(Assignor::parse(name).map_err(|e| self.invalid(e))?),
        };
        let session_timeout_ms = self.session_timeout(hb.session_timeout_ms)?;
        let rebalance_timeout_ms = match hb.rebalance_timeout_ms {
            0 => self.settings.rebalance_timeout_ms,
            t => t,
        };
        let id = if hb.member_epoch == 0 {
            let id = if hb.member_id.is_empty() {
                new_member_id()
            } else {
                // A member that joins again with its old id starts afresh: what it owned
                // before is released first.
                if self.members.remove(&hb.member_id).is_some() {
                    self.epoch += 1;
                }
                hb.member_id.clone()
            };
            if hb.subscription.is_none() {
                return Err(self.invalid(format!(
                    "member `{id}` joins without a subscription: name topics or a regular expression"
                )));
            }
            if self.members.is_empty() {
                self.assignor = assignor;
            }
            self.members.insert(
                id.clone(),
                Member {
                    id: id.clone(),
                    client_id: String::new(),
                    client_host: String::new(),
                    rack: String::new(),
                    subscription: Subscription::default(),
                    epoch: 0,
                    previous_epoch: 0,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    session_timeout_ms,
                    rebalance_timeout_ms,
                    last_heartbeat_ms: now_ms,
                    revoking_since_ms: None,
                },
            );
            self.epoch += 1;
            id
        } else {
            let m = self.member(&hb.member_id, Some(hb.member_epoch))?;
            if hb.member_epoch != m.epoch && hb.member_epoch != m.previous_epoch {
                return Err(GroupError::FencedEpoch {
                    group: self.id.clone(),
                    member: hb.member_id.clone(),
                    epoch: hb.member_epoch,
                    current: m.epoch,
                });
            }
            hb.member_id.clone()
        };

        let mut bump = false;
        if let Some(m) = self.members.get_mut(&id) {
            m.last_heartbeat_ms = now_ms;
            // What a heartbeat leaves unset (0, empty) stays as the member last said.
            if hb.member_epoch == 0 || hb.session_timeout_ms != 0 {
                m.session_timeout_ms = session_timeout_ms;
            }
            if hb.member_epoch == 0 || hb.rebalance_timeout_ms != 0 {
                m.rebalance_timeout_ms = rebalance_timeout_ms;
            }
            if !hb.client_id.is_empty() {
                m.client_id = hb.client_id;
            }
            if !hb.client_host.is_empty() {
                m.client_host = hb.client_host;
            }
            if !hb.rack.is_empty() && m.rack != hb.rack {
                m.rack = hb.rack;
                bump = true;
            }
            if let Some(s) = hb.subscription {
                if s != m.subscription {
                    m.subscription = s;
                    bump = true;
                }
            }
            if let Some(owned) = hb.owned {
                // What it no longer owns is released; it never gains partitions by saying so.
                m.revoking.retain(|tp| owned.contains(tp));
                if m.revoking.is_empty() {
                    m.revoking_since_ms = None;
                }
            }
        }
        if bump {
            self.epoch += 1;
        }
        self.refresh_target(topics);
        self.reconcile(&id, now_ms);
        let m = self.member(&id, None)?;
        let waiting = !m.revoking.is_empty()
            || m.epoch != self.assignment_epoch
            || m.assigned != self.target_of(&id);
        Ok(HeartbeatReply {
            member_id: id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: if waiting {
                self.settings.reconcile_interval_ms
            } else {
                self.settings.heartbeat_interval_ms
            },
            assignment: m.assigned.clone(),
        })
    }

    fn session_timeout(&self, asked: u32) -> Result<u32, GroupError> {
        let s = &self.settings;
        match asked {
            0 => Ok(s.session_timeout_ms),
            t if (s.min_session_timeout_ms..=s.max_session_timeout_ms).contains(&t) => Ok(t),
            t => Err(self.invalid(format!(
                "session timeout {t} ms is outside the broker's limits ({} to {} ms)",
                s.min_session_timeout_ms, s.max_session_timeout_ms
            ))),
        }
    }

    fn member(&self, id: &str, epoch: Option<i32>) -> Result<&Member, GroupError> {
        self.members
            .get(id)
            .ok_or_else(|| GroupError::UnknownMember {
                group: self.id.clone(),
                member: id.to_string(),
                epoch,
            })
    }

    /// Recomputes the target assignment when the group epoch moved, or when the subscribed
    /// topics' partitions changed (which bumps the epoch).
    fn refresh_target(&mut self, topics: &BTreeMap<String, TopicSpec>) {
        let subscribed: BTreeMap<String, i32> = topics
            .iter()
            .filter(|(name, _)| self.members.values().any(|m| m.subscription.matches(name)))
            .map(|(name, t)| (name.clone(), t.partitions))
            .collect();
        if subscribed != self.target_topics {
            self.epoch += 1;
        }
        if self.epoch == self.assignment_epoch {
            return;
        }
        let specs: Vec<MemberSpec> = self
            .members
            .values()
            .map(|m| MemberSpec {
                member_id: m.id.clone(),
                rack: (!m.rack.is_empty()).then(|| m.rack.clone()),
                topics: subscribed
                    .keys()
                    .filter(|t| m.subscription.matches(t))
                    .cloned()
                    .collect(),
                current: self.target.get(&m.id).cloned().unwrap_or_default(),
            })
            .collect();
        let used: BTreeMap<String, TopicSpec> = topics
            .iter()
            .filter(|(name, _)| subscribed.contains_key(*name))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        self.target = assign(self.assignor(), &specs, &used);
        self.target_topics = subscribed;
        self.assignment_epoch = self.epoch;
    }

    /// Moves one member a step towards its target (KIP-848's reconciliation): first it lets go
    /// of what it must give up, keeping its epoch; then it takes the new epoch and every target
    /// partition no other member owns; later heartbeats pick up the rest as it is released.
    fn reconcile(&mut self, id: &str, now_ms: i64) {
        let target = self.target_of(id);
        let owned_elsewhere: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).cloned())
            .collect();
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if !m.revoking.is_empty() {
            return;
        }
        let revoke: BTreeSet<TopicPartition> = m.assigned.difference(&target).cloned().collect();
        if !revoke.is_empty() {
            m.assigned.retain(|tp| target.contains(tp));
            m.revoking = revoke;
            m.revoking_since_ms = Some(now_ms);
            return;
        }
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
        for tp in target {
            if !owned_elsewhere.contains(&tp) {
                m.assigned.insert(tp);
            }
        }
    }

    /// Removes a member; its partitions go to the others as they heartbeat.
    pub fn leave(&mut self, member_id: &str) -> Result<(), GroupError> {
        self.member(member_id, None)?;
        self.remove(member_id);
        Ok(())
    }

    fn remove(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.epoch += 1;
            if self.members.is_empty() {
                self.assignor = None;
                self.target.clear();
                self.target_topics.clear();
                self.assignment_epoch = self.epoch;
            }
        }
    }

    /// Removes members whose session or rebalance timed out at `now_ms`; returns them.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(String, Departure)> {
        let gone: Vec<(String, Departure)> = self
            .members
            .values()
            .filter_map(|m| {
                if now_ms - m.last_heartbeat_ms > i64::from(m.session_timeout_ms) {
                    Some((m.id.clone(), Departure::SessionTimeout))
                } else if m
                    .revoking_since_ms
                    .is_some_and(|t| now_ms - t > i64::from(m.rebalance_timeout_ms))
                {
                    Some((m.id.clone(), Departure::RebalanceTimeout))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &gone {
            self.remove(id);
        }
        gone
    }

    /// Checks that a commit may be made: by a member at its current (or just previous) epoch
    /// for partitions it owns, or, with no member id, while the group has no members.
    pub fn check_commit<'a>(
        &self,
        member_id: &str,
        member_epoch: i32,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Result<(), GroupError> {
        if member_id.is_empty() {
            return self.require_empty("offsets without a member id can be committed for");
        }
        let m = self.member(member_id, Some(member_epoch))?;
        if member_epoch != m.epoch && member_epoch != m.previous_epoch {
            return Err(GroupError::FencedEpoch {
                group: self.id.clone(),
                member: member_id.to_string(),
                epoch: member_epoch,
                current: m.epoch,
            });
        }
        for (topic, partition) in partitions {
            if !m.owns(&(topic.to_string(), partition)) {
                return Err(GroupError::NotOwned {
                    group: self.id.clone(),
                    member: member_id.to_string(),
                    epoch: member_epoch,
                    topic: topic.to_string(),
                    partition,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics(list: &[(&str, i32)]) -> BTreeMap<String, TopicSpec> {
        list.iter()
            .map(|(n, p)| {
                (
                    n.to_string(),
                    TopicSpec {
                        partitions: *p,
                        replica_racks: vec![BTreeSet::new(); *p as usize],
                    },
                )
            })
            .collect()
    }

    fn subscribe(t: &[&str]) -> Option<Subscription> {
        Some(Subscription {
            topics: t.iter().map(|s| s.to_string()).collect(),
            regex: None,
        })
    }

    fn join(g: &mut Group, id: &str, t: &BTreeMap<String, TopicSpec>, now: i64) -> HeartbeatReply {
        g.heartbeat(
            Heartbeat {
                member_id: id.into(),
                subscription: subscribe(&["orders"]),
                owned: Some(BTreeSet::new()),
                ..Default::default()
            },
            || id.to_string(),
            t,
            now,
        )
        .expect("join")
    }

    /// A member as a client runs it: it owns what the last answer gave it, and lets go of
    /// what an answer no longer lists.
    #[derive(Debug, Clone)]
    struct Client {
        id: String,
        epoch: i32,
        owned: BTreeSet<TopicPartition>,
    }

    impl Client {
        fn beat(&mut self, g: &mut Group, t: &BTreeMap<String, TopicSpec>, now: i64) -> bool {
            match g.heartbeat(
                Heartbeat {
                    member_id: self.id.clone(),
                    member_epoch: self.epoch,
                    subscription: (self.epoch == 0).then(|| subscribe(&["orders"])).flatten(),
                    owned: Some(self.owned.clone()),
                    ..Default::default()
                },
                || self.id.clone(),
                t,
                now,
            ) {
                Ok(r) => {
                    self.epoch = r.member_epoch;
                    self.owned = r.assignment;
                    true
                }
                Err(_) => {
                    self.owned.clear();
                    self.epoch = 0;
                    false
                }
            }
        }
    }

    fn settle(clients: &mut [Client], g: &mut Group, t: &BTreeMap<String, TopicSpec>, now: i64) {
        for _ in 0..6 {
            for c in clients.iter_mut() {
                c.beat(g, t, now);
            }
        }
    }

    #[test]
    fn three_members_share_six_partitions_two_each() {
        let t = topics(&[("orders", 6)]);
        let mut g = Group::new("g", GroupSettings::default());
        let mut clients: Vec<Client> = ["a", "b", "c"]
            .iter()
            .map(|id| Client {
                id: id.to_string(),
                epoch: 0,
                owned: BTreeSet::new(),
            })
            .collect();
        settle(&mut clients, &mut g, &t, 0);
        assert_eq!(g.state(), GroupState::Stable);
        for c in &clients {
            assert_eq!(c.owned.len(), 2, "{c:?}");
        }
        // One leaves: the other two take its partitions, three each.
        g.leave("b").expect("leave");
        clients.retain(|c| c.id != "b");
        settle(&mut clients, &mut g, &t, 10);
        assert_eq!(g.state(), GroupState::Stable);
        for c in &clients {
            assert_eq!(c.owned.len(), 3, "{c:?}");
        }
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_and_its_commits_are_fenced() {
        let t = topics(&[("orders", 4)]);
        let mut g = Group::new("g", GroupSettings::default());
        let a = join(&mut g, "a", &t, 0);
        assert_eq!(a.assignment.len(), 4);
        join(&mut g, "b", &t, 0);
        assert!(g.expire(5_000).is_empty());
        // Only b keeps heartbeating.
        g.heartbeat(
            Heartbeat {
                member_id: "b".into(),
                member_epoch: g.members()["b"].epoch,
                ..Default::default()
            },
            String::new,
            &t,
            9_000,
        )
        .expect("beat");
        let gone = g.expire(10_001);
        assert_eq!(gone, vec![("a".to_string(), Departure::SessionTimeout)]);
        let e = g
            .check_commit("a", a.member_epoch, [("orders", 0)])
            .expect_err("zombie");
        assert!(e.to_string().contains("group `g`"), "{e}");
        assert!(e.to_string().contains("fenced"), "{e}");
    }

    #[test]
    fn a_stale_epoch_is_fenced_and_named() {
        let t = topics(&[("orders", 4)]);
        let mut g = Group::new("g", GroupSettings::default());
        join(&mut g, "a", &t, 0);
        let mut a = Client {
            id: "a".into(),
            epoch: g.members()["a"].epoch,
            owned: BTreeSet::new(),
        };
        a.beat(&mut g, &t, 0);
        // Two more epochs go by for a (b joins, then leaves).
        join(&mut g, "b", &t, 0);
        a.beat(&mut g, &t, 0);
        a.beat(&mut g, &t, 0);
        g.leave("b").expect("leave");
        a.beat(&mut g, &t, 0);
        let current = g.members()["a"].epoch;
        let e = g
            .check_commit("a", 1, [("orders", 0)])
            .expect_err("stale epoch");
        assert_eq!(
            e,
            GroupError::FencedEpoch {
                group: "g".into(),
                member: "a".into(),
                epoch: 1,
                current
            }
        );
        assert!(e.to_string().contains("epoch 1"), "{e}");
    }

    #[test]
    fn commits_without_a_member_need_an_empty_group() {
        let t = topics(&[("orders", 1)]);
        let mut g = Group::new("g", GroupSettings::default());
        g.check_commit("", -1, [("orders", 0)])
            .expect("empty group");
        join(&mut g, "a", &t, 0);
        let e = g
            .check_commit("", -1, [("orders", 0)])
            .expect_err("members");
        assert!(matches!(e, GroupError::NotEmpty { members: 1, .. }), "{e}");
    }

    #[test]
    fn a_new_topic_matching_a_regex_is_assigned() {
        let mut t = topics(&[("logs-a", 2)]);
        let mut g = Group::new("g", GroupSettings::default());
        let r = g
            .heartbeat(
                Heartbeat {
                    member_id: "a".into(),
                    subscription: Some(Subscription {
                        topics: BTreeSet::new(),
                        regex: Regex::new("^(?:logs-.*)$").ok(),
                    }),
                    ..Default::default()
                },
                || "a".into(),
                &t,
                0,
            )
            .expect("join");
        assert_eq!(r.assignment.len(), 2);
        t.extend(topics(&[("logs-b", 3), ("__consumer_offsets", 50)]));
        let r = g
            .heartbeat(
                Heartbeat {
                    member_id: "a".into(),
                    member_epoch: r.member_epoch,
                    ..Default::default()
                },
                String::new,
                &t,
                1,
            )
            .expect("beat");
        assert_eq!(r.assignment.len(), 5, "{r:?}");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Join(usize),
        Leave(usize),
        Beat(usize),
        /// A heartbeat whose answer is lost: the coordinator moves on, the client does not.
        LostAnswer(usize),
        Expire(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..6usize).prop_map(Step::Join),
            (0..6usize).prop_map(Step::Leave),
            (0..6usize).prop_map(Step::Beat),
            (0..6usize).prop_map(Step::Beat),
            (0..6usize).prop_map(Step::Beat),
            (0..6usize).prop_map(Step::LostAnswer),
            (0..3000u16).prop_map(Step::Expire),
        ]
    }

    proptest! {
        /// Whatever members do, no partition is ever owned by two members at once, neither at
        /// the coordinator nor as clients believe it; and once everyone heartbeats, every
        /// partition is owned and the group is stable.
        #[test]
        fn no_partition_is_ever_owned_twice(
            steps in proptest::collection::vec(step(), 1..120),
            partitions in 1..12i32,
        ) {
            let t = topics(&[("orders", partitions)]);
            let mut g = Group::new("g", GroupSettings::default());
            let mut clients: Vec<Option<Client>> = vec![None; 6];
            let mut now = 0i64;
            for s in steps {
                now += 100;
                match s {
                    Step::Join(i) if clients[i].is_none() => {
                        let mut c = Client { id: format!("m{i}"), epoch: 0, owned: BTreeSet::new() };
                        c.beat(&mut g, &t, now);
                        clients[i] = Some(c);
                    }
                    Step::Leave(i) => {
                        if let Some(c) = clients[i].take() {
                            let _ = g.leave(&c.id);
                        }
                    }
                    Step::Beat(i) => {
                        if let Some(c) = clients[i].as_mut() {
                            c.beat(&mut g, &t, now);
                        }
                    }
                    Step::LostAnswer(i) => {
                        if let Some(c) = clients[i].as_ref() {
                            let mut copy = c.clone();
                            copy.beat(&mut g, &t, now);
                        }
                    }
                    Step::Expire(ms) => {
                        now += i64::from(ms) * 10;
                        for (id, _) in g.expire(now) {
                            // A removed member learns it on its next heartbeat; until then it
                            // still believes it owns its partitions, so nobody else may have
                            // them in the meantime.
                            let _ = id;
                        }
                    }
                    _ => {}
                }
                // At the coordinator: each partition at most once over assigned ∪ revoking.
                let mut seen = BTreeSet::new();
                for m in g.members().values() {
                    for tp in m.assigned.iter().chain(m.revoking.iter()) {
                        prop_assert!(seen.insert(tp.clone()), "{tp:?} owned twice: {g:?}");
                    }
                }
                // As live clients believe it.
                let mut believed = BTreeSet::new();
                for c in clients.iter().flatten() {
                    if g.members().contains_key(&c.id) {
                        for tp in &c.owned {
                            prop_assert!(believed.insert(tp.clone()), "{tp:?} consumed twice");
                        }
                    }
                }
            }
            // Everyone heartbeats a few times: the group settles with every partition owned.
            let mut live: Vec<Client> = clients.into_iter().flatten().collect();
            now += 100;
            settle(&mut live, &mut g, &t, now);
            if live.iter().any(|c| g.members().contains_key(&c.id)) {
                prop_assert_eq!(g.state(), GroupState::Stable);
                let owned: usize = live.iter().map(|c| c.owned.len()).sum();
                prop_assert_eq!(owned, partitions as usize);
            }
        }
    }
}
