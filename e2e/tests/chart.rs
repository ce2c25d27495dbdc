//! The Helm chart (`charts/runnel`) with the pinned helm, a real API server and the real
//! operator:
//!
//! 1. `helm lint --strict` passes, with the optional objects off and on.
//! 2. `helm template` renders; the chart's CRDs are byte-identical to `crds/` (and rendered as
//!    they are); each optional object appears only with its flag; Chart.yaml carries the
//!    workspace version.
//! 3. Bad values are refused by `values.schema.json`, naming the field
//!    (`helm install --dry-run=server`).
//! 4. `helm install` for real (it creates the CRDs from the chart's `crds/`); then the whole
//!    rendering with every flag on passes a server-side dry run. The ServiceMonitor, PodMonitor
//!    and PrometheusRule are checked against small CRDs written here, whose schemas declare
//!    the fields the chart uses with the types the Prometheus Operator gives them (strict field
//!    validation refuses any other field); their PromQL is not parsed here.
//! 5. The RBAC is least privilege and enough: `kubectl auth can-i` as the operator's
//!    ServiceAccount says yes to every call the controllers make and no to what they must not
//!    do; then the real `runnel-operator`, authenticated with that ServiceAccount's token, takes
//!    the Lease and reconciles a Cluster, a Topic and a ConsumerGroup without one refused call.
//! 6. Every metric the dashboard and the alerts use exists: on the real operator's or a real
//!    broker's `/metrics`, or, for labelled families that have no series without traffic, in
//!    their `register(…)` calls.
//!
//! One control plane for all of it, in one test. helm missing fails the test with the command
//! that installs it.

use anyhow::{bail, ensure, Context};
use runnel_e2e::operator::{binary_next_to_tests, ok, Operator};
use runnel_e2e::{run_command, ControlPlane, Output, HELM_INSTALL_COMMAND, HELM_VERSION};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The release and its namespace.
const RELEASE: &str = "runnel";
const NAMESPACE: &str = "runnel-system";
/// What the chart names the operator's objects (and its ServiceAccount) for [`RELEASE`].
const FULLNAME: &str = "runnel-operator";
/// Where the test's Cluster, Topic and ConsumerGroup live.
const APPS: &str = "streams";
/// The workspace version: the chart's appVersion and the images' tag.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Every optional object on.
const ALL_FLAGS: [&str; 6] = [
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
];
/// What the operator gets to reconcile its objects.
const TIMEOUT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The pinned helm, with its own config, cache and data directories.
struct Helm {
    binary: PathBuf,
    chart: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// The cached helm; its absence fails the test with the command that installs it.
    fn new() -> anyhow::Result<Self> {
        let binary = runnel_e2e::helm_binary().unwrap_or_else(|e| panic!("{e}"));
        Ok(Helm {
            binary,
            chart: repo_root().join("charts/runnel"),
            home: tempfile::tempdir().context("helm home")?,
        })
    }

    /// `helm ARGS` (the chart's path is `CHART` in `args`), against `kubeconfig` if any.
    fn run(&self, args: &[&str], kubeconfig: Option<&Path>) -> anyhow::Result<Output> {
        let chart = self.chart.to_str().context("chart path is UTF-8")?;
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "CHART" { chart } else { a })
            .collect();
        let mut command = Command::new(&self.binary);
        let home = self.home.path();
        command
            .args(&args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            // Offline commands must not reach whatever cluster the environment points at.
            .env(
                "KUBECONFIG",
                kubeconfig.map_or_else(|| home.join("no-kubeconfig"), Path::to_path_buf),
            );
        Ok(run_command(
            command,
            format!("helm {}", args.join(" ")),
            None,
        )?)
    }

    /// `helm template RELEASE CHART -n NAMESPACE EXTRA…`, which must succeed.
    fn template(&self, extra: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["template", RELEASE, "CHART", "--namespace", NAMESPACE];
        args.extend_from_slice(extra);
        ok(self.run(&args, None)?)
    }
}

/// One YAML document of `helm template`'s output.
#[derive(Debug)]
struct Document {
    /// `runnel/templates/x.yaml`.
    source: String,
    kind: String,
    name: String,
    /// The document without its `# Source:` line.
    body: String,
}

