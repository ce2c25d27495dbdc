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
