//! A broker started as a pod of a Cluster (operator mode, no `--standalone`): it learns its id
//! from the pod name, serves only the metadata the operator sends with `Admin.ApplyMetadata`,
//! ignores older epochs, and keeps the newest across a restart.

use runnel_integration::Broker;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    Acks, ApplyMetadataRequest, BrokerInfo, ClusterMetadata, CreateTopicRequest, MetadataRequest,
    PartitionMetadata, ProduceRequest, Record, TopicMetadata,
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
    }
}

/// `orders`: partition 0 led by broker 1 (this one), partition 1 by broker 0.
fn orders() -> TopicMetadata {
    TopicMetadata {
        name: "orders".into(),
        partitions: vec![
            PartitionMetadata {
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                replicas: vec![1, 0],
                isr: vec![1, 0],
            },
            PartitionMetadata {
                partition: 1,
                leader: 0,
                leader_epoch: 0,
                replicas: vec![0, 1],
                isr: vec![0, 1],
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
        apply(&mut admin, metadata(5, &me, vec![orders()])).await?,
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
    assert_eq!(md.topics, vec![orders()]);
    let r = client.produce(produce(0, "second")).await?.into_inner();
    assert_eq!(r.base_offset, 1, "the first record survived the restart");

    // A newer epoch without the topic: it is no longer served.
    assert_eq!(
        apply(&mut admin, metadata(6, &me, vec![])).await?,
        (true, 6)
    );
    let err = client
        .produce(produce(0, "x"))
        .await
        .expect_err("topic gone");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    Ok(())
}
