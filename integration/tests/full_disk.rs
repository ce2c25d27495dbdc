//! A real full disk under a real broker: its data directory sits on a small tmpfs that the test
//! fills to the last byte. The broker must refuse produces at once with UNAVAILABLE and the
//! cause (never leave acks=all producers waiting for a timeout), say so on `/readyz` and
//! `/metrics`, serve again by itself once space is freed, stop cleanly on SIGTERM while the disk
//! is full, and lose no acknowledged record through any of it.

use bytes::Bytes;
use runnel_codec::{BatchBuilder, Compression};
use runnel_integration::{http_get, Broker, Tmpfs};
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{Acks, FetchRequest, ProduceRequest};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

/// Offset of each acknowledged value.
type Acked = BTreeMap<String, i64>;

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None, 1_700_000_000_000);
    // 16 records of 4 KiB: each produce writes a sizeable batch.
    for i in 0..16 {
        let v = format!("{value}/{i}/{}", "x".repeat(4096));
        b.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    b.build().expect("build")
}

/// Produces with acks=all until the broker refuses; returns the refusal.
async fn produce_until_refused(
    data: &mut BrokerClient<Channel>,
    acked: &mut Acked,
    prefix: &str,
) -> tonic::Status {
    for n in 0..2_000 {
        let value = format!("{prefix}-{n:05}");
        let started = Instant::now();
        let r = data
            .produce(ProduceRequest {
                topic: "t".into(),
                partition: Some(0),
                acks: Acks::All as i32,
                batches: batch(&value),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => {
                acked.insert(value, r.into_inner().base_offset);
            }
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the refusal took {:?}: {e:?}",
                    started.elapsed()
                );
                return e;
            }
        }
    }
    panic!("the disk never filled up");
}

async fn produce_one(data: &mut BrokerClient<Channel>, acked: &mut Acked, value: &str) {
    let r = data
        .produce(ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            acks: Acks::All as i32,
            batches: batch(value),
            ..Default::default()
        })
        .await
        .expect("the broker serves again");
    acked.insert(value.to_string(), r.into_inner().base_offset);
}

async fn wait_ready(broker: &Broker, ready: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(&broker.metrics_address, "/readyz")
            .await
            .unwrap_or_default();
        if body.starts_with("HTTP/1.0 200") == ready || body.starts_with("HTTP/1.1 200") == ready {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never turned {}: {body}\nbroker log:\n{}",
            if ready { "ready" } else { "unready" },
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every acknowledged value is stored exactly once, at its acknowledged offset.
async fn assert_all_acknowledged_present(data: &mut BrokerClient<Channel>, acked: &Acked) {
    let mut found: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let f = data
            .fetch(FetchRequest {
                topic: "t".into(),
                partition: 0,
                offset,
                max_bytes: 4 << 20,
                ..Default::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        if f.batches.is_empty() {
            break;
        }
        for r in runnel_integration::records(&f.batches).expect("every stored batch decodes") {
            let v = String::from_utf8_lossy(&r.value.expect("value")).into_owned();
            let (value, rest) = v.split_once('/').expect("format");
            if rest.starts_with("0/") {
                found.entry(value.to_string()).or_default().push(r.offset);
            }
        }
        offset = f.next_offset;
    }
    for (value, at) in acked {
        assert_eq!(
            found.get(value),
            Some(&vec![*at]),
            "acknowledged {value} at {at} is not there exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_takes_the_broker_offline_until_space_is_freed() -> anyhow::Result<()> {
    let disk = Tmpfs::mount(96 << 20)?;
    let logs = tempfile::tempdir()?;
    let mut broker = Broker::start_logging_to(
        &disk.path.join("data"),
        &logs.path().join("broker.log"),
        &["--produce-timeout-ms", "20000"],
    )?;
    broker.create_topic("t", 1, None).await?;
    let mut data = BrokerClient::connect(broker.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);
    let mut acked = Acked::new();
    for n in 0..20 {
        produce_one(&mut data, &mut acked, &format!("before-{n:02}")).await;
    }

    // The disk fills up to its last byte: the broker refuses, and says why.
    let filled = disk.fill("filler")?;
    assert!(filled > 0);
    let refused = produce_until_refused(&mut data, &mut acked, "full").await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("No space left on device"),
        "{refused:?}"
    );
    let readyz = wait_ready(&broker, false).await;
    assert!(readyz.contains("storage offline"), "{readyz}");
    let metrics = http_get(&broker.metrics_address, "/metrics").await?;
    assert!(
        metrics.contains("runnel_broker_storage_offline 1"),
        "{metrics}"
    );
    // Reads are refused too, with the same cause, and nothing is left waiting.
    let e = data
        .fetch(FetchRequest {
            topic: "t".into(),
            partition: 0,
            ..Default::default()
        })
        .await
        .expect_err("offline");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(broker.is_running(), "broker died; log:\n{}", broker.log());

    // Space is freed: the broker serves again by itself.
    std::fs::remove_file(disk.path.join("filler"))?;
    wait_ready(&broker, true).await;
    for n in 0..5 {
        produce_one(&mut data, &mut acked, &format!("after-{n:02}")).await;
    }
    assert_all_acknowledged_present(&mut data, &acked).await;

    // Full again, and SIGTERM: the broker stops cleanly instead of waiting on the disk.
    disk.fill("filler")?;
    produce_until_refused(&mut data, &mut acked, "again").await;
    let stopped = Instant::now();
    let status = broker.terminate()?;
    assert!(status.success(), "exit {status}; log:\n{}", broker.log());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        stopped.elapsed()
    );

    // Restarted with space: everything acknowledged is there, exactly once.
    std::fs::remove_file(disk.path.join("filler"))?;
    broker.restart()?;
    let mut data = BrokerClient::connect(broker.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);
    assert_all_acknowledged_present(&mut data, &acked).await;
    println!(
        "full disk: {} records acknowledged, every one there after two fills and a restart",
        acked.len()
    );
    Ok(())
}
