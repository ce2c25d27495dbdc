//! Runnel's container images, checked without Docker and without a cluster.
//!
//! `e2e/images/build-images.sh` (what `make images` runs) builds the OCI archives from the
//! release binaries. Each archive must be an OCI layout umoci reads, named as the Helm chart
//! names it (`runnel.dev/NAME:VERSION`, never `latest`), and match its Dockerfile target (user,
//! entrypoint, environment, ports, volume, labels). Unpacked with umoci, its entrypoint runs in
//! a chroot of the image's own root filesystem as the image's non-root user, which proves that
//! the loader and every shared library are inside; the broker serves from its data directory.
//! Then a throwaway containerd (the cluster's pinned one, on its own socket and directories)
//! receives the images the way `make images` imports them into the local cluster.
//!
//! Needs root (chroot, file owners in the layer), umoci, and the containerd that
//! `e2e/tools/build-tools.sh containerd` caches; a missing one fails the test with the command
//! that installs it.

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Registry part of the image names; the Helm chart uses the same.
const REGISTRY: &str = "runnel.dev";
/// The workspace version, which tags the images.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The non-root user the images run as.
const RUNNEL_UID: u32 = 65532;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A program on `PATH`, or an error naming the command that installs it.
fn require(program: &str, install: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is missing: install it with `{install}`"))
}

fn require_root() -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "the image tests need root (chroot, and the layer's file owners, which umoci records \
         only as root): run them as root, as the local cluster needs too"
    );
    Ok(())
}

/// Runs `command`, failing with its output when it fails.
fn run(command: &mut Command) -> anyhow::Result<Output> {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    ensure!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// `e2e/images/build-images.sh ARGS…` with its output; success is not checked.
fn build_images(args: &[&str], socket: &Path, out_dir: &Path) -> anyhow::Result<Output> {
    let script = repo_root().join("e2e/images/build-images.sh");
    Command::new(&script)
        .args(args)
        .arg("--out")
        .arg(out_dir)
        .env("RUNNEL_CONTAINERD_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", script.display()))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// --- the Dockerfile ----------------------------------------------------------------------------

/// What a Dockerfile target says about the image's configuration.
#[derive(Debug, Default)]
struct DockerTarget {
    user: Option<String>,
    entrypoint: Vec<String>,
    env: BTreeMap<String, String>,
    exposed: BTreeSet<String>,
    volumes: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    args: BTreeMap<String, String>,
}

/// Splits `a=1 b="two words"` into pairs, with `${ARG}` replaced from `args`.
fn key_values(
    text: &str,
    args: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .with_context(|| format!("`{w}` is not KEY=VALUE"))?;
            let v = args.iter().fold(v.to_string(), |v, (a, val)| {
                v.replace(&format!("${{{a}}}"), val)
            });
            Ok((k.to_string(), v))
        })
        .collect()
}

/// The configuration the Dockerfile gives `target`, following `FROM <stage>` to its ancestors.
fn dockerfile_target(dockerfile: &str, target: &str) -> anyhow::Result<DockerTarget> {
    // Instructions: comments dropped, continuation lines joined.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    // Stages in order, each with the earlier stage it starts from (if any).
    struct Stage {
        name: String,
        parent: Option<String>,
        body: Vec<(String, String)>,
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction.as_str(), ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_string());
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (base, name) = match words.as_slice() {
                [base, kw, name] if kw.eq_ignore_ascii_case("as") => (*base, *name),
                [base] => (*base, ""),
                _ => bail!("unexpected FROM {rest}"),
            };
            let parent = stages
                .iter()
                .any(|s| s.name == base)
                .then(|| base.to_string());
            stages.push(Stage {
                name: name.to_string(),
                parent,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push((keyword, rest));
        }
    }
    let mut chain = Vec::new();
    let mut next = Some(target.to_string());
    while let Some(name) = next {
        let stage = stages
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("the Dockerfile has no stage `{name}`"))?;
        chain.push(stage);
        next = stage.parent.clone();
    }
    let mut out = DockerTarget::default();
    for stage in chain.into_iter().rev() {
        for (keyword, rest) in &stage.body {
            match keyword.as_str() {
                "ARG" => {
                    if let Some((k, v)) = rest.split_once('=') {
                        out.args.insert(k.to_string(), v.to_string());
                    }
                }
                "USER" => out.user = Some(rest.clone()),
                "ENTRYPOINT" => {
                    out.entrypoint = serde_json::from_str(rest)
                        .with_context(|| format!("ENTRYPOINT {rest} is not exec form"))?
                }
                "ENV" => out.env.extend(key_values(rest, &out.args)?),
                "LABEL" => out.labels.extend(key_values(rest, &out.args)?),
                "EXPOSE" => out
                    .exposed
                    .extend(rest.split_whitespace().map(String::from)),
                "VOLUME" => match serde_json::from_str::<Vec<String>>(rest) {
                    Ok(list) => out.volumes.extend(list),
                    Err(_) => out
                        .volumes
                        .extend(rest.split_whitespace().map(String::from)),
                },
                _ => {}
            }
        }
    }
    Ok(out)
}

