//! The producer's pipeline and retry logic against an in-process fake broker that can inject
//! faults a real broker cannot produce on demand: a stream cut right after an append (so the
//! resend is a duplicate), an error answer for one request in the middle of a pipeline.
//!
//! The real broker is exercised by the workspace's integration tests.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use runnel_client::{
    Acks, Consumer, Error, Partitions, Producer, ProducerConfig, ProducerRecord, StartOffset,
};
use runnel_codec::{decode_batch, read_header};
use runnel_proto::v1::broker_server::{Broker, BrokerServer};
use runnel_proto::v1::{
    BrokerInfo, ErrorStatus, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, PartitionMetadata, PartitionOffset, ProduceRequest,
    ProduceResponse, SubscribeRequest, TopicMetadata,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Log {
    batches: Vec<(i64, Bytes)>,
    next_offset: i64,
    /// producer id → (base sequence, record count, base offset) of its last batch.
    producers: HashMap<i64, (i32, i32, i64)>,
}

#[derive(Default)]
struct Faults {
    /// Append the Nth produce request (1-based, over all streams), then cut the stream
    /// without answering it.
    cut_after_append: Option<usize>,
    /// Answer the Nth produce request with this error, without appending.
    fail_request: Option<(usize, tonic::Code)>,
    /// Answer every produce request with this error.
    fail_all: Option<tonic::Code>,
}

#[derive(Default)]
struct FakeBroker {
    address: Mutex<String>,
    topics: Mutex<HashMap<String, Vec<Log>>>,
    next_producer_id: AtomicUsize,
    requests: AtomicUsize,
    streams: AtomicUsize,
    faults: Mutex<Faults>,
}

impl FakeBroker {
    fn append(&self, req: &ProduceRequest) -> Result<(i64, i64), Status> {
        let header =
            read_header(&req.batches).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut topics = self.topics.lock().expect("lock");
        let log = topics
            .get_mut(&req.topic)
            .and_then(|t| t.get_mut(req.partition.unwrap_or(0) as usize))
            .ok_or_else(|| {
                Status::not_found(format!("unknown `{}`/{:?}", req.topic, req.partition))
            })?;
        if header.producer_id >= 0 {
            if let Some(&(seq, count, base)) = log.producers.get(&header.producer_id) {
                if header.base_sequence == seq {
                    return Ok((base, base + i64::from(count) - 1));
                }
                if header.base_sequence != seq + count {
                    return Err(Status::aborted(format!(
                        "out of order sequence {}, expected {}",
                        header.base_sequence,
                        seq + count
                    )));
                }
            } else if header.base_sequence != 0 {
                return Err(Status::aborted(format!(
                    "out of order sequence {}, expected 0",
                    header.base_sequence
                )));
            }
        }
        let base = log.next_offset;
        let mut bytes = req.batches.to_vec();
        bytes[0..8].copy_from_slice(&base.to_be_bytes());
        log.batches.push((base, Bytes::from(bytes)));
        log.next_offset += i64::from(header.records_count);
        if header.producer_id >= 0 {
            log.producers.insert(
                header.producer_id,
                (header.base_sequence, header.records_count, base),
            );
        }
        Ok((base, log.next_offset - 1))
    }

    /// Every value of a partition, in offset order, checking offsets are contiguous.
    fn values(&self, topic: &str, partition: usize) -> Vec<Bytes> {
        let topics = self.topics.lock().expect("lock");
        let mut out = Vec::new();
        let mut expected = 0;
        for (_, batch) in &topics[topic][partition].batches {
            let (_, records) = decode_batch(batch).expect("valid batch");
            for r in records {
                assert_eq!(r.offset, expected, "offsets are contiguous");
                expected += 1;
                out.push(r.value.expect("value"));
            }
        }
        out
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
struct Service(Arc<FakeBroker>);

#[tonic::async_trait]
impl Broker for Service {
    async fn produce(
        &self,
        _: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        self.0.streams.fetch_add(1, Ordering::SeqCst);
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let broker = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = input.message().await {
                let n = broker.requests.fetch_add(1, Ordering::SeqCst) + 1;
                let (cut, fail) = {
                    let f = broker.faults.lock().expect("lock");
                    (
                        f.cut_after_append == Some(n),
                        f.fail_request
                            .filter(|(at, _)| *at == n)
                            .map(|(_, c)| c)
                            .or(f.fail_all),
                    )
                };
                let mut resp = ProduceResponse {
                    correlation_id: req.correlation_id,
                    topic: req.topic.clone(),
                    partition: req.partition.unwrap_or(0),
                    base_offset: -1,
                    last_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: 0,
                    ..Default::default()
                };
                let result = match fail {
                    Some(code) => Err(Status::new(code, "injected failure")),
                    None => broker.append(&req),
                };
                if cut {
                    let _ = tx
                        .send(Err(Status::unavailable("injected stream cut")))
                        .await;
                    return;
                }
                match result {
                    Ok((base, last)) => {
                        resp.base_offset = base;
                        resp.last_offset = last;
                    }
                    Err(s) => {
                        resp.error = Some(ErrorStatus {
                            code: s.code() as i32,
                            message: s.message().to_owned(),
                        })
                    }
                }
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let req = request.into_inner();
        let (batches, next, hw) = {
            let topics = self.0.topics.lock().expect("lock");
            let log = topics
                .get(&req.topic)
                .and_then(|t| t.get(req.partition as usize))
                .ok_or_else(|| Status::not_found("unknown partition"))?;
            if req.offset > log.next_offset || req.offset < 0 {
                return Err(Status::out_of_range(format!(
                    "offset {} outside 0..{}",
                    req.offset, log.next_offset
                )));
            }
            let mut out = Vec::new();
            let mut next = req.offset;
            for (base, b) in &log.batches {
                let h = read_header(b).expect("stored batch");
                if h.last_offset() < req.offset {
                    continue;
                }
                if !out.is_empty() && out.len() + b.len() > req.max_bytes as usize {
                    break;
                }
                out.extend_from_slice(b);
                next = base + i64::from(h.last_offset_delta) + 1;
            }
            (out, next, log.next_offset)
        };
        if batches.is_empty() {
            tokio::time::sleep(Duration::from_millis(u64::from(req.max_wait_ms).min(50))).await;
        }
        Ok(Response::new(FetchResponse {
            topic: req.topic,
            partition: req.partition,
            high_watermark: hw,
            log_start_offset: 0,
            batches: batches.into(),
            next_offset: next,
            ..Default::default()
        }))
    }

    type SubscribeStream = BoxStream<FetchResponse>;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let topics = self.0.topics.lock().expect("lock");
        let t = topics
            .get(&req.topic)
            .ok_or_else(|| Status::not_found("unknown topic"))?;
        let partitions = t
            .iter()
            .enumerate()
            .filter(|(i, _)| req.partitions.is_empty() || req.partitions.contains(&(*i as i32)))
            .map(|(i, log)| PartitionOffset {
                partition: i as i32,
                offset: if req.spec == OffsetSpec::Earliest as i32 {
                    0
                } else {
                    log.next_offset
                },
                timestamp_ms: -1,
                log_start_offset: 0,
                high_watermark: log.next_offset,
            })
            .collect();
        Ok(Response::new(ListOffsetsResponse {
            topic: req.topic,
            partitions,
        }))
    }

    async fn metadata(
        &self,
        _: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let topics = self.0.topics.lock().expect("lock");
        Ok(Response::new(MetadataResponse {
            epoch: 1,
            brokers: vec![BrokerInfo {
                id: 1,
                address: self.0.address.lock().expect("lock").clone(),
                rack: String::new(),
            }],
            topics: topics
                .iter()
                .map(|(name, logs)| TopicMetadata {
                    name: name.clone(),
                    partitions: (0..logs.len() as i32)
                        .map(|p| PartitionMetadata {
                            partition: p,
                            leader: 1,
                            leader_epoch: 0,
                            replicas: vec![1],
                            isr: vec![1],
                        })
                        .collect(),
                    replication_factor: 1,
                    config: None,
                })
                .collect(),
            broker_id: 1,
            standalone: true,
        }))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Ok(Response::new(InitProducerIdResponse {
            producer_id: self.0.next_producer_id.fetch_add(1, Ordering::SeqCst) as i64 + 1000,
            producer_epoch: 0,
        }))
    }

    async fn find_coordinator(
        &self,
        _: Request<runnel_proto::v1::FindCoordinatorRequest>,
    ) -> Result<Response<runnel_proto::v1::FindCoordinatorResponse>, Status> {
        Err(Status::unimplemented(
            "this test broker coordinates no groups",
        ))
    }
}

/// Accepted connections; `serve_with_incoming` does not apply the builder's `tcp_nodelay`, so
/// without `with_nodelay` small answers wait for Nagle's algorithm (~40 ms stalls).
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    if std::env::var_os("FAKE_BROKER_NAGLE").is_some() {
        incoming
    } else {
        incoming.with_nodelay(Some(true))
    }
}

/// Starts a fake broker with `topics` on a free loopback port.
async fn start(topics: &[(&str, usize)]) -> (Arc<FakeBroker>, String) {
    let broker = Arc::new(FakeBroker::default());
    {
        let mut t = broker.topics.lock().expect("lock");
        for (name, n) in topics {
            t.insert(
                (*name).to_owned(),
                (0..*n).map(|_| Log::default()).collect(),
            );
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    *broker.address.lock().expect("lock") = address.clone();
    let service = Service(broker.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(BrokerServer::new(service))
            .serve_with_incoming(incoming(listener))
            .await
    });
    (broker, address)
}

fn config(address: &str) -> ProducerConfig {
    ProducerConfig {
        batch_size: 2048,
        linger: Duration::from_millis(2),
        ..ProducerConfig::new(address)
    }
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value-{i:06}"))
}

#[tokio::test]
async fn records_arrive_in_order_with_their_offsets() {
    let (broker, address) = start(&[("t", 3)]).await;
    let producer = Producer::connect(config(&address)).await.expect("connect");
    let mut futures = Vec::new();
    for i in 0..3000 {
        let record = ProducerRecord::new("t", value(i)).key(format!("key-{}", i % 17));
        futures.push(producer.send(record).await.expect("send"));
    }
    let mut next = [0i64; 3];
    for (i, f) in futures.into_iter().enumerate() {
        let m = f.await.expect("delivered");
        let key = format!("key-{}", i % 17);
        assert_eq!(
            m.partition,
            runnel_client::partitioner::partition_for_key(key.as_bytes(), 3)
        );
        assert_eq!(m.offset, next[m.partition as usize], "per-partition order");
        next[m.partition as usize] += 1;
    }
    producer.close().await;
    let total: usize = (0..3).map(|p| broker.values("t", p).len()).sum();
    assert_eq!(total, 3000);
    assert!(
        broker.requests.load(Ordering::SeqCst) > 3,
        "records were batched in several requests"
    );
}

#[tokio::test]
async fn a_cut_stream_is_resent_without_duplicates() {
    let (broker, address) = start(&[("t", 1)]).await;
    broker.faults.lock().expect("lock").cut_after_append = Some(3);
    let producer = Producer::connect(config(&address)).await.expect("connect");
    let mut futures = Vec::new();
    for i in 0..2000 {
        futures.push(
            producer
                .send(ProducerRecord::new("t", value(i)))
                .await
                .expect("send"),
        );
    }
    for (i, f) in futures.into_iter().enumerate() {
        let m = f.await.expect("delivered despite the cut");
        assert_eq!(m.offset, i as i64);
    }
    producer.close().await;
    let values = broker.values("t", 0);
    assert_eq!(
        values.len(),
        2000,
        "the resent batch was recognised as a duplicate"
    );
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v, &value(i));
    }
    assert!(
        broker.streams.load(Ordering::SeqCst) >= 2,
        "the producer reconnected"
    );
}

#[tokio::test]
async fn a_failed_batch_fails_its_records_and_later_batches_still_land_in_order() {
    let (broker, address) = start(&[("t", 1)]).await;
    broker.faults.lock().expect("lock").fail_request = Some((2, tonic::Code::InvalidArgument));
    let producer = Producer::connect(ProducerConfig {
        linger: Duration::from_millis(50),
        ..config(&address)
    })
    .await
    .expect("connect");
    let mut futures = Vec::new();
    for i in 0..2000 {
        futures.push(
            producer
                .send(ProducerRecord::new("t", value(i)))
                .await
                .expect("send"),
        );
    }
    producer.flush().await;
    let mut failed = Vec::new();
    let mut delivered = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        match f.await {
            Ok(m) => delivered.push((i, m.offset)),
            Err(e) => {
                assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
                assert!(e.to_string().contains("injected failure"), "{e}");
                assert!(e.to_string().contains("`t`/0"), "{e}");
                failed.push(i);
            }
        }
    }
    assert!(!failed.is_empty(), "the second batch failed");
    assert!(
        failed.windows(2).all(|w| w[1] == w[0] + 1),
        "one batch failed: {failed:?}"
    );
    // Batches of 2048 bytes hold well under 200 of these records: only the injected failure
    // failed, the batches behind it in the pipeline (refused as out of sequence) were resent.
    assert!(failed.len() < 200, "{} records failed", failed.len());
    let (n, first) = producer.delivery_failures();
    assert_eq!(n as usize, failed.len());
    assert!(first.is_some());
    producer.close().await;
    // Everything else landed, in order, with contiguous offsets (later batches were
    // re-numbered so the broker's sequence check accepted them).
    let values = broker.values("t", 0);
    let expected: Vec<Bytes> = delivered.iter().map(|(i, _)| value(*i)).collect();
    assert_eq!(values, expected);
    for (k, (_, offset)) in delivered.iter().enumerate() {
        assert_eq!(*offset, k as i64);
    }
}

