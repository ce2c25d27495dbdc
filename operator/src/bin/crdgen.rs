//! Writes the CustomResourceDefinitions to `crds/` (or to the directory given as the first
//! argument): `cargo run -p runnel-operator --bin crdgen`.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    for manifest in runnel_operator::crd::manifests()? {
        std::fs::write(dir.join(&manifest.file_name), manifest.yaml)?;
    }
    Ok(())
}
