//! Starting and stopping a broker process: storage, services, HTTP endpoint, retention, signals.

use crate::broker::Broker;
use crate::config::Config;
use crate::groups::Coordinator;
use crate::metrics::{self, Metrics};
use crate::service::{
    AdminService, BrokerService, GroupsService, ReplicaService, MAX_MESSAGE_BYTES,
};
use crate::storage::SledStorage;
use anyhow::Context;
use runnel_proto::v1::admin_server::AdminServer;
use runnel_proto::v1::broker_server::BrokerServer;
use runnel_proto::v1::groups_server::GroupsServer;
use runnel_proto::v1::replica_server::ReplicaServer;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// HTTP/2 flow-control windows.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest HTTP/2 frame accepted from clients (HTTP/2's default is 16 KiB).
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// When partitions are checkpointed (see [`crate::log::index`]).
const CHECKPOINT_POLL: Duration = Duration::from_millis(500);
const CHECKPOINT_BYTES: u64 = 64 << 20;
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// How often a failed storage's disk is probed, and how often that is logged.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
const STORAGE_RETRY_REPORT: Duration = Duration::from_secs(30);
/// The disk must take this much before the broker restarts onto it.
const PROBE_BYTES: usize = 4 << 20;
/// How long answers already on their way get before a restart in place.
const RESTART_GRACE: Duration = Duration::from_millis(200);

