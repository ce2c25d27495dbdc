//! Consumer-group partition assignors (what Kafka's KIP-848 calls server-side assignors).
//!
//! [`assign`] computes a group's target assignment from its members (subscriptions, racks and,
//! for the sticky assignor, their partitions in the current target assignment) and the topics
//! (partition counts and the racks of each partition's replicas). Three assignors, by their
//! Kafka names:
//!
//! * [`Assignor::Range`]: Kafka's `RangeAssignor`. Per topic, its subscribers sorted by member id
//!   get contiguous ranges; the first `partitions % n` get one extra.
//! * [`Assignor::RoundRobin`]: Kafka's `RoundRobinAssignor`. All subscribed partitions, sorted,
//!   are dealt to the members sorted by id in turn, skipping members not subscribed to the topic.
//! * [`Assignor::Uniform`] (default): balanced, sticky and rack-aware, in the spirit of Kafka's
//!   `UniformAssignor`.
//!
//! Range and RoundRobin ignore racks and `current`, so they reproduce Kafka's outputs exactly.
//!
//! # What every assignor guarantees
//!
//! * Every partition `0..partitions` of every topic in `topics` that at least one member
//!   subscribes to is assigned to exactly one member, and that member subscribes to the topic.
//!   Topics nobody subscribes to, subscribed topics missing from `topics`, and topics with no
//!   partitions (or a negative count) are ignored.
//! * Every member id maps to a set (empty if it gets nothing); no members means an empty map.
//! * The output is a function of the input alone (no hashing order, no randomness) and does not
//!   depend on the order of `members`.
//! * Member ids are assumed unique. If one repeats, only its first occurrence is used.
//! * Entries of `current` naming a missing topic, a partition out of range, a topic the member no
//!   longer subscribes to, or a partition an earlier member (by id) already claims, are ignored.
//!
//! # Uniform
//!
//! A member is *active* if it subscribes to at least one topic that has partitions. If all
//! active members subscribe to the same topics (the *homogeneous* case), with `P` partitions and
//! `n` active members:
//!
//! * Balance: every active member gets `P / n` or `P / n + 1` partitions.
//! * Stickiness: the number of partitions that stay with their current holder is the largest any
//!   balanced assignment allows. Members whose current set is larger than `P / n` keep `P / n + 1`
//!   (while the `P % n` larger quotas last) and the others keep all theirs. The only partitions
//!   that move are unassigned ones, ones whose holder left or stopped subscribing, and ones above
//!   their holder's quota. So after a join only the minimum needed to restore balance moves,
//!   all of it to the newcomer; after a leave only the leaver's partitions move.
//! * Racks: a member that must give up partitions keeps those whose replicas share its rack
//!   first. Among the partitions that have to be placed, the number placed on a member whose rack
//!   holds one of their replicas is the largest possible without changing the quotas or the kept
//!   partitions (a max flow over racks). Partitions with no replica rack matching any member's
//!   rack are placed ignoring racks.
//!
//! Otherwise (*heterogeneous* subscriptions):
//!
//! * Every member keeps all its valid current partitions at first. The unassigned partitions
//!   then go, topics with the fewest subscribers first, each to the subscribed member with the
//!   fewest partitions (ties: same rack as a replica first, then member id).
//! * Balancing: partitions then move, one at a time, from a member with the most partitions to a
//!   subscribed member with at least two fewer, until no such move is left. So in the result,
//!   for every partition, no member subscribed to its topic has two or more fewer partitions than
//!   its holder. (This implies balance within one when subscriptions happen to be homogeneous; it
//!   is a local, greedy balance, not a global optimum.)
//! * Stickiness: a valid current partition moves only in that balancing step.
//! * Racks are only a tie-break: when several moves are equally good for balance, one that puts a
//!   partition on a same-rack member is preferred, and partitions not matching their holder's
//!   rack are moved first.
//!
//! In both cases Uniform is stable: assigning again with `current` set to its output changes
//! nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A topic's partition: topic name and partition index.
pub type TopicPartition = (String, i32);

/// One member as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// The member id (assumed unique within the group).
    pub member_id: String,
    /// The member's rack (zone), if it told one.
    pub rack: Option<String>,
    /// Topics it subscribes to (already resolved from a regex; only topics that exist).
    pub topics: BTreeSet<String>,
    /// Its partitions in the current target assignment (empty for a new member): the sticky
    /// assignor keeps as many as it can.
    pub current: BTreeSet<TopicPartition>,
}