// --- one image archive --------------------------------------------------------------------------

/// `blobs/sha256/…` of a descriptor, parsed.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<Value> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let (algorithm, hex) = digest.split_once(':').context("digest without algorithm")?;
    let path = layout.join("blobs").join(algorithm).join(hex);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Checks one archive against the Dockerfile target and unpacks it; returns the bundle's
/// directory and the runtime process umoci derived from the image config.
fn check_archive(
    archive: &Path,
    name: &str,
    target: &DockerTarget,
    work: &Path,
) -> anyhow::Result<(PathBuf, Value)> {
    let reference = format!("{REGISTRY}/{name}:{VERSION}");
    let layout = work.join(format!("{name}-layout"));
    std::fs::create_dir_all(&layout)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout))?;

    // A valid OCI layout with exactly the version tag.
    let image = format!("{}:{VERSION}", layout.display());
    let tags = run(Command::new("umoci").arg("ls").arg("--layout").arg(&layout))?;
    let tags = String::from_utf8_lossy(&tags.stdout).trim().to_string();
    ensure!(tags == VERSION, "{name}: umoci ls says {tags:?}");
    ensure!(VERSION != "latest" && !reference.ends_with(":latest"));
    run(Command::new("umoci").args(["stat", "--image", &image]))?;

    // The name containerd imports it under.
    let index: Value = serde_json::from_str(&std::fs::read_to_string(layout.join("index.json"))?)?;
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    ensure!(manifests.len() == 1, "{name}: {index}");
    let annotations = &manifests[0]["annotations"];
    ensure!(
        annotations["io.containerd.image.name"] == reference.as_str()
            && annotations["org.opencontainers.image.ref.name"] == VERSION,
        "{name}: annotations {annotations}"
    );

    // The config says what the Dockerfile target says.
    let manifest = blob(&layout, &manifests[0])?;
    let config = blob(&layout, &manifest["config"])?;
    ensure!(
        config["os"] == "linux" && config["architecture"] == "amd64",
        "{name}: platform {}/{}",
        config["os"],
        config["architecture"]
    );
    ensure!(
        manifest["layers"].as_array().map(Vec::len) == Some(1),
        "{name}: one layer expected: {manifest}"
    );
    let c = &config["config"];
    let user = c["User"].as_str().context("no User")?;
    ensure!(
        user == format!("{RUNNEL_UID}:{RUNNEL_UID}"),
        "{name}: user {user}"
    );
    ensure!(
        Some(user) == target.user.as_deref(),
        "{name}: user {user}, the Dockerfile says {:?}",
        target.user
    );
    let uid: u32 = user.split(':').next().unwrap_or_default().parse()?;
    ensure!(uid != 0, "{name} runs as root");
    let entrypoint: Vec<String> = serde_json::from_value(c["Entrypoint"].clone())?;
    ensure!(
        entrypoint == [format!("/usr/local/bin/{name}")] && entrypoint == target.entrypoint,
        "{name}: entrypoint {entrypoint:?}, the Dockerfile says {:?}",
        target.entrypoint
    );
    ensure!(c["Cmd"].is_null(), "{name}: unexpected Cmd {}", c["Cmd"]);
    let env: BTreeMap<String, String> = c["Env"]
        .as_array()
        .context("no Env")?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ensure!(env.contains_key("PATH"), "{name}: no PATH in {env:?}");
    let runnel_env: BTreeMap<_, _> = env.into_iter().filter(|(k, _)| k != "PATH").collect();
    ensure!(
        runnel_env == target.env,
        "{name}: env {runnel_env:?}, the Dockerfile says {:?}",
        target.env
    );
    ensure!(
        keys(&c["ExposedPorts"]) == target.exposed,
        "{name}: ports {}, the Dockerfile says {:?}",
        c["ExposedPorts"],
        target.exposed
    );
    ensure!(
        keys(&c["Volumes"]) == target.volumes,
        "{name}: volumes {}, the Dockerfile says {:?}",
        c["Volumes"],
        target.volumes
    );
    let labels: BTreeMap<String, String> = serde_json::from_value(c["Labels"].clone())?;
    ensure!(
        labels == target.labels,
        "{name}: labels {labels:?}, the Dockerfile says {:?}",
        target.labels
    );

    // Unpacked (umoci checks every digest), with what a container needs besides the binary.
    let bundle = work.join(format!("{name}-bundle"));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .with_context(|| format!("{name}: CA certificates"))?;
    let count = certs.matches("-----BEGIN CERTIFICATE-----").count();
    ensure!(count > 10, "{name}: only {count} CA certificates");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    ensure!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("runnel:x:{RUNNEL_UID}:{RUNNEL_UID}:"))),
        "{name}: /etc/passwd lacks the user runnel:\n{passwd}"
    );
    let group = std::fs::read_to_string(rootfs.join("etc/group"))?;
    ensure!(
        group
            .lines()
            .any(|l| l == format!("runnel:x:{RUNNEL_UID}:")),
        "{name}: /etc/group lacks runnel:\n{group}"
    );
    for volume in &target.volumes {
        let meta = std::fs::metadata(rootfs.join(volume.trim_start_matches('/')))
            .with_context(|| format!("{name}: the volume {volume} is not in the image"))?;
        ensure!(
            meta.uid() == RUNNEL_UID && meta.gid() == RUNNEL_UID,
            "{name}: {volume} belongs to {}:{}, not to the image's user",
            meta.uid(),
            meta.gid()
        );
    }

    let runtime: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json"))?)?;
    Ok((bundle, runtime["process"].clone()))
}