/// How often group members are checked for expired sessions.
const GROUP_EXPIRY_INTERVAL: Duration = Duration::from_millis(200);
/// The offset and lag metrics are refreshed every this many expiry checks (a second).
const METRICS_EVERY_EXPIRIES: u64 = 5;

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a broker until SIGTERM or SIGINT, then drains, flushes and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let storage = Arc::new(
        SledStorage::open_with_cache(&config.data_dir, config.cache_capacity_bytes)
            .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?,
    );
    let broker = Arc::new(Broker::open(
        config.settings.clone(),
        storage,
        metrics.clone(),
    )?);
    tracing::info!(
        broker_id = config.settings.broker_id,
        standalone = config.settings.standalone,
        data_dir = %config.data_dir.display(),
        partitions = broker.held_logs().len(),
        "recovered"
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<BrokerServer<BrokerService<SledStorage>>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService<SledStorage>>>()
        .await;
    health_reporter
        .set_serving::<GroupsServer<GroupsService<SledStorage>>>()
        .await;
    health_reporter
        .set_serving::<ReplicaServer<ReplicaService<SledStorage>>>()
        .await;
    // Reflection in both versions: stock grpcio and older grpcurl speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(runnel_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service (v1alpha)")?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the gRPC listener on {}", config.listen))?;
    let local = listener.local_addr()?;

    if let Some(addr) = config.metrics_listen {
        let http = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        let router = metrics::router(metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http, router).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }

    every(
        config.retention_check_interval,
        "retention",
        broker.clone(),
        |b, _| b.apply_retention().map(|()| 0),
    );
    // Checkpoints: every partition with anything new is checkpointed once the partitions
    // together hold CHECKPOINT_BYTES beyond their checkpoints, and every CHECKPOINT_INTERVAL,
    // so that a restart reads little more than that.
    let ticks_per_interval = (CHECKPOINT_INTERVAL.as_millis() / CHECKPOINT_POLL.as_millis()) as u64;
    every(
        CHECKPOINT_POLL,
        "checkpoint",
        broker.clone(),
        move |b, tick| b.checkpoint_logs(CHECKPOINT_BYTES, tick % ticks_per_interval == 0),
    );
    // Group members whose session ran out.
    let coordinator = Arc::new(Coordinator::new(broker.clone()));
    let expiring = coordinator.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GROUP_EXPIRY_INTERVAL);
        for n in 0u64.. {
            tick.tick().await;
            expiring.expire();
            if n % METRICS_EVERY_EXPIRIES == 0 {
                expiring.update_metrics();
            }
        }
    });
    // The cleaner: compacted topics, off the produce path.
    every(
        config.cleaner_interval,
        "compaction",
        broker.clone(),
        |b, _| b.compact_logs(),
    );

    // The storage watch: a flush that stops answering fails the storage; a failed storage is
    // reopened, once its disk takes writes again, by starting this broker afresh in place.
    let watched = broker.clone();
    let watch_metrics = metrics.clone();
    let data_dir = config.data_dir.clone();
    // A flush this slow fails the storage before the producers waiting on it time out.
    let flush_stall = config.settings.produce_timeout / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORAGE_RETRY);
        let mut last_report = None::<tokio::time::Instant>;
        loop {
            tick.tick().await;
            watched.check_flush_stall(flush_stall);
            if watched.storage_failure().is_none() || *watched.shutdown_signal().borrow() {
                continue;
            }
            let dir = data_dir.clone();
            match tokio::task::spawn_blocking(move || disk_takes_writes(&dir)).await {
                Ok(Ok(())) => {
                    tracing::warn!("the disk takes writes again: restarting to reopen the storage");
                    watch_metrics.set_ready(false);
                    watched.begin_shutdown();
                    tokio::time::sleep(RESTART_GRACE).await;
                    let e = restart_in_place();
                    tracing::error!(error = %e, "restarting in place failed; retrying");
                }
                Ok(Err(e)) => {
                    if last_report.is_none_or(|t| t.elapsed() >= STORAGE_RETRY_REPORT) {
                        tracing::warn!(error = %e, "the disk still refuses writes; trying every second");
                        last_report = Some(tokio::time::Instant::now());
                    }
                }
                Err(e) => tracing::error!(error = %e, "the disk probe failed"),
            }
        }
    });

    let shutdown_broker = broker.clone();
    let signal = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown_broker.begin_shutdown();
    };
    let data = BrokerServer::new(BrokerService::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(broker.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let groups = GroupsServer::new(GroupsService::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let replica = ReplicaServer::new(ReplicaService::new(broker.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tokio::spawn(crate::replication::run(broker.clone()));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // HTTP/2's default 64 KiB windows allow one batch per round trip; producers pipeline
        // many, and fetches return megabytes.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        // Frames as large as a batch, so that a produced batch arrives in one frame instead of
        // one per 16 KiB (HTTP/2's default), each with its own bookkeeping.
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(data)
        .add_service(admin)
        .add_service(groups)
        .add_service(replica)
        .serve_with_incoming_shutdown(
            // The builder's tcp_nodelay applies only to listeners tonic binds itself; without
            // it on accepted sockets, Nagle's algorithm holds small answers for ~40 ms.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        );
    metrics.set_ready(true);
    tracing::info!(address = %local, advertised = %config.settings.advertised_address, "runnel-broker listening");

    let mut stopping = broker.shutdown_signal();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.context("gRPC server failed")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => tracing::warn!("in-flight requests did not finish in time"),
    }
    metrics.set_ready(false);
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close()).await?;
    if let Some(why) = broker.storage_failure() {
        tracing::warn!(
            cause = why,
            "stopped with the storage failed: acknowledged records are on disk, others may be lost"
        );
        // The embedded database flushes when it is dropped, and on a disk that failed that
        // flush may never return: this broker is never dropped, the process just ends.
        std::mem::forget(broker);
    } else {
        tracing::info!("stopped; all appended records are flushed");
    }
    Ok(())
}

/// Runs `work` (blocking) on the broker every `interval`, after the first interval, with the
/// number of the tick; logs its failures.
fn every(
    interval: Duration,
    what: &'static str,
    broker: Arc<Broker<SledStorage>>,
    work: impl Fn(&Broker<SledStorage>, u64) -> Result<usize, crate::error::BrokerError>
        + Send
        + Sync
        + 'static,
) {
    let work = Arc::new(work);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        for n in 1u64.. {
            tick.tick().await;
            let (b, w) = (broker.clone(), work.clone());
            match tokio::task::spawn_blocking(move || w(&b, n)).await {
                Ok(Err(e)) => tracing::error!(error = %e, "{what} failed"),
                Err(e) => tracing::error!(error = %e, "{what} task failed"),
                Ok(Ok(_)) => {}
            }
        }
    });
}

/// Writes, syncs and removes a file of `PROBE_BYTES` in `dir`: whether its disk takes writes.
fn disk_takes_writes(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".runnel-disk-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Replaces this process with a fresh start of the same broker: the same program, arguments
/// and environment, so the same listeners and data directory. The embedded database keeps the
/// first write error it meets and may not let go of its files within the process, so a start
/// is the sure way to reopen it; recovery then keeps what is durable, as after a crash.
/// Returns only if the start could not be made.
fn restart_in_place() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return e,
    };
    std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .exec()
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
