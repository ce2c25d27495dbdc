//! The metadata controller's unit tests: its pure decisions on made-up Clusters and brokers.

use super::*;
use crate::crd::{ClusterSpec, StorageSpec, TopicSpec};

fn cluster(brokers: i32) -> Cluster {
    let mut c = Cluster::new(
        "events",
        ClusterSpec {
            brokers,
            image: None,
            storage: StorageSpec {
                size: "1Gi".into(),
                storage_class_name: None,
            },
            resources: None,
            config: BTreeMap::new(),
            rack: None,
        },
    );
    c.metadata.namespace = Some("streams".into());
    c
}

fn topic(name: &str, partitions: i32, replicas: i32) -> Topic {
    let mut t = Topic::new(
        name,
        TopicSpec {
            cluster: "events".into(),
            partitions,
            replicas,
            topic_name: None,
            config: TopicConfig {
                retention_ms: Some(60_000),
                ..TopicConfig::default()
            },
        },
    );
    t.metadata.generation = Some(1);
    t
}

fn brokers(n: i32) -> Vec<pb::BrokerInfo> {
    (0..n)
        .map(|id| pb::BrokerInfo {
            id,
            address: format!("198.18.0.{}:9092", id + 2),
            rack: String::new(),
        })
        .collect()
}

/// What broker `id` holds after applying `md`: each partition it is a replica of, with
/// `records` records; where it leads, it asks for the ISR of `md` to stay as it is.
fn holding(id: i32, md: &pb::ClusterMetadata, records: i64) -> Holdings {
    let partitions = md
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.replicas.contains(&id))
                .map(|p| pb::PartitionDescription {
                    topic: t.name.clone(),
                    partition: p.partition,
                    log_end_offset: records,
                    high_watermark: records,
                    size_bytes: records * 100,
                    is_leader: p.leader == id,
                    leader_epoch: p.leader_epoch,
                    isr: if p.leader == id {
                        p.isr.clone()
                    } else {
                        Vec::new()
                    },
                    ..pb::PartitionDescription::default()
                })
        })
        .collect();
    Holdings {
        partitions: pb::DescribePartitionsResponse {
            broker_id: id,
            metadata_epoch: md.epoch,
            partitions,
            producer_id_block: md
                .producer_id_blocks
                .iter()
                .find(|b| b.broker_id == id)
                .cloned(),
            producer_ids_left: 0,
        },
        metadata: pb::MetadataResponse {
            epoch: md.epoch,
            brokers: md.brokers.clone(),
            topics: md.topics.clone(),
            broker_id: id,
            standalone: false,
        },
    }
}

fn empty(id: i32) -> Holdings {
    holding(id, &pb::ClusterMetadata::default(), 0)
}

#[test]
fn the_offsets_topic_is_placed_after_the_topics_and_keeps_its_placement() {
    let live: BTreeMap<i32, Holdings> = (0..3).map(|id| (id, empty(id))).collect();
    let mut c = cluster(3);
    let placed = |c: &Cluster, extra: &[Topic]| {
        let topics: Vec<Topic> = extra.iter().cloned().chain(internal_topics(c)).collect();
        decide(c, &brokers(3), &topics, &Reports::new(&live))
    };
    // A Cluster whose Topic was placed before the offsets topic existed: the Topic stays.
    let mut orders = topic("orders", 6, 2);
    let before = decide(
        &c,
        &brokers(3),
        std::slice::from_ref(&orders),
        &Reports::new(&live),
    );
    orders.status = Some(topic_status(
        &orders,
        &before.topics[0],
        &Reports::new(&live),
        Timestamp::UNIX_EPOCH,
    ));
    let d = placed(&c, std::slice::from_ref(&orders));
    assert_eq!(
        d.metadata.topics.iter().find(|t| t.name == "orders"),
        before.metadata.topics.first()
    );
    let offsets = d
        .metadata
        .topics
        .iter()
        .find(|t| t.name == OFFSETS_TOPIC)
        .expect("__consumer_offsets");
    assert_eq!(offsets.partitions.len(), OFFSETS_TOPIC_PARTITIONS as usize);
    // Three copies of each partition on three brokers, as Kafka's default.
    assert_eq!(offsets.replication_factor, 3);
    assert!(offsets.partitions.iter().all(|p| p.replicas.len() == 3));
    assert_eq!(
        [1, 2, 3, 5].map(offsets_topic_replicas),
        [1, 2, 3, 3],
        "min(3, brokers)"
    );
    assert_eq!(
        offsets
            .config
            .as_ref()
            .and_then(|c| c.cleanup_policy.as_deref()),
        Some("compact")
    );
    // Its placement, recorded in the Cluster's status, is kept when a Topic comes.
    let internal = d.topics.last().expect("decision");
    c.status = Some(crate::crd::ClusterStatus {
        internal_topics: vec![internal_status(&internal.name, &internal.plans)],
        ..Default::default()
    });
    let again = placed(&c, &[orders.clone(), topic("clicks", 9, 1)]);
    let offsets_again = again
        .metadata
        .topics
        .iter()
        .find(|t| t.name == OFFSETS_TOPIC);
    assert_eq!(offsets_again, Some(offsets));
    // A Topic cannot take its name.
    let mut taken = topic("mine", 3, 1);
    taken.spec.topic_name = Some(OFFSETS_TOPIC.into());
    let d = placed(&c, &[taken]);
    let e = d.topics[0].error.as_deref().unwrap_or_default();
    assert!(e.contains("internal topic"), "{e}");
    assert_eq!(d.topics[1].error, None);
}

