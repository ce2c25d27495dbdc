//! The `Broker` service: produce, fetch, subscribe, offsets, metadata.

use super::status;
use crate::broker::{now_ms, Acks, Broker};
use crate::error::BrokerError;
use crate::storage::Storage;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use runnel_codec::{BatchBuilder, Compression};
use runnel_proto::v1::broker_server::Broker as BrokerRpc;
use runnel_proto::v1::{
    self as pb, ErrorStatus, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, PartitionOffset, ProduceRequest, ProduceResponse,
    SubscribeRequest,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Produce requests one ProduceStream keeps in flight before it stops reading more.
const MAX_IN_FLIGHT_PER_STREAM: usize = 1024;
/// Default and cap of a fetch's `max_bytes`.
const DEFAULT_FETCH_BYTES: usize = 1 << 20;
const MAX_FETCH_BYTES: usize = 32 << 20;
/// Longest long-poll a fetch may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The `runnel.v1.Broker` service.
#[derive(Debug)]
pub struct BrokerService<S: Storage> {
    broker: Arc<Broker<S>>,
}

impl<S: Storage> BrokerService<S> {
    /// Serves `broker`.
    pub fn new(broker: Arc<Broker<S>>) -> Self {
        Self { broker }
    }
}

fn acks_of(a: i32) -> Result<Acks, BrokerError> {
    match pb::Acks::try_from(a) {
        Ok(pb::Acks::None) => Ok(Acks::None),
        Ok(pb::Acks::Leader) => Ok(Acks::Leader),
        Ok(pb::Acks::All | pb::Acks::Unspecified) => Ok(Acks::All),
        Err(_) => Err(BrokerError::InvalidRequest(format!(
            "unknown acks value {a}"
        ))),
    }
}

/// The batches of a request: the client's own, or one the broker builds from plain records.
fn batches_of(req: &ProduceRequest) -> Result<Vec<Bytes>, BrokerError> {
    let log_err = |e| {
        BrokerError::log(
            &req.topic,
            req.partition,
            crate::log::LogError::InvalidBatch(e),
        )
    };
    let size = req.batches.len()
        + req
            .records
            .iter()
            .map(|r| {
                r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len())
            })
            .sum::<usize>();
    if size > super::MAX_PRODUCE_BYTES {
        return Err(BrokerError::RequestTooLarge {
            size,
            max: super::MAX_PRODUCE_BYTES,
        });
    }
    match (req.batches.is_empty(), req.records.is_empty()) {
        (false, false) => Err(BrokerError::InvalidRequest(
            "a produce request carries either `batches` or `records`, not both".into(),
        )),
        (true, true) => Err(BrokerError::log(
            &req.topic,
            req.partition,
            crate::log::LogError::EmptyProduce,
        )),
        (false, true) => runnel_codec::split_batches(&req.batches)
            .map(|r| r.map(|slice| req.batches.slice_ref(slice)).map_err(log_err))
            .collect(),
        (true, false) => {
            let now = now_ms();
            let mut b = BatchBuilder::new(Compression::None, now);
            for r in &req.records {
                let headers: Vec<runnel_codec::Header> = r
                    .headers
                    .iter()
                    .map(|h| runnel_codec::Header {
                        key: h.key.clone(),
                        value: h.value.clone(),
                    })
                    .collect();
                let ts = if r.timestamp_ms > 0 {
                    r.timestamp_ms
                } else {
                    now
                };
                b.append(ts, r.key.as_deref(), r.value.as_deref(), &headers);
            }
            Ok(vec![b.build().map_err(log_err)?])
        }
    }
}

fn response(req_topic: &str, partition: i32, correlation_id: u64) -> ProduceResponse {
    ProduceResponse {
        correlation_id,
        topic: req_topic.to_string(),
        partition,
        base_offset: -1,
        last_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
        error: None,
    }
}

fn fill(mut r: ProduceResponse, o: &crate::log::AppendOutcome) -> ProduceResponse {
    r.base_offset = o.base_offset;
    r.last_offset = o.last_offset;
    r.log_append_time_ms = o.log_append_time_ms;
    r.log_start_offset = o.log_start_offset;
    r
}

