//! Consumer groups through a real standalone broker, as a new user meets them: three `runnel
//! consume --group` processes share a 6-partition topic two partitions each; one is killed with
//! SIGKILL and the others take its partitions within its session timeout; one leaves cleanly and
//! its partitions move at once; every produced record is consumed at least once (duplicates,
//! from the killed member's uncommitted records, are counted and printed); a restarted group
//! resumes from its committed offsets. Plus fencing (a zombie cannot commit), durable and
//! bounded committed offsets (kill -9 of the broker; `__consumer_offsets` is compacted), resets
//! and the errors of bad requests.

use runnel_integration::{bin, runnel, Broker};
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::groups_client::GroupsClient;
use runnel_proto::v1::{
    CommitOffsetsRequest, DescribeGroupRequest, DescribePartitionsRequest, FetchOffsetsRequest,
    HeartbeatRequest, OffsetCommit, PartitionSet,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

/// A `runnel consume --group` process writing the values it prints to a file.
struct Member {
    child: Option<Child>,
    out: PathBuf,
    client_id: String,
}

impl Member {
    fn start(
        dir: &Path,
        addr: &str,
        group: &str,
        client_id: &str,
        session_ms: u64,
    ) -> anyhow::Result<Self> {
        let out = dir.join(format!("{client_id}.out"));
        let err = dir.join(format!("{client_id}.err"));
        let child = Command::new(bin("runnel"))
            .args([
                "--bootstrap",
                addr,
                "consume",
                "orders",
                "--group",
                group,
                "--from-beginning",
                "--client-id",
                client_id,
                "--session-timeout-ms",
                &session_ms.to_string(),
                "--auto-commit-interval-ms",
                "500",
            ])
            .env("RUNNEL_LOG", "info")
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(err)?)
            .spawn()?;
        Ok(Member {
            child: Some(child),
            out,
            client_id: client_id.to_string(),
        })
    }

    fn values(&self) -> Vec<String> {
        let out = std::fs::read_to_string(&self.out)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.out.display()));
        out.lines().map(str::to_string).collect()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the member commits what it printed and leaves the group.
    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            anyhow::bail!("member {} is not running", self.client_id);
        };
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        anyhow::ensure!(
            sent.success(),
            "kill -TERM of member {} failed",
            self.client_id
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                anyhow::bail!(
                    "member {} did not stop within 20 s of SIGTERM",
                    self.client_id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `runnel group describe --output json`.
fn describe(addr: &str, group: &str) -> anyhow::Result<serde_json::Value> {
    let (status, out, err) = runnel(
        addr,
        &["--output", "json", "group", "describe", group],
        None,
    )?;
    anyhow::ensure!(status.success(), "describe failed: {err}");
    Ok(serde_json::from_str(&out)?)
}

/// client id → partitions it owns, from a description.
fn owners(d: &serde_json::Value) -> BTreeMap<String, BTreeSet<i64>> {
    let mut m: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for member in d["members"].as_array().into_iter().flatten() {
        let set = m
            .entry(member["client_id"].as_str().unwrap_or("").to_string())
            .or_default();
        for tp in member["assignment"].as_array().into_iter().flatten() {
            set.insert(tp[1].as_i64().unwrap_or(-1));
        }
    }
    m
}

/// Waits until the group is Stable with exactly these members, each owning `per_member`
/// partitions; returns how long it took.
fn wait_stable(
    addr: &str,
    group: &str,
    members: &[&str],
    per_member: usize,
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        // Before the first member joins, the group does not exist yet; any other error fails.
        let d = match describe(addr, group) {
            Ok(d) => d,
            Err(e) if e.to_string().contains("does not exist") => serde_json::Value::Null,
            Err(e) => return Err(e),
        };
        let o = owners(&d);
        let names: Vec<&str> = o.keys().map(String::as_str).collect();
        if d["state"] == "Stable" && names == members && o.values().all(|s| s.len() == per_member) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            anyhow::bail!("group `{group}` did not settle on {members:?} with {per_member} partitions each within {within:?}: {d}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records `r-NNNNNN` keyed over 60 keys, to `orders`.
async fn produce(addr: &str, from: usize, to: usize) -> anyhow::Result<()> {
    let records = (from..to).map(|i| (format!("k{}", i % 60), format!("r-{i:06}")));
    runnel_integration::produce_records(addr, "orders", None, records).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_survive_a_kill_hand_over_on_leave_and_resume() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    let addr = broker.address.clone();
    let (status, _, err) = runnel(
        &addr,
        &["topic", "create", "orders", "--partitions", "6"],
        None,
    )?;
    assert!(status.success(), "{err}");

    // c1 is the one to be killed: a short session. The others keep the broker's default.
    let mut c1 = Member::start(dir.path(), &addr, "g", "c1", 3_000)?;
    let mut c2 = Member::start(dir.path(), &addr, "g", "c2", 10_000)?;
    let c3 = Member::start(dir.path(), &addr, "g", "c3", 10_000)?;
    wait_stable(&addr, "g", &["c1", "c2", "c3"], 2, Duration::from_secs(20))?;

    produce(&addr, 0, 20_000).await?;
    // Let the members read and commit some, then crash c1 while records keep coming.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let producing = tokio::spawn({
        let addr = addr.clone();
        async move { produce(&addr, 20_000, 40_000).await }
    });
    // Mid-stream: c1 has read records it has not committed yet, which the others read again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c1.kill9();
    let killed = Instant::now();
    wait_stable(&addr, "g", &["c2", "c3"], 3, Duration::from_secs(15))?;
    let takeover = killed.elapsed();
    println!("after kill -9 of c1, c2 and c3 own its partitions after {takeover:?} (session timeout 3 s)");
    assert!(
        takeover < Duration::from_secs(3 + 5),
        "takeover took {takeover:?}"
    );
    producing.await??;

    // A clean leave: c2's partitions go to c3 at once, not after c2's 10 s session.
    c2.terminate()?;
    let handover = wait_stable(&addr, "g", &["c3"], 6, Duration::from_secs(10))?;
    println!("clean leave of c2: its partitions were c3's after {handover:?}");
    assert!(
        handover < Duration::from_secs(2),
        "handover took {handover:?}"
    );

    // Everything produced is read at least once, by the three together.
    let produced: BTreeSet<String> = (0..40_000).map(|i| format!("r-{i:06}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (seen, total) = loop {
        let all: Vec<String> = [&c1, &c2, &c3].iter().flat_map(|m| m.values()).collect();
        let seen: BTreeSet<String> = all.iter().cloned().collect();
        if produced.is_subset(&seen) || Instant::now() > deadline {
            break (seen, all.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<&String> = produced.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "never consumed: {missing:?} (and more?)"
    );
    println!(
        "40000 records produced, {total} consumed by the group: {} duplicates after the kill",
        total - seen.len()
    );

    // Stop the group; restart it: it resumes from its committed offsets, reading only what
    // comes after (with --from-beginning it would read all 40,000 again without them).
    let mut c3 = c3;
    c3.terminate()?;
    let d = describe(&addr, "g")?;
    assert_eq!(d["state"], "Empty", "{d}");
    assert_eq!(d["total_lag"], 0, "{d}");
    let c4 = Member::start(dir.path(), &addr, "g", "c4", 10_000)?;
    wait_stable(&addr, "g", &["c4"], 6, Duration::from_secs(20))?;
    produce(&addr, 40_000, 41_000).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while c4.values().len() < 1_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = c4.values();
    let expected: BTreeSet<String> = (40_000..41_000).map(|i| format!("r-{i:06}")).collect();
    assert_eq!(again.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(again.len(), 1_000, "the restarted group re-read records");
    Ok(())
}

async fn groups(addr: &str) -> anyhow::Result<GroupsClient<Channel>> {
    Ok(GroupsClient::connect(format!("http://{addr}")).await?)
}

fn join(group: &str, session_ms: u32) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: group.into(),
        subscribed_topics: vec!["orders".into()],
        owned_partitions: Some(PartitionSet { topics: vec![] }),
        session_timeout_ms: session_ms,
        ..Default::default()
    }
}

fn commit(
    group: &str,
    member: &str,
    epoch: i32,
    partition: i32,
    offset: i64,
) -> CommitOffsetsRequest {
    CommitOffsetsRequest {
        group_id: group.into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![OffsetCommit {
            topic: "orders".into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_member_cannot_commit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    broker.create_topic("orders", 2, None).await?;
    let mut g = groups(&broker.address).await?;

    // A member that stops heartbeating is removed after its session; its commit is refused.
    let zombie = g.heartbeat(join("z", 1_000)).await?.into_inner();
    assert_eq!(
        zombie
            .assignment
            .iter()
            .map(|t| t.partitions.len())
            .sum::<usize>(),
        2
    );
    g.commit_offsets(commit("z", &zombie.member_id, zombie.member_epoch, 0, 5))
        .await?;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let e = g
        .commit_offsets(commit("z", &zombie.member_id, zombie.member_epoch, 0, 9))
        .await
        .expect_err("a zombie's commit");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let named = format!("epoch {}", zombie.member_epoch);
    assert!(
        e.message().contains("group `z`")
            && e.message().contains("fenced")
            && e.message().contains(&named),
        "{}",
        e.message()
    );

    // A stale epoch is fenced and named; the epoch just before is still taken (its answer
    // may be on its way), older ones are not.
    let a = g.heartbeat(join("s", 10_000)).await?.into_inner();
    let first_epoch = a.member_epoch;
    let beat = |member: &str, epoch: i32| HeartbeatRequest {
        group_id: "s".into(),
        member_id: member.into(),
        member_epoch: epoch,
        owned_partitions: Some(PartitionSet { topics: vec![] }),
        ..Default::default()
    };
    let b = g.heartbeat(join("s", 10_000)).await?.into_inner();
    // a heartbeats until it has let go of what b gets and reached the newest epoch.
    let mut epoch = first_epoch;
    for _ in 0..5 {
        epoch = g
            .heartbeat(beat(&a.member_id, epoch))
            .await?
            .into_inner()
            .member_epoch;
    }
    // A partition it does not own (b's, now) is refused.
    let b = g
        .heartbeat(HeartbeatRequest {
            owned_partitions: None,
            ..beat(&b.member_id, b.member_epoch)
        })
        .await?
        .into_inner();
    let p = b
        .assignment
        .first()
        .and_then(|t| t.partitions.first().copied());
    let p = p.expect("b owns a partition once a let go");
    let e = g
        .commit_offsets(commit("s", &a.member_id, epoch, p, 1))
        .await
        .expect_err("not owned");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("does not own"), "{}", e.message());
    // b leaves: the group moves on once more, and a with it.
    g.leave_group(runnel_proto::v1::LeaveGroupRequest {
        group_id: "s".into(),
        member_id: b.member_id.clone(),
    })
    .await?;
    for _ in 0..3 {
        epoch = g
            .heartbeat(beat(&a.member_id, epoch))
            .await?
            .into_inner()
            .member_epoch;
    }
    assert!(
        epoch >= first_epoch + 2,
        "epoch moved from {first_epoch} to {epoch}"
    );
    let e = g
        .commit_offsets(commit("s", &a.member_id, first_epoch, 0, 1))
        .await
        .expect_err("stale epoch");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(
        e.message().contains(&format!("epoch {first_epoch}")) && e.message().contains("group `s`"),
        "{}",
        e.message()
    );
    g.commit_offsets(commit("s", &a.member_id, epoch, 0, 1))
        .await?;
    // The group's offsets are what the live members committed, nothing of the zombie's.
    let f = g
        .fetch_offsets(FetchOffsetsRequest {
            group_id: "z".into(),
            partitions: vec![],
        })
        .await?
        .into_inner();
    assert_eq!(f.offsets.len(), 1);
    assert_eq!(f.offsets[0].offset, 5);
    Ok(())
}

async fn offsets_topic_bytes(admin: &mut AdminClient<Channel>) -> anyhow::Result<i64> {
    let d = admin
        .describe_partitions(DescribePartitionsRequest {
            topics: vec!["__consumer_offsets".into()],
        })
        .await?
        .into_inner();
    Ok(d.partitions.iter().map(|p| p.size_bytes).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_kill9_and_stay_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &["--cleaner-interval-ms", "300"])?;
    broker.create_topic("orders", 10, None).await?;
    let addr = broker.address.clone();

    // 16 groups commit 10 partitions each, 1,000 times over, concurrently: 160,000 offsets.
    const GROUPS: usize = 16;
    const ROUNDS: i64 = 1_000;
    let mut tasks = Vec::new();
    for n in 0..GROUPS {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut g = groups(&addr).await?;
            for round in 1..=ROUNDS {
                let offsets = (0..10)
                    .map(|p| OffsetCommit {
                        topic: "orders".into(),
                        partition: p,
                        offset: round * 10 + i64::from(p),
                        leader_epoch: -1,
                        metadata: String::new(),
                    })
                    .collect();
                g.commit_offsets(CommitOffsetsRequest {
                    group_id: format!("group-{n}"),
                    member_id: String::new(),
                    member_epoch: -1,
                    offsets,
                })
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Each commit record is ~60 bytes: 160,000 of them ~10 MB before cleaning; the cleaner
    // keeps the last of each of the 160 keys.
    let mut admin = AdminClient::connect(broker.endpoint()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut size = offsets_topic_bytes(&mut admin).await?;
    println!("__consumer_offsets holds {size} bytes right after the commits");
    while size > 1 << 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        size = offsets_topic_bytes(&mut admin).await?;
    }
    println!("__consumer_offsets holds {size} bytes after 16,000 commits of 10 offsets each");
    assert!(
        size < 1 << 20,
        "__consumer_offsets is {size} bytes: not compacted"
    );

    // kill -9 and restart: every group's last commit is there.
    broker.restart()?;
    let mut g = groups(&broker.address).await?;
    for n in 0..GROUPS {
        let f = g
            .fetch_offsets(FetchOffsetsRequest {
                group_id: format!("group-{n}"),
                partitions: vec![],
            })
            .await?
            .into_inner();
        let got: BTreeMap<i32, i64> = f.offsets.iter().map(|o| (o.partition, o.offset)).collect();
        let want: BTreeMap<i32, i64> = (0..10).map(|p| (p, ROUNDS * 10 + i64::from(p))).collect();
        assert_eq!(got, want, "group-{n}");
    }
    let d = g
        .describe_group(DescribeGroupRequest {
            group_id: "group-3".into(),
        })
        .await?
        .into_inner();
    assert_eq!(d.state, "Empty");
    assert_eq!(d.offsets.len(), 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_deletes_need_an_empty_group() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    let addr = broker.address.clone();
    broker.create_topic("orders", 2, None).await?;
    produce(&addr, 0, 1_000).await?;
    let mut g = groups(&addr).await?;
    g.commit_offsets(commit("r", "", -1, 0, 100)).await?;
    g.commit_offsets(commit("r", "", -1, 1, 100)).await?;

    // Dry run: the plan, nothing changed.
    let (status, out, err) = runnel(
        &addr,
        &[
            "group",
            "reset-offsets",
            "r",
            "--topic",
            "orders",
            "--to-earliest",
        ],
        None,
    )?;
    assert!(status.success(), "{err}");
    assert!(
        out.contains("NEW-OFFSET") && err.contains("dry run"),
        "{out}{err}"
    );
    let d = describe(&addr, "r")?;
    assert_eq!(d["partitions"][0]["committed_offset"], 100, "{d}");
    // Executed: to the earliest offset.
    let (status, _, err) = runnel(
        &addr,
        &[
            "group",
            "reset-offsets",
            "r",
            "--topic",
            "orders:1",
            "--shift-by",
            "-30",
            "--execute",
        ],
        None,
    )?;
    assert!(status.success(), "{err}");
    let d = describe(&addr, "r")?;
    assert_eq!(d["partitions"][1]["committed_offset"], 70, "{d}");
    // The broker's /metrics, under the Kafka exporters' names.
    let hw = d["partitions"][1]["log_end_offset"].as_i64().unwrap_or(-1);
    let want = [
        "kafka_consumergroup_current_offset{consumergroup=\"r\",topic=\"orders\",partition=\"1\"} 70".to_string(),
        format!("kafka_consumergroup_lag{{consumergroup=\"r\",topic=\"orders\",partition=\"1\"}} {}", hw - 70),
        format!("kafka_topic_partition_current_offset{{topic=\"orders\",partition=\"1\"}} {hw}"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = runnel_integration::http_get(&broker.metrics_address, "/metrics").await?;
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !metrics.lines().any(|l| l == w.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing on /metrics: {missing:?}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // With a member, a reset and a delete are refused, saying why.
    let member = g.heartbeat(join("r", 10_000)).await?.into_inner();
    assert!(!member.member_id.is_empty());
    let (status, _, err) = runnel(
        &addr,
        &[
            "group",
            "reset-offsets",
            "r",
            "--all-topics",
            "--to-latest",
            "--execute",
        ],
        None,
    )?;
    assert!(!status.success());
    assert!(
        err.contains("active member") && err.contains("FAILED_PRECONDITION"),
        "{err}"
    );
    let (status, _, err) = runnel(&addr, &["group", "delete", "r"], None)?;
    assert!(!status.success() && err.contains("active member"), "{err}");
    let d = describe(&addr, "r")?;
    assert_eq!(d["partitions"][1]["committed_offset"], 70, "{d}");

    // Unknown groups are NOT_FOUND; `list` shows the groups.
    let (status, _, err) = runnel(&addr, &["group", "describe", "nobody"], None)?;
    assert!(
        !status.success() && err.contains("does not exist") && err.contains("NOT_FOUND"),
        "{err}"
    );
    let (status, out, _) = runnel(&addr, &["group", "list"], None)?;
    assert!(status.success() && out.contains("r "), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_clear_errors_and_change_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &[])?;
    broker.create_topic("orders", 2, None).await?;
    let mut g = groups(&broker.address).await?;
    g.commit_offsets(commit("ok", "", -1, 0, 7)).await?;

    let cases: Vec<(HeartbeatRequest, Code, &str)> = vec![
        (
            HeartbeatRequest {
                subscribed_topic_regex: Some("orders[".into()),
                subscribed_topics: vec![],
                ..join("b", 0)
            },
            Code::InvalidArgument,
            "regular expression",
        ),
        (
            HeartbeatRequest {
                subscribed_topics: vec![],
                ..join("b", 0)
            },
            Code::InvalidArgument,
            "without a subscription",
        ),
        (
            HeartbeatRequest {
                assignor: "fastest".into(),
                ..join("b", 0)
            },
            Code::InvalidArgument,
            "fastest",
        ),
        (join("b", 10), Code::InvalidArgument, "session timeout"),
        (join("", 0), Code::InvalidArgument, "group id"),
        (
            HeartbeatRequest {
                member_id: "nobody".into(),
                member_epoch: 3,
                ..join("b", 0)
            },
            Code::Aborted,
            "fenced",
        ),
    ];
    for (req, code, words) in cases {
        let e = g.heartbeat(req.clone()).await.expect_err("refused");
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().contains(words), "{req:?}: {}", e.message());
    }
    let e = g
        .commit_offsets(commit("ok", "", -1, 0, -5))
        .await
        .expect_err("negative");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = g
        .describe_group(DescribeGroupRequest {
            group_id: "b".into(),
        })
        .await
        .expect_err("nothing was created");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // The internal topic is the broker's own: no produce, no delete.
    let (status, _, err) = runnel(
        &broker.address,
        &["topic", "delete", "__consumer_offsets"],
        None,
    )?;
    assert!(!status.success() && err.contains("internal topic"), "{err}");
    let (status, _, err) = runnel(
        &broker.address,
        &["produce", "__consumer_offsets"],
        Some(b"x\n"),
    )?;
    assert!(!status.success() && err.contains("internal topic"), "{err}");
    // Still serving, offsets intact, also after a restart.
    broker.restart()?;
    let mut g = groups(&broker.address).await?;
    let f = g
        .fetch_offsets(FetchOffsetsRequest {
            group_id: "ok".into(),
            partitions: vec![],
        })
        .await?
        .into_inner();
    assert_eq!(
        f.offsets.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![7]
    );
    Ok(())
}
