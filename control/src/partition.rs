//! The state of one partition as the controller decides it: its replicas (with the replicas
//! being added and removed while it moves), its in-sync replicas, its leader and the leader
//! epoch. [`plan`] is a pure function of the previous state and of what the brokers report;
//! the operator feeds it and sends the result to the brokers.
//!
//! # Rules, in Kafka's terms
//!
//! * **The leader owns the ISR** (Kafka's `AlterPartition`, [KIP-497]). The leader reports, in
//!   `Admin.DescribePartitions`, the in-sync replicas it wants recorded: the recorded ones less
//!   the followers that fell behind for `replica.lag.time.max.ms`, plus the followers that
//!   caught up. The controller takes that report only from the partition's current leader
//!   (`is_leader`, and the report's `leader_epoch` is the partition's current one: a report from
//!   a deposed leader is stale and ignored). It keeps only brokers that hold or should hold a
//!   copy, in replica order, and always the leader itself.
//! * **The controller only shrinks the ISR**, and only by brokers that are not live (they do not
//!   answer). Never down to empty: when every in-sync replica is gone, they all stay in the ISR
//!   so that the first of them to come back leads again, as in Kafka (the last replicas known to
//!   hold every acknowledged record).
//! * **A new partition** has every target replica in its ISR (every log is empty), is led by its
//!   first live target replica (the preferred one first) under epoch 0, and is offline when
//!   none is live.
//! * **Leader election** (clean): a live in-sync leader stays leader, except that the preferred
//!   replica (the first target replica) takes leadership back as soon as it is live and in
//!   sync (Kafka's preferred leader election, `auto.leader.rebalance.enable`) and its copy is
//!   durable up to the leader's high watermark. Otherwise the leader is chosen among the live
//!   in-sync replicas: the most caught up (the highest log end offset reported; ties go to the
//!   preferred replica, then replica order; a replica that reports nothing ranks last). Every
//!   in-sync replica holds every acknowledged record, so any of them may lead; the most caught
//!   up loses the fewest unacknowledged ones, and a copy that lost its data while still
//!   recorded in sync (a wiped disk, restarted before its leader reported it behind) reports
//!   less than the others and does not lead.
//! * **Unclean election** (`unclean.leader.election.enable`, off by default): with no live
//!   in-sync replica, the most caught-up live replica that reports a copy leads and becomes the
//!   whole ISR; what only the lost replicas held is gone. Without it the partition is offline
//!   (leader `-1`) and its ISR unchanged until an in-sync replica is back.
//! * **A restarted leader leads again only under a new epoch.** A broker that restarts may
//!   have lost batches it had not synced, which its followers hold; leading again under the
//!   same epoch it would write other batches at those offsets under that epoch, and followers
//!   could not tell by epoch where to truncate. So a broker that comes back as the recorded
//!   leader declines: it reports the current epoch without leading, and the controller elects
//!   again (possibly the same broker) under the next epoch.
//! * **The leader epoch** goes up by one whenever the leader changes, also to and from `-1`, or
//!   the leader declined, and never otherwise.
//! * **Reassignment** ([KIP-455]): while a target replica is not in sync, the partition is held
//!   by the union of the current and target replicas, with `adding` (target replicas not yet
//!   current) and `removing` (current replicas not in the target). Once every target replica is
//!   in sync, the replicas become the target, the ISR is cut to it, and a leader outside the
//!   target is replaced (preferred first, then the most caught up). A replica that holds records
//!   is never dropped before every target replica has caught up.
//!
//! [KIP-497]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-497%3A+Add+inter-broker+API+to+alter+ISR
//! [KIP-455]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-455%3A+Create+an+Administrative+API+for+Replica+Reassignment

use runnel_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};

/// The leader of a partition that has none (offline), as the wire metadata says it.
pub const NO_LEADER: i32 = -1;

/// The decided state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// Every broker holding a copy, the preferred leader first (during a move: the target
    /// replicas, then the current ones on their way out).
    pub replicas: Vec<i32>,
    /// In-sync replicas, in replica order; never empty.
    pub isr: Vec<i32>,
    /// The leader's broker id, [`NO_LEADER`] (`-1`) when offline.
    pub leader: i32,
    /// Goes up by one at every change of leader.
    pub leader_epoch: i32,
    /// During a move: target replicas that were not replicas before.
    pub adding: Vec<i32>,
    /// During a move: replicas that leave once every target replica is in sync.
    pub removing: Vec<i32>,
}

