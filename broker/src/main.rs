//! `runnel-broker`: one Runnel broker process.

use clap::Parser;
use runnel_broker::config::ConfigLayer;
use std::path::PathBuf;

/// A Runnel broker. Settings come from defaults < `--config` file < `RUNNEL_*` environment < flags.
#[derive(Debug, Parser)]
#[command(name = "runnel-broker", version, about)]
struct Flags {
    /// Run as a cluster of one broker that is its own controller.
    #[arg(long)]
    standalone: bool,
    /// TOML file with settings (field names as below, in snake_case).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of the sled database.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (ip:port).
    #[arg(long)]
    listen: Option<String>,
    /// HTTP address for /metrics, /healthz and /readyz.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Broker id (operator mode: the pod ordinal when unset).
    #[arg(long)]
    broker_id: Option<i32>,
    /// host:port that clients use to reach this broker.
    #[arg(long)]
    advertised_address: Option<String>,
    /// Zone or rack of this broker.
    #[arg(long)]
    rack: Option<String>,
    /// Create unknown topics on first produce (standalone only).
    #[arg(long)]
    auto_create_topics: bool,
    /// Partitions of auto-created topics.
    #[arg(long)]
    default_partitions: Option<i32>,
    /// Default max.message.bytes.
    #[arg(long)]
    max_message_bytes: Option<i64>,
    /// Default retention.ms (-1: forever).
    #[arg(long)]
    retention_ms: Option<i64>,
    /// Default retention.bytes per partition (-1: no limit).
    #[arg(long)]
    retention_bytes: Option<i64>,
    /// How often retention runs, in ms.
    #[arg(long)]
    retention_check_interval_ms: Option<u64>,
    /// How often the cleaner looks for compacted partitions to clean, in ms.
    #[arg(long)]
    cleaner_interval_ms: Option<u64>,
    /// How long a group commit waits for more appends, in ms (0: none).
    #[arg(long)]
    flush_linger_ms: Option<u64>,
    /// How long an acks=all produce waits for durability, in ms.
    #[arg(long)]
    produce_timeout_ms: Option<u64>,
    /// How long an idle idempotent producer is remembered, in ms (producer.id.expiration.ms).
    #[arg(long)]
    producer_id_expiration_ms: Option<i64>,
    /// Threads serving gRPC connections (default: one per core).
    #[arg(long)]
    network_threads: Option<usize>,
    /// Threads writing batches into storage (default: half the cores, at least one).
    #[arg(long)]
    append_threads: Option<usize>,
    /// A consumer-group member silent this long is removed, in ms (default 10000), unless it
    /// asks for its own session timeout.
    #[arg(long)]
    group_session_timeout_ms: Option<u32>,
    /// The shortest session timeout a member may ask for, in ms (default 1000).
    #[arg(long)]
    group_min_session_timeout_ms: Option<u32>,
    /// How often group members heartbeat, in ms (default 500).
    #[arg(long)]
    group_heartbeat_interval_ms: Option<u32>,
    /// Partitions of `__consumer_offsets` when a standalone broker creates it (default 50).
    #[arg(long)]
    offsets_topic_partitions: Option<i32>,
    /// A follower that has not caught up for this long leaves the ISR (replica.lag.time.max.ms).
    #[arg(long)]
    replica_lag_time_max_ms: Option<i64>,
}

impl Flags {
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            standalone: self.standalone.then_some(true),
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            metrics_listen: self.metrics_listen.clone(),
            broker_id: self.broker_id,
            advertised_address: self.advertised_address.clone(),
            rack: self.rack.clone(),
            auto_create_topics: self.auto_create_topics.then_some(true),
            default_partitions: self.default_partitions,
            max_message_bytes: self.max_message_bytes,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            retention_check_interval_ms: self.retention_check_interval_ms,
            cleaner_interval_ms: self.cleaner_interval_ms,
            flush_linger_ms: self.flush_linger_ms,
            produce_timeout_ms: self.produce_timeout_ms,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            cache_capacity_bytes: None,
            network_threads: self.network_threads,
            append_threads: self.append_threads,
            group_session_timeout_ms: self.group_session_timeout_ms,
            group_min_session_timeout_ms: self.group_min_session_timeout_ms,
            group_heartbeat_interval_ms: self.group_heartbeat_interval_ms,
            offsets_topic_partitions: self.offsets_topic_partitions,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    let config = (|| {
        let mut layer = ConfigLayer::defaults();
        if let Some(path) = &flags.config {
            layer = ConfigLayer::from_file(path)?.over(layer);
        }
        layer = ConfigLayer::from_env(|k| std::env::var(k).ok())?.over(layer);
        flags
            .layer()
            .over(layer)
            .validate(|k| std::env::var(k).ok())
    })();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runnel-broker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.network_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runnel-broker: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(runnel_broker::server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
