//! The filesystem's state: the backing directory (the live content), the namespace and undo
//! logs (the durable content), the open handles, and the power cut that turns the backing
//! directory into the durable content.
//!
//! Every operation is a method returning `io::Result`, so that the FUSE layer only locks,
//! calls and replies. Operations change the backing directory first and the model after, so a
//! failed backing call leaves the model as it was.

mod cut;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};
use nix::libc;
use tracing::{info, warn};

use crate::error::Error;
use crate::namespace::{Discarded, Ino, Kind, Location, Namespace, ROOT};

/// The directory inside the backing directory that holds what the mount no longer shows but a
/// power cut brings back (unlinked files still named by a durable entry). The mount hides it;
/// it is made when first needed and removed at mount, at unmount and by a power cut.
pub const SIDE_DIR: &str = ".runnel-lazyfs";

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// An open file: the backing file, opened for reading and writing whatever the caller asked
/// (so that pre-images can always be read), at explicit offsets.
#[derive(Debug)]
struct OpenFile {
    ino: Ino,
    file: File,
    /// Opened with `O_SYNC` or `O_DSYNC`: every write is durable once it returns.
    sync_writes: bool,
}

/// One row of a directory listing.
#[derive(Debug, Clone)]
pub(crate) struct DirRow {
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    pub(crate) name: OsString,
}

/// The whole state, behind the filesystem's one lock.
#[derive(Debug)]
pub(crate) struct State {
    backing: PathBuf,
    side: PathBuf,
    ns: Namespace,
    files: HashMap<u64, OpenFile>,
    /// Directory listings, taken at opendir so that readdir offsets stay stable.
    dirs: HashMap<u64, (Ino, Vec<DirRow>)>,
    next_fh: u64,
    powered: bool,
    /// The side directory is made when a node is first kept, so that a backing directory in
    /// which nothing was kept holds nothing but its files.
    side_exists: bool,
}

impl State {
    /// Takes over `backing`: what it holds now is durable.
    pub(crate) fn new(backing: &Path) -> Result<Self, Error> {
        let backing = backing.canonicalize().map_err(|source| Error::Backing {
            path: backing.to_owned(),
            source,
        })?;
        let side = backing.join(SIDE_DIR);
        // A side directory left by a daemon that did not stop cleanly holds no name of the
        // backing directory, so it is not part of what is durable now.
        if side.exists() {
            fs::remove_dir_all(&side).map_err(|source| Error::Backing {
                path: side.clone(),
                source,
            })?;
        }
        let mut state = Self {
            backing,
            side,
            ns: Namespace::new(),
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            powered: true,
            side_exists: false,
        };
        state.scan()?;
        info!(
            backing = %state.backing.display(),
            nodes = state.ns.len(),
            "took over the backing directory; its content is durable"
        );
        Ok(state)
    }

    /// The canonical backing directory.
    pub(crate) fn backing(&self) -> &Path {
        &self.backing
    }

    fn scan(&mut self) -> Result<(), Error> {
        let mut pending = vec![(ROOT, self.backing.clone())];
        while let Some((dir, path)) = pending.pop() {
            let entries = fs::read_dir(&path).map_err(|source| Error::Backing {
                path: path.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| Error::Backing {
                    path: path.clone(),
                    source,
                })?;
                let name = entry.file_name();
                if dir == ROOT && name == SIDE_DIR {
                    continue;
                }
                let child = entry.path();
                let meta = fs::symlink_metadata(&child).map_err(|source| Error::Backing {
                    path: child.clone(),
                    source,
                })?;
                let kind = kind_of(&meta);
                let Some(ino) = self.ns.add_existing(dir, &name, kind, meta.len()) else {
                    continue;
                };
                if kind == Kind::Directory {
                    pending.push((ino, child));
                }
            }
        }
        Ok(())
    }

    /// Whether the power is on.
    pub(crate) fn is_powered(&self) -> bool {
        self.powered
    }

    fn check(&self) -> io::Result<()> {
        if self.powered {
            Ok(())
        } else {
            Err(errno(libc::EIO))
        }
    }