/// What one broker reports of its copy of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Offset of its first stored record.
    pub log_start_offset: i64,
    /// Offset its next appended record gets.
    pub log_end_offset: i64,
    /// Its high watermark.
    pub high_watermark: i64,
    /// Bytes stored.
    pub size_bytes: i64,
    /// Offset below which its copy is on disk (flushed and synced).
    pub durable_end_offset: i64,
    /// The leader epoch of the metadata the broker holds for the partition.
    pub held_epoch: i32,
    /// Set when the broker says it leads the partition.
    pub leader: Option<LeaderReport>,
}

/// What a broker that leads a partition reports besides its copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderReport {
    /// The leader epoch it leads under.
    pub leader_epoch: i32,
    /// The in-sync replicas it wants recorded.
    pub isr: Vec<i32>,
}

/// A broker's `DescribePartitions` entry as a [`Report`]: with a [`LeaderReport`] when the
/// broker says it leads.
pub fn report_from(desc: &pb::PartitionDescription) -> Report {
    Report {
        log_start_offset: desc.log_start_offset,
        log_end_offset: desc.log_end_offset,
        high_watermark: desc.high_watermark,
        size_bytes: desc.size_bytes,
        durable_end_offset: desc.durable_end_offset,
        held_epoch: desc.leader_epoch,
        leader: desc.is_leader.then(|| LeaderReport {
            leader_epoch: desc.leader_epoch,
            isr: desc.isr.clone(),
        }),
    }
}

/// Decides the next state of a partition (the rules are in the [module doc](self)).
///
/// * `target`: where the partition should be (first = preferred leader); not empty. Equal to
///   the current replicas when it does not move.
/// * `previous`: its state as last decided; `None` (or a state without replicas) for a new
///   partition.
/// * `reports`: broker id → what that broker reports of its copy (only brokers that answered
///   and hold one).
/// * `live`: the brokers that answered.
/// * `unclean`: the topic's `unclean.leader.election.enable`.
pub fn plan(
    target: &[i32],
    previous: Option<&PartitionState>,
    reports: &BTreeMap<i32, Report>,
    live: &BTreeSet<i32>,
    unclean: bool,
) -> PartitionState {
    let target = distinct(target.iter());
    let Some(previous) = previous.filter(|p| !p.replicas.is_empty()) else {
        let leader = target
            .iter()
            .copied()
            .find(|b| live.contains(b))
            .unwrap_or(NO_LEADER);
        return PartitionState {
            replicas: target.clone(),
            isr: target,
            leader,
            leader_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        };
    };
    let current = distinct(previous.replicas.iter());
    // Target first (the order once a move is done), then the replicas on their way out.
    let union = distinct(target.iter().chain(&current));
    let in_union_order = |keep: &dyn Fn(i32) -> bool| -> Vec<i32> {
        union.iter().copied().filter(|b| keep(*b)).collect()
    };
    let was_leader = previous.leader;
    // The recorded leader holds this epoch's metadata but does not lead: it restarted.
    let declined = live.contains(&was_leader)
        && reports
            .get(&was_leader)
            .is_some_and(|r| r.leader.is_none() && r.held_epoch == previous.leader_epoch);

    // The recorded ISR, or what the current leader reports under the current epoch.
    let mut recorded = in_union_order(&|b| previous.isr.contains(&b));
    if recorded.is_empty() {
        // Only a state plan never made has no ISR: trust the leader, else start as new.
        recorded = if union.contains(&was_leader) {
            vec![was_leader]
        } else {
            current.clone()
        };
    }
    let reported = accepted_leader_report(previous, reports, live);
    if let Some(l) = reported {
        recorded = in_union_order(&|b| b == was_leader || l.isr.contains(&b));
    }
    // The controller drops brokers that are gone, but never the last in-sync ones.
    let alive: Vec<i32> = recorded
        .iter()
        .copied()
        .filter(|b| live.contains(b))
        .collect();
    let mut isr = if alive.is_empty() { recorded } else { alive };

    let preferred = target.first().copied();
    let eligible = |isr: &[i32], b: i32| live.contains(&b) && isr.contains(&b);
    // The preferred replica takes leadership from a live leader only holding, on disk, what
    // that leader has committed: an in-sync copy that lost its data (a wiped disk) before the
    // leader reported it out of sync must not lead. Without a live leader the election below
    // decides (the most caught up; the preferred one on a tie).
    let holds_committed = |b: i32| {
        b == was_leader
            || (live.contains(&was_leader)
                && !declined
                && match (reports.get(&b), reports.get(&was_leader)) {
                    (Some(r), Some(l)) => r.durable_end_offset >= l.high_watermark,
                    _ => false,
                })
    };
    // A leader that declined (it restarted) is elected again only as any other candidate.
    let mut leader = match preferred {
        Some(p) if eligible(&isr, p) && holds_committed(p) && !(declined && p == was_leader) => p,
        _ if eligible(&isr, was_leader) && !declined => was_leader,
        _ => elect(
            isr.iter().copied().filter(|b| live.contains(b)),
            preferred,
            reports,
        )
        .unwrap_or(NO_LEADER),
    };
    if leader == NO_LEADER && unclean {
        let candidates = union
            .iter()
            .copied()
            .filter(|b| live.contains(b) && reports.contains_key(b));
        if let Some(b) = elect(candidates, None, reports) {
            leader = b;
            isr = vec![b];
        }
    }

    let done = target.iter().all(|b| isr.contains(b));
    let (replicas, adding, removing) = if done {
        isr.retain(|b| target.contains(b));
        // The preferred-leader rule above already leaves no leader outside a target that is
        // all in sync; this keeps the invariant from hanging on that.
        if leader != NO_LEADER && !target.contains(&leader) {
            let candidates = target.iter().copied().filter(|b| eligible(&isr, *b));
            leader = elect(candidates, preferred, reports).unwrap_or(NO_LEADER);
        }
        (target, Vec::new(), Vec::new())
    } else {
        let adding = target
            .iter()
            .copied()
            .filter(|b| !current.contains(b))
            .collect();
        let removing = current
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        (union, adding, removing)
    };
    let leader_epoch = if leader == was_leader && !(declined && leader != NO_LEADER) {
        previous.leader_epoch
    } else {
        previous.leader_epoch.saturating_add(1)
    };
    PartitionState {
        replicas,
        isr,
        leader,
        leader_epoch,
        adding,
        removing,
    }
}

