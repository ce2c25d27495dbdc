//! What `make e2e-kind` runs, checked without Docker or kind (neither is on every machine):
//! `e2e/kind/run.sh` is valid bash, runs the same test as the local journey
//! (`e2e/tests/helm_journey/`) with an external kubeconfig and preloaded images, builds
//! exactly the Dockerfile's image targets under the names the chart and the journey use, and
//! the CI workflow runs `make e2e-kind`, which the Makefile defines.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn the_kind_script_is_valid_bash() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(root().join("e2e/kind/run.sh"))
        .output()
        .expect("running bash -n");
    assert!(
        out.status.success(),
        "bash -n e2e/kind/run.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_kind_script_runs_the_local_journey_on_an_external_cluster() {
    let script = read("e2e/kind/run.sh");
    assert!(
        Path::new(&root().join("e2e/tests/helm_journey/main.rs")).is_file(),
        "the journey moved"
    );
    assert!(script.contains("TEST=helm_journey\n"), "{script}");
    assert!(
        script.contains(r#""$CARGO" test -p runnel-e2e --test "$TEST""#),
        "run.sh does not run cargo test -p runnel-e2e --test helm_journey"
    );
    assert!(script.contains("RUNNEL_E2E_KUBECONFIG="));
    assert!(script.contains("RUNNEL_E2E_IMAGES=preloaded"));
    let journey = ["main.rs", "support.rs", "checks.rs"]
        .map(|f| read(&format!("e2e/tests/helm_journey/{f}")))
        .concat();
    for var in ["\"RUNNEL_E2E_KUBECONFIG\"", "\"RUNNEL_E2E_IMAGES\""] {
        assert!(journey.contains(var), "helm_journey.rs does not read {var}");
    }
    for tool in ["docker", "kind", "kubectl", "helm"] {
        assert!(
            script.contains(&format!("need {tool} ")),
            "run.sh does not check for {tool} with its install command"
        );
    }
}

#[test]
fn the_kind_script_builds_the_dockerfile_targets_under_the_journeys_names() {
    let dockerfile = read("Dockerfile");
    let mut targets: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[2].eq_ignore_ascii_case("AS")).then_some(f[3])
        })
        .filter(|t| !["build", "runtime"].contains(t))
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        ["broker", "operator"],
        "the Dockerfile's image targets"
    );
    let script = read("e2e/kind/run.sh");
    assert!(
        script.contains("for target in broker operator; do"),
        "{script}"
    );
    assert!(script
        .contains(r#"docker build --target "$target" -t "runnel.dev/runnel-$target:$VERSION""#));
    assert!(script
        .contains(r#"kind load docker-image --name "$NAME" "runnel.dev/runnel-$target:$VERSION""#));
    // The names build-images.sh gives the same images, which the journey installs.
    let images = read("e2e/images/build-images.sh");
    assert!(images.contains("runnel.dev/runnel-broker:VERSION"));
    assert!(images.contains("REGISTRY=runnel.dev"));
}

#[test]
fn the_workflow_runs_make_e2e_kind() {
    let workflow = read(".github/workflows/e2e-kind.yml");
    assert!(workflow.contains("run: make e2e-kind"), "{workflow}");
    assert!(workflow.contains("uses: helm/kind-action@"), "{workflow}");
    let makefile = read("Makefile");
    assert!(
        makefile.contains("\ne2e-kind:\n\tCARGO=\"$(CARGO)\" e2e/kind/run.sh\n"),
        "the Makefile's e2e-kind target does not run e2e/kind/run.sh"
    );
}
