//! The state of one partition, decided by the operator from what the brokers report: its
//! in-sync replicas, its leader (with the leader epoch) and, while it moves between brokers,
//! the replicas being added and removed. Pure functions, property-tested; the metadata
//! controller feeds them and sends the result to the brokers.
//!
//! # Rules, in Kafka's terms
//!
//! * **In-sync replicas.** While the leader answers, the ISR is the leader plus every live
//!   replica whose log end offset has reached the leader's high watermark. When the leader does
//!   not answer, the ISR is the previous one minus the brokers that are gone (nothing can be
//!   learned about the followers without the leader), but never empty: when every in-sync
//!   replica is gone, they stay in the ISR so that the first to come back leads again. A new partition starts with every live
//!   replica in sync (all logs are empty).
//! * **Leader election** (clean only): the first of the preferred leader (the first target
//!   replica), the current leader, then the other replicas in order, that is live and in the
//!   ISR. With none, the partition is offline (leader `-1`): a replica that may miss
//!   acknowledged records is never made leader. The leader epoch goes up by one whenever the
//!   leader changes (also to and from `-1`).
//! * **Reassignment**: when the target replicas (from [`crate::assign`]) differ from the
//!   current ones, the partition first holds both (`replicas` is the union, with
//!   `addingReplicas` and `removingReplicas`), and shrinks to the target only once every target
//!   replica is in sync. A replica holding records is therefore never dropped before a copy
//!   has caught up.

use crate::crd::PartitionStatus;
use std::collections::{BTreeMap, BTreeSet};

/// What one broker reported of its copy of a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Offset of its first stored record.
    pub log_start_offset: i64,
    /// Offset its next appended record gets.
    pub log_end_offset: i64,
    /// Its high watermark.
    pub high_watermark: i64,
    /// Bytes stored.
    pub size_bytes: i64,
}

/// The decided state of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every broker holding a copy (during a move: current and target).
    pub replicas: Vec<i32>,
    /// Target replicas not yet caught up.
    pub adding: Vec<i32>,
    /// Current replicas that leave once the added ones are in sync.
    pub removing: Vec<i32>,
    /// In-sync replicas, in replica order.
    pub isr: Vec<i32>,
    /// The leader, `-1` when offline.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
}

/// Decides the state of a partition.
///
/// * `target`: where [`crate::assign`] places it (first = preferred leader); not empty.
/// * `previous`: its state as last decided (from the Topic's status), `None` for a new one.
/// * `reports`: broker id → what that broker reports of its copy (only brokers that answered
///   and hold it).
/// * `live`: brokers that are up and answered.
pub fn plan(
    target: &[i32],
    previous: Option<&PartitionStatus>,
    reports: &BTreeMap<i32, Report>,
    live: &BTreeSet<i32>,
) -> Plan {
    let current: Vec<i32> = previous
        .map(|p| p.replicas.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| target.to_vec());
    let previous_leader = previous.and_then(|p| p.leader).unwrap_or(-1);
    // Target first (the order of a finished move), then the replicas on their way out.
    let mut union = target.to_vec();
    union.extend(current.iter().filter(|b| !target.contains(b)));

    // In-sync replicas, over every broker that holds or should hold a copy.
    let in_sync: BTreeSet<i32> = match reports.get(&previous_leader) {
        Some(leader) if live.contains(&previous_leader) => union
            .iter()
            .copied()
            .filter(|b| {
                *b == previous_leader
                    || (live.contains(b)
                        && reports
                            .get(b)
                            .is_some_and(|r| r.log_end_offset >= leader.high_watermark))
            })
            .collect(),
        _ => {
            let before: Vec<i32> = match previous {
                Some(p) if !p.replicas.is_empty() => p.isr.clone(),
                _ => union.clone(),
            };
            let alive: BTreeSet<i32> = before
                .iter()
                .copied()
                .filter(|b| live.contains(b))
                .collect();
            if alive.is_empty() {
                // As in Kafka, the ISR never shrinks to nothing: the last in-sync replicas stay
                // in it while they are down, so that one of them leads again when it is back.
                before.into_iter().collect()
            } else {
                alive
            }
        }
    };

    let done = target.iter().all(|b| in_sync.contains(b));
    let replicas = if done { target.to_vec() } else { union };
    let (adding, removing) = if done {
        (Vec::new(), Vec::new())
    } else {
        (
            target
                .iter()
                .copied()
                .filter(|b| !current.contains(b))
                .collect(),
            current
                .iter()
                .copied()
                .filter(|b| !target.contains(b))
                .collect(),
        )
    };
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|b| in_sync.contains(b))
        .collect();

    let eligible = |b: &i32| live.contains(b) && isr.contains(b);
    let leader = target
        .first()
        .into_iter()
        .chain(std::iter::once(&previous_leader))
        .chain(replicas.iter())
        .copied()
        .find(eligible)
        .unwrap_or(-1);
    let leader_epoch = match previous {
        None => 0,
        Some(p) => {
            let epoch = p.leader_epoch.unwrap_or(0);
            if leader == previous_leader {
                epoch
            } else {
                epoch + 1
            }
        }
    };
    Plan {
        replicas,
        adding,
        removing,
        isr,
        leader,
        leader_epoch,
    }
}

