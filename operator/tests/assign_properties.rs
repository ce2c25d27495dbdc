//! Property tests of the partition assignment (`runnel_operator::assign`): validity,
//! anti-affinity, rack spread, balance of replicas and leaders, determinism, and stickiness
//! (fixed point; adding a topic, adding a broker, removing a broker).

use proptest::prelude::*;
use runnel_operator::assign::{assign, Assignment, BrokerSlot, TopicRequest};
use std::collections::{BTreeMap, BTreeSet};

/// A cluster and its topics, with a `current` assignment that may be anything (stale, invalid,
/// naming unknown brokers), as the operator may read it back from old status.
#[derive(Debug, Clone)]
struct Case {
    brokers: Vec<BrokerSlot>,
    topics: Vec<TopicRequest>,
    current: Assignment,
}

/// Broker ids: `n` distinct ids below 40 (not necessarily 0..n).
fn broker_ids(max: usize) -> impl Strategy<Value = Vec<i32>> {
    proptest::sample::subsequence((0..40).collect::<Vec<i32>>(), 1..=max)
}

/// Racks: `None` for every broker (no rack awareness), or `racks` racks with the same number
/// of brokers each (`uniform`), or any rack per broker.
fn with_racks(
    ids: Vec<i32>,
    racks: Option<usize>,
    uniform: bool,
    seed: Vec<usize>,
) -> Vec<BrokerSlot> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| BrokerSlot {
            id,
            rack: racks.map(|r| {
                let rack = if uniform {
                    i % r
                } else {
                    seed.get(i).copied().unwrap_or(0) % r
                };
                format!("zone-{rack}")
            }),
        })
        .collect()
}

fn topics(brokers: usize, max_topics: usize) -> impl Strategy<Value = Vec<TopicRequest>> {
    proptest::collection::vec((1..=12i32, 1..=brokers as i32), 0..=max_topics).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (partitions, replicas))| TopicRequest {
                name: format!("topic-{i}"),
                partitions,
                replicas,
            })
            .collect()
    })
}

/// Garbage `current`: for each topic, up to its partition count of random replica lists.
fn garbage(topics: &[TopicRequest]) -> impl Strategy<Value = Assignment> {
    let shapes: Vec<(String, i32)> = topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions))
        .collect();
    let per_topic: Vec<_> = shapes
        .into_iter()
        .map(|(name, partitions)| {
            proptest::collection::vec(
                proptest::collection::vec(0..40i32, 0..5),
                0..=partitions as usize,
            )
            .prop_map(move |lists| (name.clone(), lists))
        })
        .collect();
    (
        per_topic,
        proptest::collection::vec(any::<bool>(), topics.len()),
    )
        .prop_map(|(lists, keep)| Assignment {
            topics: lists
                .into_iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|(l, _)| l)
                .collect(),
        })
}

/// Rack layouts: 0 = no racks, 1 = uniform racks, 2 = arbitrary racks.
fn case(max_brokers: usize, layout: u8) -> impl Strategy<Value = Case> {
    (
        broker_ids(max_brokers),
        1..=4usize,
        proptest::collection::vec(0..4usize, max_brokers),
    )
        .prop_flat_map(move |(ids, racks, seed)| {
            let n = ids.len();
            // Uniform racks need a rack count that divides the broker count.
            let racks = match layout {
                0 => None,
                1 => Some((1..=racks).rev().find(|r| n % r == 0).unwrap_or(1)),
                _ => Some(racks),
            };
            let brokers = with_racks(ids, racks, layout == 1, seed);
            topics(n, 4).prop_flat_map(move |topics| {
                let brokers = brokers.clone();
                garbage(&topics).prop_map(move |current| Case {
                    brokers: brokers.clone(),
                    topics: topics.clone(),
                    current,
                })
            })
        })
}

