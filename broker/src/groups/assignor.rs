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
        Assignor::Uniform => uniform(&model),
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

fn uniform(model: &Model<'_>) -> Vec<Option<usize>> {
    let active: Vec<usize> = (0..model.members.len())
        .filter(|&m| !model.subscribed[m].is_empty())
        .collect();
    if active.is_empty() {
        return vec![None; model.partitions()];
    }
    let homogeneous = active
        .windows(2)
        .all(|w| model.subscribed[w[0]] == model.subscribed[w[1]]);
    if homogeneous {
        uniform_homogeneous(model, &active)
    } else {
        uniform_heterogeneous(model)
    }
}

/// Placement state of the homogeneous case: every active member has quota `base`, plus one if
/// `has_extra`; `floating` larger quotas are not yet handed out.
#[derive(Debug)]
struct Quotas {
    owners: Vec<Option<usize>>,
    count: Vec<usize>,
    base: usize,
    has_extra: Vec<bool>,
    floating: usize,
}

impl Quotas {
    fn quota(&self, m: usize) -> usize {
        self.base + usize::from(self.has_extra[m])
    }

    /// Among `candidates`, the member with the fewest partitions (then the smallest id) that is
    /// below its quota, else one that can still take a larger quota.
    fn pick(&self, candidates: &[usize]) -> Option<usize> {
        let key = |m: &usize| (self.count[*m], *m);
        candidates
            .iter()
            .copied()
            .filter(|&m| self.count[m] < self.quota(m))
            .min_by_key(key)
            .or_else(|| {
                candidates
                    .iter()
                    .copied()
                    .filter(|&m| !self.has_extra[m] && self.floating > 0)
                    .min_by_key(key)
            })
    }

    fn give(&mut self, p: usize, m: usize) {
        if self.count[m] >= self.quota(m) && !self.has_extra[m] && self.floating > 0 {
            self.has_extra[m] = true;
            self.floating -= 1;
        }
        self.owners[p] = Some(m);
        self.count[m] += 1;
    }
}

fn uniform_homogeneous(model: &Model<'_>, active: &[usize]) -> Vec<Option<usize>> {
    let total = model.partitions();
    let n = active.len();
    let (base, extra) = (total / n, total % n);
    let claims = model.claims();
    let mut state = Quotas {
        owners: vec![None; total],
        count: vec![0; model.members.len()],
        base,
        has_extra: vec![false; model.members.len()],
        floating: extra,
    };
    // The larger quotas go to members that can fill them from their own partitions.
    let mut order = active.to_vec();
    order.sort_by_key(|&m| (Reverse(claims[m].len()), m));
    for &m in &order {
        if state.floating > 0 && claims[m].len() > base {
            state.has_extra[m] = true;
            state.floating -= 1;
        }
    }
    for &m in active {
        let mut mine = claims[m].clone();
        mine.sort_by_key(|&p| (!model.matches(m, p), p));
        mine.truncate(state.quota(m));
        for p in mine {
            state.give(p, m);
        }
    }
    let orphans: Vec<usize> = (0..total).filter(|&p| state.owners[p].is_none()).collect();
    for p in place_by_rack(model, active, &mut state, orphans) {
        let chosen = state
            .pick(active)
            .or_else(|| active.iter().copied().min_by_key(|&m| (state.count[m], m)));
        if let Some(m) = chosen {
            state.give(p, m);
        }
    }
    state.owners
}

