//! Log compaction through the real broker, as committed offsets use it: a compacted topic takes
//! a steady stream of records over few keys (1,000,000 commits over 100 keys), and its size stays
//! bounded, since the cleaner keeps only the last record of each key; readers see exactly that
//! record per key, at its own offset, and the same after a restart. A record without a key is
//! refused.

use bytes::{Bytes, BytesMut};
use runnel_codec::{BatchBuilder, Compression};
use runnel_integration::Broker;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    Acks, CreateTopicRequest, DescribePartitionsRequest, FetchRequest, ProduceRequest, TopicConfig,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

const COMMITS: usize = 1_000_000;
const KEYS: usize = 100;
const PER_BATCH: usize = 2_000;

fn commits(first: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None, 1_700_000_000_000);
    for n in first..first + PER_BATCH {
        let key = format!("group-a/orders/{}", n % KEYS);
        let value = format!("offset={n}");
        b.append(
            1_700_000_000_000,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.build().expect("build")
}

async fn size_bytes(admin: &mut AdminClient<Channel>) -> anyhow::Result<i64> {
    let d = admin
        .describe_partitions(DescribePartitionsRequest {
            topics: vec!["offsets".into()],
        })
        .await?
        .into_inner();
    Ok(d.partitions.iter().map(|p| p.size_bytes).sum())
}

/// The value of each key, from every record a reader sees.
async fn latest(data: &mut BrokerClient<Channel>) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut offset = 0;
    let mut last_offset = -1;
    loop {
        let f = data
            .fetch(FetchRequest {
                topic: "offsets".into(),
                partition: 0,
                offset,
                max_bytes: 8 << 20,
                ..Default::default()
            })
            .await?
            .into_inner();
        if f.batches.is_empty() {
            break;
        }
        for r in runnel_integration::records(&f.batches)? {
            assert!(r.offset > last_offset, "offsets go up");
            last_offset = r.offset;
            let key = String::from_utf8_lossy(&r.key.expect("key")).into_owned();
            let value = String::from_utf8_lossy(&r.value.expect("value")).into_owned();
            // The record's offset is the commit's own number: nothing was renumbered.
            assert_eq!(value, format!("offset={}", r.offset));
            seen.entry(key).or_default().push(value);
        }
        offset = f.next_offset;
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_commits_over_a_hundred_keys_stay_small() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &["--cleaner-interval-ms", "200"])?;
    let mut admin = AdminClient::connect(broker.endpoint()).await?;
    admin
        .create_topic(CreateTopicRequest {
            name: "offsets".into(),
            partitions: 1,
            replication_factor: 1,
            config: Some(TopicConfig {
                cleanup_policy: Some("compact".into()),
                ..Default::default()
            }),
        })
        .await?;
    let mut data = BrokerClient::connect(broker.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);

    // A record without a key has no place in a compacted topic.
    let mut keyless = BatchBuilder::new(Compression::None, 0);
    keyless.append(0, None, Some(b"v"), &[]);
    let e = data
        .produce(ProduceRequest {
            topic: "offsets".into(),
            partition: Some(0),
            acks: Acks::All as i32,
            batches: keyless.build()?,
            ..Default::default()
        })
        .await
        .expect_err("keyless");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("only records with a key"), "{e:?}");

    let mut peak = 0;
    let mut first = 0;
    while first < COMMITS {
        // Four batches a request, acks=all, as a committing coordinator would send them.
        let mut batches = BytesMut::new();
        for _ in 0..4 {
            batches.extend_from_slice(&commits(first));
            first += PER_BATCH;
        }
        data.produce(ProduceRequest {
            topic: "offsets".into(),
            partition: Some(0),
            acks: Acks::All as i32,
            batches: batches.freeze(),
            ..Default::default()
        })
        .await?;
        if first % 100_000 == 0 {
            peak = peak.max(size_bytes(&mut admin).await?);
        }
    }
    let written = size_bytes(&mut admin).await?.max(peak);
    // The cleaner catches up: the partition shrinks to a few MB.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut size = size_bytes(&mut admin).await?;
    while size > 4 << 20 {
        assert!(
            Instant::now() < deadline,
            "the partition still holds {size} bytes a minute after the last commit; log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        size = size_bytes(&mut admin).await?;
    }
    let seen = latest(&mut data).await?;
    println!(
        "compaction: {COMMITS} commits over {KEYS} keys; at most {written} bytes while writing, {size} bytes after cleaning; {} records left",
        seen.values().map(Vec::len).sum::<usize>()
    );
    // Every key is there, and its last commit is: whatever else is left is older commits that
    // the cleaner has not reached yet (the log beyond its last pass).
    assert_eq!(seen.len(), KEYS);
    for (key, values) in &seen {
        let k: usize = key.rsplit('/').next().expect("key").parse()?;
        let last = COMMITS - KEYS + k;
        assert_eq!(values.last(), Some(&format!("offset={last}")), "{key}");
    }

    // After a crash and a restart, every key's last commit is still there. (A cleaning step not
    // yet flushed may be undone by the crash, bringing back older commits it had removed: they
    // are cleaned again.)
    broker.restart()?;
    let mut data = BrokerClient::connect(broker.endpoint())
        .await?
        .max_decoding_message_size(64 << 20);
    let after = latest(&mut data).await?;
    assert_eq!(after.len(), KEYS);
    for (key, values) in &seen {
        assert_eq!(after[key].last(), values.last(), "{key} after the restart");
    }
    Ok(())
}