fn documents(rendered: &str) -> Vec<Document> {
    let mut out = Vec::new();
    for chunk in rendered.split("\n---\n") {
        let chunk = chunk.strip_prefix("---\n").unwrap_or(chunk);
        let mut source = String::new();
        let mut kind = String::new();
        let mut name = String::new();
        let mut body = Vec::new();
        for line in chunk.lines() {
            if let Some(s) = line.strip_prefix("# Source: ") {
                source = s.to_string();
                continue;
            }
            if let Some(k) = line.strip_prefix("kind: ") {
                kind = k.trim().to_string();
            }
            if name.is_empty() {
                if let Some(n) = line.strip_prefix("  name: ") {
                    name = n.trim().to_string();
                }
            }
            body.push(line);
        }
        if !kind.is_empty() {
            out.push(Document {
                source,
                kind,
                name,
                body: body.join("\n"),
            });
        }
    }
    out
}

fn kinds(rendered: &str) -> BTreeSet<String> {
    documents(rendered)
        .into_iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Step 1: `helm lint --strict`, plain and with every flag on.
fn lint(helm: &Helm) -> anyhow::Result<()> {
    ok(helm.run(&["lint", "--strict", "CHART"], None)?)
        .map_err(|e| e.context("helm lint of the default values"))?;
    let mut args = vec!["lint", "--strict", "CHART"];
    args.extend_from_slice(&ALL_FLAGS);
    ok(helm.run(&args, None)?).map_err(|e| e.context("helm lint with every optional object on"))?;
    Ok(())
}

/// Step 2: what `helm template` renders.
fn template(helm: &Helm) -> anyhow::Result<()> {
    let root = repo_root();
    let chart_yaml = std::fs::read_to_string(root.join("charts/runnel/Chart.yaml"))?;
    ensure!(
        chart_yaml.contains(&format!("appVersion: \"{VERSION}\"")),
        "charts/runnel/Chart.yaml: appVersion must be the workspace version {VERSION}:\n{chart_yaml}"
    );

    // The CRDs: the same files, and rendered as they are.
    let names = |dir: &Path| -> anyhow::Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            names.insert(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    };
    let generated = names(&root.join("crds"))?;
    let copied = names(&root.join("charts/runnel/crds"))?;
    ensure!(
        generated == copied,
        "charts/runnel/crds/ holds {copied:?}, crds/ holds {generated:?}: run `make crds`"
    );
    for name in &generated {
        let want = std::fs::read(root.join("crds").join(name))?;
        let have = std::fs::read(root.join("charts/runnel/crds").join(name))?;
        ensure!(
            want == have,
            "charts/runnel/crds/{name} differs from crds/{name}: run `make crds`"
        );
    }
    let with_crds = helm.template(&["--include-crds"])?;
    let rendered_crds: Vec<Document> = documents(&with_crds)
        .into_iter()
        .filter(|d| d.kind == "CustomResourceDefinition")
        .collect();
    ensure!(
        rendered_crds.len() == generated.len(),
        "helm template --include-crds rendered {} CRDs, crds/ holds {}",
        rendered_crds.len(),
        generated.len()
    );
    for crd in &rendered_crds {
        let file = crd
            .source
            .strip_prefix("runnel/crds/")
            .with_context(|| format!("a CRD from {}", crd.source))?;
        let want = std::fs::read_to_string(root.join("crds").join(file))?;
        ensure!(
            crd.body.trim_end() == want.trim_end(),
            "helm renders {} otherwise than crds/{file}",
            crd.source
        );
    }

    // The objects, and the optional ones only with their flags.
    let base = set(&[
        "ServiceAccount/runnel-operator",
        "ClusterRole/runnel-operator",
        "ClusterRoleBinding/runnel-operator",
        "Role/runnel-operator-leader-election",
        "RoleBinding/runnel-operator-leader-election",
        "Service/runnel-operator-metrics",
        "Deployment/runnel-operator",
        "PodDisruptionBudget/runnel-operator",
    ]);
    let plain = kinds(&helm.template(&[])?);
    ensure!(
        plain == base,
        "default values render {plain:?}, expected {base:?}"
    );
    let optional: [(&str, &[&str]); 3] = [
        (
            "serviceMonitor.enabled=true",
            &[
                "ServiceMonitor/runnel-operator",
                "PodMonitor/runnel-operator-brokers",
            ],
        ),
        (
            "prometheusRule.enabled=true",
            &["PrometheusRule/runnel-operator"],
        ),
        (
            "grafanaDashboard.enabled=true",
            &["ConfigMap/runnel-operator-dashboard"],
        ),
    ];
    for (flag, objects) in optional {
        let with = kinds(&helm.template(&["--set", flag])?);
        let added: BTreeSet<String> = with.difference(&base).cloned().collect();
        ensure!(
            added == set(objects) && with.is_superset(&base),
            "--set {flag} adds {added:?} (expected {objects:?}); renders {with:?}"
        );
    }
    // One replica: no budget (minAvailable 1 would block every drain).
    let single = kinds(&helm.template(&["--set", "replicaCount=1"])?);
    ensure!(
        !single.contains("PodDisruptionBudget/runnel-operator"),
        "replicaCount=1 must not render a PodDisruptionBudget: {single:?}"
    );
    Ok(())
}

/// Step 3: values the schema refuses, each failing with the field's name.
fn bad_values(helm: &Helm, kubeconfig: &Path) -> anyhow::Result<()> {
    let cases: [(&str, &[&str]); 4] = [
        ("replicaCount=-1", &["replicaCount", "minimum"]),
        ("bogus=1", &["bogus", "not allowed"]),
        ("image.bogus=1", &["/image", "bogus", "not allowed"]),
        ("statusInterval=soon", &["statusInterval"]),
    ];
    for (value, expected) in cases {
        let out = helm.run(
            &[
                "install",
                RELEASE,
                "CHART",
                "--namespace",
                NAMESPACE,
                "--dry-run=server",
                "--set",
                value,
            ],
            Some(kubeconfig),
        )?;
        ensure!(
            !out.success(),
            "helm install --set {value} should be refused:\n{out}"
        );
        for text in expected {
            ensure!(
                out.stderr.contains(text),
                "helm install --set {value}: the error should name {text:?}:\n{out}"
            );
        }
    }
    Ok(())
}

/// The monitoring.coreos.com kinds the chart renders behind flags, as small CRDs: the fields
/// the chart uses, typed as the Prometheus Operator types them; any other field is refused by
/// strict field validation.
const MONITORING_CRDS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [selector]
            properties:
              namespaceSelector:
                type: object
                properties:
                  any: {type: boolean}
                  matchNames: {type: array, items: {type: string}}
              selector:
                type: object
                properties:
                  matchLabels: {type: object, additionalProperties: {type: string}}
              endpoints:
                type: array
                items:
                  type: object
                  properties:
                    port: {type: string}
                    path: {type: string}
                    interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, plural: podmonitors, singular: podmonitor, listKind: PodMonitorList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              namespaceSelector:
                type: object
                properties:
                  any: {type: boolean}
                  matchNames: {type: array, items: {type: string}}
              selector:
                type: object
                properties:
                  matchLabels: {type: object, additionalProperties: {type: string}}
              podMetricsEndpoints:
                type: array
                items:
                  type: object
                  properties:
                    port: {type: string}
                    path: {type: string}
                    interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                    relabelings:
                      type: array
                      items:
                        type: object
                        properties:
                          sourceLabels: {type: array, items: {type: string, pattern: '^[a-zA-Z_][a-zA-Z0-9_]*$'}}
                          targetLabel: {type: string}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, plural: prometheusrules, singular: prometheusrule, listKind: PrometheusRuleList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              groups:
                type: array
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string, minLength: 1}
                    rules:
                      type: array
                      items:
                        type: object
                        required: [expr]
                        properties:
                          alert: {type: string}
                          expr: {x-kubernetes-int-or-string: true}
                          for: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                          labels: {type: object, additionalProperties: {type: string}}
                          annotations: {type: object, additionalProperties: {type: string}}
