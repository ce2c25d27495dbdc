//! Bad input through the real server: each gets the documented gRPC code and a message that
//! names the problem, the broker keeps serving, and the data stored before is intact.

use bytes::Bytes;
use runnel_codec::{BatchBuilder, Compression};
use runnel_integration::Broker;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    Acks, CreateTopicRequest, FetchRequest, ListOffsetsRequest, OffsetSpec, ProduceRequest, Record,
    TopicConfig,
};
use tonic::Code;

fn batch(values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None, 1_700_000_000_000);
    for v in values {
        b.append(1_700_000_000_000, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build().expect("build")
}

fn produce(topic: &str, partition: i32, batches: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        acks: Acks::All as i32,
        batches,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    let mut admin = AdminClient::connect(broker.endpoint()).await?;
    let mut data = BrokerClient::connect(broker.endpoint())
        .await?
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(128 << 20);

    admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 2,
            replication_factor: 1,
            config: Some(TopicConfig {
                max_message_bytes: Some(4096),
                ..Default::default()
            }),
        })
        .await?;
    let good = data
        .produce(produce("orders", 0, batch(&["a", "b", "c"])))
        .await?
        .into_inner();
    assert_eq!((good.base_offset, good.last_offset), (0, 2));

    let ok = batch(&["x"]);
    let mut bad_crc = ok.to_vec();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0x5a;
    let mut bad_magic = ok.to_vec();
    bad_magic[16] = 1;
    let truncated = ok.slice(..ok.len() - 5);
    let big = batch(&[&"v".repeat(5000)]);

    let cases: Vec<(&str, ProduceRequest, Code, &str)> = vec![
        (
            "bad CRC",
            produce("orders", 0, Bytes::from(bad_crc)),
            Code::InvalidArgument,
            "CRC",
        ),
        (
            "truncated batch",
            produce("orders", 0, truncated),
            Code::InvalidArgument,
            "truncated",
        ),
        (
            "wrong magic",
            produce("orders", 0, Bytes::from(bad_magic)),
            Code::InvalidArgument,
            "magic",
        ),
        (
            "oversize batch",
            produce("orders", 0, big),
            Code::ResourceExhausted,
            "max.message.bytes",
        ),
        (
            "unknown topic",
            produce("nope", 0, ok.clone()),
            Code::NotFound,
            "topic `nope` does not exist",
        ),
        (
            "unknown partition",
            produce("orders", 7, ok.clone()),
            Code::NotFound,
            "has 2 partitions, asked for partition 7",
        ),
        (
            "empty produce",
            produce("orders", 0, Bytes::new()),
            Code::InvalidArgument,
            "no records",
        ),
        (
            "garbage",
            produce("orders", 0, Bytes::from_static(b"not a batch at all")),
            Code::InvalidArgument,
            "truncated",
        ),
        (
            "batches and records",
            ProduceRequest {
                records: vec![Record::default()],
                ..produce("orders", 0, ok.clone())
            },
            Code::InvalidArgument,
            "not both",
        ),
    ];
    for (what, req, code, needle) in cases {
        let err = data.produce(req).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: message {:?} lacks {needle:?}",
            err.message()
        );
    }

    // A message larger than the server accepts at all.
    let huge = Bytes::from(vec![0u8; 70 << 20]);
    let err = data
        .produce(produce("orders", 0, huge))
        .await
        .expect_err("huge");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("exceeds the limit"),
        "{}",
        err.message()
    );

    // Reads outside the log.
    let err = data
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: 99,
            ..Default::default()
        })
        .await
        .expect_err("out of range");
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message()
            .contains("offset 99 is out of range: the log holds offsets 0 to 3"),
        "{}",
        err.message()
    );
    let err = data
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(err.code(), Code::OutOfRange);

    // Topic creation with bad names and counts.
    let topic_cases: Vec<(&str, &str, i32, Code, &str)> = vec![
        (
            "invalid name",
            "no spaces",
            1,
            Code::InvalidArgument,
            "invalid topic name `no spaces`",
        ),
        (
            "dot name",
            "..",
            1,
            Code::InvalidArgument,
            "invalid topic name",
        ),
        (
            "zero partitions",
            "zero",
            0,
            Code::InvalidArgument,
            "invalid partition count 0",
        ),
        (
            "negative partitions",
            "neg",
            -4,
            Code::InvalidArgument,
            "invalid partition count -4",
        ),
        (
            "existing topic",
            "orders",
            1,
            Code::AlreadyExists,
            "already exists",
        ),
    ];
    for (what, name, partitions, code, needle) in topic_cases {
        let err = admin
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor: 1,
                config: None,
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?}",
            err.message()
        );
    }
    let err = admin
        .create_topic(CreateTopicRequest {
            name: "cfg".into(),
            partitions: 1,
            replication_factor: 1,
            config: Some(TopicConfig {
                cleanup_policy: Some("shred".into()),
                ..Default::default()
            }),
        })
        .await
        .expect_err("bad config");
    assert!(
        err.message().contains("cleanup.policy"),
        "{}",
        err.message()
    );

    // The broker still serves, and the first three records are intact at their offsets.
    let mut broker = broker;
    assert!(broker.is_running(), "broker died; log:\n{}", broker.log());
    let f = data
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await?
        .into_inner();
    let records: Vec<(i64, Bytes)> = runnel_integration::records(&f.batches)?
        .into_iter()
        .map(|r| (r.offset, r.value.expect("value")))
        .collect();
    assert_eq!(
        records,
        vec![
            (0, Bytes::from("a")),
            (1, Bytes::from("b")),
            (2, Bytes::from("c"))
        ]
    );
    let latest = data
        .list_offsets(ListOffsetsRequest {
            topic: "orders".into(),
            spec: OffsetSpec::Latest as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        latest
            .partitions
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![3, 0]
    );
    // And it still accepts good data.
    let next = data
        .produce(produce("orders", 0, batch(&["d"])))
        .await?
        .into_inner();
    assert_eq!(next.base_offset, 3);
    Ok(())
}
