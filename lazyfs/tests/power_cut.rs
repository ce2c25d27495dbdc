//! What survives a power cut of runnel-lazyfs, through the real mount (run as root).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{fsync_dir, is_mounted, os_error, pattern, wait_for, write_synced, KillOnDrop};
use nix::libc::{EIO, O_DSYNC};
use nix::sys::signal::{kill, Signal};

#[test]
fn a_file_whose_name_was_never_synced_is_gone() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    fs::write(mnt.join("unsynced"), b"never synced")?;
    // fsync makes the content durable, not the name.
    write_synced(
        &mnt.join("content-synced"),
        b"synced, in a directory never synced",
    )?;
    fs::create_dir(mnt.join("dir"))?;
    // Visible at once, as on a real machine.
    ensure!(fs::read(mnt.join("unsynced"))? == b"never synced");

    machine.crash_and_reboot()?;
    for name in ["unsynced", "content-synced", "dir"] {
        ensure!(!mnt.join(name).exists(), "{name} survived the cut");
    }
    ensure!(fs::read_dir(&mnt)?.count() == 0, "the mount is not empty");
    ensure!(
        fs::read_dir(machine.backing())?.count() == 0,
        "the backing directory is not empty"
    );
    machine.stop()
}

#[test]
fn a_synced_file_in_a_synced_directory_keeps_exactly_its_content() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    let content = pattern(1, 3 << 20);
    fs::create_dir(mnt.join("dir"))?;
    fsync_dir(&mnt)?;
    write_synced(&mnt.join("dir/synced"), &content)?;
    // Named durably, but its content never synced: it comes back empty.
    fs::write(mnt.join("dir/named-only"), b"not synced")?;
    fsync_dir(&mnt.join("dir"))?;
    // Written after the last fsync of the file: lost.
    OpenOptions::new()
        .append(true)
        .open(mnt.join("dir/synced"))?
        .write_all(b"appended later")?;

    machine.crash_and_reboot()?;
    ensure!(fs::read(mnt.join("dir/synced"))? == content);
    ensure!(fs::read(mnt.join("dir/named-only"))?.is_empty());
    let mut names: Vec<_> = fs::read_dir(mnt.join("dir"))?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    ensure!(names == ["named-only", "synced"], "{names:?}");

    // And what is durable after a power on stays so across the next cut.
    machine.crash_and_reboot()?;
    ensure!(fs::read(mnt.join("dir/synced"))? == content);
    machine.stop()
}

#[test]
fn a_write_to_a_file_opened_with_o_dsync_is_durable_when_it_returns() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(O_DSYNC)
        .open(mnt.join("dsync"))?;
    fsync_dir(&mnt)?;
    file.write_all(b"durable on return")?;
    machine.cut()?;
    drop(file);
    machine.stop()?;
    machine.power_on()?;
    ensure!(fs::read(mnt.join("dsync"))? == b"durable on return");
    machine.stop()
}

#[test]
fn an_overwrite_or_truncate_without_fsync_is_rolled_back() -> Result<()> {
    let mut machine = common::machine()?;
    let backing = machine.backing();
    let original = pattern(2, 1 << 20);
    // What the backing directory holds at mount is durable.
    fs::write(backing.join("overwritten"), &original)?;
    fs::write(backing.join("truncated"), &original)?;
    fs::write(backing.join("synced-twice"), &original)?;
    machine.power_on()?;
    let mnt = machine.mnt();

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("overwritten"))?;
    let patch = pattern(3, 200_000);
    file.write_all_at(&patch, 100_000)?;
    file.write_all_at(&patch, (1 << 20) - 1000)?;
    let mut live = original.clone();
    live[100_000..300_000].copy_from_slice(&patch);
    live.truncate((1 << 20) - 1000);
    live.extend_from_slice(&patch);
    ensure!(
        fs::read(mnt.join("overwritten"))? == live,
        "the overwrite is not visible"
    );

    let truncated = OpenOptions::new().write(true).open(mnt.join("truncated"))?;
    truncated.set_len(10)?;
    truncated.write_all_at(b"regrown", 500_000)?;

    let twice = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("synced-twice"))?;
    twice.write_all_at(b"first", 0)?;
    twice.sync_data()?;
    twice.write_all_at(b"second", 0)?;
    twice.set_len(100)?;
    let mut first = original.clone();
    first[..5].copy_from_slice(b"first");

    machine.cut()?;
    drop((file, truncated, twice));
    machine.stop()?;
    machine.power_on()?;
    ensure!(fs::read(mnt.join("overwritten"))? == original);
    ensure!(fs::read(mnt.join("truncated"))? == original);
    ensure!(fs::read(mnt.join("synced-twice"))? == first);
    machine.stop()
}