"#;

fn wait_established(cp: &ControlPlane, crds: &[&str]) -> anyhow::Result<()> {
    let names: Vec<String> = crds.iter().map(|c| format!("crd/{c}")).collect();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    ok(cp.kubectl(&args)).map(|_| ())
}

/// Step 4: `helm install` for real, then a server-side dry run of everything with every flag on.
/// Returns the dry run's objects.
fn install(helm: &Helm, cp: &ControlPlane) -> anyhow::Result<Vec<Value>> {
    let out = ok(helm.run(
        &[
            "install",
            RELEASE,
            "CHART",
            "--namespace",
            NAMESPACE,
            "--create-namespace",
        ],
        Some(cp.kubeconfig()),
    )?)
    .map_err(|e| e.context("helm install with the default values"))?;
    for text in ["kind: Cluster", "kind: Topic", "kubectl get runnel"] {
        ensure!(out.contains(text), "NOTES.txt should show {text:?}:\n{out}");
    }
    wait_established(
        cp,
        &[
            "clusters.runnel.dev",
            "topics.runnel.dev",
            "consumergroups.runnel.dev",
        ],
    )?;
    // The category NOTES.txt tells about exists.
    ok(cp.kubectl(&["get", "runnel", "--all-namespaces"]))
        .map_err(|e| e.context("kubectl get runnel"))?;

    ok(cp.apply(MONITORING_CRDS)).map_err(|e| e.context("the monitoring.coreos.com CRDs"))?;
    wait_established(
        cp,
        &[
            "servicemonitors.monitoring.coreos.com",
            "podmonitors.monitoring.coreos.com",
            "prometheusrules.monitoring.coreos.com",
        ],
    )?;
    // helm's own server-side dry run knows every kind now.
    let mut args = vec![
        "upgrade",
        RELEASE,
        "CHART",
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
    ];
    args.extend_from_slice(&ALL_FLAGS);
    ok(helm.run(&args, Some(cp.kubeconfig()))?)
        .map_err(|e| e.context("helm upgrade --dry-run=server with every flag on"))?;

    let rendered = helm.template(&ALL_FLAGS)?;
    let dry = ok(cp.kubectl_with_stdin(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "json",
            "-f",
            "-",
        ],
        &rendered,
    ))
    .map_err(|e| e.context("kubectl apply --dry-run=server of everything the chart renders"))?;
    let list: Value = serde_json::from_str(&dry).context("kubectl's JSON")?;
    let items = list["items"]
        .as_array()
        .context("a List from kubectl apply -o json")?
        .clone();
    let have: BTreeSet<String> = items
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    ensure!(
        have == kinds(&rendered),
        "the dry run returned {have:?}, helm rendered {:?}",
        kinds(&rendered)
    );

    let deployment = find(&items, "Deployment", FULLNAME)?;
    let spec = &deployment["spec"];
    ensure!(spec["replicas"] == 2, "two replicas: {spec}");
    let pod = &spec["template"]["spec"];
    ensure!(
        pod["serviceAccountName"] == FULLNAME,
        "the operator's ServiceAccount: {pod}"
    );
    let container = &pod["containers"][0];
    ensure!(
        container["image"] == format!("runnel.dev/runnel-operator:{VERSION}").as_str(),
        "image: {container}"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        args == [
            "--metrics-listen=0.0.0.0:8080",
            "--status-interval=10s",
            "--lease-duration=15s"
        ],
        "the operator's flags: {args:?}"
    );
    let env = container["env"].as_array().context("env")?;
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    ensure!(
        field("POD_NAMESPACE") == Some(Value::from("metadata.namespace"))
            && field("POD_NAME") == Some(Value::from("metadata.name")),
        "POD_NAMESPACE and POD_NAME from the downward API: {env:?}"
    );
    ensure!(
        env.iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "info"),
        "RUST_LOG from logLevel: {env:?}"
    );
    let pdb = find(&items, "PodDisruptionBudget", FULLNAME)?;
    ensure!(pdb["spec"]["minAvailable"] == 1, "minAvailable 1: {pdb}");
    Ok(items)
}

