//! A sled database on runnel-lazyfs: what it needs of the filesystem works, and what survives a
//! power cut is what was fsynced (run as root).
//!
//! The database is written by a process of its own, killed with SIGKILL after the cut as a
//! crashed broker would be: each test runs its own binary again as that writer, told so by
//! [`WRITER_DB`] in its environment.

mod common;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::{fsync_dir, pattern, KillOnDrop};

/// Enough 64 KiB values that sled writes blob files as well as its log.
const KEYS: u64 = 2000;
const VALUE_LEN: usize = 64 << 10;

/// In the writer's environment: the database to fill.
const WRITER_DB: &str = "RUNNEL_LAZYFS_TEST_SLED_DB";
/// In the writer's environment: `files` to fsync every file and directory, `dirs` to fsync
/// only the directories.
const WRITER_SYNC: &str = "RUNNEL_LAZYFS_TEST_SLED_SYNC";
/// What the writer prints once the database is filled and synced (at the end of the line that
/// libtest starts with the test's name).
const READY: &str = "sled writer: ready";

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// The writer's part, when this process is one: fills the database, syncs as told, says so,
/// and waits to be killed. `None` in the test itself.
fn writer() -> Option<Result<()>> {
    let path = std::env::var_os(WRITER_DB)?;
    let sync = std::env::var_os(WRITER_SYNC).unwrap_or_default();
    Some(fill_and_wait(Path::new(&path), &sync))
}

fn fill_and_wait(path: &Path, sync: &OsString) -> Result<()> {
    let db = sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        .open()
        .context("opening sled on the mount")?;
    for i in 0..KEYS {
        db.insert(key(i), pattern(i, VALUE_LEN))?;
    }
    // sled's flush ends with sync_file_range(2), which makes nothing durable here.
    db.flush()?;
    let blobs = fs::read_dir(path.join("blobs"))
        .context("sled wrote no blobs directory")?
        .count();
    ensure!(blobs > 0, "sled wrote no blob files");
    let mount = path.parent().context("the database has no parent")?;
    if sync == "files" {
        fsync_tree(path)?;
        fsync_dir(mount)?;
    } else {
        fsync_dirs(mount)?;
    }
    println!("{READY}");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Starts this test's binary again as the writer of the database at `db`, and waits until it
/// is ready.
fn spawn_writer(test: &str, db: &Path, sync: &str) -> Result<KillOnDrop> {
    let mut writer = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(WRITER_DB, db)
            .env(WRITER_SYNC, sync)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the sled writer")?,
    );
    let stdout = writer.0.stdout.take().context("the writer's stdout")?;
    let mut output = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.ends_with(READY) {
            return Ok(writer);
        }
        output.push(line);
    }
    bail!(
        "the sled writer stopped before it was ready:\n{}",
        output.join("\n")
    )
}

/// fsync of every file and directory under `path`, and of `path` itself.
fn fsync_tree(path: &Path) -> Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_tree(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    fsync_dir(path)
}

/// fsync of every directory under `path` (so that every name is durable), but of no file.
fn fsync_dirs(path: &Path) -> Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_dirs(&entry.path())?;
        }
    }
    fsync_dir(path)
}

#[test]
fn a_sled_database_fsynced_file_by_file_survives_a_cut() -> Result<()> {
    if let Some(result) = writer() {
        return result;
    }
    let mut machine = common::machine()?;
    machine.power_on()?;
    let path = machine.mnt().join("db");
    let mut writer = spawn_writer(
        "a_sled_database_fsynced_file_by_file_survives_a_cut",
        &path,
        "files",
    )?;
    machine.cut()?;
    writer.kill()?;
    machine.stop()?;

    machine.power_on()?;
    let db = sled::open(&path).context("reopening sled after the cut")?;
    ensure!(db.len() as u64 == KEYS, "{} keys of {KEYS}", db.len());
    for i in 0..KEYS {
        let value = db
            .get(key(i))?
            .with_context(|| format!("key {i} is lost"))?;
        ensure!(value == pattern(i, VALUE_LEN), "key {i} has another value");
    }
    drop(db);
    machine.stop()
}

#[test]
fn a_sled_flush_alone_does_not_survive_a_cut() -> Result<()> {
    if let Some(result) = writer() {
        return result;
    }
    let mut machine = common::machine()?;
    machine.power_on()?;
    let path = machine.mnt().join("db");
    // Every name is made durable, no file content is.
    let mut writer = spawn_writer("a_sled_flush_alone_does_not_survive_a_cut", &path, "dirs")?;
    machine.cut()?;
    writer.kill()?;
    machine.stop()?;

    machine.power_on()?;
    let kept = match sled::open(&path) {
        Ok(db) => db.len() as u64,
        // A database that cannot even be opened kept nothing either.
        Err(_) => 0,
    };
    ensure!(kept < KEYS, "all {KEYS} keys survived without an fsync");
    machine.stop()
}
