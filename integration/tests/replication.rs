//! Replication across three brokers on loopback, with the stand-in controller of
//! [`runnel_integration::cluster`] electing leaders by the operator's rules: leaders killed in
//! turn under `acks=all` load, all three killed at once, and a follower that stops answering.
//! Every acknowledged record must be read back exactly once, at its offset, in each producer's
//! order.

use bytes::Bytes;
use runnel_client::consumer::{Consumer, Partitions, StartOffset};
use runnel_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use runnel_integration::cluster::TestCluster;
use runnel_integration::load::{read_back_from, Load};
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{ProduceRequest, Record, TopicConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
/// `replica.lag.time.max.ms` of the brokers here.
const LAG_MS: u64 = 2000;

async fn cluster(min_insync: i32) -> anyhow::Result<TestCluster> {
    let lag = LAG_MS.to_string();
    let c = TestCluster::start(3, &["--replica-lag-time-max-ms", &lag]).await?;
    c.create_topic(
        TOPIC,
        PARTITIONS,
        3,
        TopicConfig {
            min_insync_replicas: Some(min_insync),
            ..Default::default()
        },
    )
    .await?;
    Ok(c)
}

fn all_in_sync(c: &TestCluster) -> impl Fn(&runnel_proto::v1::ClusterMetadata) -> bool + '_ {
    move |md| {
        md.topics.iter().all(|t| {
            t.partitions
                .iter()
                .all(|p| p.leader >= 0 && p.isr.len() == c.brokers.len())
        })
    }
}

/// A producer with a long delivery timeout, for timing one record through a failover.
async fn probe(c: &TestCluster) -> anyhow::Result<Producer> {
    let mut config = ProducerConfig::new(c.bootstrap());
    config.acks = Acks::All;
    config.linger = Duration::ZERO;
    config.delivery_timeout = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(1);
    Ok(Producer::connect(config).await?)
}

