//! Step 5: the grants, checked with `kubectl auth can-i` as the operator's ServiceAccount, and
//! the real operator at work with that ServiceAccount's token.

use super::*;

/// `kubectl auth can-i ARGS` as the operator's ServiceAccount: yes or no.
pub(super) fn can_i(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<bool> {
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
pub(super) fn rbac(cp: &ControlPlane) -> anyhow::Result<()> {
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
pub(super) fn service_account_kubeconfig(cp: &ControlPlane, path: &Path) -> anyhow::Result<()> {
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

pub(super) const RESOURCES: &str = "apiVersion: runnel.dev/v1alpha1
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
pub(super) fn get(
    cp: &ControlPlane,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<Option<Value>> {
    runnel_e2e::operator::get(cp, namespace, kind, name)
}

/// Step 5b: the real operator, as the ServiceAccount, does its work with nothing refused.
pub(super) fn operator_as_service_account(cp: &ControlPlane) -> anyhow::Result<Operator> {
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