/// The status of a partition from its plan and the leader's report (offsets are kept from
/// `previous` while the leader does not report).
pub fn status(
    partition: i32,
    plan: &Plan,
    leader_report: Option<&Report>,
    previous: Option<&PartitionStatus>,
) -> PartitionStatus {
    let offsets = leader_report.copied().unwrap_or_else(|| {
        previous.map_or_else(Report::default, |p| Report {
            log_start_offset: p.log_start_offset,
            log_end_offset: p.log_end_offset,
            high_watermark: p.high_watermark,
            size_bytes: p.size_bytes,
        })
    });
    PartitionStatus {
        partition,
        leader: (plan.leader >= 0).then_some(plan.leader),
        leader_epoch: Some(plan.leader_epoch),
        replicas: plan.replicas.clone(),
        isr: plan.isr.clone(),
        adding_replicas: plan.adding.clone(),
        removing_replicas: plan.removing.clone(),
        log_start_offset: offsets.log_start_offset,
        log_end_offset: offsets.log_end_offset,
        high_watermark: offsets.high_watermark,
        size_bytes: offsets.size_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    fn report(leo: i64, hw: i64) -> Report {
        Report {
            log_start_offset: 0,
            log_end_offset: leo,
            high_watermark: hw,
            size_bytes: leo * 10,
        }
    }

    fn previous(replicas: &[i32], isr: &[i32], leader: i32, epoch: i32) -> PartitionStatus {
        PartitionStatus {
            partition: 0,
            leader: (leader >= 0).then_some(leader),
            leader_epoch: Some(epoch),
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            ..PartitionStatus::default()
        }
    }

    #[test]
    fn a_new_partition_is_led_by_its_preferred_leader_with_every_live_replica_in_sync() {
        let p = plan(&[2, 0, 1], None, &BTreeMap::new(), &live(&[0, 1, 2]));
        assert_eq!(p.replicas, vec![2, 0, 1]);
        assert_eq!(p.isr, vec![2, 0, 1]);
        assert_eq!((p.leader, p.leader_epoch), (2, 0));
        assert!(p.adding.is_empty() && p.removing.is_empty());
    }

    #[test]
    fn a_lagging_follower_leaves_the_isr_and_a_caught_up_one_stays() {
        let prev = previous(&[0, 1, 2], &[0, 1, 2], 0, 0);
        let reports = BTreeMap::from([
            (0, report(100, 100)),
            (1, report(100, 90)),
            (2, report(40, 40)),
        ]);
        let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]));
        assert_eq!(p.isr, vec![0, 1]);
        assert_eq!((p.leader, p.leader_epoch), (0, 0));
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_isr_and_the_epoch_goes_up() {
        let prev = previous(&[0, 1, 2], &[0, 1], 0, 3);
        let reports = BTreeMap::from([(1, report(100, 90)), (2, report(40, 40))]);
        let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[1, 2]));
        assert_eq!(p.isr, vec![1]);
        assert_eq!((p.leader, p.leader_epoch), (1, 4));
    }

    #[test]
    fn no_unclean_election_the_partition_goes_offline() {
        let prev = previous(&[0, 1], &[0], 0, 1);
        let reports = BTreeMap::from([(1, report(0, 0))]);
        let p = plan(&[0, 1], Some(&prev), &reports, &live(&[1]));
        // Broker 0 stays the ISR while it is down (the last replica known to be in sync).
        assert_eq!(p.isr, vec![0]);
        assert_eq!((p.leader, p.leader_epoch), (-1, 2));
        // The leader comes back with its records: it leads again.
        let prev = status(0, &p, None, Some(&prev));
        let reports = BTreeMap::from([(0, report(50, 50)), (1, report(0, 0))]);
        let back = plan(&[0, 1], Some(&prev), &reports, &live(&[0, 1]));
        assert_eq!((back.leader, back.leader_epoch), (0, 3));
    }

    #[test]
    fn a_move_keeps_the_old_replica_until_the_new_one_is_in_sync() {
        // Partition on broker 0 with records; the target moves it to broker 1.
        let prev = previous(&[0], &[0], 0, 0);
        let reports = BTreeMap::from([(0, report(10, 10))]);
        let p = plan(&[1], Some(&prev), &reports, &live(&[0, 1]));
        assert_eq!(p.replicas, vec![1, 0]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![1], vec![0]));
        assert_eq!((p.leader, p.isr.clone()), (0, vec![0]));
        // Broker 1 catches up: the move completes and broker 1 leads.
        let prev = status(0, &p, reports.get(&0), Some(&prev));
        let reports = BTreeMap::from([(0, report(10, 10)), (1, report(10, 10))]);
        let p = plan(&[1], Some(&prev), &reports, &live(&[0, 1]));
        assert_eq!(p.replicas, vec![1]);
        assert!(p.adding.is_empty() && p.removing.is_empty());
        assert_eq!((p.leader, p.leader_epoch), (1, 1));
    }

    #[test]
    fn an_empty_partition_moves_at_once() {
        let prev = previous(&[0], &[0], 0, 0);
        let reports = BTreeMap::from([(0, report(0, 0)), (1, report(0, 0))]);
        let p = plan(&[1], Some(&prev), &reports, &live(&[0, 1]));
        assert_eq!(p.replicas, vec![1]);
        assert_eq!(p.leader, 1);
    }

    #[test]
    fn status_takes_offsets_from_the_leader_or_keeps_the_previous_ones() {
        let p = plan(&[0], None, &BTreeMap::new(), &live(&[0]));
        let s = status(0, &p, Some(&report(7, 5)), None);
        assert_eq!(
            (s.log_end_offset, s.high_watermark, s.size_bytes),
            (7, 5, 70)
        );
        let kept = status(0, &p, None, Some(&s));
        assert_eq!((kept.log_end_offset, kept.high_watermark), (7, 5));
    }

    fn scenario() -> impl Strategy<
        Value = (
            Vec<i32>,
            Option<PartitionStatus>,
            BTreeMap<i32, Report>,
            BTreeSet<i32>,
        ),
    > {
        let brokers = 0..6i32;
        (
            proptest::sample::subsequence((0..6).collect::<Vec<i32>>(), 1..4).prop_shuffle(),
            proptest::option::of((
                proptest::sample::subsequence((0..6).collect::<Vec<i32>>(), 1..4).prop_shuffle(),
                proptest::collection::btree_set(brokers.clone(), 0..6),
                -1..6i32,
                0..5i32,
            )),
            proptest::collection::btree_map(brokers.clone(), (0..20i64, 0..20i64), 0..6),
            proptest::collection::btree_set(brokers, 0..6),
        )
            .prop_map(|(target, prev, reports, live)| {
                let prev = prev.map(|(replicas, isr, leader, epoch)| {
                    let isr: Vec<i32> = replicas
                        .iter()
                        .copied()
                        .filter(|b| isr.contains(b))
                        .collect();
                    let leader = if isr.contains(&leader) { leader } else { -1 };
                    previous(&replicas, &isr, leader, epoch)
                });
                let reports = reports
                    .into_iter()
                    .map(|(b, (leo, hw))| (b, report(leo.max(hw), hw)))
                    .collect();
                (target, prev, reports, live)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_plan_is_consistent((target, prev, reports, live) in scenario()) {
            let p = plan(&target, prev.as_ref(), &reports, &live);
            // Target replicas are always held; the ISR is a subset of the replicas.
            prop_assert!(target.iter().all(|b| p.replicas.contains(b)));
            prop_assert!(p.isr.iter().all(|b| p.replicas.contains(b)));
            let distinct: BTreeSet<i32> = p.replicas.iter().copied().collect();
            prop_assert_eq!(distinct.len(), p.replicas.len());
            // The leader is live and in sync, or there is no live in-sync replica at all.
            if p.leader >= 0 {
                prop_assert!(live.contains(&p.leader) && p.isr.contains(&p.leader));
            } else {
                prop_assert!(p.isr.iter().all(|b| !live.contains(b)));
            }
            // A live in-sync preferred leader always leads.
            if live.contains(&target[0]) && p.isr.contains(&target[0]) {
                prop_assert_eq!(p.leader, target[0]);
            }
            // The epoch moves exactly when the leader does, and never backwards.
            match &prev {
                None => prop_assert_eq!(p.leader_epoch, 0),
                Some(prev) => {
                    let before = prev.leader_epoch.unwrap_or(0);
                    let changed = prev.leader.unwrap_or(-1) != p.leader;
                    prop_assert_eq!(p.leader_epoch, before + i32::from(changed));
                }
            }
            // A move is finished only when every target replica is in sync; until then the old
            // replicas stay.
            if p.adding.is_empty() && p.removing.is_empty() {
                prop_assert_eq!(&p.replicas, &target);
            } else {
                prop_assert!(p.adding.iter().all(|b| target.contains(b)));
                prop_assert!(p.removing.iter().all(|b| !target.contains(b)));
                prop_assert!(target.iter().any(|b| !p.isr.contains(b)));
            }
        }

        #[test]
        fn a_previous_in_sync_replica_is_dropped_only_with_a_caught_up_target(
            (target, prev, reports, live) in scenario()
        ) {
            let p = plan(&target, prev.as_ref(), &reports, &live);
            if let Some(prev) = &prev {
                for b in &prev.replicas {
                    if !p.replicas.contains(b) {
                        // Dropped: every target replica was in sync.
                        prop_assert!(target.iter().all(|t| p.isr.contains(t)));
                    }
                }
            }
        }
    }
}
