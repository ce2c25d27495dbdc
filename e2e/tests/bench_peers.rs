//! `make bench-peers` cannot rot: its harness (`bench/peers.py`) runs here in its smoke mode
//! (`RUNNEL_PEERS_SMOKE=1`) with the peers `bench/tools.sh` installs: a real Kafka 4.4.0 (one
//! KRaft node, with and without `flush.messages=1`, and three nodes), a real NATS Server with
//! JetStream (default sync and `sync_interval: always`), and Runnel's own brokers (this build's
//! binaries), each started, given a small run of each workload, and stopped. The report and the
//! charts are written to a temporary directory whose `benchmarks.md` already holds text of its
//! own and an old section: the section is replaced, the rest kept.

use anyhow::{bail, ensure, Context};
use runnel_e2e::operator::binary_next_to_tests;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The smoke run takes about 90 s here (JVM starts dominate); this bounds it.
const DEADLINE: Duration = Duration::from_secs(600);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn peers_python() -> PathBuf {
    let cache = std::env::var_os("RUNNEL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/runnel")))
        .expect("RUNNEL_HOME or HOME is set");
    cache.join("peers/python/bin/python")
}

const BEFORE: &str = "# Benchmarks\n\nWritten by make bench: kept.\n";
const OLD: &str =
    "<!-- make bench-peers: begin -->\nold peers section\n<!-- make bench-peers: end -->\n";
const AFTER: &str = "\n## After the peers\n\nAlso kept.\n";

#[test]
fn the_peer_benchmark_runs_each_system_and_writes_its_report() -> anyhow::Result<()> {
    let python = peers_python();
    if !python.exists() {
        bail!(
            "{} is missing: run `bench/tools.sh` (make test does, as `make bench-tools`)",
            python.display()
        );
    }
    let broker = binary_next_to_tests("runnel-broker")?;
    let bin = broker.parent().context("binary directory")?;
    for name in ["runnel", "runnel-loopback-cluster"] {
        binary_next_to_tests(name)?;
    }
    let out = tempfile::tempdir()?;
    let report = out.path().join("benchmarks.md");
    std::fs::write(&report, format!("{BEFORE}\n{OLD}{AFTER}"))?;

    let began = Instant::now();
    let mut child = Command::new(&python)
        .arg(repo_root().join("bench/peers.py"))
        .env("RUNNEL_PEERS_SMOKE", "1")
        .env("RUNNEL_PEERS_OUT", out.path())
        .env("RUNNEL_BENCH_BIN", bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let stderr = child.stderr.take().context("stderr")?;
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = { stderr }.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if began.elapsed() > DEADLINE {
            // SIGTERM: the harness stops the systems it started before it exits.
            runnel_e2e::terminate(&mut child, Duration::from_secs(60));
            bail!(
                "bench/peers.py ran longer than {DEADLINE:?}:\n{}",
                log.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = log.join().unwrap_or_default();
    ensure!(status.success(), "bench/peers.py failed ({status}):\n{log}");
    eprintln!("bench/peers.py smoke run: {:.0?}", began.elapsed());

    let text = std::fs::read_to_string(&report)?;
    ensure!(text.starts_with(BEFORE) && text.ends_with(AFTER), "{text}");
    ensure!(!text.contains("old peers section"), "{text}");
    for system in [
        "| Kafka |",
        "| Kafka flush.messages=1 |",
        "| NATS |",
        "| NATS sync always |",
        "| Runnel |",
        "| Kafka, 3 brokers |",
        "| Runnel, 3 brokers |",
    ] {
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(system)).collect();
        ensure!(!rows.is_empty(), "no row for {system}:\n{text}");
        for r in rows {
            // | system | records | records/s or latencies | ...: every run moved records.
            let cells: Vec<&str> = r.split('|').map(str::trim).collect();
            let records: u64 = cells[2].replace(',', "").parse().unwrap_or(0);
            ensure!(records > 0, "{system}: no records in {r}");
            match cells[3].replace(',', "").parse::<f64>() {
                Ok(rate) => ensure!(rate > 0.0, "{system}: no throughput in {r}"),
                Err(_) => ensure!(cells[3].contains(" / "), "{system}: no latencies in {r}"),
            }
        }
    }
    for section in [
        "### Produce",
        "### Consume a backlog",
        "### Latency at a fixed rate",
        "### One record at a time",
        "### Replication factor 3",
        "### Targets",
    ] {
        ensure!(text.contains(section), "no `{section}` in:\n{text}");
    }
    for chart in [
        "peers-produce-100.png",
        "peers-consume-replicated.png",
        "peers-latency.png",
    ] {
        let path = out.path().join("img").join(chart);
        let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
        ensure!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{chart}: not a drawn PNG ({} bytes)",
            bytes.len()
        );
        ensure!(
            text.contains(&format!("(img/{chart})")),
            "{chart} not linked"
        );
    }
    Ok(())
}
