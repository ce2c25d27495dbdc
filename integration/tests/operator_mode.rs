//! A broker started as a pod of a Cluster (operator mode, no `--standalone`): it learns its id
//! from the pod name, serves only the metadata the operator sends with `Admin.ApplyMetadata`,
//! ignores older epochs, and keeps the newest across a restart.

use runnel_integration::Broker;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    Acks, ApplyMetadataRequest, BrokerInfo, ClusterMetadata, CreateTopicRequest,
    DescribePartitionsRequest, InitProducerIdRequest, MetadataRequest, PartitionMetadata,
    ProduceRequest, ProducerIdBlock, Record, TopicMetadata,
};
use tonic::transport::Channel;
use tonic::Code;

fn metadata(epoch: i64, me: &str, topics: Vec<TopicMetadata>) -> ClusterMetadata {
    ClusterMetadata {
        epoch,
        brokers: vec![
            BrokerInfo {
                id: 0,
                address: "198.18.0.2:9092".into(),
                rack: String::new(),
            },
            BrokerInfo {
                id: 1,
                address: me.into(),
                rack: String::new(),
            },
        ],
        topics,
        ..Default::default()
    }
}

/// `orders`: partition 0 led by broker 1 (this one), partition 1 by broker 0. Broker 0 does
/// not run: it is in no ISR but its own, so acks=all on partition 0 needs broker 1 alone.
fn orders() -> TopicMetadata {
    TopicMetadata {
        name: "orders".into(),
        partitions: vec![
            PartitionMetadata {
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                replicas: vec![1, 0],
                isr: vec![1],
            },
            PartitionMetadata {
                partition: 1,
                leader: 0,
                leader_epoch: 0,
                replicas: vec![0, 1],
                isr: vec![0],
            },
        ],
        replication_factor: 2,
        config: None,
    }
}

fn produce(partition: i32, value: &str) -> ProduceRequest {
    ProduceRequest {
        topic: "orders".into(),
        partition: Some(partition),
        acks: Acks::All as i32,
        records: vec![Record {
            value: Some(value.as_bytes().to_vec().into()),
            ..Record::default()
        }],
        ..ProduceRequest::default()
    }
}

async fn apply(
    admin: &mut AdminClient<Channel>,
    md: ClusterMetadata,
) -> anyhow::Result<(bool, i64)> {
    let r = admin
        .apply_metadata(ApplyMetadataRequest { metadata: Some(md) })
        .await?
        .into_inner();
    Ok((r.applied, r.current_epoch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mode_serves_only_applied_metadata_newest_epoch_wins_and_persists(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start_as_pod(&dir.path().join("data"), "events-broker-1")?;
    let me = broker.address.clone();
    let mut admin = AdminClient::connect(broker.endpoint()).await?;
    let mut client = BrokerClient::connect(broker.endpoint()).await?;

    let md = client
        .metadata(MetadataRequest::default())
        .await?
        .into_inner();
    assert_eq!((md.broker_id, md.standalone, md.epoch), (1, false, 0));
    assert!(md.topics.is_empty());

    // Topics come from the operator only.
    let err = admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 1,
            ..CreateTopicRequest::default()
        })
        .await
        .expect_err("CreateTopic in operator mode");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = client
        .produce(produce(0, "x"))
        .await
        .expect_err("unknown topic");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("orders"), "{err:?}");

    assert_eq!(
        apply(&mut admin, metadata(4, &me, vec![orders()])).await?,
        (true, 4)
    );
    // The first metadata since it started (with nothing persisted: a new broker, or one whose
    // disk was lost): it declines to lead a replicated partition under the epoch it is handed,
    // since it may hold none of its records; the controller elects again.
    let err = client
        .produce(produce(0, "x"))
        .await
        .expect_err("declined under its first epoch");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let mut elected = orders();
    elected.partitions[0].leader_epoch = 1;
    assert_eq!(
        apply(&mut admin, metadata(5, &me, vec![elected.clone()])).await?,
        (true, 5)
    );
    let r = client.produce(produce(0, "first")).await?.into_inner();
    assert_eq!(r.base_offset, 0);
    // Partition 1 is led by broker 0: refused, naming the leader.
    let err = client
        .produce(produce(1, "x"))
        .await
        .expect_err("not the leader");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("198.18.0.2:9092"), "{err:?}");

    // An older epoch is ignored.
    assert_eq!(
        apply(&mut admin, metadata(3, &me, vec![])).await?,
        (false, 5)
    );
    let md = client
        .metadata(MetadataRequest::default())
        .await?
        .into_inner();
    assert_eq!((md.epoch, md.topics.len()), (5, 1));

    // After a restart: the same epoch, topic and records.
    broker.terminate()?;
    broker.restart()?;
    let mut admin = AdminClient::connect(broker.endpoint()).await?;
    let mut client = BrokerClient::connect(broker.endpoint()).await?;
    let md = client
        .metadata(MetadataRequest::default())
        .await?
        .into_inner();
    assert_eq!((md.epoch, md.broker_id), (5, 1));
    assert_eq!(md.topics, vec![elected]);
    // A leader of a replicated partition that restarted leads again only under a new leader
    // epoch from the controller (it may have lost batches its followers hold).
    let err = client
        .produce(produce(0, "x"))
        .await
        .expect_err("a restarted leader under its old epoch");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let describe = admin
        .describe_partitions(DescribePartitionsRequest::default())
        .await?
        .into_inner();
    let p0 = describe
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .expect("partition 0");
    assert!(!p0.is_leader && p0.leader_epoch == 1, "{p0:?}");
    let mut again = orders();
    again.partitions[0].leader_epoch = 2;
    assert_eq!(
        apply(&mut admin, metadata(6, &me, vec![again])).await?,
        (true, 6)
    );
    let r = client.produce(produce(0, "second")).await?.into_inner();
    assert_eq!(r.base_offset, 1, "the first record survived the restart");

    // A newer epoch without the topic: it is no longer served.
    assert_eq!(
        apply(&mut admin, metadata(7, &me, vec![])).await?,
        (true, 7)
    );
    let err = client
        .produce(produce(0, "x"))
        .await
        .expect_err("topic gone");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    Ok(())
}