#[test]
fn a_new_topic_is_placed_balanced_with_its_config_and_needs_sending() {
    let live: BTreeMap<i32, Holdings> = (0..3).map(|id| (id, empty(id))).collect();
    let d = decide(
        &cluster(3),
        &brokers(3),
        &[topic("orders", 6, 2)],
        &Reports::new(&live),
    );
    assert_eq!(d.topics[0].error, None);
    let t = &d.metadata.topics[0];
    assert_eq!(
        (t.name.as_str(), t.partitions.len(), t.replication_factor),
        ("orders", 6, 2)
    );
    assert_eq!(t.config.as_ref().and_then(|c| c.retention_ms), Some(60_000));
    let mut leaders = BTreeMap::<i32, usize>::new();
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 2);
        assert_eq!(p.leader, p.replicas[0]);
        assert_eq!(p.isr, p.replicas);
        *leaders.entry(p.leader).or_default() += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    assert!(needs_apply(&d.metadata, &live, &Reports::new(&live)));
}

#[test]
fn brokers_holding_the_metadata_need_nothing_until_data_goes_missing() {
    let c = cluster(2);
    let topics = [topic("orders", 2, 1)];
    let live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, empty(id))).collect();
    let d = decide(&c, &brokers(2), &topics, &Reports::new(&live));
    let sent = pb::ClusterMetadata {
        epoch: 1,
        ..d.metadata.clone()
    };
    let mut live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, holding(id, &sent, 5))).collect();
    assert!(!needs_apply(&d.metadata, &live, &Reports::new(&live)));
    // Partition data deleted behind the operator's back: sent again, so it is re-created.
    if let Some(h) = live.get_mut(&1) {
        h.partitions.partitions.clear();
    }
    assert!(needs_apply(&d.metadata, &live, &Reports::new(&live)));
}

#[test]
fn a_topic_with_more_replicas_than_brokers_is_not_placed_and_keeps_its_data() {
    let live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, empty(id))).collect();
    let d = decide(
        &cluster(2),
        &brokers(2),
        &[topic("orders", 1, 3), topic("clicks", 1, 1)],
        &Reports::new(&live),
    );
    let orders = &d.topics[0];
    assert_eq!(
        orders.error.as_deref(),
        Some("replicas is 3 but Cluster `events` has 2 brokers")
    );
    assert_eq!(d.metadata.topics.len(), 1);
    // Its data on a broker is not an orphan.
    let mut h = empty(0);
    h.partitions.partitions.push(pb::PartitionDescription {
        topic: "orders".into(),
        ..pb::PartitionDescription::default()
    });
    let live = BTreeMap::from([(0, h)]);
    assert!(orphans(&d, &live).is_empty());
}

#[test]
fn data_no_topic_claims_is_an_orphan() {
    let c = cluster(2);
    let live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, empty(id))).collect();
    let d = decide(
        &c,
        &brokers(2),
        &[topic("orders", 2, 1)],
        &Reports::new(&live),
    );
    let with_old = pb::ClusterMetadata {
        epoch: 1,
        topics: vec![
            d.metadata.topics[0].clone(),
            pb::TopicMetadata {
                name: "deleted".into(),
                partitions: vec![pb::PartitionMetadata {
                    partition: 0,
                    leader: 1,
                    replicas: vec![0, 1],
                    isr: vec![0, 1],
                    leader_epoch: 0,
                }],
                replication_factor: 2,
                config: None,
            },
        ],
        ..d.metadata.clone()
    };
    let live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, holding(id, &with_old, 3))).collect();
    assert_eq!(
        orphans(&d, &live),
        vec![
            (0, "deleted".to_string(), vec![0]),
            (1, "deleted".to_string(), vec![0]),
        ]
    );
}