#[test]
fn an_unlink_or_rename_is_undone_unless_its_directory_is_synced() -> Result<()> {
    let mut machine = common::machine()?;
    let backing = machine.backing();
    for name in [
        "unlinked",
        "unlinked-synced",
        "renamed",
        "replaced",
        "replacing",
    ] {
        fs::write(backing.join(name), name)?;
    }
    fs::create_dir(backing.join("from"))?;
    fs::create_dir(backing.join("to"))?;
    fs::write(backing.join("from/moved"), "moved")?;
    fs::write(backing.join("from/moved-half"), "moved-half")?;
    fs::create_dir(backing.join("removed-dir"))?;
    fs::write(backing.join("removed-dir/inside"), "inside")?;
    machine.power_on()?;
    let mnt = machine.mnt();

    fs::remove_file(mnt.join("unlinked"))?;
    fs::rename(mnt.join("renamed"), mnt.join("renamed-new"))?;
    fs::rename(mnt.join("replacing"), mnt.join("replaced"))?;
    fs::remove_file(mnt.join("removed-dir/inside"))?;
    fs::remove_dir(mnt.join("removed-dir"))?;
    ensure!(!mnt.join("unlinked").exists() && !mnt.join("removed-dir").exists());
    // A cross-directory rename with both directories synced is durable.
    fs::rename(mnt.join("from/moved"), mnt.join("to/moved"))?;
    fsync_dir(&mnt.join("from"))?;
    fsync_dir(&mnt.join("to"))?;
    // One with only the target synced leaves the file under both names.
    fs::rename(mnt.join("from/moved-half"), mnt.join("to/moved-half"))?;
    fsync_dir(&mnt.join("to"))?;
    machine.crash_and_reboot()?;

    ensure!(fs::read_to_string(mnt.join("unlinked"))? == "unlinked");
    ensure!(fs::read_to_string(mnt.join("renamed"))? == "renamed");
    ensure!(!mnt.join("renamed-new").exists());
    ensure!(fs::read_to_string(mnt.join("replaced"))? == "replaced");
    ensure!(fs::read_to_string(mnt.join("replacing"))? == "replacing");
    ensure!(fs::read_to_string(mnt.join("removed-dir/inside"))? == "inside");
    ensure!(fs::read_to_string(mnt.join("to/moved"))? == "moved");
    ensure!(!mnt.join("from/moved").exists());
    ensure!(fs::read_to_string(mnt.join("from/moved-half"))? == "moved-half");
    ensure!(fs::read_to_string(mnt.join("to/moved-half"))? == "moved-half");

    // Now with the directory fsyncs: the changes are durable.
    fs::remove_file(mnt.join("unlinked"))?;
    fs::remove_file(mnt.join("unlinked-synced"))?;
    fs::rename(mnt.join("renamed"), mnt.join("renamed-new"))?;
    fs::rename(mnt.join("replacing"), mnt.join("replaced"))?;
    fs::remove_file(mnt.join("removed-dir/inside"))?;
    fs::remove_dir(mnt.join("removed-dir"))?;
    fs::remove_file(mnt.join("from/moved-half"))?;
    fsync_dir(&mnt)?;
    fsync_dir(&mnt.join("from"))?;
    // Unlinked after the last fsync of its directory: back after the cut.
    fs::remove_file(mnt.join("to/moved"))?;
    machine.crash_and_reboot()?;

    for gone in [
        "unlinked",
        "unlinked-synced",
        "renamed",
        "replacing",
        "removed-dir",
        "from/moved",
        "from/moved-half",
    ] {
        ensure!(!mnt.join(gone).exists(), "{gone} came back");
    }
    ensure!(fs::read_to_string(mnt.join("renamed-new"))? == "renamed");
    ensure!(fs::read_to_string(mnt.join("replaced"))? == "replacing");
    ensure!(fs::read_to_string(mnt.join("to/moved"))? == "moved");
    ensure!(fs::read_to_string(mnt.join("to/moved-half"))? == "moved-half");
    ensure!(
        !machine.backing().join(runnel_lazyfs::SIDE_DIR).exists(),
        "the side directory is left in the backing directory"
    );
    machine.stop()
}

