//! `runnel consume --group` and `runnel group …`, in the words of Kafka's console consumer and
//! `kafka-consumer-groups`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use runnel_client::consumer::AutoOffsetReset;
use runnel_client::group::{OffsetResetPlan, ResetTo};
use runnel_client::{Admin, ConsumerConfig, GroupConsumer, GroupConsumerConfig};
use serde_json::json;

use crate::format::table;
use crate::{print_json, ConsumeArgs, Output, Printer};

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List the consumer groups of the cluster.
    List,
    /// Show a group: state, members, and per partition the committed offset, log end offset
    /// and lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Move the committed offsets of a group that has no members. A dry run that prints the
    /// plan, unless --execute.
    ResetOffsets(ResetArgs),
    /// Delete a group that has no members, with its committed offsets.
    Delete {
        /// The group.
        group: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// The group.
    group: String,
    /// TOPIC, or TOPIC:P,P,… for some partitions; repeatable.
    #[arg(
        long = "topic",
        value_name = "TOPIC[:PARTITIONS]",
        required_unless_present = "all_topics"
    )]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long, conflicts_with = "topics")]
    all_topics: bool,
    /// To the log start offset.
    #[arg(long, group = "target")]
    to_earliest: bool,
    /// To the high watermark.
    #[arg(long, group = "target")]
    to_latest: bool,
    /// To this offset (clamped to the log).
    #[arg(long, group = "target", value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// By this many records from the committed offset (negative: back).
    #[arg(long, group = "target", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// To the first offset at or after this time: RFC 3339 (2026-12-02T10:00:00Z).
    #[arg(long, group = "target", value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// To the first offset at or after this time, in ms since the epoch.
    #[arg(long, group = "target", value_name = "MS")]
    to_timestamp: Option<i64>,
    /// Commit the new offsets (without it, only the plan is printed).
    #[arg(long)]
    execute: bool,
}

impl ResetArgs {
    fn target(&self) -> Result<ResetTo> {
        Ok(if self.to_earliest {
            ResetTo::Earliest
        } else if self.to_latest {
            ResetTo::Latest
        } else if let Some(o) = self.to_offset {
            ResetTo::Offset(o)
        } else if let Some(n) = self.shift_by {
            ResetTo::ShiftBy(n)
        } else if let Some(ms) = self.to_timestamp {
            ResetTo::Timestamp(ms)
        } else if let Some(t) = &self.to_datetime {
            let at = humantime::parse_rfc3339_weak(t)
                .with_context(|| format!("--to-datetime `{t}` is not an RFC 3339 time"))?;
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            ResetTo::Timestamp(ms)
        } else {
            bail!("say where to: --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime or --to-timestamp");
        })
    }

    fn partitions(&self) -> Result<Vec<(String, Vec<i32>)>> {
        self.topics
            .iter()
            .map(|t| match t.split_once(':') {
                None => Ok((t.clone(), Vec::new())),
                Some((topic, parts)) => {
                    let list = parts
                        .split(',')
                        .map(|p| {
                            p.trim()
                                .parse::<i32>()
                                .with_context(|| format!("--topic {t}: `{p}` is not a partition"))
                        })
                        .collect::<Result<Vec<i32>>>()?;
                    Ok((topic.to_owned(), list))
                }
            })
            .collect()
    }
}

pub(crate) async fn run(bootstrap: &str, output: Output, cmd: GroupCommand) -> Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match cmd {
        GroupCommand::List => {
            let groups = admin.list_groups().await?;
            match output {
                Output::Json => print_json(&json!({ "groups": groups }))?,
                Output::Human => {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| {
                            vec![
                                g.group_id.clone(),
                                g.state.clone(),
                                g.members.to_string(),
                                g.coordinator.to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["GROUP", "STATE", "MEMBERS", "COORDINATOR"], &rows)
                    );
                }
            }
        }
        GroupCommand::Describe { group } => {
            let d = admin.describe_group(&group).await?;
            match output {
                Output::Json => print_json(&serde_json::to_value(&d)?)?,
                Output::Human => {
                    println!(
                        "Group: {}  State: {}  Members: {}  Assignor: {}  Epoch: {}  Coordinator: {}  Total lag: {}",
                        d.group_id,
                        d.state,
                        d.members.len(),
                        d.assignor,
                        d.group_epoch,
                        d.coordinator,
                        d.total_lag
                    );
                    let dash = || "-".to_owned();
                    let rows: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                d.group_id.clone(),
                                p.topic.clone(),
                                p.partition.to_string(),
                                p.committed_offset.map_or_else(dash, |o| o.to_string()),
                                p.log_end_offset.to_string(),
                                p.lag.map_or_else(dash, |l| l.to_string()),
                                p.member_id.clone().unwrap_or_else(dash),
                                p.host.clone().unwrap_or_else(dash),
                                p.client_id.clone().unwrap_or_else(dash),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "GROUP",
                                "TOPIC",
                                "PARTITION",
                                "CURRENT-OFFSET",
                                "LOG-END-OFFSET",
                                "LAG",
                                "CONSUMER-ID",
                                "HOST",
                                "CLIENT-ID"
                            ],
                            &rows
                        )
                    );
                    if !d.members.is_empty() {
                        // As `kafka-consumer-groups --describe --members --verbose`: every
                        // member, also one that owns nothing yet.
                        let rows: Vec<Vec<String>> = d
                            .members
                            .iter()
                            .map(|m| {
                                let owned: Vec<String> = m
                                    .assignment
                                    .iter()
                                    .map(|(t, p)| format!("{t}-{p}"))
                                    .collect();
                                vec![
                                    m.member_id.clone(),
                                    m.host.clone(),
                                    m.client_id.clone(),
                                    m.member_epoch.to_string(),
                                    m.assignment.len().to_string(),
                                    if owned.is_empty() {
                                        "-".into()
                                    } else {
                                        owned.join(",")
                                    },
                                ]
                            })
                            .collect();
                        println!();
                        print!(
                            "{}",
                            table(
                                &[
                                    "CONSUMER-ID",
                                    "HOST",
                                    "CLIENT-ID",
                                    "EPOCH",
                                    "#PARTITIONS",
                                    "ASSIGNMENT"
                                ],
                                &rows
                            )
                        );
                    }
                }
            }
        }
        GroupCommand::ResetOffsets(args) => {
            let to = args.target()?;
            let parts = if args.all_topics {
                Vec::new()
            } else {
                args.partitions()?
            };
            let plan = admin
                .reset_offsets(&args.group, &parts, to, args.execute)
                .await?;
            print_plan(output, &args.group, &plan, args.execute)?;
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            match output {
                Output::Json => print_json(&json!({ "deleted": group }))?,
                Output::Human => println!("deleted consumer group `{group}`"),
            }
        }
    }
    Ok(())
}

