//! The group consumer's API through a real broker, as an application uses it: a rebalance
//! listener told of assigned and revoked partitions, manual and asynchronous commits (what a
//! restarted member resumes from), pause and resume, seek.

use runnel_client::consumer::AutoOffsetReset;
use runnel_client::{
    Admin, ConsumerConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig, RebalanceListener,
    TopicPartition,
};
use runnel_integration::Broker;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One call of the listener: "revoked" or "assigned", with its partitions.
type Call = (&'static str, Vec<TopicPartition>);

/// What the listener was told, in order.
#[derive(Clone, Default)]
struct Told(Arc<Mutex<Vec<Call>>>);

impl RebalanceListener for Told {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .expect("lock")
            .push(("revoked", partitions.to_vec()));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .expect("lock")
            .push(("assigned", partitions.to_vec()));
    }
}

fn config(addr: &str, group: &str, client_id: &str) -> GroupConsumerConfig {
    GroupConsumerConfig {
        consumer: ConsumerConfig {
            bootstrap: addr.to_string(),
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        group_id: group.into(),
        client_id: client_id.into(),
        enable_auto_commit: false,
        ..GroupConsumerConfig::default()
    }
}

/// Records `e-N` keyed over 40 keys, to `events` (to `partition`, or by key).
async fn produce(addr: &str, partition: Option<i32>, from: usize, to: usize) -> anyhow::Result<()> {
    let records = (from..to).map(|i| (format!("k{}", i % 40), format!("e-{i}")));
    runnel_integration::produce_records(addr, "events", partition, records).await
}

/// Polls until `done` says so (or 20 s pass), returning every record polled.
async fn poll_until(
    c: &mut GroupConsumer,
    mut done: impl FnMut(&GroupConsumer, &[ConsumerRecord]) -> bool,
) -> anyhow::Result<Vec<ConsumerRecord>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    loop {
        all.extend(c.poll(Duration::from_millis(200)).await?);
        if done(c, &all) {
            return Ok(all);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up after polling {} records; owns {:?}",
            all.len(),
            c.assignment()
        );
    }
}

fn per_partition(records: &[ConsumerRecord]) -> BTreeMap<i32, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.partition).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_commits_pause_resume_and_seek() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    let addr = broker.address.clone();
    broker.create_topic("events", 4, None).await?;
    produce(&addr, None, 0, 400).await?;
    let admin = Admin::connect(&addr).await?;

    // One member: told of all four partitions, reads all 400 records.
    let told = Told::default();
    let mut a = GroupConsumer::new(config(&addr, "api", "a")).await?;
    a.set_rebalance_listener(Box::new(told.clone()));
    a.subscribe(&["events"])?;
    let first = poll_until(&mut a, |_, all| all.len() >= 400).await?;
    assert_eq!(first.len(), 400);
    let all4: Vec<TopicPartition> = (0..4).map(|p| ("events".to_string(), p)).collect();
    assert_eq!(
        told.0.lock().expect("lock").clone(),
        vec![("assigned", all4.clone())]
    );

    // Manual commit: nothing is committed until asked, then exactly the positions.
    let d = admin.describe_group("api").await?;
    assert!(
        d.partitions.iter().all(|p| p.committed_offset.is_none()),
        "{d:?}"
    );
    a.commit().await?;
    let d = admin.describe_group("api").await?;
    for p in &d.partitions {
        assert_eq!(
            p.committed_offset,
            a.position("events", p.partition),
            "{p:?}"
        );
        assert_eq!(p.lag, Some(0), "{p:?}");
    }

    // Pause partition 0: its new records wait until resume.
    a.pause(&[("events".to_string(), 0)]);
    assert_eq!(a.paused(), vec![("events".to_string(), 0)]);
    produce(&addr, Some(0), 400, 420).await?;
    produce(&addr, Some(1), 420, 430).await?;
    let while_paused = poll_until(&mut a, |_, all| all.len() >= 10).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let more = a.poll(Duration::from_millis(300)).await?;
    let seen = per_partition(&[while_paused, more].concat());
    assert_eq!(seen, BTreeMap::from([(1, 10)]), "partition 0 is paused");
    a.resume(&[("events".to_string(), 0)]);
    let resumed = poll_until(&mut a, |_, all| all.len() >= 20).await?;
    assert_eq!(per_partition(&resumed), BTreeMap::from([(0, 20)]));

    // Seek: partition 2 again from its start.
    let end2 = a.position("events", 2).unwrap_or(0);
    a.seek("events", 2, 0)?;
    let again = poll_until(&mut a, |_, all| all.len() as i64 >= end2).await?;
    assert!(
        again.iter().all(|r| r.partition == 2),
        "only partition 2 was moved back"
    );
    assert_eq!(again.first().map(|r| r.offset), Some(0));
    a.commit().await?;

    // A second member: `a` is told which partitions it gives up, `b` starts them at a's
    // committed offsets (nothing is read twice).
    let mut b = GroupConsumer::new(config(&addr, "api", "b")).await?;
    let told_b = Told::default();
    b.set_rebalance_listener(Box::new(told_b.clone()));
    b.subscribe(&["events"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.assignment().len() == 2 && b.assignment().len() == 2) {
        assert!(
            Instant::now() < deadline,
            "a owns {:?}, b {:?}",
            a.assignment(),
            b.assignment()
        );
        let (ra, rb) = tokio::join!(
            a.poll(Duration::from_millis(100)),
            b.poll(Duration::from_millis(100))
        );
        assert!(
            ra?.is_empty() && rb?.is_empty(),
            "everything was committed: nothing to read"
        );
    }
    let revoked: Vec<TopicPartition> = told
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter(|(what, _)| *what == "revoked")
        .flat_map(|(_, p)| p.clone())
        .collect();
    assert_eq!(revoked, b.assignment(), "a gave up exactly what b got");
    // New records reach whichever member owns their partition; a commits asynchronously.
    produce(&addr, None, 430, 470).await?;
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < 40 {
        assert!(Instant::now() < deadline, "{got} of 40 new records");
        let (ra, rb) = tokio::join!(
            a.poll(Duration::from_millis(100)),
            b.poll(Duration::from_millis(100))
        );
        let (ra, rb) = (ra?, rb?);
        assert!(ra
            .iter()
            .all(|r| a.assignment().contains(&(r.topic.to_string(), r.partition))));
        assert!(rb
            .iter()
            .all(|r| b.assignment().contains(&(r.topic.to_string(), r.partition))));
        got += ra.len() + rb.len();
    }
    assert_eq!(got, 40);
    a.commit_async();
    b.commit().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = admin.describe_group("api").await?;
        if d.total_lag == 0 && d.partitions.iter().all(|p| p.committed_offset.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "async commit not seen: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a leaves: b is told of all four.
    a.close().await?;
    let _ = poll_until(&mut b, |c, _| c.assignment().len() == 4).await?;
    assert_eq!(b.assignment(), all4);
    b.close().await?;
    assert_eq!(admin.describe_group("api").await?.state, "Empty");
    Ok(())
}
