//! `runnel-lazyfs`: mounts the power-cut filesystem (see the library's documentation).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use runnel_lazyfs::{control, Error, LazyFs};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// A passthrough FUSE filesystem over a backing directory that keeps only what was fsynced
/// when the power is cut (SIGUSR1 or `cut` on the control socket). SIGTERM unmounts.
#[derive(Debug, Parser)]
#[command(name = "runnel-lazyfs", version)]
struct Args {
    /// The directory that holds the files; what it holds at mount is durable.
    #[arg(long)]
    backing: PathBuf,
    /// A Unix socket for the control protocol (`cut`, `status`), created once the mount is
    /// ready.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Let users other than the daemon's own use the mount.
    #[arg(long)]
    allow_other: bool,
    /// Unmount and exit when the process that started this one dies (its thread, strictly:
    /// see PR_SET_PDEATHSIG in prctl(2)), so that a test killed outright leaves no mount.
    #[arg(long)]
    exit_with_parent: bool,
    /// Where to mount.
    mountpoint: PathBuf,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    // One thread takes the signals with sigwait; that works only if every thread blocks them,
    // so they are blocked before any thread starts.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1]);
    signals.thread_block().context("blocking signals")?;
    if args.exit_with_parent {
        // SIGTERM is taken like any other: the mount goes away cleanly.
        let parent = nix::unistd::getppid();
        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).context("asking for the parent's death")?;
        if nix::unistd::getppid() != parent {
            anyhow::bail!("the parent process is already gone");
        }
    }
    // Modes asked for through the mount are applied as given (the kernel already applied the
    // caller's umask).
    umask(Mode::empty());

    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point `{}`", args.mountpoint.display()))?;
    let fs = LazyFs::new(&args.backing)?;
    let backing = fs.backing();
    if backing.starts_with(&mountpoint) || mountpoint.starts_with(&backing) {
        return Err(Error::Overlap {
            backing,
            mountpoint,
        }
        .into());
    }
    let switch = fs.power_switch();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("runnel-lazyfs".into()),
        MountOption::Subtype("runnel-lazyfs".into()),
    ];
    config.n_threads = Some(args.threads.max(1));
    if args.allow_other {
        config.acl = SessionACL::All;
    }
    let mut session = Session::new(fs, &mountpoint, &config)
        .with_context(|| format!("mounting at `{}`", mountpoint.display()))?;
    let unmounter = session.unmount_callable();
    info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "mounted");

    // A forced unmount ends the session before the signal thread has detached the mount:
    // the process must not exit until it has, or the dead mount stays behind.
    let unmounting = Arc::new(AtomicBool::new(false));
    let (detached, wait_detached) = std::sync::mpsc::channel::<()>();
    {
        let switch = switch.clone();
        let mountpoint = mountpoint.clone();
        let unmounting = unmounting.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                take_signals(&signals, &switch, unmounter, &mountpoint, &unmounting);
                let _ = detached.send(());
            })
            .context("starting the signal thread")?;
    }
    if let Some(path) = &args.control {
        let listener = control::bind(path)?;
        let path = path.clone();
        thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                if let Err(error) = control::serve(&listener, &switch) {
                    error!(path = %path.display(), %error, "the control socket failed");
                }
            })
            .context("starting the control thread")?;
    }

    let served = session.run();
    if unmounting.load(Ordering::SeqCst) {
        let _ = wait_detached.recv_timeout(Duration::from_secs(10));
    }
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    served.context("serving the mount")?;
    info!("unmounted");
    Ok(())
}

fn take_signals(
    signals: &SigSet,
    switch: &runnel_lazyfs::PowerSwitch,
    mut unmounter: SessionUnmounter,
    mountpoint: &Path,
    unmounting: &AtomicBool,
) {
    loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => match switch.cut() {
                Ok(()) => info!("power cut by SIGUSR1"),
                Err(error) => error!(%error, "power cut by SIGUSR1 failed"),
            },
            Ok(signal) => {
                info!(%signal, "unmounting");
                unmounting.store(true, Ordering::SeqCst);
                unmount(&mut unmounter, mountpoint);
                return;
            }
            Err(error) => {
                error!(%error, "waiting for signals failed; unmounting");
                unmounting.store(true, Ordering::SeqCst);
                unmount(&mut unmounter, mountpoint);
                return;
            }
        }
    }
}

/// Unmounts, even while files on the mount are still open: then the connection is aborted
/// (for FUSE, `MNT_FORCE` does that) and the mount detached, so that the session ends now.
fn unmount(unmounter: &mut SessionUnmounter, mountpoint: &Path) {
    if let Err(error) = unmounter.unmount() {
        warn!(%error, "unmount failed; aborting the connection and detaching");
        if let Err(error) = umount2(mountpoint, MntFlags::MNT_FORCE) {
            warn!(%error, "forced unmount failed");
        }
        if let Err(error) = umount2(mountpoint, MntFlags::MNT_DETACH) {
            warn!(%error, "detaching the mount failed");
        }
    }
}
