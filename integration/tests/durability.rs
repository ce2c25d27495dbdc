//! Durability under `kill -9`: several producers send with `acks=all` through the real client,
//! the broker process is killed while they run, started again on the same data, and every
//! acknowledged record must be there exactly once, at the offset it was acknowledged with, in
//! each producer's order, with no gaps in any partition's offsets.

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use runnel_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use runnel_integration::Broker;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{CreateTopicRequest, FetchRequest};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRODUCERS: usize = 4;
const PARTITIONS: i32 = 3;

/// (partition, offset) of each acknowledged value.
type Acked = Arc<Mutex<HashMap<String, (i32, i64)>>>;

async fn produce_until_stopped(
    bootstrap: String,
    w: usize,
    acked: Acked,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut config = ProducerConfig::new(bootstrap);
    config.acks = Acks::All;
    config.linger = Duration::from_millis(2);
    config.batch_size = 8 * 1024;
    config.delivery_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(2);
    let Ok(producer) = Producer::connect(config).await else {
        return;
    };
    let mut pending = FuturesUnordered::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            Some((value, r)) = pending.next(), if !pending.is_empty() => {
                if let Ok(md) = r {
                    let md: runnel_client::producer::RecordMetadata = md;
                    acked.lock().expect("lock").insert(value, (md.partition, md.offset));
                }
            }
            sent = async {
                let value = format!("w{w}-{seq:08}");
                let record = ProducerRecord::new("durable", Bytes::from(value.clone()))
                    .key(Bytes::from(format!("w{w}")))
                    .partition((seq % PARTITIONS as u64) as i32);
                producer.send(record).await.map(|f| (value, f))
            }, if pending.len() < 2000 => {
                match sent {
                    Ok((value, f)) => {
                        pending.push(async move { (value, f.await) });
                        seq += 1;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &[])?;
    AdminClient::connect(broker.endpoint())
        .await?
        .create_topic(CreateTopicRequest {
            name: "durable".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            config: None,
        })
        .await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            tokio::spawn(produce_until_stopped(
                broker.address.clone(),
                w,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Let them run, then crash the broker under load.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if acked.lock().expect("lock").len() > 20_000 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.kill9();
    // Give in-flight answers a moment to be counted, then stop the producers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_waiters();
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 1000,
        "producers made too little progress: {} acknowledged",
        acked.len()
    );

    broker.restart()?;
    let mut data = BrokerClient::connect(broker.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);
    let mut read_back: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    let mut total = 0usize;
    for p in 0..PARTITIONS {
        let mut offset = 0;
        let mut expected_offset = 0;
        let mut last_seq_of: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let f = data
                .fetch(FetchRequest {
                    topic: "durable".into(),
                    partition: p,
                    offset,
                    max_bytes: 4 << 20,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if f.batches.is_empty() {
                break;
            }
            for r in runnel_integration::records(&f.batches)? {
                if r.offset < offset {
                    continue;
                }
                assert_eq!(
                    r.offset, expected_offset,
                    "partition {p}: gap or repeat in offsets"
                );
                expected_offset += 1;
                let value = String::from_utf8(r.value.expect("value").to_vec())?;
                let (writer, _) = value.split_once('-').expect("value format");
                if let Some(prev) = last_seq_of.insert(writer.to_string(), value.clone()) {
                    assert!(
                        prev < value,
                        "partition {p}: {value} after {prev}: out of producer order"
                    );
                }
                read_back.entry(value).or_default().push((p, r.offset));
                total += 1;
            }
            offset = f.next_offset;
        }
    }
    let mut missing = Vec::new();
    for (value, at) in &acked {
        match read_back.get(value).map(Vec::as_slice) {
            Some([only]) => assert_eq!(only, at, "{value} moved from its acknowledged offset"),
            Some(many) if many.len() > 1 => panic!("{value} stored {} times: {many:?}", many.len()),
            _ => missing.push(value.clone()),
        }
    }
    println!(
        "durability: {} producers, {} records acknowledged, {} read back after kill -9, {} acknowledged missing",
        PRODUCERS,
        acked.len(),
        total,
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        read_back.values().all(|v| v.len() == 1),
        "a record is stored twice"
    );
    Ok(())
}
