//! Replication across three brokers on loopback, with the stand-in controller of
//! [`runnel_integration::cluster`] electing leaders by the operator's rules: leaders killed in
//! turn under `acks=all` load, all three killed at once, and a follower that stops answering.
//! Every acknowledged record must be read back exactly once, at its offset, in each producer's
//! order.

use bytes::Bytes;
use runnel_client::consumer::{Consumer, Partitions, StartOffset};
use runnel_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use runnel_integration::cluster::{first_ack, TestCluster};
use runnel_integration::load::Load;
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

/// Reads every partition back and checks it against what was acknowledged.
async fn check(
    c: &TestCluster,
    acked: &std::collections::HashMap<String, (i32, i64)>,
) -> anyhow::Result<usize> {
    let back = c.read_back(TOPIC, PARTITIONS, acked).await?;
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
    Ok(back.total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_killed_in_turn_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let mut c = cluster(2).await?;
    let load = Load::start(&c.bootstrap(), TOPIC, 3, PARTITIONS);
    load.wait_for(3000, Duration::from_secs(30)).await;
    assert!(load.acknowledged() >= 3000, "the load does not get going");
    let probe = c.probe().await?;
    let (consumed, consumer) = consume(&c.bootstrap()).await?;
    let mut failovers = Vec::new();
    for p in 0..PARTITIONS {
        let before = c.partition(TOPIC, p);
        let victim = before.leader as usize;
        let acked_before = load.acknowledged();
        let killed = Instant::now();
        c.brokers[victim].kill9();
        let took = first_ack(&probe, TOPIC, p, killed).await?;
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
                c.all_in_sync(),
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
        c.all_in_sync(),
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
            c.all_in_sync(),
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

/// Describes `topic`/0 on broker `id`.
async fn describe_on(
    c: &TestCluster,
    id: usize,
    topic: &str,
) -> anyhow::Result<runnel_proto::v1::PartitionDescription> {
    let mut admin =
        runnel_proto::v1::admin_client::AdminClient::connect(c.brokers[id].endpoint()).await?;
    admin
        .describe_partitions(runnel_proto::v1::DescribePartitionsRequest {
            topics: vec![topic.into()],
        })
        .await?
        .into_inner()
        .partitions
        .into_iter()
        .find(|p| p.partition == 0)
        .ok_or_else(|| anyhow::anyhow!("broker {id} holds no copy of {topic}/0"))
}

/// A follower whose copy was wiped copies a compacted log (batches with gaps between them),
/// is killed right after it is back in the ISR, and restarts with its whole copy: recovery
/// truncates a tail at its first gap, so a copy counts as durable past a gap only once a
/// checkpoint covers it. Then it is the only broker left and leads: every key's last
/// acknowledged value is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_of_a_compacted_log_survives_a_crash_and_leads() -> anyhow::Result<()> {
    const KEYS: usize = 20;
    const ROUNDS: usize = 150;
    let lag = LAG_MS.to_string();
    let mut c = TestCluster::start(
        3,
        &[
            "--replica-lag-time-max-ms",
            &lag,
            "--cleaner-interval-ms",
            "200",
        ],
    )
    .await?;
    let topic = "keys";
    c.create_topic(
        topic,
        1,
        3,
        TopicConfig {
            cleanup_policy: Some("compact".into()),
            min_insync_replicas: Some(2),
            min_cleanable_dirty_ratio: Some(0.01),
            ..Default::default()
        },
    )
    .await?;
    let wiped = 2;
    c.brokers[wiped].kill9();
    std::fs::remove_dir_all(&c.brokers[wiped].data_dir)?;
    // Every round rewrites every key, in a batch of its own: the cleaner empties whole
    // batches, and the log keeps gaps where they were.
    let mut config = ProducerConfig::new(c.bootstrap());
    config.acks = Acks::All;
    let producer = Producer::connect(config).await?;
    let mut latest = std::collections::BTreeMap::new();
    // A key written once: its batch stays, before the gap the rewritten keys leave.
    producer
        .send(
            ProducerRecord::new(topic, Bytes::from_static(b"first"))
                .key(Bytes::from_static(b"once"))
                .partition(0),
        )
        .await?
        .await?;
    latest.insert("once".to_string(), "first".to_string());
    for round in 0..ROUNDS {
        let mut acks = Vec::new();
        for k in 0..KEYS {
            let value = format!("key-{k}-round-{round}");
            acks.push(
                producer
                    .send(
                        ProducerRecord::new(topic, Bytes::from(value.clone()))
                            .key(Bytes::from(format!("key-{k}")))
                            .partition(0),
                    )
                    .await?,
            );
            latest.insert(format!("key-{k}"), value);
        }
        producer.flush().await;
        for a in acks {
            a.await?;
        }
    }
    let produced = describe_on(&c, 0, topic).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = describe_on(&c, 0, topic).await?;
        if d.batch_count < produced.batch_count / 2 && d.batch_count >= 2 {
            println!(
                "the leader compacted {} batches to {} (log end {})",
                produced.batch_count, d.batch_count, d.log_end_offset
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the leader did not compact: {d:?}\n{}",
            c.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its own cleaner (and the checkpoint it takes first) waits 15 s, the default: what the
    // copy holds past its checkpoint is what it copied.
    c.brokers[wiped].restart_with(&["--replica-lag-time-max-ms", &lag])?;
    c.wait_for(
        "the wiped broker back in the ISR",
        Duration::from_secs(30),
        c.all_in_sync(),
    )
    .await?;
    let copied = describe_on(&c, wiped, topic).await?;
    c.brokers[wiped].kill9();
    c.brokers[wiped].restart()?;
    let restarted = describe_on(&c, wiped, topic).await?;
    println!(
        "the copy held {} batches to offset {} (durable to {}); after kill -9 and a restart {} batches to {}",
        copied.batch_count,
        copied.log_end_offset,
        copied.durable_end_offset,
        restarted.batch_count,
        restarted.log_end_offset
    );
    assert!(
        restarted.log_end_offset >= copied.durable_end_offset,
        "the restarted copy ends at {}, below the {} it had reported durable",
        restarted.log_end_offset,
        copied.durable_end_offset
    );
    c.wait_for(
        "the restarted broker back in the ISR",
        Duration::from_secs(30),
        c.all_in_sync(),
    )
    .await?;
    // The others go: the copy that was wiped leads.
    c.brokers[0].kill9();
    c.brokers[1].kill9();
    c.wait_for("the copied broker leading", Duration::from_secs(15), |md| {
        md.topics
            .iter()
            .any(|t| t.name == topic && t.partitions[0].leader == wiped as i32)
    })
    .await?;
    let mut consumer = Consumer::connect(&c.brokers[wiped].address).await?;
    consumer
        .assign(topic, Partitions::All, StartOffset::Earliest)
        .await?;
    let mut read = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while read != latest && Instant::now() < deadline {
        // The brokers may still learn who leads: an unreachable old leader is retried.
        let records = match consumer.poll(Duration::from_millis(500)).await {
            Ok(records) => records,
            Err(e) => {
                eprintln!("consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for r in records {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let value =
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            read.insert(key, value);
        }
    }
    assert_eq!(
        read, latest,
        "every key's last acknowledged value, read from the copy"
    );
    Ok(())
}

/// A group's committed offsets live in `__consumer_offsets`, three copies of each partition:
/// `kill -9` of the group's coordinator, and a new member of the group starts where the group
/// committed, its coordinator now the partition's new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_the_coordinators_death() -> anyhow::Result<()> {
    use runnel_client::{AutoOffsetReset, ConsumerConfig, GroupConsumer, GroupConsumerConfig};
    let mut c = cluster(2).await?;
    c.create_offsets_topic(3).await?;
    let records = (0..1000).map(|i| (format!("k{i}"), format!("e-{i}")));
    runnel_integration::produce_records(&c.bootstrap(), TOPIC, Some(0), records).await?;
    let bootstrap = c.bootstrap();
    let config = || GroupConsumerConfig {
        consumer: ConsumerConfig {
            bootstrap: bootstrap.clone(),
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        group_id: "billing".into(),
        enable_auto_commit: false,
        ..GroupConsumerConfig::default()
    };
    // One member reads partition 0 up to offset 600 and commits there.
    let mut member = GroupConsumer::new(config()).await?;
    member.subscribe(&[TOPIC])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while member.position(TOPIC, 0).unwrap_or(0) < 600 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the member did not read 600 records"
        );
        member.poll(Duration::from_millis(200)).await?;
    }
    member
        .commit_offsets(&[((TOPIC.to_string(), 0), 600)])
        .await?;
    member.close().await?;
    let found = BrokerClient::connect(c.brokers[0].endpoint())
        .await?
        .find_coordinator(runnel_proto::v1::FindCoordinatorRequest {
            group_id: "billing".into(),
        })
        .await?
        .into_inner();
    let coordinator = usize::try_from(found.broker_id)?;
    let killed = Instant::now();
    c.brokers[coordinator].kill9();
    // A new member: its first record is the one after the commit.
    let mut next = GroupConsumer::new(config()).await?;
    next.subscribe(&[TOPIC])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        match next.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                if let Some(r) = records.iter().find(|r| r.partition == 0) {
                    break r.offset;
                }
            }
            Err(e) => eprintln!("member: {e}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "the new member read nothing");
    };
    let now = c.partition(runnel_broker::groups::OFFSETS_TOPIC, found.partition);
    println!(
        "coordinator broker {coordinator} (partition {} of __consumer_offsets) killed; broker {} leads it; the next member started at offset {first} after {} ms",
        found.partition,
        now.leader,
        killed.elapsed().as_millis()
    );
    assert_ne!(now.leader, coordinator as i32);
    assert_eq!(first, 600, "the committed offset, read from another copy");
    next.close().await?;
    Ok(())
}