/// `chroot ROOTFS ARGS…` as the process umoci derived from the image config: its user, its
/// environment only, its entrypoint; `extra` appended as the container's command.
fn chroot_command(bundle: &Path, process: &Value, extra: &[&str]) -> anyhow::Result<Command> {
    let chroot = require("chroot", "apt-get install -y coreutils")?;
    let uid = process["user"]["uid"]
        .as_u64()
        .context("process.user.uid")?;
    let gid = process["user"]["gid"]
        .as_u64()
        .context("process.user.gid")?;
    let args: Vec<String> = serde_json::from_value(process["args"].clone())?;
    let env: Vec<String> = serde_json::from_value(process["env"].clone())?;
    ensure!(
        process["cwd"] == "/",
        "unexpected working directory {}",
        process["cwd"]
    );
    let mut command = Command::new(chroot);
    command
        .env_clear()
        .envs(env.iter().filter_map(|e| e.split_once('=')))
        .arg(format!("--userspec={uid}:{gid}"))
        .arg(bundle.join("rootfs"))
        .args(&args)
        .args(extra);
    Ok(command)
}

/// `GET path` on 127.0.0.1:port, the status line.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply.lines().next().unwrap_or_default().to_string())
}

/// A started process, killed on drop (a failing test leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Running {
    /// SIGTERM, then wait up to `patience` for the exit status.
    fn terminate(mut self, patience: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid =
            rustix::process::Pid::from_raw(i32::try_from(self.0.id())?).context("process id")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "no exit {patience:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The broker from its image: standalone, as the image's user, with the image's environment
/// (so its data directory is the image's volume); `/readyz` answers and the log is written.
fn broker_serves_from_its_volume(bundle: &Path, process: &Value) -> anyhow::Result<()> {
    let (grpc, http) = (runnel_e2e::free_port()?, runnel_e2e::free_port()?);
    let log = bundle.join("broker.log");
    let mut command = chroot_command(
        bundle,
        process,
        &[
            "--standalone",
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--metrics-listen",
            &format!("127.0.0.1:{http}"),
        ],
    )?;
    let out = std::fs::File::create(&log)?;
    let mut broker = Running(
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = broker.0.try_wait()? {
            bail!(
                "the broker exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        match http_get(http, "/readyz") {
            Ok(status) if status.contains(" 200 ") => break,
            _ if Instant::now() > deadline => bail!(
                "the broker was not ready after 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let data = bundle.join("rootfs/var/lib/runnel");
    let written: Vec<_> = std::fs::read_dir(&data)?.collect::<Result<_, _>>()?;
    ensure!(!written.is_empty(), "nothing written in {}", data.display());
    for entry in &written {
        ensure!(
            entry.metadata()?.uid() == RUNNEL_UID,
            "{} was not written by the image's user",
            entry.path().display()
        );
    }
    let status = broker.terminate(Duration::from_secs(15))?;
    ensure!(
        status.success(),
        "the broker did not stop cleanly ({status}):\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Ok(())
}

// --- a throwaway containerd ---------------------------------------------------------------------

/// The containerd release `e2e/tools/build-tools.sh` pins.
fn containerd_version() -> anyhow::Result<String> {
    let script = std::fs::read_to_string(repo_root().join("e2e/tools/build-tools.sh"))?;
    script
        .lines()
        .find_map(|l| l.strip_prefix("CONTAINERD_VERSION="))
        .map(|v| v.trim().to_string())
        .context("no CONTAINERD_VERSION in e2e/tools/build-tools.sh")
}

/// containerd with its own root, state and socket under `dir`: only content, snapshots and
/// images (no CRI, no task runtime, nothing written outside `dir`).
fn start_containerd(dir: &Path) -> anyhow::Result<(Running, PathBuf, PathBuf)> {
    let bin = runnel_e2e::runnel_home().join(format!("containerd-{}/bin", containerd_version()?));
    for b in ["containerd", "ctr"] {
        ensure!(
            bin.join(b).is_file(),
            "{} is missing: run `e2e/tools/build-tools.sh containerd`",
            bin.join(b).display()
        );
    }
    let socket = dir.join("containerd.sock");
    let d = dir.display();
    let config = format!(
        "version = 4\n\
         root = '{d}/root'\n\
         state = '{d}/state'\n\
         disabled_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.images', \
         'io.containerd.cri.v1.runtime', 'io.containerd.nri.v1.nri', \
         'io.containerd.internal.v1.opt', 'io.containerd.runtime.v2.task', \
         'io.containerd.shim.v1.manager', 'io.containerd.monitor.task.v1.cgroups', \
         'io.containerd.monitor.container.v1.restart', \
         'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']\n\
         [plugins.'io.containerd.server.v1.grpc']\n  address = '{d}/containerd.sock'\n\
         [plugins.'io.containerd.server.v1.ttrpc']\n  address = '{d}/containerd.sock.ttrpc'\n"
    );
    std::fs::write(dir.join("config.toml"), config)?;
    let log = std::fs::File::create(dir.join("containerd.log"))?;
    let mut daemon = Running(
        Command::new(bin.join("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?,
    );
    let ctr = bin.join("ctr");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = Command::new(&ctr)
            .arg("-a")
            .arg(&socket)
            .arg("version")
            .stdin(Stdio::null())
            .output()?;
        if up.status.success() {
            return Ok((daemon, socket, ctr));
        }
        if daemon.0.try_wait()?.is_some() || Instant::now() > deadline {
            bail!(
                "containerd did not start:\n{}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- the tests ----------------------------------------------------------------------------------

#[test]
fn images_are_valid_named_non_root_and_run_in_their_own_root_filesystem() -> anyhow::Result<()> {
    require_root()?;
    require("umoci", "apt-get install -y --no-install-recommends umoci")?;
    require("tar", "apt-get install -y tar")?;
    let work = tempfile::tempdir()?;
    let out_dir = work.path().join("images");

    // `make images` with no cluster: builds, says import needs `make cluster`, succeeds.
    let no_cluster = work.path().join("no-cluster/containerd.sock");
    let built = build_images(&[], &no_cluster, &out_dir)?;
    ensure!(
        built.status.success(),
        "build-images.sh failed: {}",
        describe(&built)
    );
    let stderr = String::from_utf8_lossy(&built.stderr);
    ensure!(
        stderr.contains("not imported") && stderr.contains("make cluster"),
        "build-images.sh should say the images were not imported: {}",
        describe(&built)
    );

    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    for (name, stage) in [("runnel-broker", "broker"), ("runnel-operator", "operator")] {
        let target = dockerfile_target(&dockerfile, stage)?;
        ensure!(
            target.args.get("VERSION").map(String::as_str) == Some(VERSION),
            "the Dockerfile's {stage} target has ARG VERSION={:?}, the workspace is {VERSION}",
            target.args.get("VERSION")
        );
        let archive = out_dir.join(format!("{name}.tar"));
        let (bundle, process) = check_archive(&archive, name, &target, work.path())
            .with_context(|| format!("checking {}", archive.display()))?;

        // The entrypoint runs in the image's own root filesystem as its user: the loader and
        // the libraries it links are all in the image.
        let version = run(&mut chroot_command(&bundle, &process, &["--version"])?)?;
        let version = String::from_utf8_lossy(&version.stdout);
        ensure!(
            version.trim() == format!("{name} {VERSION}"),
            "{name} --version in its image printed {version:?}"
        );
        if name == "runnel-broker" {
            broker_serves_from_its_volume(&bundle, &process)?;
        }
    }

    // Imported as `make images` imports them into the local cluster.
    let containerd_dir = work.path().join("containerd");
    std::fs::create_dir_all(&containerd_dir)?;
    let (containerd, socket, ctr) = start_containerd(&containerd_dir)?;
    let imported = build_images(&["--import"], &socket, &out_dir)?;
    ensure!(
        imported.status.success(),
        "build-images.sh --import failed: {}",
        describe(&imported)
    );
    let listed = run(Command::new(&ctr)
        .arg("-a")
        .arg(&socket)
        .args(["-n", "k8s.io", "images", "check"]))?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in ["runnel-broker", "runnel-operator"] {
        let reference = format!("{REGISTRY}/{name}:{VERSION}");
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
            .with_context(|| format!("containerd does not list {reference}:\n{listed}"))?;
        ensure!(
            line.contains("complete") && line.trim_end().ends_with("true"),
            "{reference} is not complete and unpacked: {line}"
        );
    }
    let status = containerd.terminate(Duration::from_secs(15))?;
    ensure!(
        status.success() || status.code().is_none(),
        "containerd: {status}"
    );
    Ok(())
}

#[test]
fn an_import_without_the_cluster_fails_before_building() -> anyhow::Result<()> {
    require_root()?;
    let work = tempfile::tempdir()?;
    let out_dir = work.path().join("images");
    let socket = work.path().join("no-cluster/containerd.sock");
    let started = Instant::now();
    let out = build_images(&["--import"], &socket, &out_dir)?;
    ensure!(
        !out.status.success(),
        "--import without a cluster must fail: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("make cluster") && stderr.contains(&socket.display().to_string()),
        "the failure should name the socket and `make cluster`: {}",
        describe(&out)
    );
    ensure!(
        !out_dir.join("runnel-broker.tar").exists() && started.elapsed() < Duration::from_secs(30),
        "it should fail before building"
    );
    Ok(())
}

#[test]
fn the_dockerfile_parser_follows_stages_and_arguments() -> anyhow::Result<()> {
    let dockerfile = "ARG X=1\nFROM debian AS base\nUSER 1:1\nENV A=1 \\\n    B=\"two words\"\n\
                      # a comment\nFROM base AS app\nARG V=0.2.0\nLABEL v=\"${V}\"\n\
                      EXPOSE 1/tcp 2/tcp\nVOLUME /data\nENTRYPOINT [\"/app\"]\n";
    let target = dockerfile_target(dockerfile, "app")?;
    ensure!(target.user.as_deref() == Some("1:1"), "{target:?}");
    ensure!(
        target.env.get("B").map(String::as_str) == Some("two words"),
        "{target:?}"
    );
    ensure!(target.env.len() == 2, "{target:?}");
    ensure!(
        target.labels.get("v").map(String::as_str) == Some("0.2.0"),
        "{target:?}"
    );
    ensure!(
        target.exposed.len() == 2 && target.volumes.contains("/data"),
        "{target:?}"
    );
    ensure!(target.entrypoint == ["/app"], "{target:?}");
    ensure!(dockerfile_target(dockerfile, "missing").is_err());
    Ok(())
}