#[tokio::test]
async fn acks_zero_resolves_without_offsets() {
    let (broker, address) = start(&[("t", 1)]).await;
    let producer = Producer::connect(ProducerConfig {
        acks: Acks::None,
        idempotent: false,
        ..config(&address)
    })
    .await
    .expect("connect");
    let f = producer
        .send(ProducerRecord::new("t", "x"))
        .await
        .expect("send");
    let m = f.await.expect("shipped");
    assert_eq!(m.offset, -1);
    producer.close().await;
    assert_eq!(broker.values("t", 0).len(), 1);
}

#[tokio::test]
async fn unknown_topics_and_partitions_are_named() {
    let (_broker, address) = start(&[("t", 2)]).await;
    let producer = Producer::connect(config(&address)).await.expect("connect");
    let e = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .expect_err("unknown topic");
    assert!(matches!(e, Error::UnknownTopic(_)), "{e}");
    assert_eq!(e.to_string(), "topic `nope` does not exist (NOT_FOUND)");
    let e = producer
        .send(ProducerRecord::new("t", "x").partition(7))
        .await
        .expect_err("unknown partition");
    assert_eq!(
        e.to_string(),
        "topic `t` has 2 partitions, asked for partition 7 (NOT_FOUND)"
    );
    producer.close().await;
}

