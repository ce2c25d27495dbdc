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

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Elapsed time for the step log.
struct Clock(Instant);

impl Clock {
    fn step(&self, what: &str) {
        eprintln!("[{:>6.1?}] {what}", self.0.elapsed());
    }
}

/// The cluster the journey runs on: the local one, or the one `RUNNEL_E2E_KUBECONFIG` names.
struct Kube {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// Directories with kubectl and helm, for the scripts.
    path: String,
    /// Held for the whole journey: the lock, and the cluster stopped again if started here.
    local: Option<LocalCluster>,
}

impl Kube {
    fn kubectl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run_command(command, format!("kubectl {}", args.join(" ")), None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

/// `tool` on PATH, or an error with how to install it.
fn on_path(tool: &str, install: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("RUNNEL_E2E_KUBECONFIG is set but {tool} is not on PATH: {install}")
        })
}

/// kubectl and helm against the journey's cluster.
struct Tools<'a> {
    cluster: &'a Kube,
    helm: PathBuf,
    helm_home: tempfile::TempDir,
}

impl Tools<'_> {
    /// `kubectl ARGS`, which must succeed; its stdout.
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cluster.kubectl(args);
        ensure!(out.success(), "{out}");
        Ok(out.stdout)
    }

    /// `kubectl -n NS ARGS`, which must succeed.
    fn k(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    /// `kubectl -n NS get KIND NAME -o json`, or None when it does not exist.
    fn get(&self, ns: &str, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let out = self
            .cluster
            .kubectl(&["-n", ns, "get", kind, name, "-o", "json"]);
        if !out.success() {
            ensure!(out.stderr.contains("NotFound"), "{out}");
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&out.stdout).context("kubectl's JSON")?,
        ))
    }

    fn helm_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.helm);
        let home = self.helm_home.path();
        command
            .args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("KUBECONFIG", self.cluster.kubeconfig());
        Ok(run_command(
            command,
            format!("helm {}", args.join(" ")),
            None,
        )?)
    }

    /// `helm ARGS`, which must succeed; its stdout.
    fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.helm_output(args)?;
        ensure!(out.success(), "{out}");
        Ok(out.stdout)
    }
}

