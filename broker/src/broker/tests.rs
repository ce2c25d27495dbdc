//! The broker over a storage that fails on demand.

use super::*;
use crate::config::ConfigLayer;
use crate::storage::faulty::{Faults, FaultyStorage};
use crate::storage::MemoryStorage;
use runnel_codec::{BatchBuilder, Compression};
use tonic::Code;

type Faulty = FaultyStorage<MemoryStorage>;

fn broker() -> (Arc<Broker<Faulty>>, Arc<Faults>) {
    let settings = ConfigLayer {
        standalone: Some(true),
        ..ConfigLayer::defaults()
    }
    .validate(|_| None)
    .expect("config")
    .settings;
    let storage = Arc::new(Faulty::default());
    let faults = storage.faults.clone();
    let broker =
        Broker::open(settings, storage, Arc::new(Metrics::default())).expect("open broker");
    broker
        .create_topic("t", 2, 1, TopicConfig::default())
        .expect("topic");
    (Arc::new(broker), faults)
}

/// Closes `broker` and opens a new one over its storage, as a restart does.
fn restart(broker: Arc<Broker<Faulty>>) -> Arc<Broker<Faulty>> {
    let settings = broker.settings().clone();
    let storage = broker.storage.clone();
    broker.close();
    drop(broker);
    Arc::new(Broker::open(settings, storage, Arc::new(Metrics::default())).expect("reopen"))
}

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None, 1);
    b.append(1, None, Some(value.as_bytes()), &[]);
    b.build().expect("build")
}

/// acks=all on `partition`, answered within a few seconds either way.
async fn produce(
    broker: &Arc<Broker<Faulty>>,
    partition: i32,
    value: &str,
) -> Result<AppendOutcome, BrokerError> {
    tokio::time::timeout(
        Duration::from_secs(5),
        broker.produce("t", partition, &[batch(value)], Acks::All),
    )
    .await
    .expect("answered promptly, not left waiting for a flush that cannot happen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_takes_the_partitions_offline_until_the_storage_reopens() {
    let (broker, faults) = broker();
    assert_eq!(
        produce(&broker, 0, "kept").await.expect("ok").base_offset,
        0
    );

    Faults::set(&faults.fail_flush, true);
    let e = produce(&broker, 0, "refused")
        .await
        .expect_err("flush fails");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.to_string().contains("flush failed"), "{e}");
    // Every partition is offline, reads too, and the metrics say so.
    let e = produce(&broker, 1, "refused").await.expect_err("offline");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    let e = broker
        .fetch("t", 0, 0, 1 << 20, 0, Duration::ZERO)
        .await
        .expect_err("offline");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    let metrics = broker.metrics().render();
    assert!(
        metrics.contains("runnel_broker_storage_offline 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runnel_broker_offline_partitions 2"),
        "{metrics}"
    );
    assert!(broker.storage_failure().is_some());

    // Recovery is a restart over the same storage: what was durable is there, and the
    // partitions serve again.
    Faults::set(&faults.fail_flush, false);
    let broker = restart(broker);
    assert!(broker.storage_failure().is_none());
    let next = produce(&broker, 0, "after").await.expect("serves again");
    let read = broker
        .fetch("t", 0, 0, 1 << 20, 0, Duration::ZERO)
        .await
        .expect("read");
    let values: Vec<Bytes> = read
        .batches
        .iter()
        .flat_map(|b| runnel_codec::decode_batch(b).expect("decode").1)
        .filter_map(|r| r.value)
        .collect();
    assert_eq!(values.first().map(|v| &v[..]), Some(&b"kept"[..]));
    assert_eq!(values.last().map(|v| &v[..]), Some(&b"after"[..]));
    assert_eq!(next.base_offset as usize, values.len() - 1);

    // Stopping with a failed disk does not hang.
    Faults::set(&faults.fail_flush, true);
    produce(&broker, 1, "refused").await.expect_err("fails");
    let b = broker.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || b.close()),
    )
    .await
    .expect("close returns")
    .expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_store_takes_the_storage_offline_and_recovery_closes_the_hole() {
    let (broker, faults) = broker();
    produce(&broker, 0, "a").await.expect("ok");
    Faults::set(&faults.panic_puts, true);
    let e = produce(&broker, 0, "b").await.expect_err("panics");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.to_string().contains("panicked"), "{e}");
    Faults::set(&faults.panic_puts, false);
    let broker = restart(broker);
    // The offset the failed append had reserved is given again: no hole.
    assert_eq!(produce(&broker, 0, "c").await.expect("ok").base_offset, 1);
}