async fn init_producer_id(client: &mut BrokerClient<Channel>) -> Result<i64, tonic::Status> {
    client
        .init_producer_id(InitProducerIdRequest::default())
        .await
        .map(|r| r.into_inner().producer_id)
}

/// Producer ids in a cluster come from blocks the controller hands each broker (Kafka's KIP-730):
/// two brokers never hand out the same id, a used-up block is refused until the next arrives, a
/// restart never hands out an id twice, and a batch with an id beyond every block is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_come_from_the_controllers_blocks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut b0 = Broker::start_as_pod(&dir.path().join("b0"), "events-broker-0")?;
    let b1 = Broker::start_as_pod(&dir.path().join("b1"), "events-broker-1")?;
    let blocks = |b0: (i64, i64), b1: (i64, i64), end| {
        let mut md = metadata(1, &b1_address(), vec![orders()]);
        md.producer_id_blocks = vec![
            ProducerIdBlock {
                broker_id: 0,
                first_id: b0.0,
                count: b0.1,
            },
            ProducerIdBlock {
                broker_id: 1,
                first_id: b1.0,
                count: b1.1,
            },
        ];
        md.producer_id_end = end;
        md
    };
    fn b1_address() -> String {
        "198.18.0.3:9092".into()
    }
    let mut c0 = BrokerClient::connect(b0.endpoint()).await?;
    let mut c1 = BrokerClient::connect(b1.endpoint()).await?;
    // Before the controller's metadata, no ids.
    let e = init_producer_id(&mut c0).await.expect_err("no block yet");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let mut admin0 = AdminClient::connect(b0.endpoint()).await?;
    let left = |d: &runnel_proto::v1::DescribePartitionsResponse| {
        (
            d.producer_id_block.as_ref().map(|b| (b.first_id, b.count)),
            d.producer_ids_left,
        )
    };

    // Nothing persisted (new brokers, or disks that were lost): the first block each is sent
    // may be one it used before, so it counts as used up and the controller sends the next.
    let first = blocks((0, 3), (3, 1000), 1003);
    for b in [&b0, &b1] {
        let mut admin = AdminClient::connect(b.endpoint()).await?;
        assert!(apply(&mut admin, first.clone()).await?.0);
    }
    let e = init_producer_id(&mut c0).await.expect_err("first block");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let d = admin0
        .describe_partitions(DescribePartitionsRequest::default())
        .await?
        .into_inner();
    assert_eq!(left(&d), (Some((0, 3)), 0));

    let mut md = blocks((1003, 3), (1006, 1000), 2006);
    md.epoch = 2;
    // Broker 1 leads orders/0 under the epoch elected after it declined its first.
    md.topics[0].partitions[0].leader_epoch = 1;
    for b in [&b0, &b1] {
        let mut admin = AdminClient::connect(b.endpoint()).await?;
        assert!(apply(&mut admin, md.clone()).await?.0);
    }
    let from0: Vec<i64> = vec![
        init_producer_id(&mut c0).await?,
        init_producer_id(&mut c0).await?,
        init_producer_id(&mut c0).await?,
    ];
    let from1 = vec![
        init_producer_id(&mut c1).await?,
        init_producer_id(&mut c1).await?,
    ];
    assert_eq!(from0, vec![1003, 1004, 1005]);
    assert_eq!(from1, vec![1006, 1007]);
    // Broker 0's block is used up: refused, and it says so to the controller.
    let e = init_producer_id(&mut c0).await.expect_err("used up");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("block"), "{e:?}");
    let d = admin0
        .describe_partitions(DescribePartitionsRequest::default())
        .await?
        .into_inner();
    assert_eq!(left(&d), (Some((1003, 3)), 0));

    // A batch with an id no block holds is refused.
    let mut batch = runnel_codec::BatchBuilder::new(runnel_codec::Compression::None, 0)
        .with_producer(runnel_codec::ProducerInfo {
            producer_id: 5_000,
            producer_epoch: 0,
            base_sequence: 0,
        });
    batch.append(0, None, Some(b"v"), &[]);
    let e = c1
        .produce(ProduceRequest {
            topic: "orders".into(),
            partition: Some(0),
            acks: Acks::All as i32,
            batches: batch.build()?,
            ..ProduceRequest::default()
        })
        .await
        .expect_err("never issued");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // The next block arrives; after a restart broker 0 goes on from it without repeating.
    let mut next = blocks((2006, 1000), (1006, 1000), 3006);
    next.epoch = 3;
    next.topics = md.topics.clone();
    assert!(apply(&mut admin0, next).await?.0);
    assert_eq!(init_producer_id(&mut c0).await?, 2006);
    b0.terminate()?;
    b0.restart()?;
    let mut c0 = BrokerClient::connect(b0.endpoint()).await?;
    let after = init_producer_id(&mut c0).await?;
    assert!(
        after > 2006 && after < 3006,
        "after a restart the broker skips what it may have handed out: got {after}"
    );
    Ok(())
}