/// Polls `check` every 500 ms until it returns `Ok(None)`, or fails after `timeout` with the
/// last reason it gave.
fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match check()? {
            None => return Ok(()),
            Some(why) if Instant::now() > deadline => {
                bail!("{what}: not after {timeout:?}: {why}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Takes everything down whatever happened: the release, the namespaces (stripping the Topic
/// finalizer when no operator is left to release it, so that a failed run leaves nothing).
struct Cleanup<'a> {
    tools: &'a Tools<'a>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let t = self.tools;
        let _ = t.helm_output(&["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]);
        for ns in [NS, OPERATOR_NS] {
            let _ = t.cluster.kubectl(&[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        let topics = t
            .cluster
            .kubectl(&["-n", NS, "get", "topics.runnel.dev", "-o", "name"]);
        for topic in topics.stdout.lines() {
            let _ = t.cluster.kubectl(&[
                "-n",
                NS,
                "patch",
                topic,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        for ns in [NS, OPERATOR_NS] {
            let out = t.cluster.kubectl(&[
                "wait",
                "--for=delete",
                &format!("namespace/{ns}"),
                "--timeout=120s",
            ]);
            if !out.success() && !out.stderr.contains("NotFound") {
                eprintln!("cleanup: namespace {ns} still there: {out}");
            }
        }
    }
}

/// What the broker at `address` holds (`Admin.DescribePartitions`).
fn held(rt: &tokio::runtime::Runtime, address: &str) -> anyhow::Result<Vec<PartitionDescription>> {
    rt.block_on(async {
        let mut admin = AdminClient::connect(format!("http://{address}")).await?;
        Ok(admin
            .describe_partitions(DescribePartitionsRequest::default())
            .await?
            .into_inner()
            .partitions)
    })
}

/// Text without ANSI colour sequences (the binaries colour their logs).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The operator pods of the release, by name.
fn operator_pods(t: &Tools<'_>) -> anyhow::Result<Vec<String>> {
    let out = t.k(
        OPERATOR_NS,
        &[
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/name=runnel,app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// Fails when an operator pod logged an ERROR line, printing the logs.
fn no_operator_errors(t: &Tools<'_>) -> anyhow::Result<()> {
    for pod in operator_pods(t)? {
        let log = plain(&t.k(OPERATOR_NS, &["logs", &pod])?);
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        ensure!(
            errors.is_empty(),
            "operator pod {pod} logged ERROR lines:\n{}\n--- its whole log:\n{log}",
            errors.join("\n")
        );
    }
    Ok(())
}

/// Installs the chart and waits for two operator pods, exactly one holding the Lease.
fn install(t: &Tools<'_>, clock: &Clock) -> anyhow::Result<()> {
    let chart = repo_root().join("charts/runnel");
    t.helm(&[
        "install",
        RELEASE,
        chart.to_str().context("UTF-8 path")?,
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        &format!("image.tag={VERSION}"),
        // The images exist only in the node's containerd.
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout=180s",
    ])?;
    clock.step("helm install: operator Deployment available");
    let deployment = format!("deployment/{RELEASE}-operator");
    t.k(
        OPERATOR_NS,
        &["rollout", "status", &deployment, "--timeout=120s"],
    )?;
    let pods = operator_pods(t)?;
    ensure!(pods.len() == 2, "two operator replicas, found {pods:?}");
    eventually("one operator leads", Duration::from_secs(60), || {
        let holder = t
            .get(OPERATOR_NS, "lease", "runnel-operator")?
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned));
        Ok(match holder {
            Some(h) if pods.contains(&h) => None,
            other => Some(format!("Lease holder {other:?}, pods {pods:?}")),
        })
    })?;
    for pod in &pods {
        let ready = t.k(
            OPERATOR_NS,
            &[
                "get",
                "pod",
                pod,
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
            ],
        )?;
        ensure!(ready == "True", "operator pod {pod} is not Ready");
    }
    clock.step("operator: 2 pods Ready, one holds the Lease runnel-operator");
    Ok(())
}

/// `kubectl apply -n NS -f` of the example files.
fn apply_examples(t: &Tools<'_>, files: &[&str]) -> anyhow::Result<()> {
    let root = repo_root();
    let mut args = vec!["-n".to_string(), NS.to_string(), "apply".to_string()];
    for f in files {
        args.push("-f".into());
        args.push(root.join("examples").join(f).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.kubectl(&args).map(|_| ())
}

fn condition_status(object: &Value, type_: &str) -> Option<String> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

/// Waits for the Cluster's three brokers: Ready through the StatefulSet's gRPC probe, a bound
/// claim each on its own volume, addresses in the pod range; returns the brokers' addresses.
fn brokers_ready(t: &Tools<'_>) -> anyhow::Result<BTreeMap<i64, String>> {
    eventually("the StatefulSet exists", Duration::from_secs(60), || {
        Ok(t.get(NS, "statefulset", STATEFULSET)?
            .is_none()
            .then(|| "not yet".to_string()))
    })?;
    t.k(
        NS,
        &[
            "rollout",
            "status",
            &format!("statefulset/{STATEFULSET}"),
            "--timeout=240s",
        ],
    )?;
    let sts = t
        .get(NS, "statefulset", STATEFULSET)?
        .context("StatefulSet")?;
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        container["readinessProbe"]["grpc"]["port"] == 9092,
        "the brokers' readiness probe is not gRPC on 9092: {}",
        container["readinessProbe"]
    );
    let mut volumes = BTreeSet::new();
    for i in 0..3 {
        let claim = t
            .get(NS, "pvc", &format!("data-{STATEFULSET}-{i}"))?
            .context("a claim per broker")?;
        ensure!(claim["status"]["phase"] == "Bound", "{claim}");
        volumes.insert(
            claim["spec"]["volumeName"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    ensure!(volumes.len() == 3, "three distinct volumes: {volumes:?}");
    let mut addresses = BTreeMap::new();
    eventually(
        "Cluster Ready with 3 brokers",
        Duration::from_secs(90),
        || {
            let c = t
                .get(NS, "clusters.runnel.dev", CLUSTER)?
                .context("Cluster")?;
            let brokers = c["status"]["brokers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if condition_status(&c, "Ready").as_deref() != Some("True")
                || c["status"]["readyBrokers"] != 3
                || brokers.len() != 3
            {
                return Ok(Some(format!("{}", c["status"])));
            }
            addresses.clear();
            for b in brokers {
                let address = b["address"].as_str().unwrap_or("").to_string();
                ensure!(
                    address.starts_with("198.18."),
                    "broker outside 198.18/16: {b}"
                );
                // One zone on this node: every broker's rack is that zone.
                ensure!(
                    b["rack"] == runnel_e2e::local_cluster::ZONE,
                    "rack of broker {b}"
                );
                addresses.insert(b["id"].as_i64().unwrap_or(-1), address);
            }
            Ok(None)
        },
    )?;
    Ok(addresses)
}

/// Every Topic of the examples Ready, with one status entry per partition (leader, replicas
/// as many as the replication factor, a non-empty ISR).
fn topics_ready(t: &Tools<'_>, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        eventually(
            &format!("Topic {name} Ready"),
            Duration::from_secs(90),
            || {
                let topic = t.get(NS, "topics.runnel.dev", name)?.context("Topic")?;
                if condition_status(&topic, "Ready").as_deref() != Some("True") {
                    return Ok(Some(format!("{}", topic["status"])));
                }
                let partitions = topic["status"]["partitions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let want = topic["spec"]["partitions"].as_u64().unwrap_or(0) as usize;
                let replicas = topic["spec"]["replicas"].as_u64().unwrap_or(0) as usize;
                if partitions.len() != want {
                    return Ok(Some(format!("{} of {want} partitions", partitions.len())));
                }
                for p in &partitions {
                    let isr = p["isr"].as_array().map_or(0, Vec::len);
                    let reps = p["replicas"].as_array().map_or(0, Vec::len);
                    if p["leader"].as_i64().is_none() || reps != replicas || isr != replicas {
                        return Ok(Some(format!("partition {p}")));
                    }
                }
                Ok(None)
            },
        )?;
    }
    Ok(())
}

/// `kubectl get -n NS ARGS` as a table: every row has a value in every column.
fn table_filled(t: &Tools<'_>, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = t.k(NS, &all)?;
    let mut header = 0;
    for line in out.lines() {
        let fields = line.split_whitespace().count();
        if line.starts_with("NAME ") {
            header = fields;
        } else if !line.trim().is_empty() {
            ensure!(
                fields == header && !line.contains("<none>"),
                "a column is empty in `kubectl get {}`:\n{out}",
                args.join(" ")
            );
        }
    }
    ensure!(header > 0, "no table:\n{out}");
    Ok(out)
}

/// The group's (state, total lag) from its status.
fn group_lag(t: &Tools<'_>) -> anyhow::Result<(String, Option<i64>)> {
    let g = t
        .get(NS, "consumergroups.runnel.dev", "payments-processor")?
        .context("ConsumerGroup")?;
    Ok((
        g["status"]["state"].as_str().unwrap_or("").to_string(),
        g["status"]["totalLag"].as_i64(),
    ))
}

/// The broker pods' gRPC addresses now, with their restart counts checked: a broker that
/// restarted on its own is a failure of the journey.
fn broker_addresses(t: &Tools<'_>) -> anyhow::Result<Vec<String>> {
    let out = t.k(
        NS,
        &[
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/component=broker"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
        ],
    )?;
    let mut addresses = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            f.len() == 3 && f[2] == "0",
            "broker pod restarted or without address: {out}"
        );
        addresses.push(format!("{}:9092", f[1]));
    }
    ensure!(addresses.len() == 3, "three broker pods: {out}");
    Ok(addresses)
}

/// Deletes the namespace and waits until it is gone (not left Terminating).
fn delete_namespace(t: &Tools<'_>, ns: &str) -> anyhow::Result<()> {
    t.kubectl(&["delete", "namespace", ns, "--wait=false"])?;
    let out = t.cluster.kubectl(&[
        "wait",
        "--for=delete",
        &format!("namespace/{ns}"),
        "--timeout=120s",
    ]);
    if !out.success() && !out.stderr.contains("NotFound") {
        let status = t
            .cluster
            .kubectl(&["get", "namespace", ns, "-o", "jsonpath={.status}"]);
        let left = t.cluster.kubectl(&[
            "-n",
            ns,
            "get",
            "runnel",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name} finalizers {.metadata.finalizers}{\"\\n\"}{end}",
        ]);
        bail!(
            "namespace {ns} is stuck Terminating: {}\nleft in it:\n{}",
            status.stdout,
            left.stdout
        );
    }
    Ok(())
}

/// After everything is down: no namespace, release or cluster-scoped object of the chart is
/// left, no volume of the brokers; the CRDs stay (helm keeps what it installed from crds/).
fn nothing_left_but_crds(t: &Tools<'_>) -> anyhow::Result<()> {
    let namespaces = t.kubectl(&["get", "namespaces", "-o", "name"])?;
    for ns in [NS, OPERATOR_NS] {
        ensure!(
            !namespaces.lines().any(|l| l == format!("namespace/{ns}")),
            "namespace {ns} is left"
        );
    }
    let cluster_scoped = t.kubectl(&[
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "-o",
        "name",
    ])?;
    ensure!(cluster_scoped.trim().is_empty(), "left: {cluster_scoped}");
    let everywhere = t.kubectl(&["get", "runnel", "--all-namespaces", "-o", "name"])?;
    ensure!(
        everywhere.trim().is_empty(),
        "Runnel objects left: {everywhere}"
    );
    eventually(
        "the brokers' volumes are gone",
        Duration::from_secs(60),
        || {
            let pvs = t.kubectl(&[
                "get",
                "pv",
                "-o",
                "jsonpath={.items[*].spec.claimRef.namespace}",
            ])?;
            Ok(pvs
                .split_whitespace()
                .any(|n| n == NS)
                .then(|| format!("PVs of {NS} left")))
        },
    )?;
    let crds = t.kubectl(&["get", "crd", "-o", "name"])?;
    for crd in ["clusters", "topics", "consumergroups"] {
        ensure!(
            crds.contains(&format!("{crd}.runnel.dev")),
            "CRD {crd} is gone: {crds}"
        );
    }
    Ok(())
}

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

fn parent(binary: &Path) -> String {
    binary
        .parent()
        .map_or_else(String::new, |p| p.display().to_string())
}

/// Runs `scripts/NAME ARGS` on the journey's cluster and namespaces, images preloaded.
fn script(cluster: &Kube, name: &str, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(repo_root().join(name));
    let path = format!(
        "{}:{}",
        cluster.path,
        std::env::var("PATH").unwrap_or_default()
    );
    command
        .args(args)
        .env("PATH", path)
        .env("RUNNEL_KUBECONFIG", cluster.kubeconfig())
        .env("RUNNEL_OPERATOR_NAMESPACE", OPERATOR_NS)
        .env("RUNNEL_NAMESPACE", NS)
        .env("RUNNEL_IMAGES", "preloaded");
    Ok(run_command(
        command,
        format!("{name} {}", args.join(" ")),
        None,
    )?)
}