#[test]
fn syncfs_and_close_make_nothing_durable_but_fsync_does() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    // A writer of its own, killed with SIGKILL after the cut, as a crashed broker would be.
    // `sync -f` is syncfs(2); `sync FILE` and `sync DIR` are fsync(2).
    let mut writer = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg(
                "set -e; echo one > a; sync -f a; echo two > b; sync b .; echo three > c; \
                 sync -f .; echo ready; exec sleep 600",
            )
            .current_dir(&mnt)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the writer")?,
    );
    let mut line = String::new();
    BufReader::new(writer.0.stdout.take().context("writer stdout")?).read_line(&mut line)?;
    ensure!(line == "ready\n", "the writer failed: {line:?}");
    ensure!(fs::read_to_string(mnt.join("c"))? == "three\n");

    machine.cut()?;
    writer.kill()?;
    machine.stop()?;
    machine.power_on()?;
    // a's name is durable (the directory was synced after it), its content never was.
    ensure!(fs::read(mnt.join("a"))?.is_empty());
    ensure!(fs::read_to_string(mnt.join("b"))? == "two\n");
    ensure!(!mnt.join("c").exists());
    machine.stop()
}

#[test]
fn after_a_cut_every_operation_fails_with_eio_and_sigterm_unmounts() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    write_synced(&mnt.join("file"), b"durable")?;
    fsync_dir(&mnt)?;
    let mut held = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("file"))?;
    let dir = File::open(&mnt)?;
    ensure!(machine.request("status")? == "on");

    machine.cut()?;
    ensure!(machine.request("status")? == "off");
    // Cutting again changes nothing.
    machine.cut()?;
    ensure!(os_error(held.write(b"x"))? == EIO, "write");
    ensure!(os_error(held.read(&mut [0; 4]))? == EIO, "read");
    ensure!(os_error(held.sync_all())? == EIO, "fsync");
    ensure!(os_error(held.set_len(0))? == EIO, "ftruncate");
    ensure!(os_error(held.metadata())? == EIO, "fstat");
    ensure!(os_error(dir.sync_all())? == EIO, "fsync of the directory");
    ensure!(os_error(File::open(mnt.join("file")))? == EIO, "open");
    ensure!(os_error(fs::metadata(mnt.join("file")))? == EIO, "stat");
    ensure!(os_error(File::create(mnt.join("new")))? == EIO, "create");
    ensure!(
        os_error(fs::create_dir(mnt.join("new-dir")))? == EIO,
        "mkdir"
    );
    ensure!(
        os_error(fs::remove_file(mnt.join("file")))? == EIO,
        "unlink"
    );
    ensure!(
        os_error(fs::rename(mnt.join("file"), mnt.join("moved")))? == EIO,
        "rename"
    );
    ensure!(os_error(fs::read_dir(&mnt))? == EIO, "opendir");
    ensure!(os_error(fs::metadata(&mnt))? == EIO, "stat of the root");
    drop((held, dir));

    // The backing directory holds the durable state as soon as the cut answered.
    ensure!(fs::read(machine.backing().join("file"))? == b"durable");
    machine.stop()?;
    ensure!(!is_mounted(&mnt)?);
    Ok(())
}

#[test]
fn sigusr1_cuts_the_power() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    fs::write(mnt.join("unsynced"), b"lost")?;
    kill(machine.pid()?, Signal::SIGUSR1)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while machine.request("status")? != "off" {
        ensure!(Instant::now() < deadline, "SIGUSR1 did not cut the power");
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(os_error(fs::metadata(mnt.join("unsynced")))? == EIO);
    ensure!(!machine.backing().join("unsynced").exists());
    machine.stop()
}

#[test]
fn sigterm_unmounts_while_files_are_open() -> Result<()> {
    let mut machine = common::machine()?;
    machine.power_on()?;
    let mnt = machine.mnt();
    let held = File::create(mnt.join("held"))?;
    let cwd_holder = Command::new("sleep")
        .arg("600")
        .current_dir(&mnt)
        .spawn()
        .context("starting a process inside the mount")?;
    let mut cwd_holder = KillOnDrop(cwd_holder);
    machine.stop()?;
    ensure!(!is_mounted(&mnt)?);
    // The mount is gone; the files left open there are dead.
    ensure!(held.metadata().is_err());
    cwd_holder.0.kill()?;
    ensure!(wait_for(&mut cwd_holder.0, Duration::from_secs(10))?.is_some());
    // The file was never synced, but a clean stop is no power cut: the live state stays.
    machine.power_on()?;
    ensure!(mnt.join("held").exists());
    machine.stop()
}
