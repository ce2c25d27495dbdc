//! Without the cached binaries the harness fails, naming the command that installs them (a
//! test that needs a tool never passes while a tool is missing). Its own test binary: it changes
//! `RUNNEL_HOME` for the whole process.

use anyhow::{ensure, Context};
use runnel_e2e::{ControlPlane, Error, INSTALL_COMMAND};

#[test]
fn a_missing_binary_fails_with_the_install_command() -> anyhow::Result<()> {
    let empty = tempfile::tempdir()?;
    std::env::set_var("RUNNEL_HOME", empty.path());

    let missing = runnel_e2e::k8s_binary("kube-apiserver");
    ensure!(
        matches!(missing, Err(Error::MissingTool { .. })),
        "{missing:?}"
    );
    let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(
        message.contains("run `e2e/tools/build-tools.sh k8s etcd`"),
        "{message}"
    );

    let outcome = std::panic::catch_unwind(ControlPlane::start);
    let payload = outcome.err().context("start must panic without binaries")?;
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    ensure!(
        text.contains(INSTALL_COMMAND) && text.contains("is missing"),
        "panic message: {text}"
    );
    Ok(())
}
