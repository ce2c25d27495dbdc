//! What a produced batch must be, checked through the real broker: a request's batches are
//! appended all or none, a batch's offsets are its own, every record is checked before it is
//! stored, and producer ids must have been issued. After each refusal the partition keeps
//! serving every client, and what was stored before is intact.

use bytes::{Bytes, BytesMut};
use runnel_codec::{BatchBuilder, Compression, ProducerInfo};
use runnel_integration::Broker;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{Acks, FetchRequest, InitProducerIdRequest, ProduceRequest};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

fn batch(values: &[&str], producer: Option<(i64, i32)>, compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(compression, 1_700_000_000_000);
    if let Some((producer_id, base_sequence)) = producer {
        b = b.with_producer(ProducerInfo {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        });
    }
    for v in values {
        b.append(1_700_000_000_000, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build().expect("build")
}

fn concat(batches: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for b in batches {
        out.extend_from_slice(b);
    }
    out.freeze()
}

/// Rewrites bytes the CRC covers and gives the batch a valid CRC again: a client with a bug.
fn with_valid_crc(mut b: Vec<u8>) -> Bytes {
    let crc = runnel_codec::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn produce(batches: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        acks: Acks::All as i32,
        batches,
        ..Default::default()
    }
}

async fn values(data: &mut BrokerClient<Channel>) -> anyhow::Result<Vec<(i64, String)>> {
    let f = data
        .fetch(FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(runnel_integration::records(&f.batches)?
        .into_iter()
        .map(|r| {
            let v = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
            (r.offset, v.unwrap_or_default())
        })
        .collect())
}

/// A produce that must be refused with `code` and a message containing `needle`; the next
/// good produce must then be acknowledged at once, at the offset right after what is stored.
async fn refused_then_served(
    data: &mut BrokerClient<Channel>,
    what: &str,
    request: ProduceRequest,
    code: Code,
    needle: &str,
    next_offset: i64,
) -> anyhow::Result<()> {
    let err = data.produce(request).await.expect_err(what);
    assert_eq!(err.code(), code, "{what}: {err:?}");
    assert!(
        err.message().contains(needle),
        "{what}: message {:?} lacks {needle:?}",
        err.message()
    );
    let started = Instant::now();
    let next = data
        .produce(produce(batch(&["after"], None, Compression::None)))
        .await
        .map_err(|e| anyhow::anyhow!("{what}: the partition no longer serves: {e:?}"))?
        .into_inner();
    assert_eq!(
        next.base_offset, next_offset,
        "{what}: the refused request moved the log end offset"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{what}: the next acks=all produce took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_change_nothing_and_the_partition_keeps_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A short durability timeout: a wedged partition shows as DEADLINE_EXCEEDED quickly.
    let broker = Broker::start(&dir.path().join("data"), &["--produce-timeout-ms", "3000"])?;
    broker.create_topic("t", 1, None).await?;
    let mut data = BrokerClient::connect(broker.endpoint()).await?;
    let pid = data
        .init_producer_id(InitProducerIdRequest::default())
        .await?
        .into_inner()
        .producer_id;
    let first = data
        .produce(produce(batch(
            &["a", "b"],
            Some((pid, 0)),
            Compression::None,
        )))
        .await?
        .into_inner();
    assert_eq!((first.base_offset, first.last_offset), (0, 1));

    // 1. Several batches, the last one out of sequence: none of them is appended.
    let request = produce(concat(&[
        batch(&["c"], Some((pid, 2)), Compression::None),
        batch(&["d"], Some((pid, 3)), Compression::None),
        batch(&["e"], Some((pid, 9)), Compression::None),
    ]));
    refused_then_served(
        &mut data,
        "sequence gap in the third batch",
        request,
        Code::Aborted,
        "batch 2 of 3 in the request: out of order sequence",
        2,
    )
    .await?;
    // The producer goes on from where its stored batches end: the refused ones left no state.
    let next = data
        .produce(produce(batch(&["c"], Some((pid, 2)), Compression::None)))
        .await?
        .into_inner();
    assert_eq!(next.base_offset, 3);

    // 2. A batch whose CRC is valid but whose offsets are the client's own choice.
    let mut delta = batch(&["x", "y"], None, Compression::None).to_vec();
    delta[23..27].copy_from_slice(&40i32.to_be_bytes());
    refused_then_served(
        &mut data,
        "lastOffsetDelta beyond the records",
        produce(with_valid_crc(delta)),
        Code::InvalidArgument,
        "lastOffsetDelta 40 does not match the batch's 2 records",
        4,
    )
    .await?;

    // 3. Valid CRCs over records no reader could parse.
    let good = batch(&["x", "y"], None, Compression::None);
    let mut count = good.to_vec();
    count[57..61].copy_from_slice(&3i32.to_be_bytes());
    count[23..27].copy_from_slice(&2i32.to_be_bytes());
    let mut varint = good.to_vec();
    varint[61] = 0x7e;
    let mut gzip = batch(&["x", "y", "z"], None, Compression::Gzip).to_vec();
    let n = gzip.len();
    for b in &mut gzip[n - 12..n - 4] {
        *b ^= 0xa5;
    }
    let corrupt: Vec<(&str, Bytes, &str)> = vec![
        (
            "records count beyond the records",
            with_valid_crc(count),
            "header says 3 records",
        ),
        (
            "record length past the batch",
            with_valid_crc(varint),
            "record #0",
        ),
        (
            "gzip payload that does not inflate",
            with_valid_crc(gzip),
            "gzip",
        ),
    ];
    let mut end = 5;
    for (what, bad, needle) in corrupt {
        // Alone, and behind a good batch in the same request.
        refused_then_served(
            &mut data,
            what,
            produce(bad.clone()),
            Code::InvalidArgument,
            needle,
            end,
        )
        .await?;
        end += 1;
        refused_then_served(
            &mut data,
            what,
            produce(concat(&[good.clone(), bad])),
            Code::InvalidArgument,
            "batch 1 of 2",
            end,
        )
        .await?;
        end += 1;
    }

    // 4. A producer id nobody issued.
    refused_then_served(
        &mut data,
        "producer id never issued",
        produce(batch(&["z"], Some((pid + 1_000_000, 0)), Compression::None)),
        Code::InvalidArgument,
        "never issued",
        end,
    )
    .await?;
    end += 1;

    // Every reader can read the whole partition: exactly what was acknowledged, in order.
    let got = values(&mut data).await?;
    let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..end).collect::<Vec<_>>());
    assert_eq!(
        got[..4].iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["a", "b", "after", "c"]
    );
    let mut broker = broker;
    assert!(broker.is_running(), "broker died; log:\n{}", broker.log());
    Ok(())
}

/// Idle idempotent producers are forgotten after `producer.id.expiration.ms`, so a partition's
/// producer state stays bounded; a forgotten producer that comes back starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_producers_are_forgotten() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(
        &dir.path().join("data"),
        &[
            "--producer-id-expiration-ms",
            "300",
            "--retention-check-interval-ms",
            "100",
        ],
    )?;
    broker.create_topic("t", 1, None).await?;
    let mut data = BrokerClient::connect(broker.endpoint()).await?;
    let pid = data
        .init_producer_id(InitProducerIdRequest::default())
        .await?
        .into_inner()
        .producer_id;
    data.produce(produce(batch(&["a"], Some((pid, 0)), Compression::None)))
        .await?;
    // Remembered: a gap is refused.
    let e = data
        .produce(produce(batch(&["b"], Some((pid, 5)), Compression::None)))
        .await
        .expect_err("gap");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    // Idle past the expiration: forgotten, so the same batch is now taken as a new producer's.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let r = data
        .produce(produce(batch(&["b"], Some((pid, 5)), Compression::None)))
        .await?
        .into_inner();
    assert_eq!(r.base_offset, 1);
    let mut broker = broker;
    assert!(
        broker.log().contains("forgot idle producers"),
        "{}",
        broker.log()
    );
    assert!(broker.is_running());
    Ok(())
}