/// Places as many of `orphans` as possible on same-rack members within their quotas (max flow:
/// source -> group of partitions with the same replica racks -> rack -> sink, where a rack's
/// members' remaining quotas go straight to the sink and their possible larger quotas go through
/// a pool node capped at the larger quotas left). Returns the partitions left to place.
fn place_by_rack(
    model: &Model<'_>,
    active: &[usize],
    state: &mut Quotas,
    orphans: Vec<usize>,
) -> Vec<usize> {
    let mut leftover = Vec::new();
    let mut groups: BTreeMap<&[usize], Vec<usize>> = BTreeMap::new();
    for p in orphans {
        match model.part_racks[p].as_slice() {
            [] => leftover.push(p),
            racks => groups.entry(racks).or_default().push(p),
        }
    }
    if groups.is_empty() {
        return leftover;
    }
    let racks = model.racks;
    let mut rack_members = vec![Vec::new(); racks];
    let mut room = vec![0; racks];
    let mut stretch = vec![0; racks];
    for &m in active {
        if let Some(r) = model.member_rack[m] {
            rack_members[r].push(m);
            room[r] += state.quota(m).saturating_sub(state.count[m]);
            stretch[r] += usize::from(!state.has_extra[m]);
        }
    }
    const SOURCE: usize = 0;
    const SINK: usize = 1;
    const POOL: usize = 2;
    let rack_node = |r: usize| 3 + r;
    let mut flow = Flow::new(3 + racks + groups.len());
    flow.edge(POOL, SINK, state.floating);
    for (r, (&room, &stretch)) in room.iter().zip(&stretch).enumerate() {
        flow.edge(rack_node(r), SINK, room);
        flow.edge(rack_node(r), POOL, stretch);
    }
    let mut group_edges = Vec::new();
    for (g, (rack_set, parts)) in groups.iter().enumerate() {
        let node = 3 + racks + g;
        flow.edge(SOURCE, node, parts.len());
        let edges: Vec<(usize, usize)> = rack_set
            .iter()
            .map(|&r| (r, flow.edge(node, rack_node(r), parts.len())))
            .collect();
        group_edges.push(edges);
    }
    flow.run(SOURCE, SINK);
    let mut buckets = vec![Vec::new(); racks];
    for (parts, edges) in groups.into_values().zip(group_edges) {
        let mut parts = parts.into_iter();
        for (r, edge) in edges {
            buckets[r].extend(parts.by_ref().take(flow.flow_on(edge)));
        }
        leftover.extend(parts);
    }
    for (bucket, members) in buckets.into_iter().zip(&rack_members) {
        for p in bucket {
            match state.pick(members) {
                Some(m) => state.give(p, m),
                None => leftover.push(p),
            }
        }
    }
    leftover.sort_unstable();
    leftover
}

/// A small max-flow network (Edmonds-Karp). Edge `e ^ 1` is edge `e`'s reverse.
#[derive(Debug)]
struct Flow {
    adjacency: Vec<Vec<usize>>,
    to: Vec<usize>,
    capacity: Vec<usize>,
}

impl Flow {
    fn new(nodes: usize) -> Self {
        Flow {
            adjacency: vec![Vec::new(); nodes],
            to: Vec::new(),
            capacity: Vec::new(),
        }
    }

    fn edge(&mut self, from: usize, to: usize, capacity: usize) -> usize {
        let e = self.to.len();
        self.to.extend([to, from]);
        self.capacity.extend([capacity, 0]);
        self.adjacency[from].push(e);
        self.adjacency[to].push(e + 1);
        e
    }

    fn flow_on(&self, edge: usize) -> usize {
        self.capacity[edge ^ 1]
    }

    fn run(&mut self, source: usize, sink: usize) {
        let nodes = self.adjacency.len();
        loop {
            let mut via: Vec<Option<usize>> = vec![None; nodes];
            let mut seen = vec![false; nodes];
            seen[source] = true;
            let mut queue = VecDeque::from([source]);
            while let Some(u) = queue.pop_front() {
                for &e in &self.adjacency[u] {
                    let v = self.to[e];
                    if self.capacity[e] > 0 && !seen[v] {
                        seen[v] = true;
                        via[v] = Some(e);
                        queue.push_back(v);
                    }
                }
            }
            if !seen[sink] || source == sink {
                return;
            }
            let mut push = usize::MAX;
            let mut v = sink;
            while let Some(e) = via[v] {
                push = push.min(self.capacity[e]);
                v = self.to[e ^ 1];
            }
            let mut v = sink;
            while let Some(e) = via[v] {
                self.capacity[e] -= push;
                self.capacity[e ^ 1] += push;
                v = self.to[e ^ 1];
            }
        }
    }
}