/// Broker 0 of three, leading `r` (one partition on brokers 0, 1, 2) under `isr` with
/// `min.insync.replicas` `min`, at metadata `epoch`.
fn replicated(epoch: i64, isr: &[i32], min: i32) -> ClusterMetadata {
    ClusterMetadata {
        epoch,
        brokers: (0..3)
            .map(|id| runnel_proto::v1::BrokerInfo {
                id,
                address: format!("127.0.0.1:{}", 9092 + id),
                rack: String::new(),
            })
            .collect(),
        topics: vec![TopicMetadata {
            name: "r".into(),
            partitions: vec![runnel_proto::v1::PartitionMetadata {
                partition: 0,
                leader: 0,
                leader_epoch: 0,
                replicas: vec![0, 1, 2],
                isr: isr.to_vec(),
            }],
            replication_factor: 3,
            config: Some(TopicConfig {
                min_insync_replicas: Some(min),
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_waits_for_the_isr_and_min_insync_replicas_is_enforced() {
    let settings = ConfigLayer {
        broker_id: Some(0),
        ..ConfigLayer::defaults()
    }
    .validate(|_| None)
    .expect("config")
    .settings;
    let broker = Arc::new(
        Broker::open(
            settings,
            Arc::new(MemoryStorage::default()),
            Arc::new(Metrics::default()),
        )
        .expect("open"),
    );
    // The broker's first metadata has no topic: a new broker declines to lead a replicated
    // partition under the first metadata it is sent (it may have lost its copy).
    broker
        .apply_metadata(ClusterMetadata {
            topics: Vec::new(),
            ..replicated(1, &[], 1)
        })
        .expect("apply");
    broker
        .apply_metadata(replicated(2, &[0, 1, 2], 2))
        .expect("apply");
    let send = |value: &'static str| {
        let broker = broker.clone();
        tokio::spawn(async move { broker.produce("r", 0, &[batch(value)], Acks::All).await })
    };
    let log = broker.open_log("r", 0).expect("log");
    let tracker = broker.leader_state("r", 0).expect("leading");

    // Committed only once every ISR member has it on disk.
    let first = send("a");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !first.is_finished(),
        "acknowledged before the followers had it"
    );
    broker.follower_progress(&tracker, &log, 1, 1, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!first.is_finished(), "acknowledged without broker 2");
    broker.follower_progress(&tracker, &log, 2, 1, 1);
    let o = first.await.expect("task").expect("acknowledged");
    assert_eq!(o.base_offset, 0);

    let under = |broker: &Broker<MemoryStorage>| {
        broker
            .metrics()
            .render()
            .lines()
            .find(|l| l.starts_with("runnel_broker_under_replicated_partitions "))
            .map(str::to_string)
    };
    assert_eq!(
        under(&broker).as_deref(),
        Some("runnel_broker_under_replicated_partitions 0")
    );
    // The controller records an ISR of two: that still meets min.insync.replicas 2, and the
    // partition counts as under-replicated.
    broker
        .apply_metadata(replicated(3, &[0, 1], 2))
        .expect("apply");
    assert_eq!(
        under(&broker).as_deref(),
        Some("runnel_broker_under_replicated_partitions 1")
    );
    let second = send("b");
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.follower_progress(&tracker, &log, 1, 2, 2);
    assert_eq!(
        second
            .await
            .expect("task")
            .expect("acknowledged")
            .base_offset,
        1
    );

    // With min.insync.replicas 3 and two in sync: refused, nothing appended.
    broker
        .apply_metadata(replicated(4, &[0, 1], 3))
        .expect("apply");
    let e = send("c").await.expect("task").expect_err("refused");
    assert!(matches!(e, BrokerError::NotEnoughReplicas { .. }), "{e}");
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        log.log_end_offset(),
        2,
        "a refused produce appended nothing"
    );

    // Appended with three in sync, committed after the ISR shrank to two: acknowledged with
    // NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    broker
        .apply_metadata(replicated(5, &[0, 1, 2], 3))
        .expect("apply");
    let third = send("d");
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.follower_progress(&tracker, &log, 1, 3, 3);
    broker
        .apply_metadata(replicated(6, &[0, 1], 3))
        .expect("apply");
    let e = third.await.expect("task").expect_err("after append");
    assert!(
        e.to_string()
            .starts_with("NOT_ENOUGH_REPLICAS_AFTER_APPEND"),
        "{e}"
    );
    assert_eq!(
        log.summary().high_watermark,
        3,
        "the record is committed all the same"
    );
}
