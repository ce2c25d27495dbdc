//! A journey through the real local cluster (`e2e/cluster/runnel-cluster`) with Runnel's own
//! images: `build-images.sh --import` puts both images into the node; a broker Deployment with a
//! kubelet gRPC readiness probe serves the `runnel` CLI through its Service's ClusterIP;
//! `kubectl logs` and `kubectl exec` reach its pod; a broker StatefulSet keeps its records on its
//! claim (default StorageClass) across a pod deletion; and the operator image, run as a pod with
//! a ServiceAccount whose Role only reads pods, reaches the API server through the `kubernetes`
//! Service with its token and is refused (403) what the Role lacks.
//!
//! Every object lives in a fresh namespace, deleted at the end. Traffic goes only to 198.19.0.0/16
//! (Services) and, through kubectl, to the API server on 198.18.0.1.

use anyhow::{bail, ensure, Context};
use runnel_e2e::local_cluster::{LocalCluster, STORAGE_CLASS};
use runnel_e2e::operator::binary_next_to_tests;
use runnel_e2e::run_command;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn images_deployments_statefulsets_and_rbac_on_the_local_cluster() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("repository root")?
        .to_path_buf();
    let runnel = binary_next_to_tests("runnel")
        .context("the runnel CLI: run `cargo build -p runnel-client --bins`")?;
    let uid = Command::new("id").arg("-u").output().context("id -u")?;
    ensure!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "this test needs root (the local cluster and build-images.sh do): run it as root"
    );

    let cluster = LocalCluster::up().context("the local cluster")?;
    eprintln!(
        "[{:.1?}] cluster up (started here: {})",
        started.elapsed(),
        cluster.started_here()
    );

    // 1. Images into the node's containerd.
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
    eprintln!("[{:.1?}] images built and imported", started.elapsed());
    let broker_image = format!("runnel.dev/runnel-broker:{VERSION}");
    let operator_image = format!("runnel.dev/runnel-operator:{VERSION}");

    let ns = Namespace::create(&cluster)?;
    let k = Kubectl {
        cluster: &cluster,
        ns: ns.name.clone(),
    };

    // 2. A standalone broker Deployment behind a ClusterIP Service.
    let ip = service(&k, "broker", "broker")?;
    k.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: broker, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: broker}}}}
  template:
    metadata: {{labels: {{app: broker}}}}
    spec:
      containers:
      - name: broker
        image: {broker_image}
        imagePullPolicy: Never
        args: [--standalone, --listen, "0.0.0.0:9092", --advertised-address, "{ip}:9092"]
        ports: [{{name: grpc, containerPort: 9092}}]
        readinessProbe:
          grpc: {{port: 9092}}
          periodSeconds: 2
        volumeMounts: [{{name: data, mountPath: /var/lib/runnel}}]
      volumes: [{{name: data, emptyDir: {{}}}}]