fn uniform_heterogeneous(model: &Model<'_>) -> Vec<Option<usize>> {
    let total = model.partitions();
    let mut owners = vec![None; total];
    let mut held = vec![BTreeSet::new(); model.members.len()];
    for (m, claims) in model.claims().into_iter().enumerate() {
        for p in claims {
            owners[p] = Some(m);
            held[m].insert(p);
        }
    }
    let mut orphans: Vec<usize> = (0..total).filter(|&p| owners[p].is_none()).collect();
    orphans.sort_by_key(|&p| (model.eligible[model.part_topic[p]].len(), p));
    for p in orphans {
        let best = model.eligible[model.part_topic[p]]
            .iter()
            .copied()
            .min_by_key(|&m| (held[m].len(), !model.matches(m, p), m));
        if let Some(m) = best {
            owners[p] = Some(m);
            held[m].insert(p);
        }
    }
    // Each move lowers the sum of squared counts, so this ends.
    while let Some((p, from, to)) = rebalancing_move(model, &held) {
        held[from].remove(&p);
        held[to].insert(p);
        owners[p] = Some(to);
    }
    owners
}

/// A move `(partition, from, to)` from a member with the most partitions to a subscribed member
/// with at least two fewer, if there is one.
fn rebalancing_move(model: &Model<'_>, held: &[BTreeSet<usize>]) -> Option<(usize, usize, usize)> {
    let mut order: Vec<usize> = (0..held.len()).filter(|&m| held[m].len() >= 2).collect();
    order.sort_by_key(|&m| (Reverse(held[m].len()), m));
    for a in order {
        let have = held[a].len();
        let mut topics: Vec<usize> = held[a].iter().map(|&p| model.part_topic[p]).collect();
        topics.dedup();
        for t in topics {
            let receivers: Vec<usize> = model.eligible[t]
                .iter()
                .copied()
                .filter(|&b| b != a && held[b].len() + 2 <= have)
                .collect();
            let Some(fewest) = receivers.iter().map(|&b| held[b].len()).min() else {
                continue;
            };
            let receivers: Vec<usize> = receivers
                .into_iter()
                .filter(|&b| held[b].len() == fewest)
                .collect();
            let best = held[a]
                .range(model.first[t]..model.first[t + 1])
                .flat_map(|&p| receivers.iter().map(move |&b| (p, b)))
                .min_by_key(|&(p, b)| (!model.matches(b, p), model.matches(a, p), p, b));
            if let Some((p, b)) = best {
                return Some((p, a, b));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;

    const ALL: [Assignor; 3] = [Assignor::Range, Assignor::RoundRobin, Assignor::Uniform];

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn set(items: &[(&str, i32)]) -> BTreeSet<TopicPartition> {
        items.iter().map(|&(t, p)| tp(t, p)).collect()
    }

    fn member(id: &str, topics: &[&str]) -> MemberSpec {
        MemberSpec {
            member_id: id.to_owned(),
            rack: None,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            current: BTreeSet::new(),
        }
    }

    fn topics_of(specs: &[(&str, i32)]) -> BTreeMap<String, TopicSpec> {
        specs
            .iter()
            .map(|&(name, partitions)| {
                let spec = TopicSpec {
                    partitions,
                    replica_racks: Vec::new(),
                };
                (name.to_owned(), spec)
            })
            .collect()
    }

    fn expect(entries: &[(&str, &[(&str, i32)])]) -> Assignment {
        entries
            .iter()
            .map(|&(m, parts)| (m.to_owned(), set(parts)))
            .collect()
    }

    // ---- generators ----

    const TOPICS: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "zz"]; // "zz" never exists

    fn racks_from_mask(mask: u8) -> BTreeSet<String> {
        (0..3)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| format!("r{i}"))
            .collect()
    }

    fn subs_from_mask(mask: u8) -> BTreeSet<String> {
        (0..6)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| TOPICS[i].to_owned())
            .collect()
    }

    /// 1 to 5 topics of 0 to 13 partitions, each partition with replicas in a random subset of
    /// racks r0..r2.
    fn arb_topics() -> impl Strategy<Value = BTreeMap<String, TopicSpec>> {
        prop::collection::vec((0i32..=13, prop::collection::vec(0u8..8, 13)), 1..=5).prop_map(
            |specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (partitions, masks))| {
                        let replica_racks = masks
                            .into_iter()
                            .take(partitions as usize)
                            .map(racks_from_mask)
                            .collect();
                        let spec = TopicSpec {
                            partitions,
                            replica_racks,
                        };
                        (TOPICS[i].to_owned(), spec)
                    })
                    .collect()
            },
        )
    }

    /// None, or r0..r3 (no partition has a replica in r3).
    fn arb_rack() -> impl Strategy<Value = Option<String>> {
        prop::option::of(0u8..4).prop_map(|r| r.map(|r| format!("r{r}")))
    }

    /// Arbitrary (possibly overlapping, possibly invalid) current partitions.
    fn arb_current() -> impl Strategy<Value = BTreeSet<TopicPartition>> {
        prop::collection::btree_set(
            (0usize..6, -1i32..15).prop_map(|(t, p)| tp(TOPICS[t], p)),
            0..8,
        )
    }

    /// 0 to 12 members with random racks, subscriptions (possibly naming a missing topic) and
    /// currents; unique ids, shuffled order.
    fn arb_members() -> impl Strategy<Value = Vec<MemberSpec>> {
        prop::collection::vec((arb_rack(), 0u8..64, arb_current()), 0..=12)
            .prop_map(|specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (rack, mask, current))| MemberSpec {
                        member_id: format!("m{i:02}"),
                        rack,
                        topics: subs_from_mask(mask),
                        current,
                    })
                    .collect::<Vec<_>>()
            })
            .prop_shuffle()
    }

    /// `size` (at most 12) members that all subscribe to the same topics, with random racks and
    /// disjoint currents (each existing partition held by a random member or nobody) plus
    /// invalid entries.
    fn arb_homogeneous(
        size: std::ops::RangeInclusive<usize>,
    ) -> impl Strategy<Value = (Vec<MemberSpec>, BTreeMap<String, TopicSpec>)> {
        (
            arb_topics(),
            0u8..64,
            prop::collection::vec(arb_rack(), size),
            prop::collection::vec(0usize..16, 5 * 13),
            prop::collection::vec((0usize..6, 13i32..20), 0..4),
        )
            .prop_map(|(topics, mask, racks, holders, junk)| {
                let topics_subscribed = subs_from_mask(mask);
                let mut members: Vec<MemberSpec> = racks
                    .into_iter()
                    .enumerate()
                    .map(|(i, rack)| MemberSpec {
                        member_id: format!("m{i:02}"),
                        rack,
                        topics: topics_subscribed.clone(),
                        current: BTreeSet::new(),
                    })
                    .collect();
                let n = members.len();
                let all = topics
                    .iter()
                    .flat_map(|(t, s)| (0..s.partitions).map(move |p| tp(t, p)));
                for (partition, holder) in all.zip(holders) {
                    if holder < n {
                        members[holder].current.insert(partition);
                    }
                }
                for (i, (t, p)) in junk.into_iter().enumerate() {
                    members[i % n].current.insert(tp(TOPICS[t], p));
                }
                (members, topics)
            })
    }

    // ---- checks ----

    fn check_exactly_once(
        members: &[MemberSpec],
        topics: &BTreeMap<String, TopicSpec>,
        out: &Assignment,
    ) -> Result<(), TestCaseError> {
        let ids: BTreeSet<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
        let keys: BTreeSet<&str> = out.keys().map(String::as_str).collect();
        prop_assert_eq!(keys, ids);
        let mut seen = BTreeSet::new();
        for (id, parts) in out {
            let spec = members.iter().find(|m| &m.member_id == id);
            prop_assert!(spec.is_some());
            for (t, p) in parts {
                prop_assert!(
                    spec.is_some_and(|s| s.topics.contains(t)),
                    "{id} not on {t}"
                );
                let count = topics.get(t).map_or(0, |s| s.partitions);
                prop_assert!((0..count).contains(p), "{t}-{p} does not exist");
                prop_assert!(seen.insert((t.clone(), *p)), "{t}-{p} assigned twice");
            }
        }
        for (t, spec) in topics {
            if members.iter().any(|m| m.topics.contains(t)) {
                for p in 0..spec.partitions {
                    prop_assert!(seen.contains(&tp(t, p)), "{t}-{p} unassigned");
                }
            }
        }
        Ok(())
    }

    fn check_balanced(out: &Assignment) -> Result<(), TestCaseError> {
        let sizes: Vec<usize> = out.values().map(BTreeSet::len).collect();
        let max = sizes.iter().copied().max().unwrap_or(0);
        let min = sizes.iter().copied().min().unwrap_or(0);
        prop_assert!(max <= min + 1, "unbalanced: {sizes:?}");
        Ok(())
    }

    /// For every partition, no member subscribed to its topic has 2+ fewer partitions than its
    /// holder.
    fn check_locally_balanced(
        members: &[MemberSpec],
        out: &Assignment,
    ) -> Result<(), TestCaseError> {
        for (holder, parts) in out {
            for (t, _) in parts {
                for other in members.iter().filter(|m| m.topics.contains(t)) {
                    let theirs = out[&other.member_id].len();
                    prop_assert!(
                        theirs + 1 >= parts.len(),
                        "{holder} has {} but {} on {t} has {theirs}",
                        parts.len(),
                        other.member_id
                    );
                }
            }
        }
        Ok(())
    }

    fn with_current(members: &mut [MemberSpec], out: &Assignment) {
        for m in members {
            m.current = out[&m.member_id].clone();
        }
    }

    fn rack_matched(
        members: &[MemberSpec],
        topics: &BTreeMap<String, TopicSpec>,
        out: &Assignment,
    ) -> usize {
        let mut n = 0;
        for m in members {
            let Some(rack) = &m.rack else { continue };
            for (t, p) in &out[&m.member_id] {
                if topics[t].replica_racks[*p as usize].contains(rack) {
                    n += 1;
                }
            }
        }
        n
    }

    /// Brute-force oracle: the most partitions placed on a same-rack member when each member
    /// gets `base` or `base + 1` partitions (exactly `extra` of them `base + 1`).
    fn max_rack_matches(
        replicas: &[BTreeSet<String>],
        racks: &[Option<String>],
        base: usize,
        extra: usize,
    ) -> usize {
        fn augment(
            p: usize,
            edges: &[Vec<usize>],
            slot_of: &mut [Option<usize>],
            seen: &mut [bool],
        ) -> bool {
            for &s in &edges[p] {
                if !seen[s] {
                    seen[s] = true;
                    if slot_of[s].is_none_or(|q| augment(q, edges, slot_of, seen)) {
                        slot_of[s] = Some(p);
                        return true;
                    }
                }
            }
            false
        }
        let n = racks.len();
        let mut best = 0;
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != extra {
                continue;
            }
            let slots: Vec<usize> = (0..n)
                .flat_map(|m| std::iter::repeat_n(m, base + usize::from(mask & (1 << m) != 0)))
                .collect();
            let edges: Vec<Vec<usize>> = replicas
                .iter()
                .map(|reps| {
                    (0..slots.len())
                        .filter(|&s| racks[slots[s]].as_ref().is_some_and(|r| reps.contains(r)))
                        .collect()
                })
                .collect();
            let mut slot_of = vec![None; slots.len()];
            let matched = (0..replicas.len())
                .filter(|&p| augment(p, &edges, &mut slot_of, &mut vec![false; slots.len()]))
                .count();
            best = best.max(matched);
        }
        best
    }

    // ---- properties ----

    proptest! {
        #[test]
        fn every_partition_assigned_once_to_a_subscriber(
            members in arb_members(),
            topics in arb_topics(),
        ) {
            for assignor in ALL {
                let out = assign(assignor, &members, &topics);
                check_exactly_once(&members, &topics, &out)?;
            }
        }

        #[test]
        fn homogeneous_is_balanced((members, topics) in arb_homogeneous(1..=12)) {
            for assignor in [Assignor::RoundRobin, Assignor::Uniform] {
                let out = assign(assignor, &members, &topics);
                check_exactly_once(&members, &topics, &out)?;
                check_balanced(&out)?;
            }
            // Range balances each topic, not the total (as in Kafka).
            let out = assign(Assignor::Range, &members, &topics);
            check_exactly_once(&members, &topics, &out)?;
            for t in topics.keys() {
                let per_topic: Assignment = out
                    .iter()
                    .map(|(m, parts)| {
                        (m.clone(), parts.iter().filter(|(pt, _)| pt == t).cloned().collect())
                    })
                    .collect();
                check_balanced(&per_topic)?;
            }
        }

        #[test]
        fn uniform_heterogeneous_is_locally_balanced(
            members in arb_members(),
            topics in arb_topics(),
        ) {
            let out = assign(Assignor::Uniform, &members, &topics);
            check_locally_balanced(&members, &out)?;
        }

        #[test]
        fn uniform_keeps_as_many_current_partitions_as_balance_allows(
            (members, topics) in arb_homogeneous(1..=12),
        ) {
            let out = assign(Assignor::Uniform, &members, &topics);
            let valid = |(t, p): &TopicPartition| {
                members[0].topics.contains(t)
                    && topics.get(t).is_some_and(|s| (0..s.partitions).contains(p))
            };
            let claims: Vec<usize> =
                members.iter().map(|m| m.current.iter().filter(|x| valid(x)).count()).collect();
            let total: usize = out.values().map(BTreeSet::len).sum();
            let (base, extra) = (total / members.len(), total % members.len());
            let expected = claims.iter().map(|&c| c.min(base)).sum::<usize>()
                + extra.min(claims.iter().filter(|&&c| c > base).count());
            let kept: usize = members
                .iter()
                .map(|m| out[&m.member_id].intersection(&m.current).count())
                .sum();
            prop_assert_eq!(kept, expected);
        }

        #[test]
        fn uniform_join_moves_the_minimum_all_to_the_newcomer(
            (mut members, topics) in arb_homogeneous(1..=12),
            rack in arb_rack(),
            slot in 0usize..13,
        ) {
            let before = assign(Assignor::Uniform, &members, &topics);
            with_current(&mut members, &before);
            let newcomer = format!("m{slot:02}x");
            let subscriptions = members[0].topics.iter().map(String::as_str).collect::<Vec<_>>();
            members.push(MemberSpec { rack, ..member(&newcomer, &subscriptions) });
            let after = assign(Assignor::Uniform, &members, &topics);
            check_exactly_once(&members, &topics, &after)?;
            check_balanced(&after)?;

            let total: usize = before.values().map(BTreeSet::len).sum();
            let n = members.len();
            let (base, extra) = (total / n, total % n);
            let mut sizes: Vec<usize> = before.values().map(BTreeSet::len).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let minimum: usize = sizes
                .iter()
                .enumerate()
                .map(|(i, &c)| c.saturating_sub(base + usize::from(i < extra)))
                .sum();
            prop_assert_eq!(moved(&before, &after), minimum);
            for (id, parts) in &before {
                prop_assert!(after[id].is_subset(parts), "{id} gained a partition");
            }
        }

        #[test]
        fn uniform_leave_moves_only_the_leavers_partitions(
            (mut members, topics) in arb_homogeneous(2..=12),
            which in any::<prop::sample::Index>(),
        ) {
            let before = assign(Assignor::Uniform, &members, &topics);
            with_current(&mut members, &before);
            let leaver = members.remove(which.index(members.len()));
            let after = assign(Assignor::Uniform, &members, &topics);
            check_exactly_once(&members, &topics, &after)?;
            check_balanced(&after)?;
            for m in &members {
                prop_assert!(before[&m.member_id].is_subset(&after[&m.member_id]));
            }
            prop_assert_eq!(moved(&before, &after), before[&leaver.member_id].len());
        }

        #[test]
        fn uniform_is_stable(
            hetero in arb_members(),
            (homo, homo_topics) in arb_homogeneous(1..=12),
            topics in arb_topics(),
        ) {
            for (mut members, topics) in [(hetero, topics), (homo, homo_topics)] {
                let first = assign(Assignor::Uniform, &members, &topics);
                with_current(&mut members, &first);
                let second = assign(Assignor::Uniform, &members, &topics);
                prop_assert_eq!(second, first);
            }
        }

        #[test]
        fn deterministic_and_independent_of_member_order(
            members in arb_members(),
            topics in arb_topics(),
        ) {
            let mut reversed = members.clone();
            reversed.reverse();
            for assignor in ALL {
                let out = assign(assignor, &members, &topics);
                prop_assert_eq!(&assign(assignor, &members, &topics), &out);
                prop_assert_eq!(&assign(assignor, &reversed, &topics), &out);
            }
        }

        /// Fresh homogeneous assignment (no current partitions), up to 6 members and 16
        /// partitions with random replica racks and member racks: the number of partitions on a
        /// member whose rack holds a replica equals the brute-force maximum over all balanced
        /// assignments, and the result is still balanced.
        #[test]
        fn uniform_rack_matches_are_maximal(
            counts in prop::collection::vec(0usize..=8, 1..=2),
            masks in prop::collection::vec(0u8..8, 16),
            racks in prop::collection::vec(arb_rack(), 1..=6),
        ) {
            let mut masks = masks.into_iter();
            let topics: BTreeMap<String, TopicSpec> = counts
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let replica_racks = masks.by_ref().take(c).map(racks_from_mask).collect();
                    (TOPICS[i].to_owned(), TopicSpec { partitions: c as i32, replica_racks })
                })
                .collect();
            let names: Vec<&str> = topics.keys().map(String::as_str).collect();
            let members: Vec<MemberSpec> = racks
                .iter()
                .enumerate()
                .map(|(i, rack)| MemberSpec {
                    rack: rack.clone(),
                    ..member(&format!("m{i}"), &names)
                })
                .collect();
            let out = assign(Assignor::Uniform, &members, &topics);
            check_exactly_once(&members, &topics, &out)?;
            check_balanced(&out)?;
            let replicas: Vec<BTreeSet<String>> =
                topics.values().flat_map(|s| s.replica_racks.iter().cloned()).collect();
            let total = replicas.len();
            let best = max_rack_matches(&replicas, &racks, total / racks.len(), total % racks.len());
            prop_assert_eq!(rack_matched(&members, &topics, &out), best);
        }
    }

    // ---- examples ----

    #[test]
    fn range_matches_kafka() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let topics = topics_of(&[("t0", 3), ("t1", 3)]);
        let want = expect(&[
            ("C0", &[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]),
            ("C1", &[("t0", 2), ("t1", 2)]),
        ]);
        assert_eq!(assign(Assignor::Range, &members, &topics), want);

        let members = [
            member("b", &["t"]),
            member("c", &["t"]),
            member("a", &["t"]),
        ];
        let want = expect(&[
            ("a", &[("t", 0), ("t", 1), ("t", 2)]),
            ("b", &[("t", 3), ("t", 4)]),
            ("c", &[("t", 5), ("t", 6)]),
        ]);
        assert_eq!(
            assign(Assignor::Range, &members, &topics_of(&[("t", 7)])),
            want
        );
    }

    #[test]
    fn round_robin_matches_kafka() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let topics = topics_of(&[("t0", 3), ("t1", 3)]);
        let want = expect(&[
            ("C0", &[("t0", 0), ("t0", 2), ("t1", 1)]),
            ("C1", &[("t0", 1), ("t1", 0), ("t1", 2)]),
        ]);
        assert_eq!(assign(Assignor::RoundRobin, &members, &topics), want);

        // The heterogeneous example of Kafka's RoundRobinAssignor javadoc.
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let topics = topics_of(&[("t0", 1), ("t1", 2), ("t2", 3)]);
        let want = expect(&[
            ("C0", &[("t0", 0)]),
            ("C1", &[("t1", 0)]),
            ("C2", &[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]),
        ]);
        assert_eq!(assign(Assignor::RoundRobin, &members, &topics), want);
    }

    #[test]
    fn uniform_heterogeneous_examples() {
        let members = [member("A", &["t0"]), member("B", &["t0", "t1"])];
        let topics = topics_of(&[("t0", 2), ("t1", 4)]);
        let want = expect(&[
            ("A", &[("t0", 0), ("t0", 1)]),
            ("B", &[("t1", 0), ("t1", 1), ("t1", 2), ("t1", 3)]),
        ]);
        assert_eq!(assign(Assignor::Uniform, &members, &topics), want);

        // B holds everything; the newcomer A takes t0 partitions until balanced.
        let mut b = member("B", &["t0", "t1"]);
        b.current = set(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]);
        let members = [member("A", &["t0"]), b];
        let topics = topics_of(&[("t0", 2), ("t1", 2)]);
        let want = expect(&[
            ("A", &[("t0", 0), ("t0", 1)]),
            ("B", &[("t1", 0), ("t1", 1)]),
        ]);
        assert_eq!(assign(Assignor::Uniform, &members, &topics), want);
    }

    #[test]
    fn uniform_places_partitions_on_their_racks() {
        // a, b in r0; c, d in r1; partition p has its replicas in rack r(p % 2).
        let members: Vec<MemberSpec> = [("a", "r0"), ("b", "r0"), ("c", "r1"), ("d", "r1")]
            .iter()
            .map(|&(id, rack)| MemberSpec {
                rack: Some(rack.to_owned()),
                ..member(id, &["t"])
            })
            .collect();
        let replica_racks = (0..8).map(|p| racks_from_mask(1 << (p % 2))).collect();
        let topics = BTreeMap::from([(
            "t".to_owned(),
            TopicSpec {
                partitions: 8,
                replica_racks,
            },
        )]);
        let out = assign(Assignor::Uniform, &members, &topics);
        for m in &members {
            let parts = &out[&m.member_id];
            assert_eq!(parts.len(), 2, "{out:?}");
            let rack = m.rack.as_deref().unwrap_or_default();
            for (_, p) in parts {
                assert_eq!(format!("r{}", p % 2), rack, "{out:?}");
            }
        }
        // Racks never take a partition away from a member that holds it within its quota.
        let mut swapped = members.clone();
        swapped[0].current = set(&[("t", 1), ("t", 3)]);
        let out = assign(Assignor::Uniform, &swapped, &topics);
        assert_eq!(out["a"], set(&[("t", 1), ("t", 3)]));
        // But a member over its quota keeps the partitions on its rack first.
        swapped[0].current = set(&[("t", 1), ("t", 3), ("t", 4)]);
        let out = assign(Assignor::Uniform, &swapped, &topics);
        assert_eq!(out["a"].len(), 2, "{out:?}");
        assert!(out["a"].contains(&tp("t", 4)), "{out:?}");
    }

    #[test]
    fn edge_cases() {
        let topics = topics_of(&[("t", 3), ("empty", 0), ("negative", -1)]);
        for assignor in ALL {
            assert!(assign(assignor, &[], &topics).is_empty());
            let mut a = member("a", &["t", "empty", "negative", "missing"]);
            a.current = set(&[("t", 7), ("t", -1), ("missing", 0), ("gone", 1)]);
            let members = [a, member("b", &[])];
            let want = expect(&[("a", &[("t", 0), ("t", 1), ("t", 2)]), ("b", &[])]);
            assert_eq!(assign(assignor, &members, &topics), want, "{assignor:?}");
            // A duplicate id: the first occurrence counts.
            let members = [member("a", &["t"]), member("a", &[])];
            assert_eq!(assign(assignor, &members, &topics)["a"].len(), 3);
        }
        // A member that stopped subscribing to a topic gives its partitions up.
        let mut a = member("a", &["u"]);
        a.current = set(&[("t", 0), ("t", 1)]);
        let members = [a, member("b", &["t"])];
        let out = assign(
            Assignor::Uniform,
            &members,
            &topics_of(&[("t", 2), ("u", 1)]),
        );
        assert_eq!(
            out,
            expect(&[("a", &[("u", 0)]), ("b", &[("t", 0), ("t", 1)])])
        );
    }

    #[test]
    fn parse_and_name() {
        for (text, assignor) in [
            ("range", Assignor::Range),
            ("roundrobin", Assignor::RoundRobin),
            ("round-robin", Assignor::RoundRobin),
            ("uniform", Assignor::Uniform),
            ("sticky", Assignor::Uniform),
            ("Uniform", Assignor::Uniform),
        ] {
            assert_eq!(Assignor::parse(text), Ok(assignor));
        }
        for assignor in ALL {
            assert_eq!(Assignor::parse(assignor.name()), Ok(assignor));
        }
        assert_eq!(Assignor::default(), Assignor::Uniform);
        let err = Assignor::parse("cooperative").expect_err("unknown assignor");
        assert!(
            err.contains("\"cooperative\"") && err.contains("range"),
            "{err}"
        );
        assert!(
            err.contains("roundrobin") && err.contains("uniform"),
            "{err}"
        );
    }

    #[test]
    fn moved_counts_partitions_that_change_hands() {
        let before = expect(&[
            ("a", &[("t", 0), ("t", 1)]),
            ("b", &[]),
            ("gone", &[("t", 3)]),
        ]);
        let after = expect(&[("a", &[("t", 0)]), ("b", &[("t", 1), ("t", 2), ("t", 3)])]);
        assert_eq!(moved(&before, &after), 2);
        assert_eq!(moved(&after, &after), 0);
        assert_eq!(moved(&BTreeMap::new(), &after), 0);
    }
}
