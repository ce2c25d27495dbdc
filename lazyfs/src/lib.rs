//! runnel-lazyfs: a test-only FUSE filesystem that can simulate a power cut.
//!
//! `runnel-lazyfs --backing DIR MOUNTPOINT` mounts a passthrough of `DIR` at `MOUNTPOINT` that
//! models the page cache of a machine that can lose power. Every change made through the mount
//! is visible at once, as on a real machine, but only what was made durable survives a *cut*.
//! After a cut the filesystem answers every operation with EIO until it is unmounted; `DIR`
//! then holds exactly the durable state, and a fresh mount over it is the machine powered on
//! again. Runnel's tests use it to check that what a broker acknowledged survives a crash.
//!
//! # What is durable
//!
//! - What `DIR` held at mount, as it was.
//! - `fsync(2)` or `fdatasync(2)` of a file makes its current data and size durable (the
//!   inode's content, not its name).
//! - `fsync(2)` of a directory makes its current entries durable (names to inodes). A file
//!   created and synced in a directory never synced has no name after a cut; a file unlinked
//!   without a directory fsync comes back with its durable content; a rename is durable once
//!   the directory is synced (both directories when it crosses them). A directory created and
//!   named durably but never synced itself comes back empty.
//! - A write to a file opened with `O_SYNC` or `O_DSYNC` is durable once it returns (the
//!   kernel sends no fsync for it; the filesystem sees the open flags).
//!
//! Nothing else makes anything durable. In particular `sync(2)`, `syncfs(2)`,
//! `sync_file_range(2)` and the `RWF_SYNC`/`RWF_DSYNC` flags of `pwritev2(2)` never reach a
//! FUSE daemon, `close(2)` makes nothing durable, and a `kill -9` of the writer loses nothing
//! that the cut would keep: what a process wrote is in the filesystem as soon as `write(2)`
//! returns (the kernel's writeback cache is never enabled, and files are opened in direct I/O
//! mode, so no page of the kernel holds data the daemon lacks).
//!
//! # What a cut does
//!
//! Under the filesystem's lock, so that no operation interleaves: from the root down, the
//! durable entries of each directory are what remains. Each remaining file is rolled back to
//! its content as of its last fsync, everything else in `DIR` is deleted, and the power stays
//! off. A cut comes from SIGUSR1 (asynchronous) or from the control socket (`--control PATH`,
//! see [`control`]), which answers once the cut has taken effect.
//!
//! # How it is kept
//!
//! `DIR` is the live state and every operation passes through to it; the durable state is
//! kept as an undo log (see [`undo`]): per file, its size at the last fsync and the pre-image
//! of each byte changed since (inside that size), read from the backing file the first time the
//! byte is overwritten, truncated away or punched. An fsync only drops that log, so it costs
//! nothing however large the file is, and a file that only grows needs no pre-image at all.
//! The pre-images live in the daemon's memory: their size is bounded by what is overwritten
//! between two fsyncs of a file that was durable before. Per directory, the entries as of its
//! last fsync are kept (see [`namespace`]); an unlinked or replaced node that a durable entry
//! still names is moved into a hidden side directory, `DIR/.runnel-lazyfs`, until no durable
//! entry names it. The mount does not show that directory; it is made when first needed, and
//! removed at mount (a name the backing directory must not otherwise use), at a clean unmount
//! and by a cut.
//!
//! # What it does not model
//!
//! - Torn writes: a `write(2)` is applied whole or, if not synced, lost whole.
//! - Reordering and partial persistence: un-synced changes to a file are lost together, back
//!   to its last fsync; the model never keeps some un-synced writes of a file and loses others,
//!   nor does it lose writes that a real disk might keep (after a cut, un-synced data is
//!   always gone). A real machine may keep any subset; this one keeps the least.
//! - Metadata: mode, owner and times are not rolled back (except that directories are
//!   recreated with their mode and owner), and extended attributes are not supported.
//! - Hard links (`link(2)` fails with EPERM; files with several names in `DIR` at mount are
//!   treated as unrelated files), fifos, sockets and devices created through the mount
//!   (`mknod(2)` fails with EPERM), `RENAME_EXCHANGE`, and `fallocate(2)` modes that shift
//!   data (`FALLOC_FL_COLLAPSE_RANGE`, `FALLOC_FL_INSERT_RANGE`: EOPNOTSUPP).
//! - A directory renamed across directories with only one of them synced survives under the
//!   first of its names found from the root; a file in that situation survives under both (as
//!   two hard links).
//! - Pages of a shared `mmap(2)` that the kernel has not yet written back; they are written
//!   back through the filesystem like any write, and are durable only after an fsync.
//! - `flock(2)` and POSIX locks are handled by the kernel on the mount alone (the filesystem
//!   does not implement them), which is enough for one process that locks its own files.

pub mod control;
pub mod error;
pub mod fs;
pub mod machine;
pub mod namespace;
mod state;
pub mod undo;

pub use error::Error;
pub use fs::{LazyFs, PowerSwitch};
pub use state::SIDE_DIR;