impl<S: Storage> BrokerService<S> {
    /// Queues one streamed request's append now; the returned future resolves to its answer.
    fn produce_one(&self, req: ProduceRequest) -> BoxFuture<'static, ProduceResponse> {
        let base = response(&req.topic, req.partition, req.correlation_id);
        let broker = self.broker.clone();
        let failed = move |e: BrokerError, base: ProduceResponse| {
            let s = status(&broker, "ProduceStream", e);
            ProduceResponse {
                error: Some(ErrorStatus {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                }),
                ..base
            }
        };
        let acks = match acks_of(req.acks) {
            Ok(a) => a,
            Err(e) => return futures::future::ready(failed(e, base)).boxed(),
        };
        let pending =
            batches_of(&req).and_then(|b| self.broker.queue_append(&req.topic, req.partition, &b));
        async move {
            let acked = match pending {
                Ok(p) => p.acked(acks).await,
                Err(e) => Err(e),
            };
            match (acked, acks) {
                (Err(e), Acks::None) => {
                    tracing::debug!(error = %e, "acks=0 produce failed");
                    base
                }
                (Err(e), _) => failed(e, base),
                (Ok(_), Acks::None) => base,
                (Ok(o), _) => fill(base, &o),
            }
        }
        .boxed()
    }
}

type ResponseStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S: Storage> BrokerRpc for BrokerService<S> {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let req = request.into_inner();
        let acks = acks_of(req.acks).map_err(|e| status(&self.broker, "Produce", e))?;
        let base = response(&req.topic, req.partition, req.correlation_id);
        let result = match batches_of(&req) {
            Ok(batches) => {
                self.broker
                    .produce(&req.topic, req.partition, &batches, acks)
                    .await
            }
            Err(e) => Err(e),
        };
        match (result, acks) {
            (Ok(_), Acks::None) => Ok(Response::new(base)),
            (Err(e), Acks::None) => {
                tracing::debug!(error = %e, "acks=0 produce failed");
                Ok(Response::new(base))
            }
            (Ok(o), _) => Ok(Response::new(fill(base, &o))),
            (Err(e), _) => Err(status(&self.broker, "Produce", e)),
        }
    }

    type ProduceStreamStream = ResponseStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT_PER_STREAM);
        let this = BrokerService {
            broker: self.broker.clone(),
        };
        let mut shutdown = self.broker.shutdown_signal();
        tokio::spawn(async move {
            let mut pending = FuturesOrdered::new();
            let mut reading = true;
            while reading || !pending.is_empty() {
                tokio::select! {
                    biased;
                    Some(resp) = pending.next(), if !pending.is_empty() => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    _ = shutdown.changed(), if reading => {
                        // Stop taking requests; those in flight are still answered.
                        reading = false;
                    }
                    msg = input.message(), if reading && pending.len() < MAX_IN_FLIGHT_PER_STREAM => {
                        match msg {
                            Ok(Some(req)) => pending.push_back(this.produce_one(req)),
                            Ok(None) => reading = false,
                            Err(e) => {
                                tracing::debug!(error = %e, "produce stream ended by the client");
                                reading = false;
                            }
                        }
                    }
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
        let max_bytes = if req.max_bytes > 0 {
            (req.max_bytes as usize).min(MAX_FETCH_BYTES)
        } else {
            DEFAULT_FETCH_BYTES
        };
        let max_wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT);
        let out = self
            .broker
            .fetch(
                &req.topic,
                req.partition,
                req.offset,
                max_bytes,
                req.min_bytes.max(0) as usize,
                max_wait,
            )
            .await
            .map_err(|e| status(&self.broker, "Fetch", e))?;
        Ok(Response::new(FetchResponse {
            topic: req.topic,
            partition: req.partition,
            high_watermark: out.high_watermark,
            log_start_offset: out.log_start_offset,
            batches: concat(out.batches),
            next_offset: out.next_offset,
        }))
    }

    type SubscribeStream = ResponseStream<FetchResponse>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let max_bytes = if req.max_bytes > 0 {
            (req.max_bytes as usize).min(MAX_FETCH_BYTES)
        } else {
            DEFAULT_FETCH_BYTES
        };
        // Fail fast on an unknown partition or a bad offset, before the stream starts.
        let first = self
            .broker
            .fetch(
                &req.topic,
                req.partition,
                req.offset,
                max_bytes,
                0,
                Duration::ZERO,
            )
            .await
            .map_err(|e| status(&self.broker, "Subscribe", e))?;
        let (tx, rx) = mpsc::channel(4);
        let broker = self.broker.clone();
        let mut shutdown = broker.shutdown_signal();
        tokio::spawn(async move {
            let mut out = first;
            loop {
                let offset = out.next_offset;
                if !out.batches.is_empty() {
                    let msg = FetchResponse {
                        topic: req.topic.clone(),
                        partition: req.partition,
                        high_watermark: out.high_watermark,
                        log_start_offset: out.log_start_offset,
                        batches: concat(std::mem::take(&mut out.batches)),
                        next_offset: out.next_offset,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if *shutdown.borrow_and_update() {
                    return;
                }
                let next = broker.fetch(
                    &req.topic,
                    req.partition,
                    offset,
                    max_bytes,
                    1,
                    Duration::from_secs(1),
                );
                out = tokio::select! {
                    r = next => match r {
                        Ok(o) => o,
                        Err(e) => {
                            let _ = tx.send(Err(status(&broker, "Subscribe", e))).await;
                            return;
                        }
                    },
                    _ = shutdown.changed() => return,
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let err = |e| status(&self.broker, "ListOffsets", e);
        let spec = OffsetSpec::try_from(req.spec).unwrap_or(OffsetSpec::Unspecified);
        if spec == OffsetSpec::Unspecified {
            return Err(err(BrokerError::InvalidRequest(
                "ListOffsets needs a spec: earliest, latest or timestamp".into(),
            )));
        }
        let partitions = if req.partitions.is_empty() {
            let md = self.broker.cluster_metadata();
            let t = crate::metadata::find_topic(&md, &req.topic)
                .ok_or_else(|| err(BrokerError::UnknownTopic(req.topic.clone())))?;
            t.partitions.iter().map(|p| p.partition).collect()
        } else {
            req.partitions.clone()
        };
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let (log, _) = self.broker.leader_log(&req.topic, p).map_err(err)?;
            let s = log.summary();
            let (offset, timestamp_ms) = match spec {
                OffsetSpec::Earliest => (s.log_start_offset, -1),
                OffsetSpec::Latest => (s.high_watermark, -1),
                _ => log
                    .offset_for_timestamp(req.timestamp_ms)
                    .map_err(|e| err(BrokerError::log(&req.topic, p, e)))?
                    .unwrap_or((-1, -1)),
            };
            out.push(PartitionOffset {
                partition: p,
                offset,
                timestamp_ms,
                log_start_offset: s.log_start_offset,
                high_watermark: s.high_watermark,
            });
        }
        Ok(Response::new(ListOffsetsResponse {
            topic: req.topic,
            partitions: out,
        }))
    }

    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let req = request.into_inner();
        let md = self.broker.cluster_metadata();
        let topics = if req.topics.is_empty() {
            md.topics
        } else {
            let mut v = Vec::new();
            for name in &req.topics {
                match crate::metadata::find_topic(&md, name) {
                    Some(t) => v.push(t.clone()),
                    None => {
                        return Err(status(
                            &self.broker,
                            "Metadata",
                            BrokerError::UnknownTopic(name.clone()),
                        ))
                    }
                }
            }
            v
        };
        let brokers = if md.brokers.is_empty() {
            vec![self.broker.self_info()]
        } else {
            md.brokers
        };
        Ok(Response::new(MetadataResponse {
            epoch: md.epoch,
            brokers,
            topics,
            broker_id: self.broker.settings().broker_id,
            standalone: self.broker.settings().standalone,
        }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let id = self
            .broker
            .init_producer_id()
            .map_err(|e| status(&self.broker, "InitProducerId", e))?;
        Ok(Response::new(InitProducerIdResponse {
            producer_id: id,
            producer_epoch: 0,
        }))
    }
}

/// Concatenates stored batches into one buffer (one copy; a single batch is passed through).
fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut v = Vec::with_capacity(batches.iter().map(|b| b.len()).sum());
            for b in &batches {
                v.extend_from_slice(b);
            }
            Bytes::from(v)
        }
    }
}
