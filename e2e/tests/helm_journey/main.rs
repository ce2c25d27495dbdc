//! The whole user journey on the real local cluster (`e2e/cluster/runnel-cluster`), as the
//! README tells it: `helm install` of `charts/runnel` with the images `build-images.sh --import`
//! put into the node, the operator running as two pods of which one leads, `kubectl apply` of
//! `examples/cluster.yaml`, `topics.yaml` and `consumergroup.yaml`, three brokers Ready through
//! their gRPC probes on a volume each, Topics Ready with a status per partition, 100,000
//! records produced and consumed by a group with the `runnel` CLI from the host, the group's
//! lag back to zero in `kubectl get rcg`, printer columns and Events, a broker pod deleted and
//! back on its volume with its data, a Topic deleted with its data, and both ways of taking
//! everything down: the Cluster's namespace first and then `helm uninstall`, and
//! `helm uninstall` first and then the namespace. Neither may leave a namespace Terminating,
//! and nothing but the CRDs may remain. The operator pods never log an ERROR.
//!
//! The second install is `scripts/up.sh` (what `make up` runs) with the journey's namespaces,
//! and the `kubectl get runnel` it prints is run; the first teardown is `scripts/down.sh
//! --keep-cluster` (what `make down` runs, without stopping the cluster).
//!
//! Another cluster instead of the local one (what `e2e/kind/run.sh` does; configuration, the
//! test is the same): `RUNNEL_E2E_KUBECONFIG=PATH` uses that cluster with `kubectl` and `helm`
//! from PATH (no `runnel-cluster up`), and `RUNNEL_E2E_IMAGES=preloaded` says the images
//! `runnel.dev/runnel-{broker,operator}:VERSION` are on its nodes already (no
//! `build-images.sh`). That cluster must give pods 198.18.0.0/16 and Services 198.19.0.0/16,
//! routed from the host, and label its node `topology.kubernetes.io/zone=zone-a`.
//!
//! The release lives in `runnel-journey`, the Cluster and its Topics in `runnel-journey-events`
//! (as a user keeps the operator apart from the workloads). Traffic goes only to the API server
//! on 198.18.0.1, pod addresses in 198.18.0.0/16 and Services in 198.19.0.0/16.

use anyhow::{bail, ensure, Context};
use runnel_e2e::local_cluster::LocalCluster;
use runnel_e2e::runnel::{retry, Cli};
use runnel_e2e::{run_command, Output};
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::{DescribePartitionsRequest, PartitionDescription};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Helm release and its namespace.
const RELEASE: &str = "runnel";
const OPERATOR_NS: &str = "runnel-journey";
/// Where the examples are applied.
const NS: &str = "runnel-journey-events";
/// The examples' Cluster, and what the operator names after it.
const CLUSTER: &str = "events";
const STATEFULSET: &str = "events-broker";
const RECORDS: usize = 100_000;

mod checks;
mod support;

use checks::*;
use support::*;