/// One topic as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The number of partitions.
    pub partitions: i32,
    /// Per partition (index = partition), the racks of its replicas; empty vecs/sets when unknown.
    pub replica_racks: Vec<BTreeSet<String>>,
}

/// The assignors, by their Kafka names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Kafka's `RangeAssignor`: contiguous ranges per topic.
    Range,
    /// Kafka's `RoundRobinAssignor`: all partitions dealt in turn.
    RoundRobin,
    /// Balanced, sticky and rack-aware (Kafka's `UniformAssignor` in spirit).
    #[default]
    Uniform,
}

impl Assignor {
    /// Parses "range", "roundrobin" (also "round-robin"), "uniform" (also "sticky"), ignoring
    /// ASCII case; the error message names the bad value and the choices.
    pub fn parse(name: &str) -> Result<Assignor, String> {
        match name.to_ascii_lowercase().as_str() {
            "range" => Ok(Assignor::Range),
            "roundrobin" | "round-robin" => Ok(Assignor::RoundRobin),
            "uniform" | "sticky" => Ok(Assignor::Uniform),
            _ => Err(format!(
                "unknown assignor {name:?}: expected one of \"range\", \"roundrobin\" \
                 (or \"round-robin\"), \"uniform\" (or \"sticky\")"
            )),
        }
    }

    /// The name as the wire and `describe` show it: "range", "roundrobin", "uniform".
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Uniform => "uniform",
        }
    }
}

/// The target assignment: every member id of `members` maps to its partitions (members with
/// none map to an empty set). See the module documentation for what each assignor guarantees.
pub fn assign(
    assignor: Assignor,
    members: &[MemberSpec],
    topics: &BTreeMap<String, TopicSpec>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let model = Model::new(members, topics);
    let owners = match assignor {
        Assignor::Range => range(&model),
        Assignor::RoundRobin => round_robin(&model),
        Assignor::Uniform => uniform::uniform(&model),
    };
    model.output(&owners)
}

/// The partitions that move between `before` and `after` (taken from one member and given to
/// another), for reports. Partitions new in `after` or gone from it do not count.
pub fn moved(
    before: &BTreeMap<String, BTreeSet<TopicPartition>>,
    after: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> usize {
    let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    for (member, partitions) in before {
        for partition in partitions {
            owner.entry(partition).or_insert(member.as_str());
        }
    }
    after
        .iter()
        .map(|(member, partitions)| {
            partitions
                .iter()
                .filter(|p| owner.get(p).is_some_and(|o| *o != member.as_str()))
                .count()
        })
        .sum()
}

/// The input in index form. Members are numbered in member-id order, topics (only those with
/// partitions and at least one subscriber) in name order, partitions globally in
/// (topic, partition) order, racks (only those of members) in name order.
#[derive(Debug)]
struct Model<'a> {
    members: Vec<&'a MemberSpec>,
    topic_index: BTreeMap<&'a str, usize>,
    topic_names: Vec<&'a str>,
    /// `first[t]..first[t + 1]` are topic `t`'s partitions.
    first: Vec<usize>,
    part_topic: Vec<usize>,
    part_num: Vec<i32>,
    /// Per partition, the (sorted) member racks among its replicas' racks.
    part_racks: Vec<Vec<usize>>,
    /// Per member, the topics it subscribes to.
    subscribed: Vec<BTreeSet<usize>>,
    /// Per topic, its subscribers in id order.
    eligible: Vec<Vec<usize>>,
    member_rack: Vec<Option<usize>>,
    racks: usize,
}

