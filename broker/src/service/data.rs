//! The `Broker` service: produce, fetch, subscribe, offsets, metadata.

use super::status;
use crate::broker::{now_ms, Acks, Broker, PendingAppend};
use crate::error::BrokerError;
use crate::groups::Coordinator;
use crate::log::ReadOutcome;
use crate::storage::Storage;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use runnel_proto::v1::broker_server::Broker as BrokerRpc;
use runnel_proto::v1::{
    self as pb, ErrorStatus, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetSpec, PartitionOffset,
    ProduceRequest, ProduceResponse, RecordFormat, RecordPlacement, SubscribeRequest,
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
    coordinator: Arc<Coordinator<S>>,
}

impl<S: Storage> BrokerService<S> {
    /// Serves `broker`; `coordinator` answers FindCoordinator.
    pub fn new(coordinator: Arc<Coordinator<S>>) -> Self {
        Self {
            broker: coordinator.broker().clone(),
            coordinator,
        }
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

/// One append of a produce request: the batches for one partition, and (for plain records)
/// which of the request's records they hold, in order.
#[derive(Debug)]
struct Append {
    partition: i32,
    batches: Vec<Bytes>,
    records: Vec<usize>,
}

/// The appends a request makes: its own batches on one partition, or the batches the broker
/// builds from plain records, one per partition they go to.
fn plan<S: Storage>(broker: &Broker<S>, req: &ProduceRequest) -> Result<Vec<Append>, BrokerError> {
    if req.topic == crate::groups::OFFSETS_TOPIC {
        return Err(BrokerError::InvalidRequest(format!(
            "`{}` is Runnel's internal topic of committed offsets: clients commit with Groups.CommitOffsets, they do not produce to it",
            req.topic
        )));
    }
    let partition = req.partition.unwrap_or(0);
    let log_err = |p, e| BrokerError::log(&req.topic, p, crate::log::LogError::InvalidBatch(e));
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
            partition,
            crate::log::LogError::EmptyProduce,
        )),
        (false, true) => {
            let batches = runnel_codec::split_batches(&req.batches)
                .enumerate()
                .map(|(i, r)| {
                    r.map(|slice| req.batches.slice_ref(slice)).map_err(|e| {
                        BrokerError::log(
                            &req.topic,
                            partition,
                            crate::log::LogError::InBatch {
                                index: i,
                                count: i + 1,
                                source: Box::new(crate::log::LogError::InvalidBatch(e)),
                            },
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![Append {
                partition,
                batches,
                records: Vec::new(),
            }])
        }
        (true, false) => {
            let compression = crate::records::compression_of(req.compression)
                .map_err(BrokerError::InvalidRequest)?;
            let groups = match req.partition {
                Some(p) => crate::records::place_records(&req.records, Some(p), 1, p),
                None => {
                    let partitions = broker.partition_count(&req.topic)?;
                    let keyless = broker.next_keyless_partition(partitions);
                    crate::records::place_records(&req.records, None, partitions, keyless)
                }
            };
            let now = now_ms();
            groups
                .into_iter()
                .map(|g| {
                    let batch =
                        crate::records::build_batch(&req.records, &g.indices, compression, now)
                            .map_err(|e| log_err(g.partition, e))?;
                    Ok(Append {
                        partition: g.partition,
                        batches: vec![batch],
                        records: g.indices,
                    })
                })
                .collect()
        }
    }
}

/// An append queued, with what its answer needs.
struct Queued {
    partition: i32,
    records: Vec<usize>,
    pending: PendingAppend,
}

/// Queues every append of a request. With several partitions (plain records without a
/// partition), each must have a leader here and fit its topic before any is queued.
fn queue<S: Storage>(
    broker: &Arc<Broker<S>>,
    topic: &str,
    appends: Vec<Append>,
    acks: Acks,
) -> Result<Vec<Queued>, BrokerError> {
    if appends.len() > 1 {
        for a in &appends {
            let (_, config) = broker.leader_log(topic, a.partition)?;
            let size: usize = a.batches.iter().map(Bytes::len).sum();
            if size > config.max_message_bytes {
                return Err(BrokerError::log(
                    topic,
                    a.partition,
                    crate::log::LogError::BatchTooLarge {
                        size,
                        max: config.max_message_bytes,
                    },
                ));
            }
        }
    }
    let mut queued = Vec::with_capacity(appends.len());
    for a in appends {
        let pending = broker.queue_append(topic, a.partition, &a.batches, acks);
        match pending {
            Ok(pending) => queued.push(Queued {
                partition: a.partition,
                records: a.records,
                pending,
            }),
            Err(e) if queued.is_empty() => return Err(e),
            Err(e) => {
                return Err(BrokerError::PartlyAppended {
                    appended: queued.iter().map(|q| q.partition).collect(),
                    source: Box::new(e),
                })
            }
        }
    }
    Ok(queued)
}

/// Waits for every append of a request as `acks` asks and fills the answer.
async fn answer(
    mut response: ProduceResponse,
    queued: Vec<Queued>,
    acks: Acks,
) -> Result<ProduceResponse, BrokerError> {
    let record_count: usize = queued.iter().map(|q| q.records.len()).sum();
    let mut placements = vec![RecordPlacement::default(); record_count];
    for (i, q) in queued.into_iter().enumerate() {
        let o = q.pending.acked(acks).await?;
        if i == 0 {
            response.partition = q.partition;
            response.base_offset = o.base_offset;
            response.last_offset = o.last_offset;
            response.log_append_time_ms = o.log_append_time_ms;
            response.log_start_offset = o.log_start_offset;
        }
        for (j, &r) in q.records.iter().enumerate() {
            if let Some(p) = placements.get_mut(r) {
                *p = RecordPlacement {
                    partition: q.partition,
                    offset: o.base_offset + j as i64,
                };
            }
        }
    }
    if acks != Acks::None {
        response.placements = placements;
    }
    Ok(response)
}

fn response(req: &ProduceRequest) -> ProduceResponse {
    ProduceResponse {
        correlation_id: req.correlation_id,
        topic: req.topic.clone(),
        partition: req.partition.unwrap_or(0),
        base_offset: -1,
        last_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
        error: None,
        placements: Vec::new(),
    }
}

/// acks=0 answers carry no offsets and no error.
fn blank(r: ProduceResponse) -> ProduceResponse {
    ProduceResponse {
        base_offset: -1,
        last_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
        placements: Vec::new(),
        ..r
    }
}

impl<S: Storage> BrokerService<S> {
    /// Checks and queues one request's appends now; the returned future waits as `acks` asks
    /// and resolves to the answer.
    fn start_produce(
        &self,
        req: &ProduceRequest,
    ) -> (ProduceResponse, Result<(Acks, Vec<Queued>), BrokerError>) {
        let base = response(req);
        let queued = acks_of(req.acks).and_then(|acks| {
            let appends = plan(&self.broker, req)?;
            Ok((acks, queue(&self.broker, &req.topic, appends, acks)?))
        });
        (base, queued)
    }

    /// Queues one streamed request's append now; the returned future resolves to its answer.
    fn produce_one(&self, req: ProduceRequest) -> BoxFuture<'static, ProduceResponse> {
        let (base, queued) = self.start_produce(&req);
        let broker = self.broker.clone();
        async move {
            let failed = |e: BrokerError, base: ProduceResponse| {
                let s = status(&broker, "ProduceStream", e);
                ProduceResponse {
                    error: Some(ErrorStatus {
                        code: s.code() as i32,
                        message: s.message().to_string(),
                    }),
                    ..base
                }
            };
            let (acks, queued) = match queued {
                Ok(q) => q,
                Err(e) => return failed(e, base),
            };
            match answer(base.clone(), queued, acks).await {
                Ok(r) if acks == Acks::None => blank(r),
                Ok(r) => r,
                Err(e) if acks == Acks::None => {
                    tracing::debug!(error = %e, "acks=0 produce failed");
                    base
                }
                Err(e) => failed(e, base),
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
        let (base, queued) = self.start_produce(&req);
        let result = match queued {
            Ok((acks, queued)) => answer(base.clone(), queued, acks).await.map(|r| (acks, r)),
            Err(e) => Err(e),
        };
        let acks = acks_of(req.acks).unwrap_or(Acks::All);
        match (result, acks) {
            (Ok((_, r)), Acks::None) => Ok(Response::new(blank(r))),
            (Err(e), Acks::None) => {
                tracing::debug!(error = %e, "acks=0 produce failed");
                Ok(Response::new(base))
            }
            (Ok((_, r)), _) => Ok(Response::new(r)),
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
            coordinator: self.coordinator.clone(),
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
        let err = |e| status(&self.broker, "Fetch", e);
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
            .map_err(err)?;
        let format = format_of(req.format).map_err(err)?;
        respond(
            &req.topic,
            req.partition,
            req.offset,
            out,
            format,
            max_bytes,
        )
        .map(Response::new)
        .map_err(err)
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
        let err = |e| status(&self.broker, "Subscribe", e);
        let format = format_of(req.format).map_err(err)?;
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
            .map_err(err)?;
        let (tx, rx) = mpsc::channel(4);
        let broker = self.broker.clone();
        let mut shutdown = broker.shutdown_signal();
        tokio::spawn(async move {
            let mut offset = req.offset;
            let mut out = first;
            loop {
                let has_data = !out.batches.is_empty();
                match respond(&req.topic, req.partition, offset, out, format, max_bytes) {
                    Ok(msg) => {
                        offset = msg.next_offset;
                        if has_data && tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(status(&broker, "Subscribe", e))).await;
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
        request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let req = request.into_inner();
        let current = match (req.producer_id, req.producer_epoch) {
            (Some(id), Some(epoch)) => Some((id, epoch)),
            (None, None) => None,
            _ => {
                return Err(status(
                    &self.broker,
                    "InitProducerId",
                    BrokerError::InvalidRequest(
                        "producer_id and producer_epoch come together, or neither".into(),
                    ),
                ))
            }
        };
        let (id, epoch) = self
            .broker
            .init_producer_id(current)
            .map_err(|e| status(&self.broker, "InitProducerId", e))?;
        Ok(Response::new(InitProducerIdResponse {
            producer_id: id,
            producer_epoch: i32::from(epoch),
        }))
    }

    async fn find_coordinator(
        &self,
        request: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let req = request.into_inner();
        let (broker, partition) = self
            .coordinator
            .find(&req.group_id)
            .map_err(|e| status(&self.broker, "FindCoordinator", e))?;
        Ok(Response::new(FindCoordinatorResponse {
            broker_id: broker.id,
            address: broker.address,
            partition,
        }))
    }
}

/// The form a fetch asked for.
fn format_of(code: i32) -> Result<RecordFormat, BrokerError> {
    RecordFormat::try_from(code)
        .map_err(|_| BrokerError::InvalidRequest(format!("unknown record format {code}")))
}

/// A fetch's answer from what the log read, in the form asked for. Decoded records start at
/// `offset`; a stored batch that cannot be decoded ends them, and is the error of a read that
/// starts at it.
fn respond(
    topic: &str,
    partition: i32,
    offset: i64,
    out: ReadOutcome,
    format: RecordFormat,
    max_bytes: usize,
) -> Result<FetchResponse, BrokerError> {
    let mut response = FetchResponse {
        topic: topic.to_string(),
        partition,
        high_watermark: out.high_watermark,
        log_start_offset: out.log_start_offset,
        batches: Bytes::new(),
        next_offset: out.next_offset,
        records: Vec::new(),
    };
    match format {
        RecordFormat::Unspecified | RecordFormat::Batches => {
            response.batches = concat(out.batches);
        }
        RecordFormat::Records => {
            let decoded = crate::records::decode_from(&out.batches, offset, max_bytes);
            if let Some((at, e)) = decoded.corrupt {
                if decoded.records.is_empty() {
                    return Err(BrokerError::CorruptBatch {
                        topic: topic.to_string(),
                        partition,
                        offset: at,
                        reason: e.to_string(),
                    });
                }
            }
            response.next_offset = if out.batches.is_empty() {
                out.next_offset
            } else {
                decoded.next_offset
            };
            response.records = decoded.records;
        }
    }
    Ok(response)
}

/// Concatenates stored batches into the response's one buffer: the only copy a fetch makes
/// (storage hands out its own buffers), none for a single batch.
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
