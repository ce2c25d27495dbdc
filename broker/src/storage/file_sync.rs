//! Making the files of an embedded database durable with `fsync`, file by file.
//!
//! sled 0.34 never calls `fsync`: its flush writes its log with `pwrite` and calls
//! `sync_file_range`, which neither flushes the drive's cache nor the file's size, and values too
//! large for a segment go to files under `blobs/` that it never syncs at all, nor the directory
//! that names them. A flush that leaves durability to sled therefore loses acknowledged records
//! on a power cut. `syncfs(2)` of the filesystem would cover them, but it is a call some
//! filesystems never see (FUSE, network filesystems) and it flushes everything else on a shared
//! disk. So every flush syncs exactly the files the database wrote since the last one: the log
//! file, each file created or rewritten since (learned from inotify, not by listing directories
//! that hold thousands of blob files), and the directories whose entries changed.

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A directory whose new and rewritten files are synced on each [`FileSync::sync`].
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    dir: File,
    watch: i32,
}

/// Syncs a data directory's files as they change.
#[derive(Debug)]
pub(crate) struct FileSync {
    inotify: OwnedFd,
    /// The data directory and its `blobs/` subdirectory.
    dirs: Vec<Watched>,
    /// The file that is always synced: the database's log.
    log: File,
}

/// What a watch reports: a file written and closed, or moved in.
fn watch_flags() -> WatchFlags {
    WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::CREATE
}

impl FileSync {
    /// Watches `dir` and each of `subdirs` (created when missing), syncs every file and
    /// directory in them once, and from then on syncs `log` and whatever changes.
    pub(crate) fn start(dir: &Path, subdirs: &[&str], log: File) -> std::io::Result<Self> {
        let inotify = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut dirs = Vec::new();
        for path in std::iter::once(dir.to_path_buf()).chain(subdirs.iter().map(|s| dir.join(s))) {
            std::fs::create_dir_all(&path)?;
            let watch =
                inotify::add_watch(&inotify, &path, watch_flags()).map_err(std::io::Error::from)?;
            dirs.push(Watched {
                dir: File::open(&path)?,
                path,
                watch,
            });
        }
        let sync = Self { inotify, dirs, log };
        // Whatever was written before the watches existed (a previous run, the database's own
        // start) is made durable once, as a whole, and so is the data directory's own name,
        // which its parent holds (the broker may have just created it).
        sync.drain_events()?;
        sync.sync_everything()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(sync)
    }

    /// Makes durable every file written since the last call, the log file, and the directories
    /// naming new files. The caller serialises calls, after the database's own flush.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let changed = self.drain_events()?;
        let Some(changed) = changed else {
            // The kernel dropped events: sync everything instead.
            return self.sync_everything();
        };
        let paths: Vec<PathBuf> = changed
            .iter()
            .enumerate()
            .flat_map(|(i, names)| names.iter().map(move |name| self.dirs[i].path.join(name)))
            .collect();
        sync_files(&paths)?;
        self.log.sync_data()?;
        for (i, names) in changed.iter().enumerate() {
            if !names.is_empty() {
                self.dirs[i].dir.sync_all()?;
            }
        }
        Ok(())
    }

    /// The names written or moved in per watched directory since the last call; `None` when
    /// the kernel's queue overflowed and names were lost.
    fn drain_events(&self) -> std::io::Result<Option<Vec<Vec<String>>>> {
        let mut changed: Vec<Vec<String>> = vec![Vec::new(); self.dirs.len()];
        let mut buf = [MaybeUninit::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        let mut overflowed = false;
        loop {
            let event = match reader.next() {
                Ok(e) => e,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => return Err(e.into()),
            };
            if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                overflowed = true;
                continue;
            }
            if event.events().contains(ReadFlags::ISDIR) {
                continue;
            }
            let Some(i) = self.dirs.iter().position(|d| d.watch == event.wd()) else {
                continue;
            };
            if let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) {
                if !changed[i].iter().any(|n| n == name) {
                    changed[i].push(name.to_string());
                }
            }
        }
        Ok((!overflowed).then_some(changed))
    }

    /// Syncs every file in the watched directories, then the directories.
    fn sync_everything(&self) -> std::io::Result<()> {
        let mut files = Vec::new();
        for d in &self.dirs {
            for entry in std::fs::read_dir(&d.path)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    files.push(entry.path());
                }
            }
        }
        sync_files(&files)?;
        self.log.sync_data()?;
        for d in &self.dirs {
            d.dir.sync_all()?;
        }
        Ok(())
    }
}

/// At most this many files are synced at once.
const SYNC_THREADS: usize = 8;

/// Syncs the files' data, several at once: each `fdatasync` waits for its file's writes and a
/// flush of the drive's cache (about half a millisecond each on a virtual disk), and the drive
/// takes them together, so a group commit costs about one of them, not one per file.
fn sync_files(paths: &[PathBuf]) -> std::io::Result<()> {
    match paths {
        [] => Ok(()),
        [one] => sync_file(one),
        _ => {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let threads = paths.len().min(SYNC_THREADS);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(path) = paths.get(i) else {
                                return Ok(());
                            };
                            sync_file(path)?;
                        })
                    })
                    .collect();
                workers.into_iter().try_for_each(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("a file sync panicked")))
                })
            })
        }
    }
}

/// Syncs one file's data; a file deleted meanwhile needs nothing.
fn sync_file(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_written_since_the_last_sync_are_reported_once() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("db"), b"log").expect("log");
        let log = File::open(dir.path().join("db")).expect("open");
        let sync = FileSync::start(dir.path(), &["blobs"], log).expect("start");
        let mut f = File::create(dir.path().join("blobs/7")).expect("blob");
        f.write_all(b"blob").expect("write");
        drop(f);
        std::fs::write(dir.path().join("snap.1"), b"s").expect("snap");
        let changed = sync.drain_events().expect("events").expect("no overflow");
        assert_eq!(
            changed,
            vec![vec!["snap.1".to_string()], vec!["7".to_string()]]
        );
        assert_eq!(
            sync.drain_events().expect("events").expect("no overflow"),
            vec![Vec::<String>::new(), Vec::new()]
        );
        // A file deleted before the sync is skipped.
        std::fs::write(dir.path().join("blobs/8"), b"b").expect("blob");
        std::fs::remove_file(dir.path().join("blobs/8")).expect("rm");
        sync.sync().expect("sync");
    }

    #[test]
    fn many_files_are_synced_together_and_a_failure_is_reported() {
        let dir = tempfile::tempdir().expect("dir");
        let paths: Vec<PathBuf> = (0..40)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, vec![i as u8; 4096]).expect("write");
                p
            })
            .collect();
        sync_files(&paths).expect("sync");
        // Deleted meanwhile: nothing to sync.
        std::fs::remove_file(&paths[3]).expect("rm");
        sync_files(&paths).expect("sync without the deleted one");
        // A path that cannot be opened for another reason fails the whole sync.
        let mut bad = paths.clone();
        bad.insert(17, dir.path().join("f5/not-a-dir"));
        assert!(sync_files(&bad).is_err());
    }
}