    fn side_path(&self, ino: Ino) -> PathBuf {
        self.side.join(ino.to_string())
    }

    /// Where to keep `ino`, making the side directory if needed.
    fn keep_path(&mut self, ino: Ino) -> io::Result<PathBuf> {
        if !self.side_exists {
            match fs::create_dir(&self.side) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error),
            }
            self.side_exists = true;
        }
        Ok(self.side_path(ino))
    }

    /// The backing path of `ino`, wherever it is.
    fn path(&self, ino: Ino) -> io::Result<PathBuf> {
        match self.ns.location(ino) {
            Some(Location::Root) => Ok(self.backing.clone()),
            Some(Location::Named { .. }) => self
                .ns
                .live_path(ino)
                .map(|path| self.backing.join(path))
                .ok_or_else(|| errno(libc::ENOENT)),
            Some(Location::Side) => Ok(self.side_path(ino)),
            Some(Location::Gone) | None => Err(errno(libc::ENOENT)),
        }
    }

    /// The backing path that a new entry `name` of directory `parent` would have.
    fn new_entry_path(&self, parent: Ino, name: &OsStr) -> io::Result<PathBuf> {
        check_name(parent, name)?;
        if self.ns.kind(parent) != Some(Kind::Directory) {
            return Err(errno(libc::ENOTDIR));
        }
        match self.ns.location(parent) {
            Some(Location::Root | Location::Named { .. }) => Ok(self.path(parent)?.join(name)),
            // A removed directory takes no new entries.
            _ => Err(errno(libc::ENOENT)),
        }
    }

    fn entry_path(&self, parent: Ino, name: &OsStr) -> io::Result<(Ino, PathBuf)> {
        check_name(parent, name)?;
        let ino = self
            .ns
            .child(parent, name)
            .ok_or_else(|| errno(libc::ENOENT))?;
        Ok((ino, self.path(ino)?))
    }

    fn any_open_file(&self, ino: Ino) -> Option<&File> {
        self.files
            .values()
            .find(|open| open.ino == ino)
            .map(|open| &open.file)
    }

    fn metadata(&self, ino: Ino) -> io::Result<Metadata> {
        match self.ns.location(ino) {
            Some(Location::Gone) => self
                .any_open_file(ino)
                .ok_or_else(|| errno(libc::ENOENT))?
                .metadata(),
            _ => fs::symlink_metadata(self.path(ino)?),
        }
    }

    fn attr(&self, ino: Ino) -> io::Result<FileAttr> {
        Ok(attr(ino, &self.metadata(ino)?))
    }

    fn next_fh(&mut self) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        fh
    }

    fn discard(&self, discarded: Vec<Discarded>) {
        for Discarded { ino, kind } in discarded {
            let path = self.side_path(ino);
            let result = if kind == Kind::Directory {
                fs::remove_dir(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(error) = result {
                warn!(path = %path.display(), %error, "could not remove a side object no longer needed");
            }
        }
    }

    pub(crate) fn lookup(&mut self, parent: Ino, name: &OsStr) -> io::Result<FileAttr> {
        self.check()?;
        let (ino, path) = self.entry_path(parent, name)?;
        let attr = attr(ino, &fs::symlink_metadata(path)?);
        self.ns.looked_up(ino);
        Ok(attr)
    }

    pub(crate) fn forget(&mut self, ino: Ino, count: u64) {
        self.ns.forget(ino, count);
    }

    pub(crate) fn getattr(&self, ino: Ino, fh: Option<u64>) -> io::Result<FileAttr> {
        self.check()?;
        if let Some(open) = fh.and_then(|fh| self.files.get(&fh)) {
            return Ok(attr(ino, &open.file.metadata()?));
        }
        self.attr(ino)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setattr(
        &mut self,
        ino: Ino,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> io::Result<FileAttr> {
        self.check()?;
        if let Some(size) = size {
            self.truncate(ino, fh, size)?;
        }
        let handle = self.file_for(ino, fh);
        let path = match handle {
            Some(_) => None,
            None => Some(self.path(ino)?),
        };
        if let Some(mode) = mode {
            let permissions = fs::Permissions::from_mode(mode & 0o7777);
            match (handle, &path) {
                (Some(file), _) => file.set_permissions(permissions)?,
                (None, Some(path)) => fs::set_permissions(path, permissions)?,
                (None, None) => {}
            }
        }
        if uid.is_some() || gid.is_some() {
            match (handle, &path) {
                (Some(file), _) => std::os::unix::fs::fchown(file, uid, gid)?,
                (None, Some(path)) => std::os::unix::fs::lchown(path, uid, gid)?,
                (None, None) => {}
            }
        }
        if atime.is_some() || mtime.is_some() {
            let atime = timespec(atime);
            let mtime = timespec(mtime);
            match (handle, &path) {
                (Some(file), _) => nix::sys::stat::futimens(file, &atime, &mtime)?,
                (None, Some(path)) => nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    path.as_path(),
                    &atime,
                    &mtime,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )?,
                (None, None) => {}
            }
        }
        match handle {
            Some(file) => Ok(attr(ino, &file.metadata()?)),
            None => self.attr(ino),
        }
    }

    fn truncate(&mut self, ino: Ino, fh: Option<u64>, size: u64) -> io::Result<()> {
        match self.ns.kind(ino) {
            Some(Kind::File) => {}
            Some(Kind::Directory) => return Err(errno(libc::EISDIR)),
            Some(_) => return Err(errno(libc::EINVAL)),
            None => return Err(errno(libc::ENOENT)),
        }
        let file = match self.file_for(ino, fh) {
            Some(file) => file.try_clone()?,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(ino)?)?,
        };
        preserve(&mut self.ns, ino, &file, size..u64::MAX)?;
        file.set_len(size)
    }

    /// The open file to change `ino` through: handle `fh` if it is one of `ino`, else any
    /// handle of an unlinked `ino` (which has no path any more).
    fn file_for(&self, ino: Ino, fh: Option<u64>) -> Option<&File> {
        let by_handle = fh
            .and_then(|fh| self.files.get(&fh))
            .filter(|open| open.ino == ino)
            .map(|open| &open.file);
        match by_handle {
            Some(file) => Some(file),
            None if self.ns.location(ino) == Some(&Location::Gone) => self.any_open_file(ino),
            None => None,
        }
    }

    pub(crate) fn readlink(&self, ino: Ino) -> io::Result<Vec<u8>> {
        self.check()?;
        use std::os::unix::ffi::OsStringExt;
        Ok(fs::read_link(self.path(ino)?)?.into_os_string().into_vec())
    }

    pub(crate) fn mkdir(&mut self, parent: Ino, name: &OsStr, mode: u32) -> io::Result<FileAttr> {
        self.check()?;
        let path = self.new_entry_path(parent, name)?;
        if self.ns.child(parent, name).is_some() {
            return Err(errno(libc::EEXIST));
        }
        DirBuilder::new().mode(mode & 0o7777).create(&path)?;
        let ino = self.add(parent, name, Kind::Directory)?;
        let attr = attr(ino, &fs::symlink_metadata(&path)?);
        self.ns.looked_up(ino);
        Ok(attr)
    }

    pub(crate) fn symlink(
        &mut self,
        parent: Ino,
        name: &OsStr,
        target: &Path,
    ) -> io::Result<FileAttr> {
        self.check()?;
        let path = self.new_entry_path(parent, name)?;
        if self.ns.child(parent, name).is_some() {
            return Err(errno(libc::EEXIST));
        }
        std::os::unix::fs::symlink(target, &path)?;
        let ino = self.add(parent, name, Kind::Symlink)?;
        let attr = attr(ino, &fs::symlink_metadata(&path)?);
        self.ns.looked_up(ino);
        Ok(attr)
    }

    fn add(&mut self, parent: Ino, name: &OsStr, kind: Kind) -> io::Result<Ino> {
        self.ns
            .add(parent, name, kind)
            .ok_or_else(|| errno(libc::EEXIST))
    }

    pub(crate) fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> io::Result<(FileAttr, u64)> {
        self.check()?;
        let path = self.new_entry_path(parent, name)?;
        if let Some(ino) = self.ns.child(parent, name) {
            if flags & libc::O_EXCL != 0 {
                return Err(errno(libc::EEXIST));
            }
            let fh = self.open(ino, flags)?;
            let attr = self.getattr(ino, Some(fh))?;
            self.ns.looked_up(ino);
            return Ok((attr, fh));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path)?;
        let ino = self.add(parent, name, Kind::File)?;
        let attr = attr(ino, &file.metadata()?);
        let fh = self.insert_file(ino, file, flags);
        self.ns.looked_up(ino);
        Ok((attr, fh))
    }

    fn insert_file(&mut self, ino: Ino, file: File, flags: i32) -> u64 {
        let fh = self.next_fh();
        self.files.insert(
            fh,
            OpenFile {
                ino,
                file,
                sync_writes: flags & libc::O_DSYNC != 0,
            },
        );
        self.ns.opened(ino);
        fh
    }

    pub(crate) fn open(&mut self, ino: Ino, flags: i32) -> io::Result<u64> {
        self.check()?;
        match self.ns.kind(ino) {
            Some(Kind::File) => {}
            Some(Kind::Directory) => return Err(errno(libc::EISDIR)),
            // Fifos, sockets and devices are not modelled.
            Some(_) => return Err(errno(libc::ENXIO)),
            None => return Err(errno(libc::ENOENT)),
        }
        let file = match self.ns.location(ino) {
            // An unlinked file reopened (through /proc) is reached through a handle.
            Some(Location::Gone) => self
                .any_open_file(ino)
                .ok_or_else(|| errno(libc::ENOENT))?
                .try_clone()?,
            _ => {
                let path = self.path(ino)?;
                // Read and write whatever was asked, so that pre-images can be read through
                // any handle; the kernel checks the access mode itself.
                match OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(file) => file,
                    Err(_) => OpenOptions::new()
                        .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
                        .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
                        .open(&path)?,
                }
            }
        };
        let fh = self.insert_file(ino, file, flags);
        if flags & libc::O_TRUNC != 0 {
            if let Err(error) = self.truncate(ino, Some(fh), 0) {
                self.release(fh);
                return Err(error);
            }
        }
        Ok(fh)
    }

    pub(crate) fn read(&self, fh: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        self.check()?;
        let open = self.files.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        let mut buf = vec![0; size as usize];
        let read = read_full(&open.file, offset, &mut buf)?;
        buf.truncate(read);
        Ok(buf)
    }

    pub(crate) fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> io::Result<u32> {
        self.check()?;
        let open = self.files.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| errno(libc::EFBIG))?;
        preserve(&mut self.ns, open.ino, &open.file, offset..end)?;
        open.file.write_all_at(data, offset)?;
        if open.sync_writes {
            let size = open.file.metadata()?.len();
            if let Some(undo) = self.ns.undo_mut(open.ino) {
                undo.sync(size);
            }
        }
        u32::try_from(data.len()).map_err(|_| errno(libc::EINVAL))
    }

    pub(crate) fn fallocate(
        &mut self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> io::Result<()> {
        self.check()?;
        let open = self.files.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        if mode & (libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE) != 0 {
            // Shifting data would need a pre-image of everything after the offset.
            return Err(errno(libc::EOPNOTSUPP));
        }
        let end = offset
            .checked_add(length)
            .ok_or_else(|| errno(libc::EFBIG))?;
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            preserve(&mut self.ns, open.ino, &open.file, offset..end)?;
        }
        let offset = i64::try_from(offset).map_err(|_| errno(libc::EFBIG))?;
        let length = i64::try_from(length).map_err(|_| errno(libc::EFBIG))?;
        nix::fcntl::fallocate(
            &open.file,
            nix::fcntl::FallocateFlags::from_bits_retain(mode),
            offset,
            length,
        )?;
        Ok(())
    }

    /// fsync and fdatasync of a file: its content is durable as it is now.
    pub(crate) fn fsync(&mut self, ino: Ino, fh: u64) -> io::Result<()> {
        self.check()?;
        if self.ns.kind(ino) != Some(Kind::File) {
            return Ok(());
        }
        let size = match self.files.get(&fh) {
            Some(open) => open.file.metadata()?.len(),
            None => self.metadata(ino)?.len(),
        };
        if let Some(undo) = self.ns.undo_mut(ino) {
            undo.sync(size);
        }
        Ok(())
    }

    pub(crate) fn release(&mut self, fh: u64) {
        if let Some(open) = self.files.remove(&fh) {
            self.ns.released(open.ino);
        }
    }

    pub(crate) fn unlink(&mut self, parent: Ino, name: &OsStr) -> io::Result<()> {
        self.check()?;
        let (ino, path) = self.entry_path(parent, name)?;
        if self.ns.kind(ino) == Some(Kind::Directory) {
            return Err(errno(libc::EISDIR));
        }
        let kept = self.ns.is_durably_named(ino);
        if kept {
            fs::rename(&path, self.keep_path(ino)?)?;
        } else {
            fs::remove_file(&path)?;
        }
        if let Some((_, discarded)) = self.ns.detach(parent, name, kept) {
            self.discard(discarded);
        }
        Ok(())
    }

    pub(crate) fn rmdir(&mut self, parent: Ino, name: &OsStr) -> io::Result<()> {
        self.check()?;
        let (ino, path) = self.entry_path(parent, name)?;
        if self.ns.kind(ino) != Some(Kind::Directory) {
            return Err(errno(libc::ENOTDIR));
        }
        if self.ns.has_children(ino) {
            return Err(errno(libc::ENOTEMPTY));
        }
        let kept = self.ns.is_durably_named(ino);
        if kept {
            fs::rename(&path, self.keep_path(ino)?)?;
        } else {
            fs::remove_dir(&path)?;
        }
        if let Some((_, discarded)) = self.ns.detach(parent, name, kept) {
            self.discard(discarded);
        }
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        self.check()?;
        if flags & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not modelled.
            return Err(errno(libc::EINVAL));
        }
        let (ino, from) = self.entry_path(parent, name)?;
        let to = self.new_entry_path(new_parent, new_name)?;
        let kind = self.ns.kind(ino).ok_or_else(|| errno(libc::ENOENT))?;
        if kind == Kind::Directory {
            // A directory cannot move into itself or below.
            let mut cursor = new_parent;
            loop {
                if cursor == ino {
                    return Err(errno(libc::EINVAL));
                }
                if cursor == ROOT {
                    break;
                }
                cursor = self.ns.parent(cursor).ok_or_else(|| errno(libc::ENOENT))?;
            }
        }
        let replaced = self.ns.child(new_parent, new_name);
        if replaced.is_some() && flags & libc::RENAME_NOREPLACE != 0 {
            return Err(errno(libc::EEXIST));
        }
        if replaced == Some(ino) {
            return Ok(());
        }
        let mut kept = false;
        if let Some(target) = replaced {
            let target_kind = self.ns.kind(target).ok_or_else(|| errno(libc::ENOENT))?;
            match (kind == Kind::Directory, target_kind == Kind::Directory) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if self.ns.has_children(target) => return Err(errno(libc::ENOTEMPTY)),
                _ => {}
            }
            kept = self.ns.is_durably_named(target);
            if kept {
                let side = self.keep_path(target)?;
                fs::rename(&to, &side)?;
                if let Err(error) = fs::rename(&from, &to) {
                    // Put the target back so that the failed rename changed nothing.
                    if let Err(undo) = fs::rename(&side, &to) {
                        warn!(path = %to.display(), error = %undo, "could not put back a rename target");
                    }
                    return Err(error);
                }
            }
        }
        if !kept {
            fs::rename(&from, &to)?;
        }
        if replaced.is_some() {
            if let Some((_, discarded)) = self.ns.detach(new_parent, new_name, kept) {
                self.discard(discarded);
            }
        }
        self.ns.unlink_name(parent, name);
        self.ns.relink(ino, new_parent, new_name);
        Ok(())
    }

    pub(crate) fn opendir(&mut self, ino: Ino) -> io::Result<u64> {
        self.check()?;
        if self.ns.kind(ino) != Some(Kind::Directory) {
            return Err(errno(libc::ENOTDIR));
        }
        let parent = self.ns.parent(ino).unwrap_or(ROOT);
        let mut rows = vec![
            DirRow {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirRow {
                ino: parent,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for (name, child) in self.ns.children(ino) {
            let kind = match self.ns.kind(child) {
                Some(Kind::Directory) => FileType::Directory,
                Some(Kind::Symlink) => FileType::Symlink,
                Some(Kind::Other) => self
                    .metadata(child)
                    .ok()
                    .and_then(|meta| FileType::from_std(meta.file_type()))
                    .unwrap_or(FileType::RegularFile),
                _ => FileType::RegularFile,
            };
            rows.push(DirRow {
                ino: child,
                kind,
                name,
            });
        }
        let fh = self.next_fh();
        self.dirs.insert(fh, (ino, rows));
        self.ns.opened(ino);
        Ok(fh)
    }

    /// Hands the rows of directory handle `fh` from row `offset` on to `add`, with the offset
    /// of the row after each, until `add` says the reply is full.
    pub(crate) fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &DirRow) -> bool,
    ) -> io::Result<()> {
        self.check()?;
        let (_, rows) = self.dirs.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(rows.len());
        for (index, row) in rows.iter().enumerate().skip(start) {
            if add(index as u64 + 1, row) {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn releasedir(&mut self, fh: u64) {
        if let Some((ino, _)) = self.dirs.remove(&fh) {
            self.ns.released(ino);
        }
    }

    /// fsync of a directory: its entries are durable as they are now.
    pub(crate) fn fsyncdir(&mut self, ino: Ino) -> io::Result<()> {
        self.check()?;
        if self.ns.kind(ino) != Some(Kind::Directory) {
            return Err(errno(libc::ENOTDIR));
        }
        let discarded = self.ns.sync_dir(ino);
        self.discard(discarded);
        Ok(())
    }

    pub(crate) fn statfs(&self) -> io::Result<nix::sys::statvfs::Statvfs> {
        self.check()?;
        Ok(nix::sys::statvfs::statvfs(self.backing.as_path())?)
    }

    pub(crate) fn access(&self, ino: Ino) -> io::Result<()> {
        self.check()?;
        if self.ns.contains(ino) {
            Ok(())
        } else {
            Err(errno(libc::ENOENT))
        }
    }

    /// The end of the session: handles close and, if the power is still on, the side
    /// directory goes (what it kept only mattered to a power cut).
    pub(crate) fn shutdown(&mut self) {
        self.files.clear();
        self.dirs.clear();
        if self.powered && self.side_exists {
            if let Err(error) = fs::remove_dir_all(&self.side) {
                warn!(path = %self.side.display(), %error, "could not remove the side directory");
            }
            self.side_exists = false;
        }
    }
}

/// Saves the durable bytes of `range` of file `ino`, read through `file`, before they change.
fn preserve(
    ns: &mut Namespace,
    ino: Ino,
    file: &File,
    range: std::ops::Range<u64>,
) -> io::Result<()> {
    let Some(undo) = ns.undo_mut(ino) else {
        return Ok(());
    };
    undo.preserve(range, |offset, buf| {
        let read = read_full(file, offset, buf)?;
        buf[read..].fill(0);
        Ok(())
    })
}

/// Refuses the side directory's name in the root: the mount does not show it.
fn check_name(parent: Ino, name: &OsStr) -> io::Result<()> {
    if parent == ROOT && name == SIDE_DIR {
        return Err(errno(libc::EPERM));
    }
    Ok(())
}

fn kind_of(meta: &Metadata) -> Kind {
    let kind = meta.file_type();
    if kind.is_dir() {
        Kind::Directory
    } else if kind.is_file() {
        Kind::File
    } else if kind.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(read) => done += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nsecs),
        Err(_) => UNIX_EPOCH,
    }
}

fn timespec(time: Option<TimeOrNow>) -> nix::sys::time::TimeSpec {
    use nix::sys::time::TimeSpec;
    match time {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(at)) => {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            TimeSpec::from_duration(since)
        }
    }
}

/// The attributes the kernel sees: the backing object's, under the filesystem's own inode
/// number.
fn attr(ino: Ino, meta: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}
