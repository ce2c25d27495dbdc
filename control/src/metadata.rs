//! The whole cluster's next metadata from the current one and what the brokers report, without
//! Kubernetes: every partition planned in place ([`crate::partition::plan`] with its current
//! replicas as the target, so nothing moves), under a new epoch only when something changed.
//! The operator decides placement itself and plans through the same function; a test harness
//! that plays the controller calls [`next_metadata`] in a loop.

use crate::partition::{plan, PartitionState, Report};
use runnel_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};

/// The metadata that follows `current`, or `None` when no partition's leader, leader epoch,
/// ISR or replicas change.
///
/// * `reports`: from the brokers that answered, broker id → (topic, partition) → its copy.
/// * `live`: the brokers that answered.
///
/// Each topic's `unclean_leader_election_enable` (default off) decides whether a partition
/// without a live in-sync replica may elect an out-of-sync one. A partition without replicas is
/// left as it is.
pub fn next_metadata(
    current: &pb::ClusterMetadata,
    reports: &BTreeMap<i32, BTreeMap<(String, i32), Report>>,
    live: &BTreeSet<i32>,
) -> Option<pb::ClusterMetadata> {
    let mut next = current.clone();
    let mut changed = false;
    for topic in &mut next.topics {
        let unclean = topic
            .config
            .as_ref()
            .and_then(|c| c.unclean_leader_election_enable)
            .unwrap_or(false);
        for p in &mut topic.partitions {
            if p.replicas.is_empty() {
                continue;
            }
            let previous = PartitionState {
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                adding: Vec::new(),
                removing: Vec::new(),
            };
            let key = (topic.name.clone(), p.partition);
            let copies: BTreeMap<i32, Report> = reports
                .iter()
                .filter_map(|(id, held)| held.get(&key).map(|r| (*id, r.clone())))
                .collect();
            let planned = plan(&p.replicas, Some(&previous), &copies, live, unclean);
            if planned.leader != p.leader
                || planned.leader_epoch != p.leader_epoch
                || planned.isr != p.isr
                || planned.replicas != p.replicas
            {
                changed = true;
                p.leader = planned.leader;
                p.leader_epoch = planned.leader_epoch;
                p.isr = planned.isr;
                p.replicas = planned.replicas;
            }
        }
    }
    changed.then(|| pb::ClusterMetadata {
        epoch: current.epoch + 1,
        ..next
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::LeaderReport;
    use proptest::prelude::*;

    fn metadata(unclean: Option<bool>) -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            epoch: 7,
            topics: vec![pb::TopicMetadata {
                name: "orders".into(),
                partitions: vec![
                    pb::PartitionMetadata {
                        partition: 0,
                        leader: 0,
                        leader_epoch: 2,
                        replicas: vec![0, 1, 2],
                        isr: vec![0, 1, 2],
                    },
                    pb::PartitionMetadata {
                        partition: 1,
                        leader: 1,
                        leader_epoch: 4,
                        replicas: vec![1, 2],
                        isr: vec![1],
                    },
                ],
                replication_factor: 3,
                config: Some(pb::TopicConfig {
                    unclean_leader_election_enable: unclean,
                    ..pb::TopicConfig::default()
                }),
            }],
            ..pb::ClusterMetadata::default()
        }
    }

    fn copy(leo: i64, leader: Option<(i32, &[i32])>) -> Report {
        Report {
            log_end_offset: leo,
            high_watermark: leo,
            leader: leader.map(|(leader_epoch, isr)| LeaderReport {
                leader_epoch,
                isr: isr.to_vec(),
            }),
            ..Report::default()
        }
    }

    type Reports = BTreeMap<i32, BTreeMap<(String, i32), Report>>;

    fn reports(entries: &[(i32, i32, Report)]) -> Reports {
        let mut out = Reports::new();
        for (broker, partition, r) in entries {
            out.entry(*broker)
                .or_default()
                .insert(("orders".to_string(), *partition), r.clone());
        }
        out
    }

    fn live(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn nothing_changes_while_the_leaders_report_the_recorded_isr() {
        let r = reports(&[
            (0, 0, copy(10, Some((2, &[0, 1, 2])))),
            (1, 0, copy(10, None)),
            (2, 0, copy(10, None)),
            (1, 1, copy(5, Some((4, &[1])))),
            (2, 1, copy(3, None)),
        ]);
        assert_eq!(next_metadata(&metadata(None), &r, &live(&[0, 1, 2])), None);
    }

    #[test]
    fn a_dead_leader_is_replaced_under_the_next_epoch() {
        let r = reports(&[
            (1, 0, copy(8, None)),
            (2, 0, copy(10, None)),
            (1, 1, copy(5, Some((4, &[1])))),
            (2, 1, copy(3, None)),
        ]);
        let next = next_metadata(&metadata(None), &r, &live(&[1, 2])).expect("changed");
        assert_eq!(next.epoch, 8);
        let p = &next.topics[0].partitions[0];
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (2, 3, vec![1, 2])
        );
        // The other partition is untouched; the metadata is a fixpoint once sent.
        assert_eq!(
            next.topics[0].partitions[1],
            metadata(None).topics[0].partitions[1]
        );
        assert_eq!(next_metadata(&next, &r, &live(&[1, 2])), None);
    }

    #[test]
    fn the_topic_config_enables_unclean_election() {
        // Partition 1's only in-sync replica (broker 1) is gone; broker 2 holds a copy.
        let r = reports(&[
            (0, 0, copy(10, Some((2, &[0, 1, 2])))),
            (2, 1, copy(3, None)),
        ]);
        let clean = next_metadata(&metadata(None), &r, &live(&[0, 2])).expect("changed");
        let p = &clean.topics[0].partitions[1];
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (-1, 5, vec![1]));
        let unclean = next_metadata(&metadata(Some(true)), &r, &live(&[0, 2])).expect("changed");
        let p = &unclean.topics[0].partitions[1];
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (2, 5, vec![2]));
    }

    /// A topic of up to four partitions on brokers 0..5 with a valid recorded state, and
    /// reports whose leader claims are under the recorded epoch or an older one (no broker can
    /// know an epoch the controller has not handed out).
    fn cluster() -> impl Strategy<Value = (pb::ClusterMetadata, Reports, BTreeSet<i32>)> {
        let partition = (
            proptest::sample::subsequence((0..5).collect::<Vec<i32>>(), 1..4).prop_shuffle(),
            proptest::collection::btree_set(0..5i32, 0..5),
            any::<proptest::sample::Index>(),
            0..4i32,
        )
            .prop_map(|(replicas, isr, leader, leader_epoch)| {
                let mut isr: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|b| isr.contains(b))
                    .collect();
                if isr.is_empty() {
                    isr.push(replicas[0]);
                }
                pb::PartitionMetadata {
                    partition: 0,
                    leader: *leader.get(&isr),
                    leader_epoch,
                    replicas,
                    isr,
                }
            });
        (
            proptest::collection::vec(partition, 1..4),
            any::<bool>(),
            proptest::collection::vec(
                (
                    0..5i32,
                    0..4i32,
                    0..20i64,
                    any::<bool>(),
                    0..2i32,
                    proptest::collection::vec(0..5i32, 0..4),
                ),
                0..16,
            ),
            proptest::collection::btree_set(0..5i32, 0..5),
        )
            .prop_map(|(partitions, unclean, copies, live)| {
                let partitions: Vec<pb::PartitionMetadata> = partitions
                    .into_iter()
                    .zip(0..)
                    .map(|(p, n)| pb::PartitionMetadata { partition: n, ..p })
                    .collect();
                let mut reports = Reports::new();
                for (broker, n, leo, leads, older, isr) in copies {
                    let Some(p) = usize::try_from(n).ok().and_then(|n| partitions.get(n)) else {
                        continue;
                    };
                    let leader = leads.then(|| (p.leader_epoch - older, isr.as_slice()));
                    reports
                        .entry(broker)
                        .or_default()
                        .insert(("orders".to_string(), n), copy(leo, leader));
                }
                let md = pb::ClusterMetadata {
                    epoch: 3,
                    topics: vec![pb::TopicMetadata {
                        name: "orders".into(),
                        partitions,
                        replication_factor: 3,
                        config: Some(pb::TopicConfig {
                            unclean_leader_election_enable: Some(unclean),
                            ..pb::TopicConfig::default()
                        }),
                    }],
                    ..pb::ClusterMetadata::default()
                };
                (md, reports, live)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The controller's loop settles: with the same reports, the next metadata is final.
        #[test]
        fn the_next_metadata_is_a_fixpoint((md, reports, live) in cluster()) {
            match next_metadata(&md, &reports, &live) {
                None => {}
                Some(next) => {
                    prop_assert_eq!(next.epoch, md.epoch + 1);
                    prop_assert_eq!(next_metadata(&next, &reports, &live), None);
                }
            }
        }
    }
}