fn run(case: &Case) -> Assignment {
    match assign(&case.brokers, &case.topics, &case.current) {
        Ok(a) => a,
        Err(e) => panic!("assignable case refused: {e}"),
    }
}

/// Replicas and leaders per broker, counting brokers with none.
fn counts(brokers: &[BrokerSlot], a: &Assignment) -> (Vec<usize>, Vec<usize>) {
    let r = a.replica_counts();
    let l = a.leader_counts();
    (
        brokers
            .iter()
            .map(|b| r.get(&b.id).copied().unwrap_or(0))
            .collect(),
        brokers
            .iter()
            .map(|b| l.get(&b.id).copied().unwrap_or(0))
            .collect(),
    )
}

fn spread(counts: &[usize]) -> usize {
    counts.iter().max().copied().unwrap_or(0) - counts.iter().min().copied().unwrap_or(0)
}

fn racks_of(brokers: &[BrokerSlot]) -> BTreeMap<i32, String> {
    brokers
        .iter()
        .map(|b| {
            (
                b.id,
                b.rack.clone().unwrap_or_else(|| format!("own-{}", b.id)),
            )
        })
        .collect()
}

fn total_replicas(a: &Assignment) -> usize {
    a.topics.values().flatten().map(Vec::len).sum()
}

fn check_valid(case: &Case, a: &Assignment) -> Result<(), TestCaseError> {
    let ids: BTreeSet<i32> = case.brokers.iter().map(|b| b.id).collect();
    let names: BTreeSet<&String> = case.topics.iter().map(|t| &t.name).collect();
    prop_assert_eq!(
        a.topics.keys().collect::<BTreeSet<_>>(),
        names,
        "exactly the requested topics"
    );
    for t in &case.topics {
        let parts = &a.topics[&t.name];
        prop_assert_eq!(
            parts.len(),
            t.partitions as usize,
            "partitions of {}",
            t.name
        );
        for (p, replicas) in parts.iter().enumerate() {
            prop_assert_eq!(
                replicas.len(),
                t.replicas as usize,
                "replicas of {}/{}",
                t.name,
                p
            );
            let distinct: BTreeSet<&i32> = replicas.iter().collect();
            prop_assert_eq!(
                distinct.len(),
                replicas.len(),
                "two replicas of {}/{} on one broker: {:?}",
                t.name,
                p,
                replicas
            );
            prop_assert!(
                replicas.iter().all(|id| ids.contains(id)),
                "unknown broker in {:?}",
                replicas
            );
        }
    }
    Ok(())
}

fn check_rack_spread(case: &Case, a: &Assignment) -> Result<(), TestCaseError> {
    let racks = racks_of(&case.brokers);
    let all: BTreeSet<&String> = racks.values().collect();
    for (topic, parts) in &a.topics {
        for (p, replicas) in parts.iter().enumerate() {
            let used: BTreeSet<&String> = replicas.iter().filter_map(|id| racks.get(id)).collect();
            prop_assert_eq!(
                used.len(),
                replicas.len().min(all.len()),
                "rack spread of {}/{}: {:?}",
                topic,
                p,
                replicas
            );
        }
    }
    Ok(())
}

