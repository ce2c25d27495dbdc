//! A Cluster's `spec.config`, in Kafka's names, turned into the brokers' own configuration file
//! (`broker.toml`, read with `runnel-broker --config`). Pure: the Cluster controller writes the
//! result into the ConfigMap and reports the keys it could not use in a condition.

use serde::Serialize;
use std::collections::BTreeMap;

/// The broker settings a Cluster can set, in the broker's TOML names.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerToml {
    /// Default `retention.ms` of topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// Default `retention.bytes` of topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
    /// Default `max.message.bytes` of topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<i64>,
    /// How often retention runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_check_interval_ms: Option<u64>,
}

/// The result of [`render`]: the settings, and what was wrong with the rest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The settings the brokers get.
    pub settings: BrokerToml,
    /// One line per key that was not used: unknown to Runnel, or with a bad value.
    pub problems: Vec<String>,
}

impl Rendered {
    /// The `broker.toml` text.
    pub fn toml(&self) -> String {
        // Serialising a struct of integers cannot fail.
        toml::to_string(&self.settings).unwrap_or_default()
    }
}

/// Kafka broker settings Runnel reads, and the topic-level name each is the default of.
const KEYS: &[(&str, &str)] = &[
    ("log.retention.ms", "retention.ms"),
    ("log.retention.minutes", "retention.ms"),
    ("log.retention.hours", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    (
        "log.retention.check.interval.ms",
        "log.retention.check.interval.ms",
    ),
];

fn parse<T>(key: &str, value: &str, min: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(format!(
            "{key}={value:?}: must be an integer of at least {min}"
        )),
    }
}

/// Turns a Cluster's `spec.config` into broker settings. Both the broker-level Kafka name
/// (`log.retention.ms`) and the topic-level one (`retention.ms`) are accepted; as in Kafka,
/// `log.retention.ms` wins over `.minutes`, which wins over `.hours`.
pub fn render(config: &BTreeMap<String, String>) -> Rendered {
    let mut out = Rendered::default();
    let mut retention: [Option<i64>; 3] = [None; 3]; // ms, minutes, hours
    for (key, value) in config {
        let canonical = KEYS
            .iter()
            .find(|(broker, topic)| key == broker || key == topic)
            .map(|(broker, _)| *broker);
        let result = match canonical {
            Some("log.retention.ms") => parse(key, value, -1i64).map(|v| retention[0] = Some(v)),
            Some("log.retention.minutes") => {
                parse(key, value, -1i64).map(|v| retention[1] = Some(v))
            }
            Some("log.retention.hours") => parse(key, value, -1i64).map(|v| retention[2] = Some(v)),
            Some("log.retention.bytes") => {
                parse(key, value, -1i64).map(|v| out.settings.retention_bytes = Some(v))
            }
            Some("message.max.bytes") => {
                parse(key, value, 1i64).map(|v| out.settings.max_message_bytes = Some(v))
            }
            Some(_) => {
                parse(key, value, 1u64).map(|v| out.settings.retention_check_interval_ms = Some(v))
            }
            None => Err(format!("{key}: not a setting Runnel brokers use")),
        };
        if let Err(problem) = result {
            out.problems.push(problem);
        }
    }
    let scale = |v: i64, by: i64| if v < 0 { -1 } else { v.saturating_mul(by) };
    out.settings.retention_ms = retention[0]
        .or(retention[1].map(|m| scale(m, 60_000)))
        .or(retention[2].map(|h| scale(h, 3_600_000)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafka_names_become_broker_settings() {
        let r = render(&config(&[
            ("log.retention.hours", "168"),
            ("retention.bytes", "1073741824"),
            ("message.max.bytes", "2097152"),
            ("log.retention.check.interval.ms", "60000"),
        ]));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            r.toml(),
            "retention_ms = 604800000\nretention_bytes = 1073741824\n\
             max_message_bytes = 2097152\nretention_check_interval_ms = 60000\n"
        );
    }

    #[test]
    fn milliseconds_win_over_minutes_over_hours() {
        let r = render(&config(&[
            ("log.retention.hours", "1"),
            ("log.retention.minutes", "2"),
        ]));
        assert_eq!(r.settings.retention_ms, Some(120_000));
        let r = render(&config(&[
            ("log.retention.minutes", "2"),
            ("log.retention.ms", "5"),
        ]));
        assert_eq!(r.settings.retention_ms, Some(5));
        let r = render(&config(&[("log.retention.hours", "-1")]));
        assert_eq!(r.settings.retention_ms, Some(-1));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_and_left_out() {
        let r = render(&config(&[
            ("num.io.threads", "8"),
            ("retention.ms", "soon"),
            ("message.max.bytes", "0"),
            ("retention.bytes", "100"),
        ]));
        assert_eq!(r.settings.retention_bytes, Some(100));
        assert_eq!(r.settings.retention_ms, None);
        assert_eq!(r.settings.max_message_bytes, None);
        assert_eq!(
            r.problems,
            vec![
                "message.max.bytes=\"0\": must be an integer of at least 1".to_string(),
                "num.io.threads: not a setting Runnel brokers use".to_string(),
                "retention.ms=\"soon\": must be an integer of at least -1".to_string(),
            ]
        );
    }

    #[test]
    fn an_empty_config_is_an_empty_file() {
        assert_eq!(render(&BTreeMap::new()).toml(), "");
    }
}
