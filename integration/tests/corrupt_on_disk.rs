//! A reader meets a batch on disk that cannot be read (stored by a broker from before records
//! were checked, or damaged on the disk): the broker cannot produce that case itself any more,
//! so the test damages one stored batch of a stopped broker through its storage directly. The
//! readers (the `runnel` CLI, and a decoded fetch for clients without a decoder) must show the
//! records before it and then a clear error naming its offset; the broker keeps serving the
//! other partitions.

use bytes::Bytes;
use runnel_broker::storage::{BatchLog, SledLog, SledStorage, Storage};
use runnel_codec::{BatchBuilder, Compression};
use runnel_integration::{runnel, Broker};
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{Acks, FetchRequest, ProduceRequest, RecordFormat};
use tonic::Code;

fn batch(values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None, 1_700_000_000_000);
    for v in values {
        b.append(1_700_000_000_000, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build().expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_show_the_records_before_a_bad_batch_and_name_its_offset() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut broker = Broker::start(&data_dir, &[])?;
    broker.create_topic("t", 2, None).await?;
    let mut data = BrokerClient::connect(broker.endpoint()).await?;
    for (partition, values) in [
        (0, &["a", "b", "c"][..]),
        (0, &["d", "e"][..]),
        (1, &["x"][..]),
    ] {
        data.produce(ProduceRequest {
            topic: "t".into(),
            partition: Some(partition),
            acks: Acks::All as i32,
            batches: batch(values),
            ..Default::default()
        })
        .await?;
    }
    let status = broker.terminate()?;
    assert!(status.success());

    // The disk damages the second batch of partition 0 (offsets 3 and 4).
    {
        let storage = SledStorage::open(&data_dir)?;
        let log = storage.open_log("t", 0)?;
        let mut stored = log.read(3, 4, usize::MAX)?[0].to_vec();
        let n = stored.len();
        stored[n - 2] ^= 0x55;
        log.put(3, SledLog::buffer(&stored))?;
        storage.flush()?;
    }
    broker.restart()?;

    // The CLI prints what comes before, then fails naming the offset.
    let (status, stdout, stderr) = runnel(
        &broker.address,
        &[
            "consume",
            "t",
            "--partition",
            "0",
            "--from-beginning",
            "--max-messages",
            "10",
        ],
        None,
    )?;
    assert!(
        !status.success(),
        "the CLI read across a bad batch: {stdout}"
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "{stderr}"
    );
    assert!(
        stderr.contains("offset 3") && stderr.contains("CRC"),
        "the error names the batch and why: {stderr}"
    );

    // A decoded fetch: the records before it, then DATA_LOSS at its offset.
    let mut data = BrokerClient::connect(broker.endpoint()).await?;
    let fetch = |offset| FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset,
        max_bytes: 1 << 20,
        format: RecordFormat::Records as i32,
        ..Default::default()
    };
    let first = data.fetch(fetch(0)).await?.into_inner();
    let offsets: Vec<i64> = first.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);
    assert_eq!(first.next_offset, 3);
    let e = data.fetch(fetch(3)).await.expect_err("corrupt");
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("offset 3"), "{e:?}");

    // The other partition, and new records after the bad batch, are served as ever.
    let (status, stdout, _) = runnel(
        &broker.address,
        &[
            "consume",
            "t",
            "--partition",
            "1",
            "--from-beginning",
            "--max-messages",
            "1",
        ],
        None,
    )?;
    assert!(status.success());
    assert_eq!(stdout.trim(), "x");
    let next = data
        .produce(ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            acks: Acks::All as i32,
            batches: batch(&["f"]),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(next.base_offset, 5);
    Ok(())
}