fn check_balance(case: &Case, a: &Assignment) -> Result<(), TestCaseError> {
    let (r, l) = counts(&case.brokers, a);
    prop_assert!(spread(&r) <= 1, "replicas per broker {:?} in {:?}", r, a);
    prop_assert!(spread(&l) <= 1, "leaders per broker {:?} in {:?}", l, a);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every partition gets its replication factor on distinct existing brokers, whatever
    /// `current` says; replicas and leaders are balanced within one; without racks.
    #[test]
    fn valid_and_balanced_without_racks(case in case(8, 0)) {
        let a = run(&case);
        check_valid(&case, &a)?;
        check_balance(&case, &a)?;
    }

    /// With the same number of brokers in every rack: valid, maximal rack spread, balanced.
    #[test]
    fn valid_spread_and_balanced_with_uniform_racks(case in case(8, 1)) {
        let a = run(&case);
        check_valid(&case, &a)?;
        check_rack_spread(&case, &a)?;
        check_balance(&case, &a)?;
    }

    /// With any racks: valid and maximal rack spread (balance may be impossible).
    #[test]
    fn valid_and_spread_with_any_racks(case in case(8, 2)) {
        let a = run(&case);
        check_valid(&case, &a)?;
        check_rack_spread(&case, &a)?;
    }

    /// The same input in any order gives the same output.
    #[test]
    fn deterministic(case in case(8, 2), seed in any::<u64>()) {
        let a = run(&case);
        let mut shuffled = case.clone();
        let rotate_b = (seed as usize) % shuffled.brokers.len().max(1);
        shuffled.brokers.rotate_left(rotate_b);
        shuffled.brokers.reverse();
        let rotate_t = (seed as usize / 7) % shuffled.topics.len().max(1);
        shuffled.topics.rotate_left(rotate_t);
        prop_assert_eq!(&run(&shuffled), &a);
        prop_assert_eq!(&run(&case), &a);
    }

    /// The result is a fixed point: the operator recomputing it changes nothing.
    #[test]
    fn fixed_point(case in case(8, 2)) {
        let a = run(&case);
        let again = run(&Case { current: a.clone(), ..case });
        prop_assert_eq!(again, a);
    }

}

/// A cluster without racks for the stickiness properties: brokers, topics and a topic to add.
/// With `same_rf`, every topic (the added one too) has one replication factor.
#[derive(Debug, Clone)]
struct Plain {
    brokers: Vec<BrokerSlot>,
    topics: Vec<TopicRequest>,
    added: TopicRequest,
}

fn plain(min_brokers: usize, max_brokers: usize, same_rf: bool) -> impl Strategy<Value = Plain> {
    proptest::sample::subsequence((0..40).collect::<Vec<i32>>(), min_brokers..=max_brokers)
        .prop_flat_map(move |ids| {
            let n = ids.len() as i32;
            (
                Just(ids),
                1..=n,
                proptest::collection::vec((1..=12i32, 1..=n), 0..=4),
                1..=12i32,
                1..=n,
            )
                .prop_map(move |(ids, shared, specs, added_partitions, added_rf)| {
                    let rf = |r: i32| if same_rf { shared } else { r };
                    Plain {
                        brokers: ids
                            .iter()
                            .map(|&id| BrokerSlot { id, rack: None })
                            .collect(),
                        topics: specs
                            .into_iter()
                            .enumerate()
                            .map(|(i, (partitions, r))| TopicRequest {
                                name: format!("topic-{i}"),
                                partitions,
                                replicas: rf(r),
                            })
                            .collect(),
                        added: TopicRequest {
                            name: "added".into(),
                            partitions: added_partitions,
                            replicas: rf(added_rf),
                        },
                    }
                })
        })
}

fn fresh(brokers: &[BrokerSlot], topics: &[TopicRequest]) -> Assignment {
    run(&Case {
        brokers: brokers.to_vec(),
        topics: topics.to_vec(),
        current: Assignment::default(),
    })
}

/// Adds `plain.added` and grows the first topic by `grow` partitions; returns (before, after,
/// replicas added).
fn add_topic(plain: &Plain, grow: i32) -> Result<(Assignment, Assignment, usize), TestCaseError> {
    let before = fresh(&plain.brokers, &plain.topics);
    let mut topics = plain.topics.clone();
    let mut added = (plain.added.partitions * plain.added.replicas) as usize;
    if let Some(t) = topics.first_mut() {
        t.partitions += grow;
        added += (grow * t.replicas) as usize;
    }
    topics.push(plain.added.clone());
    let grown = Case {
        brokers: plain.brokers.clone(),
        topics,
        current: before.clone(),
    };
    let after = run(&grown);
    check_valid(&grown, &after)?;
    check_balance(&grown, &after)?;
    Ok((before, after, added))
}