#[tokio::test]
async fn consumer_reads_back_in_order_and_reports_out_of_range() {
    let (_broker, address) = start(&[("t", 2)]).await;
    let producer = Producer::connect(config(&address)).await.expect("connect");
    for i in 0..500 {
        producer
            .send(ProducerRecord::new("t", value(i)).partition((i % 2) as i32))
            .await
            .expect("send");
    }
    producer.close().await;

    let mut consumer = Consumer::connect(&address).await.expect("connect");
    consumer
        .assign("t", Partitions::All, StartOffset::Offset(10))
        .await
        .expect("assign");
    let mut seen: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    while seen[0].len() + seen[1].len() < 480 {
        let records = consumer.poll(Duration::from_secs(5)).await.expect("poll");
        assert!(!records.is_empty(), "records arrive before the timeout");
        for r in records {
            let i = r.offset as usize * 2 + r.partition as usize;
            assert_eq!(r.value.as_ref(), Some(&value(i)));
            seen[r.partition as usize].push(r.offset);
        }
    }
    for offsets in &seen {
        assert_eq!(offsets, &(10..250).collect::<Vec<i64>>());
    }
    assert_eq!(consumer.position("t", 0), Some(250));
    assert!(consumer
        .poll(Duration::from_millis(200))
        .await
        .expect("poll")
        .is_empty());

    let mut consumer = Consumer::connect(&address).await.expect("connect");
    consumer
        .assign("t", vec![1], StartOffset::Offset(1000))
        .await
        .expect("assign");
    let e = consumer
        .poll(Duration::from_secs(5))
        .await
        .expect_err("out of range");
    assert_eq!(
        e.to_string(),
        "offset 1000 is out of range for `t`/1: the log holds offsets 0..250 (OUT_OF_RANGE)"
    );
}

