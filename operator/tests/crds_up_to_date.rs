//! The checked-in `crds/` is exactly what `crdgen` generates from the Rust types.

use std::collections::BTreeSet;
use std::path::PathBuf;

const FIX: &str = "run `cargo run -p runnel-operator --bin crdgen` and commit crds/";

#[test]
fn checked_in_crds_match_the_rust_types() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let manifests = runnel_operator::crd::manifests()?;
    for manifest in &manifests {
        let path = dir.join(&manifest.file_name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == manifest.yaml,
            "{} differs from the generated CRD: {FIX}",
            path.display()
        );
    }
    let expected: BTreeSet<String> = manifests.into_iter().map(|m| m.file_name).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}: {FIX}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        present == expected,
        "crds/ holds {present:?}, crdgen writes {expected:?}: {FIX}"
    );
    Ok(())
}
