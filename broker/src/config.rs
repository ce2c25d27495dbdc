//! Broker configuration in layers — defaults < config file (TOML) < `RUNNEL_*` environment <
//! command-line flags — checked by one [`ConfigLayer::validate`] that names the bad field.

use crate::broker::BrokerSettings;
use crate::log::LogConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One layer of settings; unset fields fall through to the layer below.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Run as a cluster of one that is its own controller.
    pub standalone: Option<bool>,
    /// Where the sled database lives.
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    pub listen: Option<String>,
    /// HTTP address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: Option<String>,
    /// This broker's id (operator mode: taken from the pod's ordinal when unset).
    pub broker_id: Option<i32>,
    /// host:port that clients use to reach this broker.
    pub advertised_address: Option<String>,
    /// Zone or rack.
    pub rack: Option<String>,
    /// Create unknown topics on first produce (standalone only).
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic.
    pub default_partitions: Option<i32>,
    /// Default `max.message.bytes`.
    pub max_message_bytes: Option<i64>,
    /// Default `retention.ms` (-1: forever).
    pub retention_ms: Option<i64>,
    /// Default `retention.bytes` (-1: no limit).
    pub retention_bytes: Option<i64>,
    /// How often retention runs.
    pub retention_check_interval_ms: Option<u64>,
    /// How often the cleaner looks for compacted partitions to clean.
    pub cleaner_interval_ms: Option<u64>,
    /// How long a group commit waits for more appends to join (0: none).
    pub flush_linger_ms: Option<u64>,
    /// How long an acks=all produce waits for durability.
    pub produce_timeout_ms: Option<u64>,
    /// Kafka's `producer.id.expiration.ms`: an idempotent producer idle this long is forgotten.
    pub producer_id_expiration_ms: Option<i64>,
    /// sled page cache size.
    pub cache_capacity_bytes: Option<u64>,
    /// Threads serving the network: gRPC connections, decoding, checks, reads (default: one
    /// per core).
    pub network_threads: Option<usize>,
    /// Threads writing produced batches into storage, each partition always on the same one
    /// (default: half the cores, at least one).
    pub append_threads: Option<usize>,
    /// A consumer-group member that sends no heartbeat for this long is removed, unless it
    /// asks for its own timeout (Kafka's `group.consumer.session.timeout.ms`).
    pub group_session_timeout_ms: Option<u32>,
    /// The shortest session timeout a member may ask for.
    pub group_min_session_timeout_ms: Option<u32>,
    /// How often group members heartbeat (`group.consumer.heartbeat.interval.ms`).
    pub group_heartbeat_interval_ms: Option<u32>,
    /// Partitions of `__consumer_offsets` when a standalone broker creates it
    /// (`offsets.topic.num.partitions`).
    pub offsets_topic_partitions: Option<i32>,
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up with its leader
    /// for this long leaves the ISR (default 10 s).
    pub replica_lag_time_max_ms: Option<i64>,
}

/// The fields of [`ConfigLayer`], as they appear in the file and (upper-cased, `RUNNEL_` prefix)
/// in the environment.
pub const FIELDS: &[&str] = &[
    "standalone",
    "data_dir",
    "listen",
    "metrics_listen",
    "broker_id",
    "advertised_address",
    "rack",
    "auto_create_topics",
    "default_partitions",
    "max_message_bytes",
    "retention_ms",
    "retention_bytes",
    "retention_check_interval_ms",
    "cleaner_interval_ms",
    "flush_linger_ms",
    "produce_timeout_ms",
    "producer_id_expiration_ms",
    "cache_capacity_bytes",
    "network_threads",
    "append_threads",
    "group_session_timeout_ms",
    "group_min_session_timeout_ms",
    "group_heartbeat_interval_ms",
    "offsets_topic_partitions",
    "replica_lag_time_max_ms",
];

/// Kafka's default `producer.id.expiration.ms`: one day.
const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// Most threads of either kind.
const MAX_THREADS: usize = 256;

/// A configuration problem, naming where it came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The validated configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker settings.
    pub settings: BrokerSettings,
    /// sled directory.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP endpoint address.
    pub metrics_listen: Option<SocketAddr>,
    /// Retention period.
    pub retention_check_interval: Duration,
    /// How often the cleaner runs.
    pub cleaner_interval: Duration,
    /// sled page cache.
    pub cache_capacity_bytes: u64,
    /// Async worker threads.
    pub network_threads: usize,
}

