//! `runnel-loopback-cluster`: the integration tests' three brokers on loopback with their
//! stand-in controller ([`runnel_integration::cluster`]), as a command for `make bench`. A test
//! harness, not a way to run Runnel: the operator is the control plane.
//!
//! - `serve --topic NAME:PARTITIONS:REPLICAS[:MIN_INSYNC] …` starts the brokers, creates the
//!   topics, waits until every replica is in sync and prints one JSON line (`bootstrap`, each
//!   broker's `id`, `address` and `pid`). It runs until its standard input closes, then prints
//!   a second line (`isr_shrinks`, `leader_changes`: what the controller did meanwhile) and
//!   stops the brokers.
//! - `failover` runs producers with `acks=all` on a topic with three copies, kills the leader
//!   of each partition in turn with `kill -9` and restarts it, and prints one JSON line: per
//!   partition the time from the kill to the first acknowledged produce on the new leader and
//!   until the restarted broker was back in every ISR; then how many acknowledged records were
//!   read back and how many were lost.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use runnel_integration::cluster::{first_ack, TestCluster};
use runnel_integration::load::Load;
use runnel_proto::v1::TopicConfig;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(
    name = "runnel-loopback-cluster",
    about = "Brokers on loopback with the test harness's controller (for benchmarks)"
)]
struct Args {
    /// Brokers to start.
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// Where the data directories go (a temporary directory is made in it).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start, create the topics, print the bootstrap; run until standard input closes.
    Serve {
        /// NAME:PARTITIONS:REPLICAS[:MIN_INSYNC], repeatable.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
    },
    /// Kill the leader of each partition in turn under `acks=all` load; print the times.
    Failover {
        /// Partitions of the topic (each led by another broker at first).
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Concurrent producers.
        #[arg(long, default_value_t = 3)]
        producers: usize,
    },
}

/// A topic to create: name, partitions, replicas, `min.insync.replicas`.
fn parse_topic(spec: &str) -> anyhow::Result<(String, i32, i32, Option<i32>)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let number = |i: usize, what: &str| -> anyhow::Result<i32> {
        parts[i]
            .parse()
            .with_context(|| format!("--topic {spec}: {what} `{}` is not a number", parts[i]))
    };
    match parts.len() {
        3 | 4 => Ok((
            parts[0].to_string(),
            number(1, "partitions")?,
            number(2, "replicas")?,
            if parts.len() == 4 {
                Some(number(3, "min.insync.replicas")?)
            } else {
                None
            },
        )),
        _ => bail!("--topic {spec}: expected NAME:PARTITIONS:REPLICAS[:MIN_INSYNC]"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cluster = TestCluster::start_in(&args.dir, args.brokers, &[]).await?;
    match args.command {
        Command::Serve { topics } => serve(&cluster, &topics).await,
        Command::Failover {
            partitions,
            producers,
        } => failover(&mut cluster, partitions, producers).await,
    }
}

async fn serve(c: &TestCluster, topics: &[String]) -> anyhow::Result<()> {
    for spec in topics {
        let (name, partitions, replicas, min_insync) = parse_topic(spec)?;
        c.create_topic(
            &name,
            partitions,
            replicas,
            TopicConfig {
                min_insync_replicas: min_insync,
                ..Default::default()
            },
        )
        .await?;
    }
    c.wait_for("every replica in sync", Duration::from_secs(30), |md| {
        md.topics.iter().all(|t| {
            t.partitions
                .iter()
                .all(|p| p.leader >= 0 && p.isr.len() == p.replicas.len())
        })
    })
    .await?;
    let brokers: Vec<_> = c
        .brokers
        .iter()
        .enumerate()
        .map(|(id, b)| json!({"id": id, "address": b.address, "pid": b.pid()}))
        .collect();
    println!(
        "{}",
        json!({"bootstrap": c.bootstrap(), "brokers": brokers})
    );
    let changes_before = c.leader_changes().len();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {}
    println!(
        "{}",
        json!({
            "isr_shrinks": c.isr_shrinks(),
            "leader_changes": c.leader_changes().len() - changes_before,
        })
    );
    Ok(())
}

const TOPIC: &str = "failover";

async fn failover(c: &mut TestCluster, partitions: i32, producers: usize) -> anyhow::Result<()> {
    c.create_topic(
        TOPIC,
        partitions,
        3,
        TopicConfig {
            min_insync_replicas: Some(2),
            ..Default::default()
        },
    )
    .await?;
    let load = Load::start(&c.bootstrap(), TOPIC, producers, partitions);
    load.wait_for(3000, Duration::from_secs(30)).await;
    let probe = c.probe().await?;
    let mut rounds = Vec::new();
    for p in 0..partitions {
        c.wait_for(
            "every replica in sync",
            Duration::from_secs(30),
            c.all_in_sync(),
        )
        .await?;
        let victim = c.partition(TOPIC, p).leader;
        let killed = Instant::now();
        c.brokers[usize::try_from(victim)?].kill9();
        let took = first_ack(&probe, TOPIC, p, killed).await?;
        let now = c.partition(TOPIC, p);
        c.brokers[usize::try_from(victim)?].restart()?;
        let back = c
            .wait_for(
                "the restarted broker back in every ISR",
                Duration::from_secs(30),
                c.all_in_sync(),
            )
            .await?;
        rounds.push(json!({
            "partition": p,
            "killed": victim,
            "new_leader": now.leader,
            "leader_epoch": now.leader_epoch,
            "first_ack_ms": took.as_secs_f64() * 1e3,
            "rejoined_ms": back.as_secs_f64() * 1e3,
        }));
    }
    let acked = load.stop().await;
    drop(probe);
    let back = c.read_back(TOPIC, partitions, &acked).await?;
    println!(
        "{}",
        json!({
            "failovers": rounds,
            "acknowledged": acked.len(),
            "read_back": back.total,
            "lost": back.missing.len(),
        })
    );
    Ok(())
}