#[test]
fn helm_install_examples_records_failover_and_teardown_on_the_local_cluster() -> anyhow::Result<()>
{
    let clock = Clock(Instant::now());
    let root = repo_root();
    let uid = Command::new("id").arg("-u").output().context("id -u")?;
    ensure!(
        std::env::var_os("RUNNEL_E2E_KUBECONFIG").is_some()
            || String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "this test needs root (the local cluster and build-images.sh do): run it as root"
    );
    let helm = runnel_e2e::helm_binary().unwrap_or_else(|e| panic!("{e}"));
    let cli = Cli::new("unset:9092")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let cluster = if let Some(kubeconfig) = std::env::var_os("RUNNEL_E2E_KUBECONFIG") {
        let kubectl = on_path("kubectl", "https://kubernetes.io/docs/tasks/tools/")?;
        let helm = on_path("helm", "https://helm.sh/docs/intro/install/")?;
        let path = format!("{}:{}", parent(&kubectl), parent(&helm));
        clock.step(&format!(
            "external cluster: {}",
            Path::new(&kubeconfig).display()
        ));
        Kube {
            kubeconfig: kubeconfig.into(),
            kubectl,
            path,
            local: None,
        }
    } else {
        let local = LocalCluster::up().context("the local cluster")?;
        clock.step(&format!(
            "cluster up (started here: {})",
            local.started_here()
        ));
        let kubectl = runnel_e2e::kubectl_binary();
        Kube {
            kubeconfig: local.kubeconfig().to_path_buf(),
            path: format!("{}:{}", parent(&kubectl), parent(&helm)),
            kubectl,
            local: Some(local),
        }
    };
    match std::env::var("RUNNEL_E2E_IMAGES").as_deref() {
        Ok("preloaded") => clock.step("images preloaded (RUNNEL_E2E_IMAGES=preloaded)"),
        Ok(other) if !other.is_empty() => {
            bail!("RUNNEL_E2E_IMAGES={other}: the only value is `preloaded`")
        }
        _ => {
            ensure!(
                cluster.local.is_some(),
                "RUNNEL_E2E_KUBECONFIG without RUNNEL_E2E_IMAGES=preloaded: build-images.sh \
                 imports only into the local cluster"
            );
            let images = Command::new("nice")
                .args(["-n", "10"])
                .arg(root.join("e2e/images/build-images.sh"))
                .arg("--import")
                .current_dir(&root)
                .stdin(Stdio::null())
                .output()
                .context("running e2e/images/build-images.sh --import")?;
            ensure!(
                images.status.success(),
                "build-images.sh --import failed ({}):\n{}\n{}",
                images.status,
                String::from_utf8_lossy(&images.stdout),
                String::from_utf8_lossy(&images.stderr)
            );
            clock.step("images built and imported");
        }
    }

    let tools = Tools {
        cluster: &cluster,
        helm,
        helm_home: tempfile::tempdir()?,
    };
    let t = &tools;
    let cleanup = Cleanup { tools: t };
    // A previous run killed outright may have left its objects.
    drop(Cleanup { tools: t });

    // 1. The chart, the operator.
    install(t, &clock)?;

    // 2. The examples.
    t.kubectl(&["create", "namespace", NS])?;
    apply_examples(t, &["cluster.yaml", "topics.yaml", "consumergroup.yaml"])?;
    let brokers = brokers_ready(t)?;
    clock.step(&format!(
        "3 brokers Ready (gRPC probe), a volume each: {brokers:?}"
    ));
    topics_ready(t, &["user-profiles", "clickstream", "payments"])?;
    clock.step("Topics Ready, every partition with its leader and full ISR");

    // 3. 100,000 records through the client Service, read back by a consumer group.
    let service = t.k(
        NS,
        &[
            "get",
            "service",
            CLUSTER,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    )?;
    ensure!(
        service.starts_with("198.19."),
        "Service {CLUSTER} at {service}"
    );
    let cli = cli.with_bootstrap(format!("{service}:9092"));
    let lines: Vec<String> = (0..RECORDS).map(|i| format!("payment-{i:06}")).collect();
    let input = lines.join("\n") + "\n";
    retry("produce", Duration::from_secs(60), || {
        cli.run(&["produce", "payments"], Some(&input))
    })?;
    clock.step("100,000 records produced (acks=all, 3 copies, minInsyncReplicas 2)");
    eventually(
        "the group's lag is the records",
        Duration::from_secs(60),
        || {
            let (state, lag) = group_lag(t)?;
            Ok((lag != Some(RECORDS as i64)).then(|| format!("state {state}, lag {lag:?}")))
        },
    )?;
    let consumed = cli.run(
        &[
            "consume",
            "payments",
            "--group",
            "payments-processor",
            "--from-beginning",
            "--timeout-ms",
            "10000",
        ],
        None,
    )?;
    let mut consumed: Vec<&str> = consumed.lines().collect();
    consumed.sort_unstable();
    ensure!(
        consumed.len() == RECORDS && consumed.iter().zip(&lines).all(|(a, b)| a == b),
        "the group read {} records, not the 100,000 produced",
        consumed.len()
    );
    clock.step("the group consumed all 100,000");
    eventually(
        "the group's lag falls to 0",
        Duration::from_secs(60),
        || {
            let (state, lag) = group_lag(t)?;
            Ok((lag != Some(0) || state != "Empty").then(|| format!("state {state}, lag {lag:?}")))
        },
    )?;
    let rcg = table_filled(t, &["rcg"])?;
    ensure!(
        rcg.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5 && f[0] == "payments-processor" && f[3] == "0" && f[4] == "0"
        }),
        "`kubectl get rcg` should show no members and lag 0:\n{rcg}"
    );
    clock.step("kubectl get rcg: LAG 0");

    // 4. What a person looks at.
    let all = table_filled(t, &["runnel"])?;
    for name in [
        "cluster.runnel.dev/events",
        "topic.runnel.dev/payments",
        "consumergroup.runnel.dev/payments-processor",
    ] {
        ensure!(
            all.contains(name),
            "`kubectl get runnel` lacks {name}:\n{all}"
        );
    }
    for (kind, name, reasons) in [
        (
            "consumergroups.runnel.dev",
            "payments-processor",
            &["LagHigh", "LagRecovered"][..],
        ),
        ("topics.runnel.dev", "payments", &["LeaderElected"][..]),
        ("clusters.runnel.dev", CLUSTER, &["MetadataApplied"][..]),
    ] {
        let described = t.k(NS, &["describe", kind, name])?;
        let events = described.split_once("\nEvents:").map_or("", |(_, e)| e);
        for reason in reasons {
            ensure!(
                events.contains(reason),
                "no {reason} Event in `kubectl describe {kind} {name}`:\n{described}"
            );
        }
    }
    clock.step("kubectl get runnel: columns filled; kubectl describe: Events");

    // 5. The pod of partition 0's preferred leader deleted: the StatefulSet brings it back on
    //    the same volume, with its records, and it leads again.
    let topic = t
        .get(NS, "topics.runnel.dev", "payments")?
        .context("Topic")?;
    let victim = topic["status"]["partitions"][0]["replicas"][0]
        .as_i64()
        .context("partition 0's preferred leader")?;
    let before: BTreeMap<i32, i64> = held(&rt, &brokers[&victim])?
        .into_iter()
        .filter(|p| p.topic == "payments")
        .map(|p| (p.partition, p.log_end_offset))
        .collect();
    ensure!(
        before.len() == 3 && before.values().sum::<i64>() == RECORDS as i64,
        "broker {victim} holds {before:?}"
    );
    let claim = format!("data-{STATEFULSET}-{victim}");
    let volume = t.k(
        NS,
        &["get", "pvc", &claim, "-o", "jsonpath={.spec.volumeName}"],
    )?;
    let pod = format!("{STATEFULSET}-{victim}");
    let old_uid = t.k(NS, &["get", "pod", &pod, "-o", "jsonpath={.metadata.uid}"])?;
    broker_addresses(t)?;
    let deleting = Instant::now();
    t.k(
        NS,
        &["delete", "pod", &pod, "--wait=true", "--timeout=120s"],
    )?;
    clock.step(&format!(
        "broker pod {pod} deleted (took {:.1?})",
        deleting.elapsed()
    ));
    let mut address = String::new();
    eventually("the new broker pod Ready", Duration::from_secs(180), || {
        let Some(p) = t.get(NS, "pod", &pod)? else {
            return Ok(Some("no pod".into()));
        };
        let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        address = format!("{}:9092", p["status"]["podIP"].as_str().unwrap_or(""));
        Ok((p["metadata"]["uid"] == old_uid.as_str() || !ready).then(|| "not yet".into()))
    })?;
    ensure!(
        t.k(
            NS,
            &["get", "pvc", &claim, "-o", "jsonpath={.spec.volumeName}"]
        )? == volume,
        "the claim's volume changed"
    );
    let log = plain(&t.k(NS, &["logs", &pod])?);
    let recovered = log.lines().find(|l| l.contains("recovered")).unwrap_or("");
    ensure!(
        recovered.contains("partitions=") && !recovered.contains("partitions=0"),
        "the new broker {victim} did not find its partitions on its volume:\n{log}"
    );
    eventually(
        "the broker holds its records again",
        Duration::from_secs(60),
        || {
            let now: BTreeMap<i32, i64> = held(&rt, &address)?
                .into_iter()
                .filter(|p| p.topic == "payments")
                .map(|p| (p.partition, p.log_end_offset))
                .collect();
            Ok((now != before).then(|| format!("{now:?} != {before:?}")))
        },
    )?;
    topics_ready(t, &["payments"])?;
    eventually(
        "the preferred leader leads again",
        Duration::from_secs(60),
        || {
            let topic = t
                .get(NS, "topics.runnel.dev", "payments")?
                .context("Topic")?;
            let leader = &topic["status"]["partitions"][0]["leader"];
            Ok((*leader != victim).then(|| format!("partition 0 led by {leader}")))
        },
    )?;
    // Every record is still readable.
    let all = cli.consume("payments", RECORDS, "%v")?;
    ensure!(
        all.len() == RECORDS,
        "{} of {RECORDS} records readable",
        all.len()
    );
    clock.step(&format!(
        "{pod} back on volume {volume} with its records; leads partition 0 again; all readable"
    ));

    // 6. A Topic deleted with its data.
    let clicks: Vec<String> = (0..500).map(|i| format!("click-{i}")).collect();
    cli.run(
        &["produce", "clickstream"],
        Some(&(clicks.join("\n") + "\n")),
    )?;
    let holds = |topic: &str| -> anyhow::Result<usize> {
        let mut n = 0;
        for a in broker_addresses(t)? {
            n += held(&rt, &a)?.iter().filter(|p| p.topic == topic).count();
        }
        Ok(n)
    };
    ensure!(
        holds("clickstream")? == 6,
        "six partitions of clickstream on the brokers"
    );
    t.k(
        NS,
        &[
            "delete",
            "topics.runnel.dev",
            "clickstream",
            "--wait=true",
            "--timeout=60s",
        ],
    )?;
    eventually(
        "clickstream's data deleted",
        Duration::from_secs(60),
        || {
            let n = holds("clickstream")?;
            Ok((n > 0).then(|| format!("{n} partitions still held")))
        },
    )?;
    let gone = Command::new(cli.binary())
        .args([
            "--bootstrap",
            cli.bootstrap(),
            "topic",
            "describe",
            "clickstream",
        ])
        .output()?;
    ensure!(
        !gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NOT_FOUND"),
        "clickstream still described: {}",
        String::from_utf8_lossy(&gone.stdout)
    );
    clock.step("kubectl delete rt clickstream: its partitions deleted on every broker");
    no_operator_errors(t)?;

    // 7. Down, first way, as `make down` does it: `scripts/down.sh` deletes the workloads'
    //    namespace, then the release, then its namespace (the cluster stays).
    let down = script(&cluster, "scripts/down.sh", &["--keep-cluster"])?;
    ensure!(
        down.success(),
        "scripts/down.sh --keep-cluster failed: {down}"
    );
    nothing_left_but_crds(t)?;
    clock.step("scripts/down.sh --keep-cluster: only the CRDs are left");

    // 8. Down, second way: the release first, then the namespace with the Cluster in it.
    //    The install as `make up` does it: `scripts/up.sh`, whose printed commands are true.
    let up = script(&cluster, "scripts/up.sh", &[])?;
    ensure!(up.success(), "scripts/up.sh failed: {up}");
    let get = up
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kubectl get runnel"))
        .with_context(|| format!("scripts/up.sh printed no `kubectl get runnel`: {up}"))?;
    let args: Vec<&str> = get.split_whitespace().skip(1).collect();
    let listed = t.kubectl(&args)?;
    ensure!(
        listed.contains("cluster.runnel.dev/events")
            && listed.contains("topic.runnel.dev/payments"),
        "`{get}` (printed by scripts/up.sh) lists:\n{listed}"
    );
    let bootstrap = up
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export RUNNEL_BOOTSTRAP="))
        .context("scripts/up.sh printed no RUNNEL_BOOTSTRAP")?;
    ensure!(
        bootstrap.starts_with("198.19."),
        "bootstrap {bootstrap} is not a Service address in 198.19/16"
    );
    cli.with_bootstrap(bootstrap.to_string())
        .run(&["topic", "describe", "payments"], None)?;
    clock.step(&format!(
        "scripts/up.sh: `{get}` and bootstrap {bootstrap} answer"
    ));
    ensure!(operator_pods(t)?.len() == 2, "two operator replicas");
    brokers_ready(t)?;
    topics_ready(t, &["user-profiles", "clickstream", "payments"])?;
    no_operator_errors(t)?;
    t.helm(&["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"])?;
    clock.step("again: examples Ready; helm uninstall with the Cluster still there");
    delete_namespace(t, NS)?;
    delete_namespace(t, OPERATOR_NS)?;
    nothing_left_but_crds(t)?;
    clock.step("namespaces deleted after the release: only the CRDs are left");

    drop(cleanup);
    drop(cluster.local);
    clock.step("done");
    Ok(())
}