macro_rules! merge_fields {
    ($low:ident, $high:ident, $($f:ident),*) => {
        ConfigLayer { $($f: $high.$f.or($low.$f)),* }
    };
}

impl ConfigLayer {
    /// Built-in defaults.
    pub fn defaults() -> Self {
        ConfigLayer {
            standalone: Some(false),
            data_dir: Some(PathBuf::from("data")),
            listen: Some("0.0.0.0:9092".into()),
            auto_create_topics: Some(false),
            default_partitions: Some(1),
            max_message_bytes: Some(LogConfig::default().max_message_bytes as i64),
            retention_ms: Some(LogConfig::default().retention_ms),
            retention_bytes: Some(-1),
            retention_check_interval_ms: Some(300_000),
            cleaner_interval_ms: Some(15_000),
            flush_linger_ms: Some(0),
            produce_timeout_ms: Some(30_000),
            producer_id_expiration_ms: Some(DEFAULT_PRODUCER_ID_EXPIRATION_MS),
            cache_capacity_bytes: Some(256 << 20),
            ..Default::default()
        }
    }

    /// This layer over `lower`.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        let high = self;
        let low = lower;
        merge_fields!(
            low,
            high,
            standalone,
            data_dir,
            listen,
            metrics_listen,
            broker_id,
            advertised_address,
            rack,
            auto_create_topics,
            default_partitions,
            max_message_bytes,
            retention_ms,
            retention_bytes,
            retention_check_interval_ms,
            cleaner_interval_ms,
            flush_linger_ms,
            produce_timeout_ms,
            producer_id_expiration_ms,
            cache_capacity_bytes,
            network_threads,
            append_threads,
            group_session_timeout_ms,
            group_min_session_timeout_ms,
            group_heartbeat_interval_ms,
            offsets_topic_partitions,
            replica_lag_time_max_ms
        )
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
    }

    /// Reads `RUNNEL_<FIELD>` variables from `env` (a lookup, so tests need not touch the
    /// process environment).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<ConfigLayer, ConfigError> {
        let mut table = toml::Table::new();
        for field in FIELDS {
            let var = format!("RUNNEL_{}", field.to_uppercase());
            let Some(raw) = env(&var) else { continue };
            let value = if let Ok(i) = raw.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(b) = raw.parse::<bool>() {
                toml::Value::Boolean(b)
            } else {
                toml::Value::String(raw.clone())
            };
            let mut one = toml::Table::new();
            one.insert((*field).to_string(), value.clone());
            // Check each variable alone, so the error names the variable.
            one.try_into::<ConfigLayer>()
                .map_err(|e| ConfigError(format!("{var}={raw:?}: {}", e.message())))?;
            table.insert((*field).to_string(), value);
        }
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(format!("environment: {}", e.message())))
    }

    /// Checks every field and produces the running configuration; `pod` gives the downward-API
    /// variables (`POD_NAME`, `POD_IP`) used in operator mode.
    pub fn validate(self, pod: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let bad = |field: &str, why: String| ConfigError(format!("{field}: {why}"));
        let standalone = self.standalone.unwrap_or(false);
        let data_dir = self
            .data_dir
            .ok_or_else(|| bad("data_dir", "is required".into()))?;
        if data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "is empty".into()));
        }
        let listen_raw = self.listen.unwrap_or_default();
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            bad(
                "listen",
                format!("`{listen_raw}` is not a socket address (ip:port)"),
            )
        })?;
        let metrics_listen = match self.metrics_listen.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(raw.parse().map_err(|_| {
                bad(
                    "metrics_listen",
                    format!("`{raw}` is not a socket address (ip:port)"),
                )
            })?),
        };
        let broker_id = match self.broker_id {
            Some(id) if id < 0 => return Err(bad("broker_id", format!("{id} is negative"))),
            Some(id) => id,
            None if standalone => 0,
            None => pod("POD_NAME")
                .or_else(|| pod("HOSTNAME"))
                .and_then(|n| n.rsplit('-').next().and_then(|o| o.parse().ok()))
                .ok_or_else(|| {
                    bad(
                        "broker_id",
                        "is required unless the pod name ends in its ordinal (POD_NAME=name-N)"
                            .into(),
                    )
                })?,
        };
        let advertised_address = match self.advertised_address {
            Some(a) if a.is_empty() => return Err(bad("advertised_address", "is empty".into())),
            Some(a) => a,
            None => match pod("POD_IP") {
                Some(ip) if !standalone => format!("{ip}:{}", listen.port()),
                _ if listen.ip().is_unspecified() => format!("127.0.0.1:{}", listen.port()),
                _ => listen.to_string(),
            },
        };
        let default_partitions = self.default_partitions.unwrap_or(1);
        if !(1..=crate::metadata::MAX_PARTITIONS).contains(&default_partitions) {
            return Err(bad(
                "default_partitions",
                format!("{default_partitions} is not between 1 and 10000"),
            ));
        }
        let max_message_bytes = self.max_message_bytes.unwrap_or(1_048_588);
        if !(1..=(crate::service::MAX_PRODUCE_BYTES as i64 - 1024)).contains(&max_message_bytes) {
            return Err(bad(
                "max_message_bytes",
                format!("{max_message_bytes} is not between 1 and 64 MiB"),
            ));
        }
        let retention_ms = self.retention_ms.unwrap_or(-1);
        if retention_ms < -1 {
            return Err(bad("retention_ms", format!("{retention_ms} is below -1")));
        }
        let retention_bytes = self.retention_bytes.unwrap_or(-1);
        if retention_bytes < -1 {
            return Err(bad(
                "retention_bytes",
                format!("{retention_bytes} is below -1"),
            ));
        }
        let produce_timeout_ms = self.produce_timeout_ms.unwrap_or(30_000);
        if produce_timeout_ms == 0 {
            return Err(bad("produce_timeout_ms", "must be positive".into()));
        }
        let producer_id_expiration_ms = self
            .producer_id_expiration_ms
            .unwrap_or(DEFAULT_PRODUCER_ID_EXPIRATION_MS);
        if producer_id_expiration_ms < 1 {
            return Err(bad(
                "producer_id_expiration_ms",
                format!("{producer_id_expiration_ms} must be positive"),
            ));
        }
        let threads = |field: &str, v: Option<usize>, default: usize| match v {
            Some(n) if !(1..=MAX_THREADS).contains(&n) => Err(bad(
                field,
                format!("{n} is not between 1 and {MAX_THREADS}"),
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let network_threads = threads("network_threads", self.network_threads, cores)?;
        // A partition's appends are serial, and an append mostly waits for sled and the disk;
        // half the cores write as many partitions at once as the cores can feed.
        let append_threads = threads("append_threads", self.append_threads, (cores / 2).max(1))?;
        let retention_check = self.retention_check_interval_ms.unwrap_or(300_000);
        if retention_check == 0 {
            return Err(bad(
                "retention_check_interval_ms",
                "must be positive".into(),
            ));
        }
        let cleaner_interval = self.cleaner_interval_ms.unwrap_or(15_000);
        if cleaner_interval == 0 {
            return Err(bad("cleaner_interval_ms", "must be positive".into()));
        }
        let mut groups = crate::groups::GroupSettings::default();
        if let Some(t) = self.group_min_session_timeout_ms {
            if t == 0 {
                return Err(bad(
                    "group_min_session_timeout_ms",
                    "must be positive".into(),
                ));
            }
            groups.min_session_timeout_ms = t;
        }
        if let Some(t) = self.group_session_timeout_ms {
            if !(groups.min_session_timeout_ms..=groups.max_session_timeout_ms).contains(&t) {
                return Err(bad(
                    "group_session_timeout_ms",
                    format!(
                        "{t} is not between group_min_session_timeout_ms ({}) and {}",
                        groups.min_session_timeout_ms, groups.max_session_timeout_ms
                    ),
                ));
            }
            groups.session_timeout_ms = t;
        }
        if let Some(t) = self.group_heartbeat_interval_ms {
            if t == 0 || t >= groups.session_timeout_ms {
                return Err(bad(
                    "group_heartbeat_interval_ms",
                    format!(
                        "{t} must be positive and below the session timeout ({} ms)",
                        groups.session_timeout_ms
                    ),
                ));
            }
            groups.heartbeat_interval_ms = t;
            groups.reconcile_interval_ms = groups.reconcile_interval_ms.min(t);
        }
        let offsets_topic_partitions = self.offsets_topic_partitions.unwrap_or(50);
        if !(1..=1000).contains(&offsets_topic_partitions) {
            return Err(bad(
                "offsets_topic_partitions",
                format!("{offsets_topic_partitions} is not between 1 and 1000"),
            ));
        }
        let replica_lag_time_max_ms = self.replica_lag_time_max_ms.unwrap_or(10_000);
        if replica_lag_time_max_ms < 1 {
            return Err(bad(
                "replica_lag_time_max_ms",
                format!("{replica_lag_time_max_ms} must be positive"),
            ));
        }
        Ok(Config {
            settings: BrokerSettings {
                broker_id,
                advertised_address,
                rack: self.rack.unwrap_or_default(),
                standalone,
                auto_create_topics: self.auto_create_topics.unwrap_or(false),
                default_partitions,
                log_defaults: LogConfig {
                    max_message_bytes: max_message_bytes as usize,
                    retention_ms,
                    retention_bytes,
                    ..LogConfig::default()
                },
                produce_timeout: Duration::from_millis(produce_timeout_ms),
                producer_id_expiration_ms,
                flush_linger: Duration::from_millis(self.flush_linger_ms.unwrap_or(0)),
                append_threads,
                groups,
                offsets_topic_partitions,
                replica_lag_time_max_ms,
            },
            data_dir,
            listen,
            metrics_listen,
            retention_check_interval: Duration::from_millis(retention_check),
            cleaner_interval: Duration::from_millis(cleaner_interval),
            cache_capacity_bytes: self.cache_capacity_bytes.unwrap_or(256 << 20),
            network_threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn layers_override_in_order() {
        let file: ConfigLayer =
            toml::from_str("listen = \"127.0.0.1:1000\"\nbroker_id = 3\nrack = \"a\"")
                .expect("toml");
        let envl = ConfigLayer::from_env(env(&[("RUNNEL_LISTEN", "127.0.0.1:2000")])).expect("env");
        let flags = ConfigLayer {
            rack: Some("b".into()),
            ..Default::default()
        };
        let merged = flags.over(envl.over(file.over(ConfigLayer::defaults())));
        let c = merged.validate(env(&[])).expect("valid");
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.settings.broker_id, 3);
        assert_eq!(c.settings.rack, "b");
        assert_eq!(c.data_dir, PathBuf::from("data"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = ConfigLayer::from_env(env(&[("RUNNEL_BROKER_ID", "seven")])).expect_err("bad");
        assert!(e.to_string().contains("RUNNEL_BROKER_ID"), "{e}");
        let e = ConfigLayer {
            listen: Some("nowhere".into()),
            ..ConfigLayer::defaults()
        }
        .validate(env(&[]))
        .expect_err("bad");
        assert!(e.to_string().contains("listen"), "{e}");
        let e = ConfigLayer {
            retention_ms: Some(-5),
            standalone: Some(true),
            ..ConfigLayer::defaults()
        }
        .validate(env(&[]))
        .expect_err("bad");
        assert!(e.to_string().contains("retention_ms"), "{e}");
        let e = ConfigLayer::from_env(env(&[("RUNNEL_APPEND_THREADS", "0")]))
            .expect("parses")
            .over(ConfigLayer {
                standalone: Some(true),
                ..ConfigLayer::defaults()
            })
            .validate(env(&[]))
            .expect_err("bad");
        assert!(e.to_string().contains("append_threads"), "{e}");
        let e = toml::from_str::<ConfigLayer>("colour = 1").expect_err("unknown field");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn operator_mode_takes_identity_from_the_pod() {
        let c = ConfigLayer::defaults()
            .validate(env(&[
                ("POD_NAME", "events-broker-2"),
                ("POD_IP", "198.18.0.7"),
            ]))
            .expect("valid");
        assert_eq!(c.settings.broker_id, 2);
        assert_eq!(c.settings.advertised_address, "198.18.0.7:9092");
        let e = ConfigLayer::defaults()
            .validate(env(&[]))
            .expect_err("no id");
        assert!(e.to_string().contains("broker_id"), "{e}");
    }
}