fn print_plan(output: Output, group: &str, plan: &[OffsetResetPlan], executed: bool) -> Result<()> {
    match output {
        Output::Json => {
            print_json(&json!({ "group": group, "executed": executed, "offsets": plan }))
        }
        Output::Human => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|p| {
                    vec![
                        group.to_owned(),
                        p.topic.clone(),
                        p.partition.to_string(),
                        p.previous_offset.map_or("-".into(), |o| o.to_string()),
                        p.new_offset.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "GROUP",
                        "TOPIC",
                        "PARTITION",
                        "PREVIOUS-OFFSET",
                        "NEW-OFFSET"
                    ],
                    &rows
                )
            );
            if !executed {
                eprintln!("dry run: nothing was changed; add --execute to commit these offsets");
            }
            Ok(())
        }
    }
}

/// `runnel consume TOPIC --group G`: a group member printing records until a limit, a quiet
/// timeout, or SIGINT/SIGTERM, then committing what it printed and leaving the group.
pub(crate) async fn consume(bootstrap: &str, output: Output, args: ConsumeArgs) -> Result<()> {
    let group = args.group.clone().unwrap_or_default();
    let mut printer = Printer::new(output, &args)?;
    let mut consumer = GroupConsumer::new(GroupConsumerConfig {
        consumer: ConsumerConfig {
            bootstrap: bootstrap.to_owned(),
            auto_offset_reset: if args.from_beginning {
                AutoOffsetReset::Earliest
            } else {
                AutoOffsetReset::Latest
            },
            ..ConsumerConfig::default()
        },
        group_id: group.clone(),
        client_id: args.client_id.clone(),
        session_timeout: args.session_timeout_ms.map(Duration::from_millis),
        auto_commit_interval: Duration::from_millis(args.auto_commit_interval_ms),
        ..GroupConsumerConfig::default()
    })
    .await?;
    consumer.subscribe(&[args.topic.as_str()])?;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let max = args.max_messages.unwrap_or(u64::MAX);
    let mut printed: u64 = 0;
    let mut quiet_since = tokio::time::Instant::now();
    let stop = stop_signal();
    tokio::pin!(stop);
    let result: Result<()> = async {
        while printed < max {
            let records = tokio::select! {
                r = consumer.poll(Duration::from_millis(500)) => r?,
                _ = &mut stop => break,
            };
            if records.is_empty() {
                if timeout.is_some_and(|t| quiet_since.elapsed() >= t) {
                    break;
                }
                continue;
            }
            quiet_since = tokio::time::Instant::now();
            let n = printer.print(&records, max - printed)?;
            printed += n;
            if (n as usize) < records.len() {
                // Stopped inside what poll returned: commit only up to what was printed.
                let mut first_unprinted: BTreeMap<(String, i32), i64> = BTreeMap::new();
                for r in &records[n as usize..] {
                    first_unprinted
                        .entry((r.topic.to_string(), r.partition))
                        .or_insert(r.offset);
                }
                for ((t, p), o) in first_unprinted {
                    consumer.seek(&t, p, o)?;
                }
            }
        }
        Ok(())
    }
    .await;
    let closed = consumer.close().await;
    if printer.summary() {
        eprintln!(
            "consumed {printed} records from {} as group `{group}`",
            args.topic
        );
    }
    result?;
    closed.context("leaving the group")?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
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