#[tokio::test]
async fn retriable_errors_end_in_a_delivery_timeout_naming_the_last_error() {
    let (broker, address) = start(&[("t", 1)]).await;
    broker.faults.lock().expect("lock").fail_all = Some(tonic::Code::Unavailable);
    let producer = Producer::connect(ProducerConfig {
        delivery_timeout: Duration::from_millis(700),
        ..config(&address)
    })
    .await
    .expect("connect");
    let f = producer
        .send(ProducerRecord::new("t", "x"))
        .await
        .expect("send");
    let e = f.await.expect_err("never acknowledged");
    assert!(matches!(e, Error::DeliveryTimeout { .. }), "{e}");
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert!(
        broker.requests.load(Ordering::SeqCst) >= 3,
        "the batch was retried"
    );
    producer.close().await;
}

#[tokio::test]
async fn a_deleted_topic_fails_fast_after_a_metadata_refresh() {
    let (broker, address) = start(&[("t", 1)]).await;
    let producer = Producer::connect(config(&address)).await.expect("connect");
    producer
        .send(ProducerRecord::new("t", "before"))
        .await
        .expect("send")
        .await
        .expect("delivered");
    broker.topics.lock().expect("lock").remove("t");
    let started = std::time::Instant::now();
    let f = producer
        .send(ProducerRecord::new("t", "after"))
        .await
        .expect("send");
    let e = f.await.expect_err("topic is gone");
    assert!(matches!(e, Error::UnknownTopic(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed long before the delivery timeout"
    );
    producer.close().await;
}