fn find<'a>(items: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    items
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in the dry run"))
}

/// `kubectl auth can-i ARGS` as the operator's ServiceAccount: yes or no.
fn can_i(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<bool> {
    let user = format!("--as=system:serviceaccount:{NAMESPACE}:{FULLNAME}");
    let mut all = vec!["auth", "can-i", user.as_str()];
    all.extend_from_slice(args);
    let out = cp.kubectl(&all);
    match (out.status.code(), out.stdout.trim()) {
        (Some(0), "yes") => Ok(true),
        (Some(1), "no") => Ok(false),
        _ => bail!("unexpected answer: {out}"),
    }
}

/// Step 5a: the grants, call by call.
fn rbac(cp: &ControlPlane) -> anyhow::Result<()> {
    let ns = ["-n", APPS];
    let all = ["--all-namespaces"];
    let own = ["-n", NAMESPACE];
    let needed: Vec<(Vec<&str>, &[&str])> = vec![
        // Watched in every namespace (list + watch), read, patched, status written.
        (vec!["list", "clusters.runnel.dev"], &all),
        (vec!["watch", "clusters.runnel.dev"], &all),
        (vec!["get", "clusters.runnel.dev"], &ns),
        (
            vec!["patch", "clusters.runnel.dev", "--subresource=status"],
            &ns,
        ),
        (
            vec!["update", "clusters.runnel.dev", "--subresource=finalizers"],
            &ns,
        ),
        (vec!["list", "topics.runnel.dev"], &all),
        (vec!["watch", "topics.runnel.dev"], &all),
        (vec!["get", "topics.runnel.dev"], &ns),
        (vec!["patch", "topics.runnel.dev"], &ns),
        (
            vec!["patch", "topics.runnel.dev", "--subresource=status"],
            &ns,
        ),
        (vec!["list", "consumergroups.runnel.dev"], &all),
        (vec!["watch", "consumergroups.runnel.dev"], &all),
        (
            vec!["patch", "consumergroups.runnel.dev", "--subresource=status"],
            &ns,
        ),
        (vec!["list", "statefulsets.apps"], &all),
        (vec!["watch", "statefulsets.apps"], &all),
        (vec!["get", "statefulsets.apps"], &ns),
        (vec!["create", "statefulsets.apps"], &ns),
        (vec!["patch", "statefulsets.apps"], &ns),
        (vec!["list", "services"], &all),
        (vec!["watch", "services"], &all),
        (vec!["create", "services"], &ns),
        (vec!["patch", "services"], &ns),
        (vec!["list", "configmaps"], &all),
        (vec!["watch", "configmaps"], &all),
        (vec!["create", "configmaps"], &ns),
        (vec!["patch", "configmaps"], &ns),
        (vec!["list", "poddisruptionbudgets.policy"], &all),
        (vec!["watch", "poddisruptionbudgets.policy"], &all),
        (vec!["create", "poddisruptionbudgets.policy"], &ns),
        (vec!["patch", "poddisruptionbudgets.policy"], &ns),
        (vec!["list", "pods"], &all),
        (vec!["watch", "pods"], &all),
        (vec!["list", "persistentvolumeclaims"], &ns),
        (vec!["patch", "persistentvolumeclaims"], &ns),
        (vec!["get", "nodes"], &[]),
        (vec!["create", "events.events.k8s.io"], &ns),
        (vec!["patch", "events.events.k8s.io"], &ns),
        (vec!["create", "leases.coordination.k8s.io"], &own),
        (
            vec!["get", "leases.coordination.k8s.io/runnel-operator"],
            &own,
        ),
        (
            vec!["update", "leases.coordination.k8s.io/runnel-operator"],
            &own,
        ),
    ];
    let refused: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["get", "secrets"], &ns),
        (vec!["list", "secrets"], &all),
        (vec!["delete", "secrets"], &ns),
        (
            vec!["create", "clusterroles.rbac.authorization.k8s.io"],
            &[],
        ),
        (vec!["bind", "clusterroles.rbac.authorization.k8s.io"], &[]),
        (
            vec!["create", "rolebindings.rbac.authorization.k8s.io"],
            &ns,
        ),
        (vec!["*", "pods", "--subresource=exec"], &ns),
        (vec!["create", "pods", "--subresource=exec"], &ns),
        (vec!["create", "pods"], &ns),
        (vec!["delete", "pods"], &ns),
        (vec!["get", "pods"], &ns),
        (vec!["delete", "statefulsets.apps"], &ns),
        (vec!["update", "statefulsets.apps"], &ns),
        (vec!["delete", "services"], &ns),
        (vec!["delete", "persistentvolumeclaims"], &ns),
        (vec!["create", "clusters.runnel.dev"], &ns),
        (vec!["patch", "clusters.runnel.dev"], &ns),
        (vec!["delete", "clusters.runnel.dev"], &ns),
        (vec!["delete", "topics.runnel.dev"], &ns),
        (vec!["patch", "consumergroups.runnel.dev"], &ns),
        (
            vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
            &[],
        ),
        (vec!["list", "nodes"], &[]),
        (vec!["patch", "nodes"], &[]),
        (vec!["create", "namespaces"], &[]),
        (vec!["create", "events"], &ns),
        (
            vec!["get", "leases.coordination.k8s.io/runnel-operator"],
            &ns,
        ),
        (
            vec![
                "update",
                "leases.coordination.k8s.io/kube-controller-manager",
            ],
            &own,
        ),
        (vec!["delete", "leases.coordination.k8s.io"], &own),
        (vec!["list", "leases.coordination.k8s.io"], &own),
    ];
    let mut wrong = Vec::new();
    for (expected, cases) in [(true, &needed), (false, &refused)] {
        for (what, scope) in cases {
            let mut args = what.clone();
            args.extend_from_slice(scope);
            if can_i(cp, &args)? != expected {
                wrong.push(format!(
                    "can-i {} should be {}",
                    args.join(" "),
                    if expected { "yes" } else { "no" }
                ));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "the ServiceAccount {NAMESPACE}/{FULLNAME}:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

/// A kubeconfig for the operator's ServiceAccount, with a token from the TokenRequest API.
fn service_account_kubeconfig(cp: &ControlPlane, path: &Path) -> anyhow::Result<()> {
    let token = ok(cp.kubectl(&[
        "create",
        "token",
        FULLNAME,
        "-n",
        NAMESPACE,
        "--duration=1h",
    ]))?;
    let ca = ok(cp.kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority}",
    ]))?;
    ensure!(
        !ca.trim().is_empty(),
        "the admin kubeconfig names no CA file"
    );
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {FULLNAME}
  user:
    token: {token}
contexts:
- name: e2e
  context: {{cluster: e2e, user: {FULLNAME}, namespace: {NAMESPACE}}}
current-context: e2e
",
        server = cp.server(),
        ca = ca.trim(),
        token = token.trim(),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

const RESOURCES: &str = "apiVersion: runnel.dev/v1alpha1
kind: Cluster
metadata: {name: events, namespace: streams}
spec:
  brokers: 3
  storage: {size: 1Gi}
---
apiVersion: runnel.dev/v1alpha1
kind: Topic
metadata: {name: orders, namespace: streams}
spec:
  cluster: events
  partitions: 3
  replicas: 2
---
apiVersion: runnel.dev/v1alpha1
kind: ConsumerGroup
metadata: {name: billing, namespace: streams}
spec:
  cluster: events
  topic: orders
";

/// `kubectl get KIND NAME -n NS -o json`, `None` while it does not exist.
fn get(
    cp: &ControlPlane,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<Option<Value>> {
    runnel_e2e::operator::get(cp, namespace, kind, name)
}

/// Step 5b: the real operator, as the ServiceAccount, does its work with nothing refused.
fn operator_as_service_account(cp: &ControlPlane) -> anyhow::Result<Operator> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("operator.kubeconfig");
    service_account_kubeconfig(cp, &kubeconfig)?;
    ok(cp.kubectl(&["create", "namespace", APPS]))?;
    ok(cp.apply(RESOURCES)).map_err(|e| e.context("a Cluster, a Topic, a ConsumerGroup"))?;
    let operator = Operator::start_with_kubeconfig(
        &kubeconfig,
        &[
            ("POD_NAMESPACE", NAMESPACE),
            ("POD_NAME", "runnel-operator-0"),
        ],
        &["--status-interval=1s"],
    )?;
    runnel_e2e::operator::eventually(
        "the operator reconciles as its ServiceAccount",
        &operator,
        TIMEOUT,
        || {
            let lease = get(
                cp,
                NAMESPACE,
                "leases.coordination.k8s.io",
                "runnel-operator",
            )?;
            if lease.as_ref().map(|l| l["spec"]["holderIdentity"].clone())
                != Some(Value::from("runnel-operator-0"))
            {
                return Ok(Some(format!("the Lease: {lease:?}")));
            }
            for (kind, name) in [
                ("configmaps", "events-config"),
                ("services", "events-brokers"),
                ("services", "events"),
                ("statefulsets.apps", "events-broker"),
                ("poddisruptionbudgets.policy", "events-broker"),
            ] {
                if get(cp, APPS, kind, name)?.is_none() {
                    return Ok(Some(format!("{kind} {name} not created yet")));
                }
            }
            let cluster = get(cp, APPS, "clusters.runnel.dev", "events")?.context("Cluster")?;
            if cluster["status"]["observedGeneration"].is_null() {
                return Ok(Some(format!("Cluster status: {}", cluster["status"])));
            }
            let topic = get(cp, APPS, "topics.runnel.dev", "orders")?.context("Topic")?;
            if topic["status"]["observedGeneration"].is_null() {
                return Ok(Some(format!("Topic: {}", topic["metadata"])));
            }
            let group = get(cp, APPS, "consumergroups.runnel.dev", "billing")?.context("group")?;
            if group["status"].is_null() {
                return Ok(Some("ConsumerGroup status not written yet".into()));
            }
            Ok(None)
        },
    )?;
    // Deleting the Topic: it goes at once (no finalizer), its data is deleted and an Event
    // tells about it.
    ok(cp.kubectl(&[
        "delete",
        "topics.runnel.dev",
        "orders",
        "-n",
        APPS,
        "--wait=false",
    ]))?;
    runnel_e2e::operator::eventually(
        "the operator deletes a Topic and publishes an Event",
        &operator,
        TIMEOUT,
        || {
            if let Some(topic) = get(cp, APPS, "topics.runnel.dev", "orders")? {
                return Ok(Some(format!(
                    "the Topic is still there: {}",
                    topic["metadata"]
                )));
            }
            let reasons = ok(cp.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                APPS,
                "-o",
                "jsonpath={range .items[*]}{.reportingController}/{.reason} {end}",
            ]))?;
            if !reasons.contains("runnel-operator/TopicDeleted") {
                return Ok(Some(format!("no TopicDeleted Event yet: {reasons}")));
            }
            Ok(None)
        },
    )?;
    // Two more status rounds: a refusal on a later path (claims, status refreshes) shows too.
    std::thread::sleep(Duration::from_millis(2500));
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("code: 403")
        })
        .collect();
    ensure!(
        refused.is_empty(),
        "the operator was refused calls as its ServiceAccount:\n{}",
        refused.join("\n")
    );
    Ok(operator)
}

