//! Steps 1–3: `helm lint`, what `helm template` renders, and the values the schema refuses.

use super::*;

/// Step 1: `helm lint --strict`, plain and with every flag on.
pub(super) fn lint(helm: &Helm) -> anyhow::Result<()> {
    ok(helm.run(&["lint", "--strict", "CHART"], None)?)
        .map_err(|e| e.context("helm lint of the default values"))?;
    let mut args = vec!["lint", "--strict", "CHART"];
    args.extend_from_slice(&ALL_FLAGS);
    ok(helm.run(&args, None)?).map_err(|e| e.context("helm lint with every optional object on"))?;
    Ok(())
}

/// Step 2: what `helm template` renders.
pub(super) fn template(helm: &Helm) -> anyhow::Result<()> {
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
pub(super) fn bad_values(helm: &Helm, kubeconfig: &Path) -> anyhow::Result<()> {
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
