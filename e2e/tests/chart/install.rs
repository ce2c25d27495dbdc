//! Step 4: `helm install` for real and a server-side dry run of everything, with small
//! monitoring.coreos.com CRDs for the optional objects.

use super::*;

/// The monitoring.coreos.com kinds the chart renders behind flags, as small CRDs: the fields
/// the chart uses, typed as the Prometheus Operator types them; any other field is refused by
/// strict field validation.
pub(super) const MONITORING_CRDS: &str = r#"apiVersion: apiextensions.k8s.io/v1
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

pub(super) fn wait_established(cp: &ControlPlane, crds: &[&str]) -> anyhow::Result<()> {
    let names: Vec<String> = crds.iter().map(|c| format!("crd/{c}")).collect();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    ok(cp.kubectl(&args)).map(|_| ())
}

/// Step 4: `helm install` for real, then a server-side dry run of everything with every flag on.
/// Returns the dry run's objects.
pub(super) fn install(helm: &Helm, cp: &ControlPlane) -> anyhow::Result<Vec<Value>> {
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

pub(super) fn find<'a>(items: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    items
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in the dry run"))
}