/// `GET path` on `address` (a loopback host:port): the body of a 200 answer.
fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(body.to_string())
}

/// The metric families a `/metrics` page declares (`# TYPE NAME TYPE`), with the names their
/// samples carry (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms).
fn metric_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

/// The `runnel_…` and `kafka_…` metric names in a PromQL expression.
fn used_metrics(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !word(bytes[i - 1]))
            && (bytes[i..].starts_with(b"runnel_") || bytes[i..].starts_with(b"kafka_"));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            // ASCII from `i` to `end`: a valid slice.
            into.insert(String::from_utf8_lossy(&bytes[i..end]).into_owned());
            i = end;
        } else {
            i += 1;
        }
    }
}

/// Every string under a key named `expr`, `query` or `definition` (PromQL in a dashboard).
fn dashboard_queries(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => into.push(s.clone()),
                    _ => dashboard_queries(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, into)),
        _ => {}
    }
}

/// A standalone `runnel-broker` on loopback, killed when dropped.
struct Broker {
    child: std::process::Child,
    metrics: String,
    dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> anyhow::Result<Self> {
        let binary = binary_next_to_tests("runnel-broker")?;
        let dir = tempfile::tempdir()?;
        let listen = format!("127.0.0.1:{}", runnel_e2e::free_port()?);
        let metrics = format!("127.0.0.1:{}", runnel_e2e::free_port()?);
        let data = dir.path().join("data");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .arg("--standalone")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen, "--metrics-listen", &metrics])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("broker.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Broker {
            child,
            metrics,
            dir,
        })
    }

    /// Its `/metrics`, once it answers.
    fn metrics(&mut self) -> anyhow::Result<String> {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
                bail!("runnel-broker exited ({status}):\n{log}");
            }
            match http_get(&self.metrics, "/metrics") {
                Ok(page) => return Ok(page),
                Err(e) if began.elapsed() > TIMEOUT => return Err(e.context("broker /metrics")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names registered in the operator's and the broker's source (`register("NAME", …)`
/// under the registry's prefix), with the suffixes their samples may carry: a labelled family
/// shows on `/metrics` only once it has a series, which needs traffic, groups and failures.
fn registered_metrics() -> anyhow::Result<BTreeSet<String>> {
    let root = repo_root();
    let sources = [
        ("operator/src/main.rs", ""),
        ("operator/src/controller/mod.rs", "runnel_operator_"),
        ("broker/src/metrics.rs", "runnel_broker_"),
    ];
    let mut names = BTreeSet::new();
    for (file, prefix) in sources {
        let text = std::fs::read_to_string(root.join(file)).with_context(|| file.to_string())?;
        for (at, _) in text.match_indices("register(") {
            let rest = &text[at..];
            let Some(name) = rest.split('"').nth(1) else {
                continue;
            };
            let name = if name.starts_with("kafka_") || name.starts_with("runnel_") {
                name.to_string()
            } else {
                format!("{prefix}{name}")
            };
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    ensure!(
        names.contains("runnel_broker_produced_records_total"),
        "no metrics found in the sources: {names:?}"
    );
    Ok(names)
}

/// Step 6: the metrics the alerts and the dashboard query exist: served by the real operator or a
/// real broker, or registered in their source.
fn metrics_exist(items: &[Value], operator: &Operator) -> anyhow::Result<()> {
    let (_, operator_page) = operator.http_get("/metrics")?;
    let mut served = metric_names(&operator_page);
    served.extend(metric_names(&Broker::start()?.metrics()?));
    for name in ["runnel_operator_leader", "runnel_broker_offline_partitions"] {
        ensure!(
            served.contains(name),
            "{name} is not on /metrics: {served:?}"
        );
    }
    served.extend(registered_metrics()?);

    let mut used = BTreeSet::new();
    let rule = find(items, "PrometheusRule", FULLNAME)?;
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().context("rule groups")? {
        for r in group["rules"].as_array().context("rules")? {
            used_metrics(r["expr"].as_str().context("a rule's expr")?, &mut used);
            alerts += 1;
        }
    }
    ensure!(alerts >= 2, "too few alerts: {rule}");
    ensure!(
        rule["spec"].to_string().contains("kafka_consumergroup_lag"),
        "a consumer-lag alert: {rule}"
    );
    let dashboard = find(items, "ConfigMap", "runnel-operator-dashboard")?;
    let json = dashboard["data"]["runnel.json"]
        .as_str()
        .context("the dashboard's runnel.json")?;
    let json: Value = serde_json::from_str(json).context("the dashboard is JSON")?;
    let mut queries = Vec::new();
    dashboard_queries(&json, &mut queries);
    ensure!(
        queries.len() >= 8,
        "the dashboard has {} queries",
        queries.len()
    );
    for q in &queries {
        used_metrics(q, &mut used);
    }
    let missing: Vec<&String> = used.difference(&served).collect();
    ensure!(
        missing.is_empty(),
        "the alerts and the dashboard use metrics that neither the operator nor a broker \
         has: {missing:?}\nthey have: {served:?}"
    );
    Ok(())
}

#[test]
fn the_chart_lints_renders_installs_and_grants_exactly_what_the_operator_needs(
) -> anyhow::Result<()> {
    let began = Instant::now();
    // Without helm the test fails, naming the command that installs it.
    let nowhere = tempfile::tempdir()?;
    let missing = runnel_e2e::helm_binary_in(nowhere.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        missing.contains(&format!("run `{HELM_INSTALL_COMMAND}`")),
        "a missing helm must name its install command: {missing:?}"
    );
    let helm = Helm::new()?;
    let version = ok(helm.run(&["version", "--short"], None)?)?;
    ensure!(
        version.starts_with(HELM_VERSION),
        "helm {version} is not the pinned {HELM_VERSION}: run `{HELM_INSTALL_COMMAND}`"
    );

    lint(&helm)?;
    template(&helm)?;
    let offline = began.elapsed();

    let cp = ControlPlane::start()?;
    let started = began.elapsed();
    bad_values(&helm, cp.kubeconfig())?;
    let items = install(&helm, &cp)?;
    rbac(&cp)?;
    let rbac_done = began.elapsed();
    let operator = operator_as_service_account(&cp)?;
    metrics_exist(&items, &operator)?;
    drop(operator);
    eprintln!(
        "chart: lint+template {offline:.1?}, control plane up at {started:.1?}, \
         install+dry run+RBAC at {rbac_done:.1?}, operator and metrics at {:.1?}",
        began.elapsed()
    );
    Ok(())
}
