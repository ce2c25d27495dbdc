//! A broker's life: restart keeps records and offsets, SIGTERM finishes in-flight produces and
//! exits 0, long-poll fetch and subscribe see new records, health and metrics are served.

use bytes::Bytes;
use futures::StreamExt;
use runnel_codec::{BatchBuilder, Compression};
use runnel_integration::Broker;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    Acks, CreateTopicRequest, FetchRequest, ListOffsetsRequest, OffsetSpec, ProduceRequest,
    SubscribeRequest,
};
use std::time::{Duration, Instant};

fn batch(prefix: &str, n: usize) -> Bytes {
    batch_at(prefix, n, 1_700_000_000_000)
}

fn batch_at(prefix: &str, n: usize, base_ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None, base_ts);
    for i in 0..n {
        b.append(
            base_ts + i as i64,
            Some(format!("k{i}").as_bytes()),
            Some(format!("{prefix}-{i}").as_bytes()),
            &[],
        );
    }
    b.build().expect("build")
}

async fn all_records(
    data: &mut BrokerClient<tonic::transport::Channel>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let f = data
            .fetch(FetchRequest {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 1 << 20,
                ..Default::default()
            })
            .await?
            .into_inner();
        if f.batches.is_empty() {
            return Ok(out);
        }
        for r in runnel_integration::records(&f.batches)? {
            if r.offset >= offset {
                out.push((
                    r.offset,
                    String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned(),
                ));
            }
        }
        offset = f.next_offset;
    }
}

