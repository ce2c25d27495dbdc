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

mod install;
mod metrics;
mod rbac;
mod render;

use install::{find, install};
use metrics::metrics_exist;
use rbac::{operator_as_service_account, rbac};
use render::{bad_values, lint, template};

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
