//! `runnel`: the command-line client of Runnel, in Kafka's words (topics, console producer and
//! consumer, offsets, benchmarks). Output is for people by default, `--output json` for scripts.

mod format;
mod group;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use runnel_client::admin::parse_config_pair;
use runnel_client::bench::{self, ConsumeBench, GroupBench, ProduceBench};
use runnel_client::{
    Acks, Admin, Compression, Consumer, OffsetQuery, Partitions, Producer, ProducerConfig,
    ProducerRecord, StartOffset,
};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::format::{ids, record_json, split_key_value, table, trim_line_end, Template};

#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about = "Command-line client of Runnel, a Kafka-style streaming platform"
)]
struct Cli {
    /// Broker to talk to (HOST:PORT, or several separated by commas).
    #[arg(
        long,
        global = true,
        env = "RUNNEL_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Output for people (human) or scripts (json).
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per line of standard input.
    Produce(ProduceArgs),
    /// Print the records of a topic.
    Consume(ConsumeArgs),
    /// Offsets of a topic's partitions: earliest, latest or at a time.
    Offsets(OffsetsArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Measure throughput and latency.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition.
        #[arg(long, short = 'r', default_value_t = 1)]
        replication_factor: i32,
        /// Topic config KEY=VALUE (retention.ms, retention.bytes, cleanup.policy,
        /// min.insync.replicas, max.message.bytes, message.timestamp.type); repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", num_args = 1..)]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions: leader, replicas, ISR, offsets and size.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Split each line at the first SEP into key and value (a line without SEP is an error).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Write every record to this partition (default: by key, or sticky for no key).
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgements: all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_size: usize,
    /// Linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the beginning of the log (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    offset: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrived for this many milliseconds (default: follow forever).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print each record with a template: %T topic, %p partition, %o offset, %t timestamp,
    /// %k key, %v value, %% percent; \n and \t escapes. One record per line.
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Print the key before the value, separated by a tab.
    #[arg(long)]
    print_key: bool,
    /// Consume as a member of this consumer group: the group's coordinator assigns the
    /// partitions, and offsets are committed (from the committed offset on a restart;
    /// --from-beginning applies to partitions without one).
    #[arg(long, conflicts_with_all = ["offset", "partition"])]
    group: Option<String>,
    /// With --group: the member is removed when silent this long (default: the broker's).
    #[arg(long, requires = "group")]
    session_timeout_ms: Option<u64>,
    /// With --group: how often offsets are committed automatically.
    #[arg(long, requires = "group", default_value_t = 5000)]
    auto_commit_interval_ms: u64,
    /// With --group: the client id shown by `runnel group describe`.
    #[arg(long, requires = "group", default_value = "runnel-cli")]
    client_id: String,
}

#[derive(Debug, Args)]
struct OffsetsArgs {
    /// Topic.
    topic: String,
    /// earliest, latest, or a timestamp in ms since the epoch (first offset at or after it).
    #[arg(long, default_value = "latest")]
    time: OffsetQuery,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// No progress line on standard error (drawn only when it is a terminal).
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce N records of S bytes as fast as possible (or at --rate) and report throughput
    /// and latency.
    Produce(BenchProduceArgs),
    /// Read N records from the beginning of a topic as fast as possible.
    Consume(BenchConsumeArgs),
    /// A consumer group of M members reading a topic from its beginning (records/s, with
    /// automatic commit), then the handover of a member's partitions when it leaves.
    Group(BenchGroupArgs),
}

#[derive(Debug, Args)]
struct BenchProduceArgs {
    /// Topic (created with --partitions if missing).
    #[arg(long, default_value = "runnel-bench")]
    topic: String,
    /// Partitions of the topic if the bench creates it.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Records in total.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, short = 's', default_value_t = 100)]
    record_size: usize,
    /// Concurrent producers, each with its own connection.
    #[arg(long, short = 'p', default_value_t = 1)]
    producers: usize,
    /// Acknowledgements: all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_size: usize,
    /// Linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Pace at this many records/s in total (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Also measure end-to-end latency with an in-process consumer.
    #[arg(long)]
    e2e: bool,
    /// Turn idempotence off.
    #[arg(long)]
    no_idempotence: bool,
    /// Give records keys, cycling through this many (a compacted topic needs keys).
    #[arg(long, default_value_t = 0)]
    keys: u64,
}

#[derive(Debug, Args)]
struct BenchConsumeArgs {
    /// Topic to read from its beginning.
    #[arg(long, default_value = "runnel-bench")]
    topic: String,
    /// Records to read.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    records: u64,
    /// Stop when no record arrived for this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct BenchGroupArgs {
    /// Topic to read from its beginning.
    #[arg(long, default_value = "runnel-bench")]
    topic: String,
    /// Distinct records to read (default: every record in the topic when the bench starts).
    #[arg(long, short = 'n')]
    records: Option<u64>,
    /// Members of the group, each a group consumer with its own connections.
    #[arg(long, short = 'm', default_value_t = 3)]
    members: usize,
    /// Group id (default: a new one, deleted afterwards); it must have no committed offsets
    /// for the topic.
    #[arg(long)]
    group: Option<String>,
    /// Stop when no new record arrived for this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// How often offsets are committed automatically.
    #[arg(long, default_value_t = 5000)]
    auto_commit_interval_ms: u64,
    /// Records/s (over all partitions) of the stream written while a member leaves.
    #[arg(long, default_value_t = 1000)]
    handover_rate: u64,
    /// Skip the handover measurement (the backlog only).
    #[arg(long)]
    no_handover: bool,
}

/// One async thread per client the command runs, up to the cores: `runnel` is one producer or
/// consumer, whose tasks (the caller's sends, the sender, the connection) hand work to each other
/// and run best on one thread; `bench produce` runs several producers (and a consumer with
/// `--e2e`), and `bench group` several group members, which can use a core each.
fn worker_threads(command: &Command) -> usize {
    let clients = match command {
        Command::Bench(BenchArgs {
            command: BenchCommand::Produce(a),
            ..
        }) => a.producers + usize::from(a.e2e),
        // A group's members and a plain consumer's fetchers alike may use every core, so that
        // the group/plain ratio of `make bench` compares the consumers, not their threads.
        Command::Bench(BenchArgs {
            command: BenchCommand::Group(_) | BenchCommand::Consume(_),
            ..
        }) => usize::MAX,
        _ => 1,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    clients.clamp(1, cores)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(&cli.command))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`runnel consume … | head`) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let bootstrap = cli.bootstrap.as_str();
    let output = cli.output;
    match cli.command {
        Command::Topic(cmd) => topic(bootstrap, output, cmd).await,
        Command::Produce(args) => produce(bootstrap, output, args).await,
        Command::Consume(args) => consume(bootstrap, output, args).await,
        Command::Offsets(args) => offsets(bootstrap, output, args).await,
        Command::Group(cmd) => group::run(bootstrap, output, cmd).await,
        Command::Bench(cmd) => bench(bootstrap, output, cmd).await,
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

async fn topic(bootstrap: &str, output: Output, cmd: TopicCommand) -> Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut map = BTreeMap::new();
            for c in configs.iter().flat_map(|c| c.split(',')) {
                let (k, v) = parse_config_pair(c)?;
                map.insert(k, v);
            }
            let t = admin
                .create_topic(&name, partitions, replication_factor, &map)
                .await?;
            match output {
                Output::Json => print_json(&json!({
                    "topic": t.name,
                    "partitions": t.partitions.len(),
                    "replication_factor": t.replication_factor,
                }))?,
                Output::Human => println!(
                    "created topic `{}` with {} partition(s), replication factor {}",
                    t.name,
                    t.partitions.len(),
                    t.replication_factor
                ),
            }
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            match output {
                Output::Json => {
                    let list: Vec<_> = topics
                        .iter()
                        .map(|t| {
                            json!({
                                "name": t.name,
                                "partitions": t.partitions.len(),
                                "replication_factor": t.replication_factor,
                            })
                        })
                        .collect();
                    print_json(&json!({ "topics": list }))?;
                }
                Output::Human => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.partitions.len().to_string(),
                                t.replication_factor.to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["NAME", "PARTITIONS", "REPLICATION-FACTOR"], &rows)
                    );
                }
            }
        }
        TopicCommand::Describe { name } => {
            let d = admin.describe_topic(&name).await?;
            match output {
                Output::Json => print_json(&serde_json::to_value(&d)?)?,
                Output::Human => {
                    let configs = if d.configs.is_empty() {
                        "(defaults)".to_owned()
                    } else {
                        d.configs
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    println!(
                        "Topic: {}  Partitions: {}  ReplicationFactor: {}  Configs: {}",
                        d.name,
                        d.partitions.len(),
                        d.replication_factor,
                        configs
                    );
                    let rows: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.leader.to_string(),
                                ids(&p.replicas),
                                ids(&p.isr),
                                p.log_start_offset.to_string(),
                                p.high_watermark.to_string(),
                                if p.size_bytes < 0 {
                                    "?".into()
                                } else {
                                    p.size_bytes.to_string()
                                },
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "PARTITION",
                                "LEADER",
                                "REPLICAS",
                                "ISR",
                                "LOG-START",
                                "HIGH-WATERMARK",
                                "SIZE-BYTES"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            match output {
                Output::Json => print_json(&json!({ "deleted": name }))?,
                Output::Human => println!("deleted topic `{name}`"),
            }
        }
    }
    Ok(())
}

async fn produce(bootstrap: &str, output: Output, args: ProduceArgs) -> Result<()> {
    let producer = Producer::connect(ProducerConfig {
        bootstrap: bootstrap.to_owned(),
        acks: args.acks,
        batch_size: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        compression: args.compression,
        ..Default::default()
    })
    .await?;
    // Fail early, with the broker's words, if the topic or partition does not exist.
    let partitions = producer.partition_count(&args.topic).await?;
    if let Some(p) = args.partition {
        if p < 0 || p as usize >= partitions {
            return Err(runnel_client::Error::UnknownPartition {
                topic: args.topic.clone(),
                partition: p,
                partitions,
            }
            .into());
        }
    }
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut stdin = tokio::io::BufReader::with_capacity(1 << 16, tokio::io::stdin());
    let mut line = Vec::new();
    let mut count: u64 = 0;
    let mut bad_line = None;
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        let text = trim_line_end(&line);
        let (key, value) = match separator {
            None => (None, Bytes::copy_from_slice(text)),
            Some(sep) => match split_key_value(text, sep) {
                Some((k, v)) => (Some(Bytes::copy_from_slice(k)), Bytes::copy_from_slice(v)),
                None => {
                    bad_line = Some(count + 1);
                    break;
                }
            },
        };
        producer
            .send(ProducerRecord {
                partition: args.partition,
                key,
                ..ProducerRecord::new(topic.clone(), value)
            })
            .await?;
        count += 1;
    }
    producer.flush().await;
    let (failed, error) = producer.delivery_failures();
    producer.close().await;
    if let Some(n) = bad_line {
        bail!(
            "no key separator `{}` found on line {n} ({count} record(s) before it were produced)",
            args.key_separator.unwrap_or_default()
        );
    }
    if failed > 0 {
        let reason = error.map(|e| e.to_string()).unwrap_or_default();
        bail!("{failed} of {count} record(s) were not delivered to `{topic}`: {reason}");
    }
    match output {
        Output::Json => print_json(&json!({ "topic": &*topic, "records": count }))?,
        Output::Human => eprintln!("produced {count} records to {topic}"),
    }
    Ok(())
}

