//! `runnel-operator`: runs the controllers against the cluster the kubeconfig (or the pod's
//! service account) points at, and serves `/metrics`, `/healthz` and `/readyz`.
//!
//! Two or more replicas are safe: they elect a leader with a Lease, and only the leader runs
//! the controllers.

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Error as ControllerError};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::Api;
use prometheus_client::registry::Registry;
use runnel_operator::controller::{cluster, group, metadata, topic, Context};
use runnel_operator::crd::{Cluster, ConsumerGroup, Topic};
use runnel_operator::lease::LeaderElection;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

    /// How often each Topic's status (offsets, sizes, ISR) is refreshed from the brokers.
    #[arg(long, env = "RUNNEL_OPERATOR_STATUS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    status_interval: Duration,

    /// Namespace of the leader-election Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// How long a leader holds the Lease without renewing it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
}

#[derive(Clone)]
struct Http {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

/// The Cluster a pod of a broker StatefulSet belongs to (its `app.kubernetes.io/instance`).
fn cluster_of_pod(pod: Pod) -> Option<ObjectRef<Cluster>> {
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get("app.kubernetes.io/name").map(String::as_str) != Some("runnel") {
        return None;
    }
    let name = labels.get("app.kubernetes.io/instance")?;
    Some(ObjectRef::new(name).within(pod.metadata.namespace.as_deref()?))
}

/// The Cluster a Topic lives in.
fn cluster_of_topic(topic: Topic) -> Option<ObjectRef<Cluster>> {
    Some(ObjectRef::new(&topic.spec.cluster).within(topic.metadata.namespace.as_deref()?))
}

/// Logs what a controller run produced. A reconciliation asked for an object that is already
/// gone (a Cluster deleted while its pods and Topics still change) is routine, not a warning.
async fn log_result<K, E, Q>(
    backoff: &runnel_operator::controller::backoff::Backoff,
    kind: &'static str,
    result: Result<(ObjectRef<K>, Action), ControllerError<E, Q>>,
) where
    K: kube::Resource,
    K::DynamicType: Default + std::fmt::Debug + Eq + std::hash::Hash + Clone,
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => {
            backoff.succeeded(kind, object.namespace.clone(), object.name.clone());
            tracing::debug!(kind, name = %object.name, "reconciled")
        }
        Err(ControllerError::ObjectNotFound(object)) => {
            backoff.succeeded(kind, object.namespace.clone(), object.name.clone());
            tracing::debug!(kind, name = %object.name, "already deleted")
        }
        Err(e) => tracing::warn!(kind, error = %e, "reconcile failed"),
    }
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
    let leader_gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    registry.register(
        "runnel_operator_leader",
        "1 while this replica holds the leader-election Lease",
        leader_gauge.clone(),
    );
    let ctx = Arc::new(
        Context::new(client.clone(), &mut registry).with_status_interval(args.status_interval),
    );
    // A successful reconcile (or a deleted object) resets that object's backoff.
    let backoff = ctx.backoff.clone();
    let http = Http {
        registry: Arc::new(registry),
        ready: Arc::new(AtomicBool::new(false)),
    };

    // One shutdown signal for everything: SIGTERM/Ctrl-C, or a lost Lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_on_signal.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
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
    let server = tokio::spawn({
        let stopped = stopped.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped())
                .await
        }
    });

    let clusters: Api<Cluster> = Api::all(client.clone());
    // Fail early, with a clear message, when the CRDs are not installed.
    clusters
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .context("listing Clusters: are the CRDs in crds/ applied?")?;
    http.ready.store(true, Ordering::Relaxed);

    // Leader election: wait for the Lease, then keep renewing it.
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let election = LeaderElection::new(
        client.clone(),
        &args.lease_namespace,
        "runnel-operator",
        &identity,
        args.lease_duration,
    );
    tracing::info!(identity, namespace = %args.lease_namespace, "waiting for the leader Lease");
    loop {
        match election.try_acquire().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::select! {
            _ = tokio::time::sleep(election.renew_every()) => {},
            _ = stopped() => {
                server.await.context("HTTP server task")?.context("HTTP server")?;
                return Ok(());
            }
        }
    }
    leader_gauge.set(1);
    tracing::info!(identity, "leading: starting the controllers");
    let lost = Arc::new(AtomicBool::new(false));
    let renewer = tokio::spawn({
        let election = election.clone();
        let stop_tx = stop_tx.clone();
        let lost = lost.clone();
        let stopped = stopped.clone();
        async move {
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(election.renew_every()) => {},
                    _ = stopped() => return,
                }
                match election.try_acquire().await {
                    Ok(true) => last = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!("another replica holds the Lease: stopping");
                        break;
                    }
                    Err(e) if last.elapsed() < election.duration() => {
                        tracing::warn!(error = %e, "renewing the Lease failed; retrying");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not renew the Lease in time: stopping");
                        break;
                    }
                }
            }
            lost.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        }
    });

    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=runnel-operator");
    let cluster_controller = Controller::new(clusters.clone(), watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            owned.clone(),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            owned.clone(),
            cluster_of_pod,
        )
        // Topics are not watched here: their status changes with every offset refresh; a
        // held-back scale-down looks at them again every status interval instead.
        .graceful_shutdown_on(stopped())
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .for_each(|r| log_result(&backoff, "Cluster", r));
    // The liveness check wakes the metadata controller when a broker's answers call for new
    // metadata (a leader gone), between its status refreshes.
    let (wake, woken) = tokio::sync::mpsc::channel(64);
    let liveness = tokio::spawn(runnel_operator::controller::liveness::run(
        ctx.decided.clone(),
        wake,
    ));
    let metadata_controller = Controller::new(clusters.clone(), watcher::Config::default())
        .watches(Api::<Pod>::all(client.clone()), owned, cluster_of_pod)
        .reconcile_on(tokio_stream::wrappers::ReceiverStream::new(woken))
        .watches(
            Api::<Topic>::all(client.clone()),
            watcher::Config::default(),
            cluster_of_topic,
        )
        .graceful_shutdown_on(stopped())
        .run(metadata::reconcile, metadata::error_policy, ctx.clone())
        .for_each(|r| log_result(&backoff, "Metadata", r));
    let topic_controller = Controller::new(
        Api::<Topic>::all(client.clone()),
        watcher::Config::default(),
    );
    let topics = topic_controller.store();
    let topic_controller = topic_controller
        .watches(
            clusters,
            watcher::Config::default(),
            move |cluster: Cluster| {
                let namespace = cluster.metadata.namespace.clone();
                let name = cluster.metadata.name.clone();
                topics
                    .state()
                    .into_iter()
                    .filter(move |t| {
                        t.metadata.namespace == namespace && Some(&t.spec.cluster) == name.as_ref()
                    })
                    .map(|t| ObjectRef::from_obj(&*t))
            },
        )
        .graceful_shutdown_on(stopped())
        .run(topic::reconcile, topic::error_policy, ctx.clone())
        .for_each(|r| log_result(&backoff, "Topic", r));
    // ConsumerGroups are refreshed on a timer (their lag moves without any object changing).
    let group_controller = Controller::new(
        Api::<ConsumerGroup>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stopped())
    .run(group::reconcile, group::error_policy, ctx)
    .for_each(|r| log_result(&backoff, "ConsumerGroup", r));
    tokio::join!(
        cluster_controller,
        metadata_controller,
        topic_controller,
        group_controller
    );
    liveness.abort();
    tracing::info!("controllers stopped");
    leader_gauge.set(0);
    renewer.abort();
    if !lost.load(Ordering::SeqCst) {
        if let Err(e) = election.release().await {
            tracing::warn!(error = %e, "releasing the Lease");
        }
    }
    let _ = stop_tx.send(true);
    server
        .await
        .context("HTTP server task")?
        .context("HTTP server")?;
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!("lost the leader-election Lease");
    }
    Ok(())
}
