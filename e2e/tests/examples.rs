//! The examples in `examples/` stay true:
//!
//! * every manifest there is accepted by a real API server with Runnel's CRDs (a server-side
//!   dry run with strict field validation, so CEL rules, bounds and unknown fields count), and
//!   holds what its comments promise;
//! * `examples/pipeline/pipeline.sh` runs against a standalone broker (as `make run` starts
//!   one) with the workspace's `runnel` CLI: logs shipped, errors counted per minute by a
//!   consumer group, one alert per minute over the threshold; a second count finds nothing new
//!   (the group committed), and a shipped log file adds exactly its own alert.

use anyhow::{ensure, Context};
use runnel_e2e::runnel::StandaloneBroker;
use runnel_e2e::{run_command, ControlPlane};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Every `.yaml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn every_example_manifest_is_accepted_by_a_real_api_server() -> anyhow::Result<()> {
    let began = Instant::now();
    let root = repo_root();
    let files = yaml_files(&root.join("examples"))?;
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    ensure!(
        names
            == [
                "examples/cluster.yaml",
                "examples/consumergroup.yaml",
                "examples/pipeline/topics.yaml",
                "examples/topics.yaml",
            ],
        "the examples' manifests changed; update this test: {names:?}"
    );

    let cp = ControlPlane::start()?;
    let crds = root.join("crds");
    let out = cp.kubectl(&["apply", "-f", crds.to_str().context("UTF-8 path")?]);
    ensure!(out.success(), "{out}");
    let out = cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusters.runnel.dev",
        "crd/topics.runnel.dev",
        "crd/consumergroups.runnel.dev",
    ]);
    ensure!(out.success(), "{out}");
    let out = cp.kubectl(&["create", "namespace", "events"]);
    ensure!(out.success(), "{out}");

    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    for file in &files {
        let out = cp.kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            "events",
            "-o",
            "json",
            "-f",
            file.to_str().context("UTF-8 path")?,
        ]);
        ensure!(
            out.success() && out.stderr.trim().is_empty(),
            "{} is not accepted as it is: {out}",
            file.display()
        );
        let value: Value = serde_json::from_str(&out.stdout).context("kubectl's JSON")?;
        let items = match value["kind"].as_str() {
            Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![value],
        };
        for item in items {
            let key = format!(
                "{}/{}",
                item["kind"].as_str().unwrap_or("?"),
                item["metadata"]["name"].as_str().unwrap_or("?")
            );
            objects.insert(key, item);
        }
    }
    let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
    ensure!(
        keys == [
            "Cluster/events",
            "ConsumerGroup/error-counter",
            "ConsumerGroup/payments-processor",
            "Topic/alerts",
            "Topic/clickstream",
            "Topic/logs",
            "Topic/payments",
            "Topic/user-profiles",
        ],
        "the examples hold other objects: {keys:?}"
    );
    // What the comments promise, as the API server stored it (defaults and all).
    let spec = |key: &str| objects[key]["spec"].clone();
    let cluster = spec("Cluster/events");
    ensure!(cluster["brokers"] == 3, "{cluster}");
    ensure!(
        cluster["rack"]["topologyKey"] == "topology.kubernetes.io/zone",
        "{cluster}"
    );
    let profiles = spec("Topic/user-profiles");
    ensure!(
        profiles["config"]["cleanupPolicy"] == "compact",
        "{profiles}"
    );
    let clicks = spec("Topic/clickstream");
    ensure!(clicks["config"]["retentionMs"] == 259_200_000, "{clicks}");
    let payments = spec("Topic/payments");
    ensure!(
        payments["replicas"] == 3 && payments["config"]["minInsyncReplicas"] == 2,
        "{payments}"
    );
    let group = spec("ConsumerGroup/payments-processor");
    ensure!(
        group["topic"] == "payments" && group["lagThreshold"] == 1000,
        "{group}"
    );
    for (key, object) in &objects {
        if key != "Cluster/events" {
            ensure!(object["spec"]["cluster"] == "events", "{key}: {object}");
        }
    }
    eprintln!(
        "examples: {} manifests, {} objects accepted in {:.1?}",
        files.len(),
        objects.len(),
        began.elapsed()
    );
    Ok(())
}

/// Runs `examples/pipeline/pipeline.sh STEP` against `broker` with `env`.
fn pipeline(
    broker: &StandaloneBroker,
    step: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<runnel_e2e::Output> {
    let cli = broker.cli()?;
    let mut command = Command::new("timeout");
    command
        .arg("180")
        .arg("bash")
        .arg(repo_root().join("examples/pipeline/pipeline.sh"))
        .arg(step)
        .env("RUNNEL", cli.binary())
        .env("RUNNEL_BOOTSTRAP", broker.address())
        .envs(env.iter().copied());
    let out = run_command(command, format!("pipeline.sh {step}"), None)?;
    ensure!(out.success(), "{out}");
    Ok(out)
}

/// ERROR lines per minute (`YYYY-MM-DDTHH:MM`) of log lines as the pipeline ships them.
fn errors_per_minute<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in lines {
        let mut fields = line.split_whitespace();
        if let (Some(time), Some("ERROR")) = (fields.next(), fields.next()) {
            *out.entry(time.chars().take(16).collect()).or_default() += 1;
        }
    }
    out
}

/// The alerts topic as (minute, value) pairs.
fn alerts(broker: &StandaloneBroker) -> anyhow::Result<Vec<(String, Value)>> {
    let out = broker.cli()?.run(
        &[
            "consume",
            "alerts",
            "--from-beginning",
            "--timeout-ms",
            "2000",
            "--format",
            "%k|%v",
        ],
        None,
    )?;
    out.lines()
        .map(|line| {
            let (key, value) = line.split_once('|').context("key|value")?;
            Ok((
                key.to_string(),
                serde_json::from_str(value).with_context(|| format!("alert {value:?}"))?,
            ))
        })
        .collect()
}

#[test]
fn the_pipeline_example_turns_error_logs_into_alerts() -> anyhow::Result<()> {
    let began = Instant::now();
    let broker = StandaloneBroker::start()?;
    let cli = broker.cli()?;

    let out = pipeline(&broker, "all", &[])?;
    // Five minutes of 120 lines each, read back as the pipeline shipped them.
    let logs = cli.consume("logs", 600, "%v")?;
    ensure!(logs.len() == 600, "{} log records:\n{out}", logs.len());
    let counted = errors_per_minute(logs.iter().map(String::as_str));
    ensure!(
        counted.values().copied().collect::<Vec<_>>() == [2, 8, 12, 4],
        "the sample's errors per minute: {counted:?}"
    );
    let expected: Vec<(String, Value)> = counted
        .iter()
        .filter(|(_, n)| **n >= 5)
        .map(|(minute, n)| {
            (
                minute.clone(),
                serde_json::json!({"minute": minute, "errors": n, "threshold": 5}),
            )
        })
        .collect();
    let got = alerts(&broker)?;
    ensure!(
        got == expected,
        "alerts {got:?}, expected {expected:?}\n{out}"
    );
    ensure!(
        out.stdout.contains(&expected[0].0),
        "the last step prints the alerts:\n{out}"
    );

    // The group committed: counting again finds nothing new.
    pipeline(&broker, "count", &[])?;
    ensure!(alerts(&broker)? == expected, "a second count added alerts");

    // A log file of one's own: only its minute over the threshold (3) becomes an alert.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.log");
    let mut log = String::new();
    for second in 0..6 {
        log.push_str(&format!(
            "2030-01-01T08:15:{second:02}Z ERROR billing card declined\n"
        ));
        log.push_str(&format!("2030-01-01T08:16:{second:02}Z INFO billing ok\n"));
    }
    log.push_str("2030-01-01T08:17:00Z ERROR billing card declined\n");
    let file = file.to_str().context("UTF-8 path")?;
    std::fs::write(file, log)?;
    pipeline(&broker, "ship", &[("LOG_FILE", file)])?;
    pipeline(&broker, "count", &[("THRESHOLD", "3")])?;
    let mut want = expected.clone();
    want.push((
        "2030-01-01T08:15".into(),
        serde_json::json!({"minute": "2030-01-01T08:15", "errors": 6, "threshold": 3}),
    ));
    ensure!(alerts(&broker)? == want, "the log file's alert");
    eprintln!("pipeline example: done in {:.1?}", began.elapsed());
    Ok(())
}