/// A consumer of every partition from the start, counting what it reads, until aborted.
async fn consume(
    bootstrap: &str,
) -> anyhow::Result<(Arc<AtomicUsize>, tokio::task::JoinHandle<()>)> {
    let mut consumer = Consumer::connect(bootstrap).await?;
    consumer
        .assign(TOPIC, Partitions::All, StartOffset::Earliest)
        .await?;
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        loop {
            match consumer.poll(Duration::from_millis(200)).await {
                Ok(records) => {
                    counted.fetch_add(records.len(), Ordering::Relaxed);
                }
                Err(e) => {
                    eprintln!("consumer: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok((count, task))
}

/// Sends one record to `partition`; how long after `since` it was acknowledged.
async fn first_ack(
    producer: &Producer,
    partition: i32,
    since: Instant,
) -> anyhow::Result<Duration> {
    producer
        .send(
            ProducerRecord::new(TOPIC, Bytes::from(format!("probe-{partition}")))
                .partition(partition),
        )
        .await?
        .await?;
    Ok(since.elapsed())
}

/// Reads every partition from its leader and checks it against what was acknowledged. Leaders
/// may still be moving (a returning preferred leader takes over) and a new leader's high
/// watermark rises once its followers report: the read is tried again for a while.
async fn check(
    c: &TestCluster,
    acked: &std::collections::HashMap<String, (i32, i64)>,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let endpoints: Vec<String> = (0..PARTITIONS)
            .map(|p| {
                c.leader_address(TOPIC, p)
                    .map(|a| format!("http://{a}"))
                    .unwrap_or_default()
            })
            .collect();
        let last = Instant::now() > deadline;
        match read_back_from(&endpoints, TOPIC, acked).await {
            Ok(back) if back.missing.is_empty() || last => {
                println!(
                    "acknowledged {} records, read back {} (probes and unacknowledged retries included)",
                    acked.len(),
                    back.total
                );
                assert!(
                    back.missing.is_empty(),
                    "{} acknowledged records lost, e.g. {:?}\n{}",
                    back.missing.len(),
                    &back.missing[..back.missing.len().min(5)],
                    c.log_tails(30)
                );
                return Ok(back.total);
            }
            Err(e) if last => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_killed_in_turn_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let mut c = cluster(2).await?;
    let load = Load::start(&c.bootstrap(), TOPIC, 3, PARTITIONS);
    load.wait_for(3000, Duration::from_secs(30)).await;
    assert!(load.acknowledged() >= 3000, "the load does not get going");
    let probe = probe(&c).await?;
    let (consumed, consumer) = consume(&c.bootstrap()).await?;
    let mut failovers = Vec::new();
    for p in 0..PARTITIONS {
        let before = c.partition(TOPIC, p);
        let victim = before.leader as usize;
        let acked_before = load.acknowledged();
        let killed = Instant::now();
        c.brokers[victim].kill9();
        let took = first_ack(&probe, p, killed).await?;
        let after = c.partition(TOPIC, p);
        println!(
            "partition {p}: leader {victim} killed; broker {} leads at epoch {} (was {}); first acknowledged produce after {} ms",
            after.leader,
            after.leader_epoch,
            before.leader_epoch,
            took.as_millis()
        );
        assert_ne!(after.leader, victim as i32);
        assert!(after.leader_epoch > before.leader_epoch);
        failovers.push(took);
        load.wait_for(acked_before + 2000, Duration::from_secs(20))
            .await;
        assert!(
            load.acknowledged() >= acked_before + 2000,
            "the producers did not go on after the failover"
        );
        c.brokers[victim].restart()?;
        let back = c
            .wait_for(
                "the restarted broker back in every ISR",
                Duration::from_secs(30),
                all_in_sync(&c),
            )
            .await?;
        println!(
            "broker {victim} restarted and back in every ISR after {} ms",
            back.as_millis()
        );
    }
    let acked = load.stop().await;
    drop(probe);
    consumer.abort();
    println!(
        "a consumer read {} records through the failovers",
        consumed.load(Ordering::Relaxed)
    );
    // The restarted brokers are preferred leaders again once in sync.
    c.wait_for("preferred leaders back", Duration::from_secs(10), |md| {
        md.topics.iter().all(|t| {
            t.partitions
                .iter()
                .all(|p| Some(&p.leader) == p.replicas.first())
        })
    })
    .await?;
    check(&c, &acked).await?;
    let worst = failovers.iter().max().copied().unwrap_or_default();
    println!(
        "failover (kill -9 of the leader to the first acknowledged produce on its successor): {:?} ms",
        failovers.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    assert!(worst < Duration::from_secs(3), "a failover took {worst:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_three_killed_at_once_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let mut c = cluster(2).await?;
    let load = Load::start(&c.bootstrap(), TOPIC, 3, PARTITIONS);
    load.wait_for(5000, Duration::from_secs(30)).await;
    for b in &mut c.brokers {
        b.kill9();
    }
    let acked = load.stop().await;
    for b in &mut c.brokers {
        b.restart()?;
    }
    c.wait_for(
        "every replica back in sync",
        Duration::from_secs(30),
        all_in_sync(&c),
    )
    .await?;
    check(&c, &acked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_follower_leaves_the_isr_and_rejoins() -> anyhow::Result<()> {
    let c = cluster(2).await?;
    c.create_topic(
        "strict",
        1,
        3,
        TopicConfig {
            min_insync_replicas: Some(3),
            ..Default::default()
        },
    )
    .await?;
    let load = Load::start(&c.bootstrap(), TOPIC, 2, PARTITIONS);
    load.wait_for(2000, Duration::from_secs(30)).await;
    let follower = 2;
    c.brokers[follower].signal("STOP")?;
    let stopped = Instant::now();
    let out = c
        .wait_for(
            "the stopped follower out of every ISR",
            Duration::from_secs(15),
            |md| {
                md.topics.iter().all(|t| {
                    t.partitions
                        .iter()
                        .all(|p| !p.isr.contains(&(follower as i32)))
                })
            },
        )
        .await?;
    println!(
        "broker {follower} stopped: out of every ISR after {} ms",
        out.as_millis()
    );
    // The high watermark goes on with the others.
    let n = load.acknowledged();
    load.wait_for(n + 1000, Duration::from_secs(15)).await;
    assert!(
        load.acknowledged() > n,
        "acks=all stalled with the follower out of the ISR"
    );
    // With min.insync.replicas 3 a produce is refused, and nothing is appended.
    let refused = refuse_with_min_isr_3(&c).await?;
    assert!(refused.contains("NOT_ENOUGH_REPLICAS"), "{refused}");
    c.brokers[follower].signal("CONT")?;
    let back = c
        .wait_for(
            "the follower back in every ISR",
            Duration::from_secs(30),
            all_in_sync(&c),
        )
        .await?;
    println!(
        "broker {follower} continued after {} ms stopped: back in every ISR after {} ms",
        stopped.elapsed().as_millis() - back.as_millis(),
        back.as_millis()
    );
    let acked = load.stop().await;
    check(&c, &acked).await?;
    Ok(())
}

/// Produces one record with acks=all to a topic with `min.insync.replicas` 3 whose partition
/// has two in-sync replicas; the refusal's message.
async fn refuse_with_min_isr_3(c: &TestCluster) -> anyhow::Result<String> {
    // Broker 2 is stopped: the topic's ISR loses it.
    c.wait_for(
        "the strict topic's ISR without broker 2",
        Duration::from_secs(15),
        |md| {
            md.topics
                .iter()
                .find(|t| t.name == "strict")
                .is_some_and(|t| t.partitions[0].isr.len() == 2 && t.partitions[0].leader >= 0)
        },
    )
    .await?;
    let leader = c.leader_address("strict", 0).expect("leader");
    let mut client = BrokerClient::connect(format!("http://{leader}")).await?;
    let answer = client
        .produce(ProduceRequest {
            topic: "strict".into(),
            partition: Some(0),
            acks: runnel_proto::v1::Acks::All as i32,
            records: vec![Record {
                value: Some(Bytes::from_static(b"x")),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await;
    let message = match answer {
        Ok(r) => match r.into_inner().error {
            Some(e) => e.message,
            None => anyhow::bail!("acks=all with 2 of min.insync.replicas 3 was acknowledged"),
        },
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
            status.message().to_string()
        }
    };
    let end = runnel_proto::v1::admin_client::AdminClient::connect(format!("http://{leader}"))
        .await?
        .describe_partitions(runnel_proto::v1::DescribePartitionsRequest {
            topics: vec!["strict".into()],
        })
        .await?
        .into_inner()
        .partitions[0]
        .log_end_offset;
    assert_eq!(end, 0, "a refused produce appended something");
    Ok(message)
}