/// Adds broker 100; returns (before, after, the new broker's share).
fn add_broker(plain: &Plain) -> Result<(Assignment, Assignment, usize), TestCaseError> {
    let before = fresh(&plain.brokers, &plain.topics);
    let mut brokers = plain.brokers.clone();
    brokers.push(BrokerSlot {
        id: 100,
        rack: None,
    });
    let grown = Case {
        brokers,
        topics: plain.topics.clone(),
        current: before.clone(),
    };
    let after = run(&grown);
    check_valid(&grown, &after)?;
    check_balance(&grown, &after)?;
    let share = total_replicas(&after).div_ceil(grown.brokers.len());
    Ok((before, after, share))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// One replication factor: adding a topic and growing another's partitions moves no
    /// existing replica.
    #[test]
    fn adding_a_topic_moves_no_replica(plain in plain(1, 8, true), grow in 0..=4i32) {
        let (before, after, _) = add_topic(&plain, grow)?;
        prop_assert_eq!(after.moved_replicas(&before), 0, "before {:?} after {:?}", before, after);
    }

    /// Mixed replication factors: adding a topic moves at most as many existing replicas as it
    /// adds.
    #[test]
    fn adding_a_topic_with_mixed_replication_moves_at_most_what_it_adds(plain in plain(1, 8, false), grow in 0..=4i32) {
        let (before, after, added) = add_topic(&plain, grow)?;
        let moved = after.moved_replicas(&before);
        prop_assert!(moved <= added, "moved {} > added {} (before {:?} after {:?})", moved, added, before, after);
    }

    /// One replication factor: adding a broker moves at most its share, all onto it.
    #[test]
    fn adding_a_broker_moves_only_its_share(plain in plain(1, 7, true)) {
        let (before, after, share) = add_broker(&plain)?;
        let moved = after.moved_replicas(&before);
        prop_assert!(moved <= share, "moved {} > {} (before {:?} after {:?})", moved, share, before, after);
        for (topic, parts) in &after.topics {
            for (p, replicas) in parts.iter().enumerate() {
                for id in replicas {
                    prop_assert!(*id == 100 || before.topics[topic][p].contains(id),
                        "{}/{} moved to old broker {}", topic, p, id);
                }
            }
        }
    }

    /// Mixed replication factors: adding a broker moves at most two shares.
    #[test]
    fn adding_a_broker_with_mixed_replication_moves_at_most_two_shares(plain in plain(1, 7, false)) {
        let (before, after, share) = add_broker(&plain)?;
        let moved = after.moved_replicas(&before);
        prop_assert!(moved <= 2 * share, "moved {} > 2 x {} (before {:?} after {:?})", moved, share, before, after);
    }

    /// Removing a broker re-places the replicas it held and moves at most one share more.
    #[test]
    fn removing_a_broker_moves_little(plain in plain(2, 8, false), which in any::<usize>()) {
        let remaining = plain.brokers.len() as i32 - 1;
        let topics: Vec<TopicRequest> = plain.topics.iter().cloned().map(|mut t| {
            t.replicas = t.replicas.min(remaining);
            t
        }).collect();
        let before = fresh(&plain.brokers, &topics);
        let mut brokers = plain.brokers.clone();
        let gone = brokers.remove(which % brokers.len());
        let held = before.topics.values().flatten().filter(|r| r.contains(&gone.id)).count();
        let shrunk = Case { brokers, topics, current: before.clone() };
        let after = run(&shrunk);
        check_valid(&shrunk, &after)?;
        check_balance(&shrunk, &after)?;
        let moved = after.moved_replicas(&before);
        let bound = held + total_replicas(&after).div_ceil(shrunk.brokers.len());
        prop_assert!(moved <= bound, "moved {} > {} (before {:?} after {:?})", moved, bound, before, after);
    }
}
