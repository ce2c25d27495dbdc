//! [`plan`]'s unit tests, one per rule, and its properties over random partitions.

use super::*;
use proptest::prelude::*;

fn live(ids: &[i32]) -> BTreeSet<i32> {
    ids.iter().copied().collect()
}

/// A follower's copy with `leo` records.
fn copy(leo: i64) -> Report {
    Report {
        log_end_offset: leo,
        high_watermark: leo,
        size_bytes: leo * 10,
        durable_end_offset: leo,
        ..Report::default()
    }
}

/// The leader's copy: `leo` records, leading under `epoch` and asking for `isr`.
fn leading(leo: i64, epoch: i32, isr: &[i32]) -> Report {
    Report {
        leader: Some(LeaderReport {
            leader_epoch: epoch,
            isr: isr.to_vec(),
        }),
        ..copy(leo)
    }
}

fn state(replicas: &[i32], isr: &[i32], leader: i32, leader_epoch: i32) -> PartitionState {
    PartitionState {
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        leader,
        leader_epoch,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

#[test]
fn a_new_partition_has_every_replica_in_sync_and_the_first_live_one_leads() {
    let p = plan(&[2, 0, 1], None, &BTreeMap::new(), &live(&[0, 1, 2]), false);
    assert_eq!(p, state(&[2, 0, 1], &[2, 0, 1], 2, 0));
    let p = plan(&[2, 0, 1], None, &BTreeMap::new(), &live(&[0, 1]), false);
    assert_eq!((p.leader, p.leader_epoch), (0, 0));
    let p = plan(&[2, 0, 1], None, &BTreeMap::new(), &live(&[]), false);
    assert_eq!((p.leader, p.isr), (NO_LEADER, vec![2, 0, 1]));
}

#[test]
fn a_dead_leader_is_replaced_by_the_most_caught_up_in_sync_follower() {
    let prev = state(&[0, 1, 2], &[0, 1, 2], 0, 3);
    let reports = BTreeMap::from([(1, copy(90)), (2, copy(100))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[1, 2]), false);
    assert_eq!(p.isr, vec![1, 2]);
    assert_eq!((p.leader, p.leader_epoch), (2, 4));
}

#[test]
fn an_in_sync_follower_that_reports_nothing_ranks_last() {
    let prev = state(&[0, 1, 2], &[0, 1, 2], 0, 3);
    let reports = BTreeMap::from([(2, copy(0))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[1, 2]), false);
    assert_eq!((p.leader, p.leader_epoch), (2, 4));
    // A tie goes to replica order.
    let reports = BTreeMap::from([(1, copy(5)), (2, copy(5))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[1, 2]), false);
    assert_eq!(p.leader, 1);
}

#[test]
fn the_leader_report_shrinks_and_grows_the_isr() {
    // Broker 2 fell behind: the leader leaves it out.
    let prev = state(&[0, 1, 2], &[0, 1, 2], 0, 5);
    let reports = BTreeMap::from([(0, leading(100, 5, &[0, 1])), (1, copy(100)), (2, copy(40))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    assert_eq!(p.isr, vec![0, 1]);
    assert_eq!((p.leader, p.leader_epoch), (0, 5));
    // It caught up: the leader asks for it back.
    let reports = BTreeMap::from([(0, leading(100, 5, &[2, 1, 0]))]);
    let back = plan(&[0, 1, 2], Some(&p), &reports, &live(&[0, 1, 2]), false);
    assert_eq!(back.isr, vec![0, 1, 2]);
}

#[test]
fn a_leader_report_keeps_the_leader_and_only_replicas() {
    let prev = state(&[0, 1], &[0, 1], 0, 1);
    let reports = BTreeMap::from([(0, leading(10, 1, &[1, 7]))]);
    let p = plan(&[0, 1], Some(&prev), &reports, &live(&[0, 1]), false);
    assert_eq!(p.isr, vec![0, 1]);
}

#[test]
fn a_restarted_leader_leads_again_only_under_a_new_epoch() {
    let prev = state(&[0, 1, 2], &[0, 1, 2], 0, 5);
    // Broker 0 holds epoch 5 but declines to lead it.
    let declined = Report {
        held_epoch: 5,
        ..copy(100)
    };
    let reports = BTreeMap::from([(0, declined.clone()), (1, copy(120)), (2, copy(110))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    // Elected again as any candidate: the most caught up leads.
    assert_eq!((p.leader, p.leader_epoch), (1, 6));
    // Holding as much as the others, the preferred replica leads again, under a new epoch.
    let reports = BTreeMap::from([(0, declined), (1, copy(100)), (2, copy(100))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    assert_eq!((p.leader, p.leader_epoch), (0, 6));
    // Not yet holding the epoch (the metadata is on its way): no new election.
    let waiting = Report {
        held_epoch: 4,
        ..copy(100)
    };
    let reports = BTreeMap::from([(0, waiting), (1, copy(120))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    assert_eq!((p.leader, p.leader_epoch), (0, 5));
}

#[test]
fn a_stale_epoch_leader_report_is_ignored() {
    let prev = state(&[0, 1, 2], &[0, 1, 2], 0, 5);
    let reports = BTreeMap::from([(0, leading(100, 4, &[0])), (1, leading(100, 5, &[1]))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    assert_eq!(p.isr, vec![0, 1, 2]);
    assert_eq!((p.leader, p.leader_epoch), (0, 5));
}

#[test]
fn without_unclean_election_the_partition_waits_offline_for_its_last_leader() {
    let prev = state(&[0, 1], &[0], 0, 1);
    let reports = BTreeMap::from([(1, copy(3))]);
    let p = plan(&[0, 1], Some(&prev), &reports, &live(&[1]), false);
    // Broker 0 stays the ISR while it is down: the last replica known to hold every record.
    assert_eq!(p.isr, vec![0]);
    assert_eq!((p.leader, p.leader_epoch), (NO_LEADER, 2));
    // Still down: nothing moves.
    assert_eq!(plan(&[0, 1], Some(&p), &reports, &live(&[1]), false), p);
    // It comes back with its records: it leads again.
    let reports = BTreeMap::from([(0, copy(50)), (1, copy(3))]);
    let back = plan(&[0, 1], Some(&p), &reports, &live(&[0, 1]), false);
    assert_eq!((back.leader, back.leader_epoch, back.isr), (0, 3, vec![0]));
}

#[test]
fn an_unclean_election_makes_the_most_caught_up_live_replica_the_whole_isr() {
    let prev = state(&[0, 1, 2], &[0], 0, 1);
    let reports = BTreeMap::from([(1, copy(5)), (2, copy(8))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[1, 2]), true);
    assert_eq!((p.leader, p.leader_epoch, p.isr), (2, 2, vec![2]));
    // A live replica without a copy is not elected.
    let p = plan(&[0, 1, 2], Some(&prev), &BTreeMap::new(), &live(&[1]), true);
    assert_eq!((p.leader, p.leader_epoch, p.isr), (NO_LEADER, 2, vec![0]));
}

#[test]
fn the_preferred_leader_takes_leadership_back_once_in_sync() {
    // Broker 0 was down; broker 1 leads under epoch 2.
    let prev = state(&[0, 1], &[1], 1, 2);
    // Back but not caught up: the leader does not list it.
    let reports = BTreeMap::from([(0, copy(3)), (1, leading(10, 2, &[1]))]);
    let p = plan(&[0, 1], Some(&prev), &reports, &live(&[0, 1]), false);
    assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (1, 2, vec![1]));
    // Caught up: the leader lists it, and it leads again.
    let reports = BTreeMap::from([(0, copy(10)), (1, leading(10, 2, &[1, 0]))]);
    let p = plan(&[0, 1], Some(&p), &reports, &live(&[0, 1]), false);
    assert_eq!((p.leader, p.leader_epoch, p.isr), (0, 3, vec![0, 1]));
}

#[test]
fn an_in_sync_copy_that_lost_its_data_does_not_lead() {
    // Broker 0, the preferred replica, came back with a wiped disk before its leader reported
    // it behind: still recorded in sync, its copy empty.
    let prev = state(&[0, 1, 2], &[0, 1, 2], 1, 3);
    let reports = BTreeMap::from([
        (0, copy(0)),
        (1, leading(100, 3, &[0, 1, 2])),
        (2, copy(100)),
    ]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    assert_eq!((p.leader, p.leader_epoch), (1, 3), "the leader stays");
    // The leader dies too: the follower that holds the records leads, not the preferred one.
    let reports = BTreeMap::from([(0, copy(0)), (2, copy(100))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 2]), false);
    assert_eq!((p.leader, p.leader_epoch), (2, 4));
    // With equal copies the preferred one wins the tie.
    let reports = BTreeMap::from([(0, copy(100)), (2, copy(100))]);
    let p = plan(&[0, 1, 2], Some(&prev), &reports, &live(&[0, 2]), false);
    assert_eq!(p.leader, 0);
}

#[test]
fn a_move_keeps_the_old_replica_until_the_new_one_is_in_sync() {
    // On broker 0 with records; the target moves it to broker 1.
    let prev = state(&[0], &[0], 0, 0);
    let reports = BTreeMap::from([(0, leading(10, 0, &[0])), (1, copy(0))]);
    let p = plan(&[1], Some(&prev), &reports, &live(&[0, 1]), false);
    assert_eq!(p.replicas, vec![1, 0]);
    assert_eq!((p.adding.clone(), p.removing.clone()), (vec![1], vec![0]));
    assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (0, 0, vec![0]));
    // Broker 1 caught up and the leader lists it: the move completes and broker 1 leads.
    let reports = BTreeMap::from([(0, leading(10, 0, &[0, 1])), (1, copy(10))]);
    let p = plan(&[1], Some(&p), &reports, &live(&[0, 1]), false);
    assert_eq!(p, state(&[1], &[1], 1, 1));
}

#[test]
fn a_move_waits_for_a_target_replica_that_is_down() {
    let prev = PartitionState {
        adding: vec![1, 2],
        removing: vec![0],
        ..state(&[1, 2, 0], &[1, 2, 0], 0, 4)
    };
    let reports = BTreeMap::from([(0, leading(10, 4, &[0, 1, 2])), (2, copy(10))]);
    let p = plan(&[1, 2], Some(&prev), &reports, &live(&[0, 2]), false);
    // Broker 1 is not live, so it leaves the ISR and the move waits for it.
    assert_eq!(
        (p.replicas.clone(), p.isr.clone()),
        (vec![1, 2, 0], vec![2, 0])
    );
    assert_eq!(p.leader, 0);
    let reports = BTreeMap::from([(0, leading(10, 4, &[0, 1, 2])), (1, copy(10))]);
    let p = plan(&[1, 2], Some(&prev), &reports, &live(&[0, 1, 2]), false);
    assert_eq!(p, state(&[1, 2], &[1, 2], 1, 5));
}

#[test]
fn report_from_reads_a_describe_partitions_entry() {
    let desc = pb::PartitionDescription {
        topic: "orders".into(),
        partition: 3,
        log_start_offset: 1,
        log_end_offset: 9,
        high_watermark: 7,
        size_bytes: 90,
        leader_epoch: 4,
        is_leader: true,
        isr: vec![2, 0],
        durable_end_offset: 8,
        ..pb::PartitionDescription::default()
    };
    let r = report_from(&desc);
    assert_eq!(
        r,
        Report {
            log_start_offset: 1,
            log_end_offset: 9,
            high_watermark: 7,
            size_bytes: 90,
            durable_end_offset: 8,
            held_epoch: 4,
            leader: Some(LeaderReport {
                leader_epoch: 4,
                isr: vec![2, 0],
            }),
        }
    );
    let follower = report_from(&pb::PartitionDescription {
        is_leader: false,
        ..desc
    });
    assert_eq!(follower.leader, None);
}

/// A random partition: its target, its previous state (valid: a non-empty ISR of its replicas,
/// led by an ISR member or offline), the brokers' reports (a few claim to lead, under the
/// current epoch or another), the live brokers and `unclean`.
type Scenario = (
    Vec<i32>,
    Option<PartitionState>,
    BTreeMap<i32, Report>,
    BTreeSet<i32>,
    bool,
);

/// Random [`Scenario`]s.
fn scenario() -> impl Strategy<Value = Scenario> {
    let brokers = || (0..6).collect::<Vec<i32>>();
    let some_brokers = move || proptest::sample::subsequence(brokers(), 1..4).prop_shuffle();
    (
        some_brokers(),
        proptest::option::of((
            some_brokers(),
            any::<bool>(),
            proptest::collection::btree_set(0..6i32, 0..6),
            any::<proptest::sample::Index>(),
            any::<bool>(),
            0..5i32,
        )),
        proptest::collection::btree_map(
            0..6i32,
            (
                0..20i64,
                proptest::option::of((-1..=1i32, proptest::collection::vec(0..6i32, 0..5))),
            ),
            0..6,
        ),
        proptest::collection::btree_set(0..6i32, 0..6),
        any::<bool>(),
    )
        .prop_map(|(target, prev, reports, live, unclean)| {
            let prev = prev.map(|(replicas, same, isr, leader, offline, epoch)| {
                // Often the partition does not move: the target is its replicas.
                let replicas = if same { target.clone() } else { replicas };
                let mut isr: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|b| isr.contains(b))
                    .collect();
                if isr.is_empty() {
                    isr.push(replicas[0]);
                }
                let leader = if offline {
                    NO_LEADER
                } else {
                    *leader.get(&isr)
                };
                state(&replicas, &isr, leader, epoch)
            });
            let base = prev.as_ref().map_or(0, |p| p.leader_epoch);
            let reports = reports
                .into_iter()
                .map(|(b, (leo, leads))| {
                    let leader = leads.map(|(delta, isr)| LeaderReport {
                        leader_epoch: base + delta,
                        isr,
                    });
                    (
                        b,
                        Report {
                            leader,
                            // Now the current epoch, now the one before.
                            held_epoch: base - (leo % 2) as i32,
                            ..copy(leo)
                        },
                    )
                })
                .collect();
            (target, prev, reports, live, unclean)
        })
}

fn distinct_ids(ids: &[i32]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() == ids.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn replicas_and_isr_are_consistent((target, prev, reports, live, unclean) in scenario()) {
        let p = plan(&target, prev.as_ref(), &reports, &live, unclean);
        prop_assert!(target.iter().all(|b| p.replicas.contains(b)));
        prop_assert!(distinct_ids(&p.replicas));
        prop_assert!(!p.isr.is_empty());
        prop_assert!(distinct_ids(&p.isr));
        prop_assert!(p.isr.iter().all(|b| p.replicas.contains(b)));
    }

    #[test]
    fn the_leader_is_a_live_in_sync_replica_or_none(
        (target, prev, reports, live, unclean) in scenario()
    ) {
        let p = plan(&target, prev.as_ref(), &reports, &live, unclean);
        if p.leader == NO_LEADER {
            // Offline only when no in-sync replica is live.
            prop_assert!(p.isr.iter().all(|b| !live.contains(b)));
        } else {
            prop_assert!(live.contains(&p.leader) && p.isr.contains(&p.leader));
        }
        // A clean election picks a replica that was in sync, or that the leader reported in
        // sync (which includes the new ISR of a move that completed).
        if let (Some(prev), false, true) = (&prev, unclean, p.leader != NO_LEADER) {
            let reported = accepted_leader_report(prev, &reports, &live);
            prop_assert!(
                prev.isr.contains(&p.leader)
                    || reported.is_some_and(|l| l.isr.contains(&p.leader))
            );
        }
        // A live in-sync preferred replica leads, unless its copy holds less: less on disk
        // than the live leader has committed, or fewer records than the replica elected.
        if live.contains(&target[0]) && p.isr.contains(&target[0]) && p.leader != target[0] {
            let kept = prev.as_ref().is_some_and(|prev| prev.leader == p.leader);
            match (reports.get(&target[0]), reports.get(&p.leader)) {
                (None, _) => {}
                (Some(r), Some(l)) => prop_assert!(
                    r.durable_end_offset < l.high_watermark || r.log_end_offset < l.log_end_offset,
                    "preferred {:?} passed over for {} ({:?})", r, p.leader, l
                ),
                (Some(_), None) => prop_assert!(kept, "a leader without a report was elected"),
            }
        }
    }

    #[test]
    fn a_broker_enters_the_isr_only_when_the_leader_reports_it(
        (target, prev, reports, live, unclean) in scenario()
    ) {
        let p = plan(&target, prev.as_ref(), &reports, &live, unclean);
        match &prev {
            None => prop_assert_eq!(&p.isr, &target),
            Some(prev) => {
                let reported = accepted_leader_report(prev, &reports, &live);
                for b in &p.isr {
                    let unclean_leader = unclean && *b == p.leader && p.isr == vec![p.leader];
                    prop_assert!(
                        prev.isr.contains(b)
                            || reported.is_some_and(|l| l.isr.contains(b))
                            || unclean_leader,
                        "broker {} entered the ISR {:?}", b, p.isr
                    );
                }
            }
        }
    }

    #[test]
    fn the_epoch_moves_exactly_with_the_leader(
        (target, prev, reports, live, unclean) in scenario()
    ) {
        let p = plan(&target, prev.as_ref(), &reports, &live, unclean);
        match &prev {
            None => prop_assert_eq!(p.leader_epoch, 0),
            Some(prev) => {
                let declined = live.contains(&prev.leader)
                    && reports.get(&prev.leader).is_some_and(|r| {
                        r.leader.is_none() && r.held_epoch == prev.leader_epoch
                    });
                let changed = prev.leader != p.leader || (declined && p.leader != NO_LEADER);
                prop_assert_eq!(p.leader_epoch, prev.leader_epoch + i32::from(changed));
            }
        }
    }

    #[test]
    fn a_move_completes_only_when_every_target_replica_is_in_sync(
        (target, prev, reports, live, unclean) in scenario()
    ) {
        let p = plan(&target, prev.as_ref(), &reports, &live, unclean);
        let Some(prev) = &prev else {
            return Ok(());
        };
        let all_in_sync = target.iter().all(|b| p.isr.contains(b));
        // A replica is dropped only once every target replica is in sync.
        if prev.replicas.iter().any(|b| !p.replicas.contains(b)) {
            prop_assert!(all_in_sync);
        }
        if all_in_sync {
            prop_assert_eq!(&p.replicas, &target);
            prop_assert!(p.adding.is_empty() && p.removing.is_empty());
        } else {
            let current = &prev.replicas;
            prop_assert!(p.adding.iter().all(|b| target.contains(b) && !current.contains(b)));
            prop_assert!(p.removing.iter().all(|b| current.contains(b) && !target.contains(b)));
            prop_assert!(current.iter().all(|b| p.replicas.contains(b)));
        }
    }
}