"#,
        ns = k.ns
    ))?;
    k.run(&["rollout", "status", "deployment/broker", "--timeout=180s"])?;
    k.run(&[
        "wait",
        "--for=condition=Available",
        "deployment/broker",
        "--timeout=60s",
    ])?;
    eprintln!(
        "[{:.1?}] Deployment Available, Service {ip}",
        started.elapsed()
    );
    let bootstrap = format!("{ip}:9092");
    retry("topic create", || {
        cli(
            &runnel,
            &bootstrap,
            &["topic", "create", "journey", "-p", "1"],
            None,
        )
    })?;
    let lines: Vec<String> = (0..100).map(|i| format!("journey-record-{i:03}")).collect();
    let input = lines.join("\n") + "\n";
    retry("produce", || {
        cli(&runnel, &bootstrap, &["produce", "journey"], Some(&input))
    })?;
    let consumed = consume(&runnel, &bootstrap, "journey", 100)?;
    ensure!(
        consumed == lines,
        "consumed records differ from the produced ones:\n{consumed:?}"
    );
    eprintln!(
        "[{:.1?}] 100 records through the Service",
        started.elapsed()
    );

    // 5. kubectl logs and exec on the broker pod.
    let pod = k.run(&[
        "get",
        "pods",
        "-l",
        "app=broker",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    let pod = pod.trim();
    let logs = k.run(&["logs", pod])?;
    ensure!(
        logs.contains("recovered"),
        "broker log lacks its start line:\n{logs}"
    );
    let version = k.run(&[
        "exec",
        pod,
        "--",
        "/usr/local/bin/runnel-broker",
        "--version",
    ])?;
    ensure!(
        version.trim() == format!("runnel-broker {VERSION}"),
        "kubectl exec runnel-broker --version printed {version:?}"
    );
    eprintln!("[{:.1?}] kubectl logs and exec work", started.elapsed());

    // 3. A StatefulSet keeps its records on its claim across a pod deletion.
    let ip = service(&k, "store", "store")?;
    k.apply(&format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: store, namespace: {ns}}}
spec:
  serviceName: store
  replicas: 1
  selector: {{matchLabels: {{app: store}}}}
  template:
    metadata: {{labels: {{app: store}}}}
    spec:
      securityContext: {{fsGroup: 65532}}
      containers:
      - name: broker
        image: {broker_image}
        imagePullPolicy: Never
        args: [--standalone, --listen, "0.0.0.0:9092", --advertised-address, "{ip}:9092", --data-dir, /var/lib/runnel]
        ports: [{{name: grpc, containerPort: 9092}}]
        readinessProbe:
          grpc: {{port: 9092}}
          periodSeconds: 2
        volumeMounts: [{{name: data, mountPath: /var/lib/runnel}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#,
        ns = k.ns
    ))?;
    k.run(&["rollout", "status", "statefulset/store", "--timeout=180s"])?;
    let claim = |field: &str| {
        k.run(&[
            "get",
            "pvc",
            "data-store-0",
            "-o",
            &format!("jsonpath={{{field}}}"),
        ])
    };
    ensure!(claim(".status.phase")? == "Bound", "claim not Bound");
    ensure!(
        claim(".spec.storageClassName")? == STORAGE_CLASS,
        "claim's class is not the default {STORAGE_CLASS}"
    );
    let volume = claim(".spec.volumeName")?;
    ensure!(!volume.is_empty(), "claim has no volume");
    let bootstrap = format!("{ip}:9092");
    retry("topic create", || {
        cli(
            &runnel,
            &bootstrap,
            &["topic", "create", "durable", "-p", "1"],
            None,
        )
    })?;
    let lines: Vec<String> = (0..50).map(|i| format!("durable-record-{i:02}")).collect();
    let input = lines.join("\n") + "\n";
    retry("produce", || {
        cli(&runnel, &bootstrap, &["produce", "durable"], Some(&input))
    })?;
    let pod_uid = || k.run(&["get", "pod", "store-0", "-o", "jsonpath={.metadata.uid}"]);
    let old_uid = pod_uid()?;
    k.run(&["delete", "pod", "store-0", "--wait=true", "--timeout=120s"])?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let ready = k.cluster.kubectl(&[
            "-n",
            &k.ns,
            "get",
            "pod",
            "store-0",
            "-o",
            r#"jsonpath={.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}"#,
        ]);
        if ready.success() {
            let mut words = ready.stdout.split_whitespace();
            if words.next().is_some_and(|u| u != old_uid) && words.next() == Some("True") {
                break;
            }
        }
        if Instant::now() > deadline {
            let pods = k
                .cluster
                .kubectl(&["-n", &k.ns, "describe", "pod", "store-0"]);
            bail!("the new store-0 did not become Ready:\n{pods}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(pod_uid()? != old_uid, "store-0 was not replaced");
    ensure!(
        claim(".status.phase")? == "Bound",
        "claim not Bound after the restart"
    );
    ensure!(
        claim(".spec.volumeName")? == volume,
        "the claim's volume changed"
    );
    let consumed = consume(&runnel, &bootstrap, "durable", 50)?;
    ensure!(
        consumed == lines,
        "records after the pod's replacement differ:\n{consumed:?}"
    );
    eprintln!(
        "[{:.1?}] StatefulSet: 50 records survived the pod's replacement on volume {volume}",
        started.elapsed()
    );

    // 4. In-cluster config, ServiceAccount token, RBAC.
    k.apply(&format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: pod-reader, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: {ns}}}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: pod-reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects: [{{kind: ServiceAccount, name: pod-reader, namespace: {ns}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: operator, namespace: {ns}}}
spec:
  serviceAccountName: pod-reader
  restartPolicy: Never
  containers:
  - name: operator
    image: {operator_image}
    imagePullPolicy: Never
    env:
    - name: POD_NAMESPACE
      valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
"#,
        ns = k.ns
    ))?;
    let sa = format!("system:serviceaccount:{}:pod-reader", k.ns);
    ensure!(
        k.run(&["auth", "can-i", "list", "pods", "--as", &sa])?
            .trim()
            == "yes",
        "the Role should allow listing pods"
    );
    let denied = k.cluster.kubectl(&[
        "auth",
        "can-i",
        "list",
        "clusters.runnel.dev",
        "-A",
        "--as",
        &sa,
    ]);
    ensure!(denied.stdout.trim() == "no", "{denied}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let phase = k.run(&["get", "pod", "operator", "-o", "jsonpath={.status.phase}"])?;
        match phase.trim() {
            "Failed" => break,
            "Succeeded" => bail!("the operator pod succeeded; expected a forbidden list"),
            _ if Instant::now() > deadline => {
                let d = k
                    .cluster
                    .kubectl(&["-n", &k.ns, "describe", "pod", "operator"]);
                bail!("the operator pod did not fail in time (phase {phase}):\n{d}");
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let log = k.run(&["logs", "operator"])?;
    ensure!(
        log.contains("listing Clusters")
            && log.contains("forbidden")
            && log.contains(&sa)
            && log.contains("403"),
        "the operator's log lacks the API server's 403 for {sa}:\n{log}"
    );
    eprintln!(
        "[{:.1?}] operator pod: in-cluster token reached the API server, RBAC refused (403)",
        started.elapsed()
    );

    drop(ns);
    drop(cluster);
    eprintln!("[{:.1?}] done", started.elapsed());
    Ok(())
}

/// kubectl in the test's namespace.
struct Kubectl<'a> {
    cluster: &'a LocalCluster,
    ns: String,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        let out = self.cluster.kubectl(&all);
        ensure!(out.success(), "{out}");
        Ok(out.stdout)
    }

    fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let out = self.cluster.apply(yaml);
        ensure!(out.success(), "{out}\n--- yaml\n{yaml}");
        Ok(())
    }
}