impl<'a> Model<'a> {
    fn new(members: &'a [MemberSpec], topics: &'a BTreeMap<String, TopicSpec>) -> Self {
        let mut by_id: BTreeMap<&str, &MemberSpec> = BTreeMap::new();
        for member in members {
            by_id.entry(member.member_id.as_str()).or_insert(member);
        }
        let members: Vec<&MemberSpec> = by_id.into_values().collect();
        let rack_names: BTreeSet<&str> = members.iter().filter_map(|m| m.rack.as_deref()).collect();
        let rack_ids: BTreeMap<&str, usize> = rack_names
            .into_iter()
            .enumerate()
            .map(|(id, rack)| (rack, id))
            .collect();
        let member_rack = members
            .iter()
            .map(|m| m.rack.as_deref().and_then(|r| rack_ids.get(r).copied()))
            .collect();
        let mut model = Model {
            subscribed: vec![BTreeSet::new(); members.len()],
            members,
            topic_index: BTreeMap::new(),
            topic_names: Vec::new(),
            first: Vec::new(),
            part_topic: Vec::new(),
            part_num: Vec::new(),
            part_racks: Vec::new(),
            eligible: Vec::new(),
            member_rack,
            racks: rack_ids.len(),
        };
        for (name, spec) in topics {
            if spec.partitions <= 0 {
                continue;
            }
            let eligible: Vec<usize> = (0..model.members.len())
                .filter(|&m| model.members[m].topics.contains(name))
                .collect();
            if eligible.is_empty() {
                continue;
            }
            let t = model.topic_names.len();
            model.topic_names.push(name.as_str());
            model.topic_index.insert(name.as_str(), t);
            model.first.push(model.part_topic.len());
            for &m in &eligible {
                model.subscribed[m].insert(t);
            }
            model.eligible.push(eligible);
            for partition in 0..spec.partitions {
                let mut racks: Vec<usize> = usize::try_from(partition)
                    .ok()
                    .and_then(|i| spec.replica_racks.get(i))
                    .map(|set| {
                        set.iter()
                            .filter_map(|r| rack_ids.get(r.as_str()).copied())
                            .collect()
                    })
                    .unwrap_or_default();
                racks.sort_unstable();
                racks.dedup();
                model.part_topic.push(t);
                model.part_num.push(partition);
                model.part_racks.push(racks);
            }
        }
        model.first.push(model.part_topic.len());
        model
    }

    fn partitions(&self) -> usize {
        self.part_topic.len()
    }

    /// The global index of a partition, if it exists in the model.
    fn index_of(&self, (topic, partition): &TopicPartition) -> Option<usize> {
        let t = *self.topic_index.get(topic.as_str())?;
        let i = usize::try_from(*partition).ok()?;
        let p = self.first.get(t)?.checked_add(i)?;
        (p < *self.first.get(t + 1)?).then_some(p)
    }

    /// Whether member `m`'s rack is among partition `p`'s replica racks.
    fn matches(&self, m: usize, p: usize) -> bool {
        self.member_rack[m].is_some_and(|r| self.part_racks[p].binary_search(&r).is_ok())
    }

    /// Per member, its valid current partitions (ascending): existing, subscribed, and not
    /// already claimed by a member with a smaller id.
    fn claims(&self) -> Vec<Vec<usize>> {
        let mut taken = vec![false; self.partitions()];
        (0..self.members.len())
            .map(|m| {
                let mut mine = Vec::new();
                let valid = self.members[m]
                    .current
                    .iter()
                    .filter_map(|tp| self.index_of(tp));
                for p in valid {
                    if self.subscribed[m].contains(&self.part_topic[p]) && !taken[p] {
                        taken[p] = true;
                        mine.push(p);
                    }
                }
                mine
            })
            .collect()
    }

    fn output(&self, owners: &[Option<usize>]) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut sets = vec![BTreeSet::new(); self.members.len()];
        for (p, owner) in owners.iter().enumerate() {
            if let Some(m) = owner {
                let tp = (
                    self.topic_names[self.part_topic[p]].to_owned(),
                    self.part_num[p],
                );
                sets[*m].insert(tp);
            }
        }
        self.members
            .iter()
            .zip(sets)
            .map(|(member, set)| (member.member_id.clone(), set))
            .collect()
    }
}

fn range(model: &Model<'_>) -> Vec<Option<usize>> {
    let mut owners = vec![None; model.partitions()];
    for (t, subscribers) in model.eligible.iter().enumerate() {
        let n = subscribers.len();
        if n == 0 {
            continue;
        }
        let count = model.first[t + 1] - model.first[t];
        let (per, extra) = (count / n, count % n);
        let mut next = model.first[t];
        for (i, &m) in subscribers.iter().enumerate() {
            let len = per + usize::from(i < extra);
            for owner in &mut owners[next..next + len] {
                *owner = Some(m);
            }
            next += len;
        }
    }
    owners
}

fn round_robin(model: &Model<'_>) -> Vec<Option<usize>> {
    let n = model.members.len();
    let mut owners = vec![None; model.partitions()];
    if n == 0 {
        return owners;
    }
    let mut cursor = 0;
    for (p, owner) in owners.iter_mut().enumerate() {
        let t = model.part_topic[p];
        for _ in 0..n {
            if model.subscribed[cursor].contains(&t) {
                break;
            }
            cursor = (cursor + 1) % n;
        }
        if model.subscribed[cursor].contains(&t) {
            *owner = Some(cursor);
            cursor = (cursor + 1) % n;
        }
    }
    owners
}

mod uniform;

#[cfg(test)]
mod tests;
