//! `runnel-operator`: runs the controllers against the cluster the kubeconfig (or the pod's
//! service account) points at, and serves `/metrics`, `/healthz` and `/readyz`.
//!
//! Leader election is not done yet: run one replica.

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::{watcher, Controller};
use kube::Api;
use prometheus_client::registry::Registry;
use runnel_operator::controller::{cluster, Context};
use runnel_operator::crd::Cluster;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The Runnel operator.
#[derive(Debug, Parser)]
#[command(name = "runnel-operator", version)]
struct Args {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "RUNNEL_OPERATOR_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    metrics_listen: SocketAddr,
}

#[derive(Clone)]
struct Http {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

async fn metrics(State(http): State<Http>) -> Result<String, StatusCode> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &http.registry)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(out)
}

async fn readyz(State(http): State<Http>) -> (StatusCode, &'static str) {
    if http.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                futures::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: a log file or `kubectl logs` gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster service account)")?;
    let mut registry = Registry::default();
    let ctx = Arc::new(Context::new(client.clone(), &mut registry));
    let http = Http {
        registry: Arc::new(registry),
        ready: Arc::new(AtomicBool::new(false)),
    };

    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    tracing::info!(address = %args.metrics_listen, "serving /metrics, /healthz, /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(http.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    let clusters: Api<Cluster> = Api::all(client.clone());
    // Fail early, with a clear message, when the CRDs are not installed.
    clusters
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .context("listing Clusters: are the CRDs in crds/ applied?")?;
    let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=runnel-operator");
    http.ready.store(true, Ordering::Relaxed);
    tracing::info!("starting the Cluster controller");
    Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), config)
        .graceful_shutdown_on(shutdown_signal())
        .run(cluster::reconcile, cluster::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    tracing::info!("controller stopped");
    server
        .await
        .context("HTTP server task")?
        .context("HTTP server")?;
    Ok(())
}
