//! The power cut: the backing directory becomes exactly the durable state (each file rolled
//! back to its last fsync, each directory to its last directory fsync), and the filesystem
//! answers EIO from then on.

use super::*;

impl State {
    /// Cuts the power: the backing directory becomes exactly the durable state, and every
    /// operation from now on fails with EIO.
    pub(crate) fn cut(&mut self) -> Result<(), Error> {
        if !self.powered {
            return Ok(());
        }
        // Off first: whatever happens below, nothing is served any more.
        self.powered = false;
        self.files.clear();
        self.dirs.clear();
        let pending = self.ns.saved_bytes();
        let result = self.restore();
        match &result {
            Ok(()) => info!(
                preimages = pending,
                "power cut: the backing directory holds the durable state"
            ),
            Err(error) => warn!(%error, "power cut failed"),
        }
        result
    }

    fn restore(&mut self) -> Result<(), Error> {
        let layout = self.ns.layout();

        // Gather every placed non-directory in the side directory, under its inode number,
        // with its content rolled back; note each directory's owner and mode.
        let mut gathered = HashSet::new();
        let mut dir_meta = HashMap::new();
        for placement in &layout {
            if placement.kind == Kind::Directory {
                let path = self.path(placement.ino).map_err(|source| Error::Cut {
                    step: "find directory",
                    path: placement.path.clone(),
                    source,
                })?;
                let meta = fs::symlink_metadata(&path).map_err(|source| Error::Cut {
                    step: "stat directory",
                    path: path.clone(),
                    source,
                })?;
                dir_meta.insert(placement.ino, meta);
                continue;
            }
            if !gathered.insert(placement.ino) {
                continue;
            }
            let side = self.keep_path(placement.ino).map_err(|source| Error::Cut {
                step: "create",
                path: self.side.clone(),
                source,
            })?;
            if let Some(Location::Named { .. }) = self.ns.location(placement.ino) {
                let path = self.path(placement.ino).map_err(|source| Error::Cut {
                    step: "find file",
                    path: placement.path.clone(),
                    source,
                })?;
                fs::rename(&path, &side).map_err(|source| Error::Cut {
                    step: "set aside",
                    path: path.clone(),
                    source,
                })?;
            }
            if placement.kind == Kind::File {
                self.roll_back(placement.ino, &side)?;
            }
        }

        // Everything else in the backing directory was never durable.
        let entries = fs::read_dir(&self.backing).map_err(|source| Error::Cut {
            step: "list",
            path: self.backing.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Cut {
                step: "list",
                path: self.backing.clone(),
                source,
            })?;
            if entry.file_name() == SIDE_DIR {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(|source| Error::Cut {
                step: "remove",
                path: path.clone(),
                source,
            })?;
        }

        // Rebuild the durable tree, directories before their entries.
        let mut first_name: HashMap<Ino, PathBuf> = HashMap::new();
        for placement in &layout {
            let path = self.backing.join(&placement.path);
            if placement.kind == Kind::Directory {
                if placement.ino == ROOT {
                    continue;
                }
                fs::create_dir(&path).map_err(|source| Error::Cut {
                    step: "create directory",
                    path: path.clone(),
                    source,
                })?;
                if let Some(meta) = dir_meta.get(&placement.ino) {
                    let restored = fs::set_permissions(&path, meta.permissions()).and_then(|()| {
                        std::os::unix::fs::lchown(&path, Some(meta.uid()), Some(meta.gid()))
                    });
                    restored.map_err(|source| Error::Cut {
                        step: "restore owner and mode of",
                        path: path.clone(),
                        source,
                    })?;
                }
                continue;
            }
            match first_name.get(&placement.ino) {
                None => {
                    fs::rename(self.side_path(placement.ino), &path).map_err(|source| {
                        Error::Cut {
                            step: "put back",
                            path: path.clone(),
                            source,
                        }
                    })?;
                    first_name.insert(placement.ino, path);
                }
                Some(first) => {
                    fs::hard_link(first, &path).map_err(|source| Error::Cut {
                        step: "link",
                        path: path.clone(),
                        source,
                    })?;
                }
            }
        }

        if self.side_exists {
            fs::remove_dir_all(&self.side).map_err(|source| Error::Cut {
                step: "remove",
                path: self.side.clone(),
                source,
            })?;
            self.side_exists = false;
        }
        Ok(())
    }

    /// Rolls the file at `path` back to the durable content of `ino`.
    fn roll_back(&self, ino: Ino, path: &Path) -> Result<(), Error> {
        let Some(undo) = self.ns.undo(ino) else {
            return Ok(());
        };
        let cut = |source| Error::Cut {
            step: "roll back",
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new().write(true).open(path).map_err(cut)?;
        let size = file.metadata().map_err(cut)?.len();
        if undo.is_clean(size) {
            return Ok(());
        }
        file.set_len(undo.durable_size()).map_err(cut)?;
        for (offset, bytes) in undo.preimages() {
            file.write_all_at(bytes, offset).map_err(cut)?;
        }
        Ok(())
    }
}
