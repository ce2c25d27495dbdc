//! Starting and stopping a broker process: storage, services, HTTP endpoint, retention, signals.

use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::service::{AdminService, BrokerService, MAX_MESSAGE_BYTES};
use crate::storage::SledStorage;
use anyhow::Context;
use runnel_proto::v1::admin_server::AdminServer;
use runnel_proto::v1::broker_server::BrokerServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// HTTP/2 flow-control windows.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest HTTP/2 frame accepted from clients (HTTP/2's default is 16 KiB).
const MAX_FRAME_BYTES: u32 = 1 << 20;

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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(runnel_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

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

    let retention_broker = broker.clone();
    let interval = config.retention_check_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let b = retention_broker.clone();
            match tokio::task::spawn_blocking(move || b.apply_retention()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
                Ok(Ok(())) => {}
            }
        }
    });

    let shutdown_broker = broker.clone();
    let signal = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown_broker.begin_shutdown();
    };
    let data = BrokerServer::new(BrokerService::new(broker.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(broker.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
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
        .add_service(reflection)
        .add_service(data)
        .add_service(admin)
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
    tracing::info!("stopped; all appended records are flushed");
    Ok(())
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