/// The leader's report that the controller records: from the partition's current leader, live,
/// saying it leads under the current epoch.
pub fn accepted_leader_report<'a>(
    previous: &PartitionState,
    reports: &'a BTreeMap<i32, Report>,
    live: &BTreeSet<i32>,
) -> Option<&'a LeaderReport> {
    if previous.leader == NO_LEADER || !live.contains(&previous.leader) {
        return None;
    }
    reports
        .get(&previous.leader)?
        .leader
        .as_ref()
        .filter(|l| l.leader_epoch == previous.leader_epoch)
}

/// Elects among `candidates` (in replica order) the highest log end offset reported:
/// `preferred` on a tie, else the first in order; a candidate without a report ranks last. The
/// most caught up, not the preferred one first: an in-sync copy that lost its data (a wiped
/// disk) before its leader reported it out of sync reports less than the others.
fn elect(
    candidates: impl Iterator<Item = i32>,
    preferred: Option<i32>,
    reports: &BTreeMap<i32, Report>,
) -> Option<i32> {
    let mut best: Option<(i32, Option<i64>)> = None;
    for b in candidates {
        // `None < Some(_)`: a candidate without a report ranks below any with one.
        let rank = reports.get(&b).map(|r| r.log_end_offset);
        let better = match best {
            None => true,
            Some((_, best_rank)) => rank > best_rank || (rank == best_rank && Some(b) == preferred),
        };
        if better {
            best = Some((b, rank));
        }
    }
    best.map(|(b, _)| b)
}

/// The ids of `ids` in order, each once.
fn distinct<'a>(ids: impl Iterator<Item = &'a i32>) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for id in ids {
        if !out.contains(id) {
            out.push(*id);
        }
    }
    out
}

#[cfg(test)]
mod tests;