/// A fresh namespace, deleted (with everything in it) when dropped.
struct Namespace<'a> {
    cluster: &'a LocalCluster,
    name: String,
}

impl<'a> Namespace<'a> {
    fn create(cluster: &'a LocalCluster) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("journey-{}-{nanos:x}", std::process::id());
        let out = cluster.kubectl(&["create", "namespace", &name]);
        ensure!(out.success(), "{out}");
        Ok(Namespace { cluster, name })
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let out = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=true",
            "--timeout=180s",
        ]);
        if !out.success() {
            eprintln!("deleting namespace {} failed: {out}", self.name);
        }
    }
}

/// A ClusterIP Service `name` on port 9092 for the pods labelled `app=<app>`; returns its address.
fn service(k: &Kubectl<'_>, name: &str, app: &str) -> anyhow::Result<String> {
    k.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  type: ClusterIP
  selector: {{app: {app}}}
  ports: [{{name: grpc, port: 9092, targetPort: 9092}}]
"#,
        ns = k.ns
    ))?;
    let ip = k.run(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])?;
    ensure!(
        ip.starts_with("198.19."),
        "Service {name} got {ip}, not 198.19.0.0/16"
    );
    Ok(ip)
}

/// Runs the `runnel` CLI against `bootstrap` (under `timeout 60`), returning its stdout.
fn cli(
    runnel: &Path,
    bootstrap: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let mut command = Command::new("timeout");
    command
        .arg("60")
        .arg(runnel)
        .args(["--bootstrap", bootstrap])
        .args(args);
    let out = run_command(command, format!("runnel {}", args.join(" ")), stdin)
        .with_context(|| format!("running {} (timeout from coreutils)", runnel.display()))?;
    ensure!(
        out.success(),
        "{} exited with {}:\n{}{}",
        out.command,
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

/// Reads `count` records of `topic` from the beginning.
fn consume(
    runnel: &Path,
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let max = count.to_string();
    let out = retry("consume", || {
        cli(
            runnel,
            bootstrap,
            &[
                "consume",
                topic,
                "--from-beginning",
                "--max-messages",
                &max,
                "--timeout-ms",
                "10000",
            ],
            None,
        )
    })?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Retries `f` every second for up to 60 s: kube-proxy needs a moment after endpoints change.
fn retry<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what}, for 60 s")))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