async fn connect(
    b: &Broker,
) -> anyhow::Result<(
    AdminClient<tonic::transport::Channel>,
    BrokerClient<tonic::transport::Channel>,
)> {
    Ok((
        AdminClient::connect(b.endpoint()).await?,
        BrokerClient::connect(b.endpoint()).await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_records_offsets_and_topics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &[])?;
    let (mut admin, mut data) = connect(&broker).await?;
    admin
        .create_topic(CreateTopicRequest {
            name: "events".into(),
            partitions: 3,
            replication_factor: 1,
            config: None,
        })
        .await?;
    for p in 0..3 {
        for round in 0..4 {
            let r = data
                .produce(ProduceRequest {
                    topic: "events".into(),
                    partition: Some(p),
                    acks: Acks::All as i32,
                    batches: batch(&format!("p{p}r{round}"), 10),
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert_eq!(r.base_offset, round * 10);
        }
    }
    let mut before = Vec::new();
    for p in 0..3 {
        before.push(all_records(&mut data, "events", p).await?);
    }
    assert!(before.iter().all(|r| r.len() == 40));

    // A clean stop, then a start on the same directory.
    let status = broker.terminate()?;
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log:\n{}",
        broker.log()
    );
    broker.restart()?;
    let (mut admin, mut data) = connect(&broker).await?;
    let topics = admin
        .list_topics(runnel_proto::v1::ListTopicsRequest {})
        .await?
        .into_inner()
        .topics;
    assert_eq!(
        topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions.len()))
            .collect::<Vec<_>>(),
        vec![("events", 3)]
    );
    for (p, expected) in before.iter().enumerate() {
        assert_eq!(
            &all_records(&mut data, "events", p as i32).await?,
            expected,
            "partition {p} after restart"
        );
    }
    // Offsets continue where they were.
    let r = data
        .produce(ProduceRequest {
            topic: "events".into(),
            partition: Some(1),
            acks: Acks::All as i32,
            batches: batch("after", 1),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(r.base_offset, 40);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_produces_then_exits_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &[])?;
    let (mut admin, data) = connect(&broker).await?;
    admin
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            config: None,
        })
        .await?;
    // Producers keep sending while the broker is told to stop.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let mut data = data.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = 0u64;
            for i in 0..10_000 {
                let req = ProduceRequest {
                    topic: "t".into(),
                    partition: Some(0),
                    acks: Acks::All as i32,
                    batches: batch(&format!("w{w}-{i}"), 5),
                    ..Default::default()
                };
                match data.produce(req).await {
                    Ok(_) => acked += 5,
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = broker.terminate();
        (s, broker)
    })
    .await?;
    let (status, mut broker) = status;
    let status = status?;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        broker.log()
    );
    let mut acked = 0;
    for t in tasks {
        acked += t.await?;
    }
    assert!(acked > 0);
    assert!(
        broker.log().contains("all appended records are flushed"),
        "{}",
        broker.log()
    );
    // Everything acknowledged is there after a restart.
    broker.restart()?;
    let (_, mut data) = connect(&broker).await?;
    let latest = data
        .list_offsets(ListOffsetsRequest {
            topic: "t".into(),
            spec: OffsetSpec::Latest as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        latest.partitions[0].offset as u64 >= acked,
        "{} acknowledged, {} stored",
        acked,
        latest.partitions[0].offset
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_and_subscribe_see_new_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    let (mut admin, mut data) = connect(&broker).await?;
    admin
        .create_topic(CreateTopicRequest {
            name: "live".into(),
            partitions: 1,
            replication_factor: 1,
            config: None,
        })
        .await?;

    // A fetch at the end waits for max_wait when nothing comes.
    let started = Instant::now();
    let f = data
        .fetch(FetchRequest {
            topic: "live".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 300,
            min_bytes: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(f.batches.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));

    let mut sub = data
        .subscribe(SubscribeRequest {
            topic: "live".into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut waiting = data.clone();
    let poll = tokio::spawn(async move {
        waiting
            .fetch(FetchRequest {
                topic: "live".into(),
                partition: 0,
                offset: 0,
                max_wait_ms: 10_000,
                min_bytes: 1,
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    data.produce(ProduceRequest {
        topic: "live".into(),
        partition: Some(0),
        acks: Acks::All as i32,
        batches: batch("x", 3),
        ..Default::default()
    })
    .await?;
    let f = poll.await??.into_inner();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long poll returned when data came"
    );
    assert_eq!(f.high_watermark, 3);
    let pushed = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await?
        .expect("stream item")?;
    assert_eq!(pushed.next_offset, 3);

    // Health, metrics, readiness.
    let body = runnel_integration::http_get(&broker.metrics_address, "/metrics").await?;
    assert!(
        body.contains("runnel_broker_produced_records_total{topic=\"live\"} 3"),
        "{body}"
    );
    assert!(
        runnel_integration::http_get(&broker.metrics_address, "/readyz")
            .await?
            .contains("ready")
    );
    let mut health = tonic_health_client(&broker).await?;
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "runnel.v1.Broker".into(),
        })
        .await?;
    assert_eq!(
        resp.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    Ok(())
}

async fn tonic_health_client(
    b: &Broker,
) -> anyhow::Result<tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(b.endpoint())?
        .connect()
        .await?;
    Ok(tonic_health::pb::health_client::HealthClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_batches_from_the_front() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(
        &dir.path().join("data"),
        &["--retention-check-interval-ms", "100"],
    )?;
    let (mut admin, mut data) = connect(&broker).await?;
    // Records of now: retention by time (7 days by default) keeps them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let one = batch_at("r", 10, now);
    // Keep about three batches' worth per partition.
    let config = runnel_proto::v1::TopicConfig {
        retention_bytes: Some(3 * one.len() as i64),
        ..Default::default()
    };
    admin
        .create_topic(CreateTopicRequest {
            name: "short".into(),
            partitions: 1,
            replication_factor: 1,
            config: Some(config),
        })
        .await?;
    for _ in 0..10 {
        data.produce(ProduceRequest {
            topic: "short".into(),
            partition: Some(0),
            acks: Acks::All as i32,
            batches: batch_at("r", 10, now),
            ..Default::default()
        })
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let earliest = loop {
        let e = data
            .list_offsets(ListOffsetsRequest {
                topic: "short".into(),
                spec: OffsetSpec::Earliest as i32,
                ..Default::default()
            })
            .await?
            .into_inner()
            .partitions[0]
            .offset;
        if e > 0 || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(earliest, 70, "retention kept the newest three batches");
    let err = data
        .fetch(FetchRequest {
            topic: "short".into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        })
        .await
        .expect_err("deleted offsets are out of range");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(all_records_from(&mut data, "short", 70).await?.len(), 30);
    Ok(())
}

async fn all_records_from(
    data: &mut BrokerClient<tonic::transport::Channel>,
    topic: &str,
    from: i64,
) -> anyhow::Result<Vec<i64>> {
    let f = data
        .fetch(FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset: from,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(runnel_integration::records(&f.batches)?
        .iter()
        .map(|r| r.offset)
        .collect())
}

#[test]
fn a_bad_setting_stops_the_broker_with_the_field_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(runnel_integration::bin("runnel-broker"))
        .args(["--standalone", "--data-dir"])
        .arg(dir.path())
        .env("RUNNEL_RETENTION_MS", "soon")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUNNEL_RETENTION_MS"), "{err}");
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:99999\"\n")?;
    let out = std::process::Command::new(runnel_integration::bin("runnel-broker"))
        .args(["--standalone", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&file)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen") && err.contains("127.0.0.1:99999"),
        "{err}"
    );
    Ok(())
}