#[test]
fn the_status_reports_what_the_leaders_hold() {
    let c = cluster(2);
    let mut t = topic("orders", 2, 2);
    let live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, empty(id))).collect();
    let d = decide(
        &c,
        &brokers(2),
        std::slice::from_ref(&t),
        &Reports::new(&live),
    );
    // Not sent yet: no partition is served.
    let s = topic_status(
        &t,
        &d.topics[0],
        &Reports::new(&live),
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(s.conditions[0].status, "False");
    assert_eq!(s.conditions[0].reason, "PartitionsOffline");

    let sent = pb::ClusterMetadata {
        epoch: 1,
        ..d.metadata.clone()
    };
    let live: BTreeMap<i32, Holdings> = (0..2).map(|id| (id, holding(id, &sent, 7))).collect();
    let s = topic_status(
        &t,
        &d.topics[0],
        &Reports::new(&live),
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(s.topic_name.as_deref(), Some("orders"));
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.partitions.len(), 2);
    for p in &s.partitions {
        assert_eq!(
            (p.log_end_offset, p.high_watermark, p.size_bytes),
            (7, 7, 700)
        );
        assert_eq!(p.isr.len(), 2);
    }
    let totals = s.totals.clone().unwrap_or_default();
    assert_eq!((totals.records, totals.size_bytes), (14, 1400));
    assert_eq!(totals.under_replicated_partitions, 0);

    // The next round starts from this status: the same decision (sticky, stable).
    t.status = Some(s);
    let again = decide(
        &c,
        &brokers(2),
        std::slice::from_ref(&t),
        &Reports::new(&live),
    );
    assert_eq!(again.metadata, d.metadata);
    assert!(!needs_apply(&again.metadata, &live, &Reports::new(&live)));
}

/// The partitions broker `id` reports in `live`, to edit.
fn described(
    live: &mut BTreeMap<i32, Holdings>,
    id: i32,
) -> impl Iterator<Item = &mut pb::PartitionDescription> {
    live.get_mut(&id)
        .into_iter()
        .flat_map(|h| h.partitions.partitions.iter_mut())
}

#[test]
fn the_isr_is_the_one_the_leader_reports_under_the_current_epoch() {
    let c = cluster(3);
    let mut t = topic("orders", 1, 3);
    let none: BTreeMap<i32, Holdings> = (0..3).map(|id| (id, empty(id))).collect();
    let d = decide(
        &c,
        &brokers(3),
        std::slice::from_ref(&t),
        &Reports::new(&none),
    );
    t.status = Some(topic_status(
        &t,
        &d.topics[0],
        &Reports::new(&none),
        Timestamp::UNIX_EPOCH,
    ));
    let sent = pb::ClusterMetadata {
        epoch: 1,
        ..d.metadata.clone()
    };
    let p = &sent.topics[0].partitions[0];
    let (leader, lagging) = (p.leader, p.replicas[2]);
    let mut live: BTreeMap<i32, Holdings> = (0..3).map(|id| (id, holding(id, &sent, 9))).collect();

    // A report from a deposed leader (another epoch) is not recorded.
    for d in described(&mut live, leader) {
        d.leader_epoch = 7;
        d.isr.retain(|b| *b != lagging);
    }
    let again = decide(
        &c,
        &brokers(3),
        std::slice::from_ref(&t),
        &Reports::new(&live),
    );
    assert_eq!(again.metadata, d.metadata);

    // The current leader drops a follower that fell behind: recorded, and it shows.
    for d in described(&mut live, leader) {
        d.leader_epoch = 0;
    }
    let shrunk = decide(
        &c,
        &brokers(3),
        std::slice::from_ref(&t),
        &Reports::new(&live),
    );
    let p = &shrunk.metadata.topics[0].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.isr.len()), (leader, 0, 2));
    assert!(!p.isr.contains(&lagging));
    let s = topic_status(
        &t,
        &shrunk.topics[0],
        &Reports::new(&live),
        Timestamp::UNIX_EPOCH,
    );
    let totals = s.totals.clone().unwrap_or_default();
    assert_eq!(totals.under_replicated_partitions, 1);
}

#[test]
fn unclean_election_follows_the_topic_config() {
    let c = cluster(2);
    let mut t = topic("orders", 1, 2);
    // Broker 0 was the only in-sync replica and is gone; broker 1 holds an older copy.
    t.status = Some(TopicStatus {
        partitions: vec![PartitionStatus {
            partition: 0,
            leader: Some(0),
            leader_epoch: Some(3),
            replicas: vec![0, 1],
            isr: vec![0],
            ..PartitionStatus::default()
        }],
        ..TopicStatus::default()
    });
    let mut h = empty(1);
    h.partitions.partitions.push(pb::PartitionDescription {
        topic: "orders".into(),
        partition: 0,
        log_end_offset: 4,
        high_watermark: 4,
        ..pb::PartitionDescription::default()
    });
    let live = BTreeMap::from([(1, h)]);
    let clean = decide(
        &c,
        &brokers(2),
        std::slice::from_ref(&t),
        &Reports::new(&live),
    );
    let p = &clean.metadata.topics[0].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (-1, 4, vec![0]));

    t.spec.config.unclean_leader_election_enable = Some(true);
    let unclean = decide(
        &c,
        &brokers(2),
        std::slice::from_ref(&t),
        &Reports::new(&live),
    );
    let topic = &unclean.metadata.topics[0];
    assert_eq!(
        topic
            .config
            .as_ref()
            .and_then(|c| c.unclean_leader_election_enable),
        Some(true)
    );
    let p = &topic.partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (1, 4, vec![1]));
}