/// How consumed records are printed.
struct Printer {
    template: Option<Template>,
    output: Output,
    print_key: bool,
    buf: Vec<u8>,
}

impl Printer {
    fn new(output: Output, args: &ConsumeArgs) -> Result<Self> {
        let template = args
            .format
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok(Printer {
            template,
            output,
            print_key: args.print_key,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Prints up to `room` of `records`; returns how many.
    fn print(&mut self, records: &[runnel_client::ConsumerRecord], room: u64) -> Result<u64> {
        self.buf.clear();
        let mut printed = 0;
        for r in records {
            if printed >= room {
                break;
            }
            match (&self.template, self.output) {
                (Some(t), _) => t.render(r, &mut self.buf),
                (None, Output::Json) => serde_json::to_writer(&mut self.buf, &record_json(r))?,
                (None, Output::Human) => {
                    if self.print_key {
                        self.buf
                            .extend_from_slice(r.key.as_deref().unwrap_or(b"null"));
                        self.buf.push(b'\t');
                    }
                    self.buf
                        .extend_from_slice(r.value.as_deref().unwrap_or(b"null"));
                }
            }
            self.buf.push(b'\n');
            printed += 1;
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        out.flush()?;
        Ok(printed)
    }

    /// Whether the closing count goes to stderr.
    fn summary(&self) -> bool {
        self.output == Output::Human && self.template.is_none()
    }
}

async fn consume(bootstrap: &str, output: Output, args: ConsumeArgs) -> Result<()> {
    if args.group.is_some() {
        return group::consume(bootstrap, output, args).await;
    }
    let mut printer = Printer::new(output, &args)?;
    let mut consumer = Consumer::connect(bootstrap).await?;
    let start = match (args.from_beginning, args.offset) {
        (_, Some(o)) => StartOffset::Offset(o),
        (true, None) => StartOffset::Earliest,
        (false, None) => StartOffset::Latest,
    };
    consumer
        .assign(&args.topic, Partitions::from(args.partition), start)
        .await?;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let poll_wait = timeout.unwrap_or(Duration::from_secs(3600));
    let max = args.max_messages.unwrap_or(u64::MAX);
    let mut printed: u64 = 0;
    while printed < max {
        let records = consumer.poll(poll_wait).await?;
        if records.is_empty() {
            if timeout.is_some() {
                break;
            }
            continue;
        }
        printed += printer.print(&records, max - printed)?;
    }
    if printer.summary() {
        eprintln!("consumed {printed} records from {}", args.topic);
    }
    Ok(())
}

async fn offsets(bootstrap: &str, output: Output, args: OffsetsArgs) -> Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let offsets = admin
        .list_offsets(&args.topic, args.time)
        .await
        .with_context(|| format!("offsets of `{}`", args.topic))?;
    match output {
        Output::Json => {
            let parts: Vec<_> = offsets
                .iter()
                .map(|p| json!({ "partition": p.partition, "offset": p.offset }))
                .collect();
            print_json(&json!({ "topic": args.topic, "partitions": parts }))?;
        }
        Output::Human => {
            let rows: Vec<Vec<String>> = offsets
                .iter()
                .map(|p| vec![p.partition.to_string(), p.offset.to_string()])
                .collect();
            print!("{}", table(&["PARTITION", "OFFSET"], &rows));
        }
    }
    Ok(())
}

async fn bench(bootstrap: &str, output: Output, args: BenchArgs) -> Result<()> {
    // The line is redrawn in place: only a terminal shows it as one line, and pipes, files
    // and the benchmark scripts must not get it.
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    match args.command {
        BenchCommand::Produce(a) => {
            let report = bench::run_produce(&ProduceBench {
                bootstrap: bootstrap.to_owned(),
                topic: a.topic,
                partitions: a.partitions,
                records: a.records,
                record_size: a.record_size,
                producers: a.producers,
                acks: a.acks,
                batch_size: a.batch_size,
                linger: Duration::from_millis(a.linger_ms),
                compression: a.compression,
                idempotent: !a.no_idempotence,
                rate: a.rate,
                e2e: a.e2e,
                keys: a.keys,
                progress,
            })
            .await?;
            match output {
                Output::Json => print_json(&serde_json::to_value(&report)?)?,
                Output::Human => println!("{report}"),
            }
            if report.failed > 0 {
                bail!("{} record(s) were not delivered", report.failed);
            }
        }
        BenchCommand::Consume(a) => {
            let report = bench::run_consume(&ConsumeBench {
                bootstrap: bootstrap.to_owned(),
                topic: a.topic,
                records: a.records,
                idle_timeout: Duration::from_millis(a.timeout_ms),
                progress,
            })
            .await?;
            match output {
                Output::Json => print_json(&serde_json::to_value(&report)?)?,
                Output::Human => println!("{report}"),
            }
        }
        BenchCommand::Group(a) => {
            let report = bench::run_group(&GroupBench {
                bootstrap: bootstrap.to_owned(),
                topic: a.topic,
                group: a.group,
                members: a.members,
                records: a.records,
                idle_timeout: Duration::from_millis(a.timeout_ms),
                auto_commit_interval: Duration::from_millis(a.auto_commit_interval_ms),
                handover: !a.no_handover,
                handover_rate: a.handover_rate,
                progress,
                ..GroupBench::default()
            })
            .await?;
            match output {
                Output::Json => print_json(&serde_json::to_value(&report)?)?,
                Output::Human => println!("{report}"),
            }
            if !report.complete {
                bail!(
                    "the group read {} of the backlog's records before it ran dry",
                    report.records
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_parses_kafka_style_arguments() {
        let cli = Cli::try_parse_from([
            "runnel",
            "--bootstrap",
            "b:1",
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=1000",
            "cleanup.policy=compact",
        ])
        .expect("parse");
        assert_eq!(cli.bootstrap, "b:1");
        match cli.command {
            Command::Topic(TopicCommand::Create {
                partitions,
                configs,
                ..
            }) => {
                assert_eq!(partitions, 3);
                assert_eq!(configs, vec!["retention.ms=1000", "cleanup.policy=compact"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "runnel",
            "produce",
            "t",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "--output",
            "json",
        ])
        .expect("parse");
        assert_eq!(cli.output, Output::Json);
        match cli.command {
            Command::Produce(a) => {
                assert_eq!(a.acks, Acks::Leader);
                assert_eq!(a.compression, Compression::Zstd);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["runnel", "produce", "t", "--acks", "2"]).is_err());
        assert!(Cli::try_parse_from([
            "runnel",
            "consume",
            "t",
            "--from-beginning",
            "--offset",
            "3"
        ])
        .is_err());
        let cli =
            Cli::try_parse_from(["runnel", "offsets", "t", "--time", "earliest"]).expect("parse");
        match cli.command {
            Command::Offsets(a) => assert_eq!(a.time, OffsetQuery::Earliest),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_progress_is_taken_before_or_after_the_bench() {
        for args in [
            &["runnel", "bench", "--no-progress", "produce", "-n", "5"][..],
            &["runnel", "bench", "group", "--no-progress"][..],
        ] {
            let cli = Cli::try_parse_from(args).expect("parse");
            match cli.command {
                Command::Bench(b) => assert!(b.no_progress, "{args:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        match Cli::try_parse_from(["runnel", "bench", "consume"])
            .expect("parse")
            .command
        {
            Command::Bench(b) => assert!(!b.no_progress),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["runnel", "topic", "list", "--no-progress"]).is_err());
    }
}
