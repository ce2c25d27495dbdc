//! The assignors' unit and property tests.

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
    prop::collection::vec((0i32..=13, prop::collection::vec(0u8..8, 13)), 1..=5).prop_map(|specs| {
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
    })
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
fn check_locally_balanced(members: &[MemberSpec], out: &Assignment) -> Result<(), TestCaseError> {
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
