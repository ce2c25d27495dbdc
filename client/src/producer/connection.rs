//! Per-broker connections: one `ProduceStream` per broker address, opened on demand for a
//! partition's leader, the task that drives it, request timeouts, and what a broken stream
//! does to the batches in flight on it.

use std::collections::VecDeque;
use std::time::Instant;

use runnel_proto::v1::ProduceRequest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::accumulator::Batch;
use super::retry::backoff;
use super::sender::{Event, Sender};
use crate::connection::{broker_client, transport_message};
use crate::error::{Error, Result};

/// One `ProduceStream` on one broker connection.
pub(super) struct Conn {
    pub(super) address: String,
    pub(super) requests: mpsc::UnboundedSender<ProduceRequest>,
    /// (correlation id, partition index, sent at), in send order.
    pub(super) in_flight: VecDeque<(u64, usize, Instant)>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sender {
    pub(super) fn check_request_timeouts(&mut self, now: Instant) {
        let timeout = self.shared.config.request_timeout;
        let stuck: Vec<(u64, String)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.in_flight.front().is_some_and(|f| f.2 + timeout <= now))
            .map(|(id, c)| (*id, c.address.clone()))
            .collect();
        for (id, address) in stuck {
            let error = Error::Transport {
                address,
                message: format!(
                    "no answer within the request timeout of {} ms",
                    timeout.as_millis()
                ),
            };
            self.fail_conn(id, error, now);
        }
    }

    /// The connection for partition `pi`: the one its in-flight batches went to, else the
    /// one to its leader (opened on demand).
    pub(super) fn conn_for(&mut self, pi: usize) -> Option<u64> {
        let generation = self.metadata_generation;
        let p = &mut self.partitions[pi];
        if let Some(id) = p.conn {
            if !p.in_flight.is_empty()
                || (p.address_generation == generation && self.conns.contains_key(&id))
            {
                return Some(id);
            }
        }
        let address = self
            .shared
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leader_address(
                &p.topic,
                p.partition,
                self.shared.cluster.bootstrap_address(),
            );
        p.address_generation = generation;
        if let Some(&id) = self.conn_by_address.get(&address) {
            p.conn = Some(id);
            return Some(id);
        }
        match self.open_conn(&address) {
            Ok(id) => {
                self.partitions[pi].conn = Some(id);
                Some(id)
            }
            Err(e) => {
                tracing::warn!(%address, error = %e, "cannot open a produce stream");
                let p = &mut self.partitions[pi];
                p.attempts += 1;
                p.backoff_until = Some(Instant::now() + backoff(p.attempts));
                if let Some(b) = p.queue.front_mut() {
                    b.last_error = Some(e);
                }
                None
            }
        }
    }

    fn open_conn(&mut self, address: &str) -> Result<u64> {
        let channel = crate::connection::connect_lazy(address)?;
        let id = self.next_conn;
        self.next_conn += 1;
        let (requests, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_conn(
            id,
            address.to_owned(),
            channel,
            rx,
            self.events_tx.clone(),
        ));
        self.conns.insert(
            id,
            Conn {
                address: address.to_owned(),
                requests,
                in_flight: VecDeque::new(),
                task,
            },
        );
        self.conn_by_address.insert(address.to_owned(), id);
        tracing::debug!(%address, conn = id, "opened produce stream");
        Ok(id)
    }

    /// A connection broke: every batch in flight on it is resent (same sequences, so the
    /// broker drops what it already has), or failed if the error is not retriable.
    pub(super) fn fail_conn(&mut self, conn_id: u64, error: Error, now: Instant) {
        let Some(conn) = self.conns.remove(&conn_id) else {
            return;
        };
        if self.conn_by_address.get(&conn.address) == Some(&conn_id) {
            self.conn_by_address.remove(&conn.address);
        }
        drop(conn);
        for pi in 0..self.partitions.len() {
            if self.partitions[pi].conn != Some(conn_id) {
                continue;
            }
            self.partitions[pi].conn = None;
            let batches: Vec<Batch> = self.partitions[pi].in_flight.drain(..).collect();
            for batch in batches {
                self.on_batch_error(pi, batch, error.clone(), now);
            }
            self.finish_round(pi, now);
        }
        self.refresh_wanted = true;
    }
}

/// Drives one `ProduceStream`: forwards the broker's answers to the sender, then reports how
/// the stream ended.
async fn run_conn(
    id: u64,
    address: String,
    channel: tonic::transport::Channel,
    requests: mpsc::UnboundedReceiver<ProduceRequest>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut client = broker_client(channel);
    let error = match client
        .produce_stream(UnboundedReceiverStream::new(requests))
        .await
    {
        Err(status) => stream_error(&address, status),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if events.send(Event::Response { conn: id, response }).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        break Error::Transport {
                            address: address.clone(),
                            message: "the broker ended the produce stream".into(),
                        }
                    }
                    Err(status) => break stream_error(&address, status),
                }
            }
        }
    };
    let _ = events.send(Event::ConnFailed { conn: id, error });
}

/// A stream-level status: transport trouble (retriable) or the broker's own status.
fn stream_error(address: &str, status: tonic::Status) -> Error {
    use std::error::Error as _;
    match status.source() {
        Some(source)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown
            ) =>
        {
            Error::Transport {
                address: address.to_owned(),
                message: transport_message(source),
            }
        }
        _ => Error::rpc(format!("produce stream to {address}"), status),
    }
}
