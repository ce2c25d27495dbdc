//! The names of the filesystem, live and durable, without any I/O.
//!
//! Every file and directory is a node with an inode number of the filesystem's own. A node has
//! at most one live name (hard links are not modelled). A directory node also has its durable
//! entries: its live entries as of its last fsync (or as of the mount). A power cut keeps the
//! tree those durable entries form from the root, so a node must keep its content while any
//! durable entry names it, even after its live name is gone: such a node is *kept* (its backing
//! object moves to the side directory) rather than deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::undo::UndoLog;

/// An inode number of the filesystem (not of the backing directory).
pub type Ino = u64;

/// The inode number of the root directory, as FUSE fixes it.
pub const ROOT: Ino = 1;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory: its content is its entries.
    Directory,
    /// A regular file: its content is its data, with an undo log.
    File,
    /// A symbolic link: its content never changes.
    Symlink,
    /// A fifo, socket or device node found in the backing directory.
    Other,
}

/// Where a node's backing object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The root: the backing directory itself.
    Root,
    /// At its live name in the backing directory.
    Named {
        /// The directory that holds the name.
        parent: Ino,
        /// The name.
        name: OsString,
    },
    /// Unlinked, but still named by a durable entry: kept in the side directory.
    Side,
    /// Unlinked and named by no durable entry: the backing object is deleted, and only open
    /// handles still reach its data.
    Gone,
}

/// One name of the durable tree: where a power cut puts a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The path relative to the root (empty for the root itself).
    pub path: PathBuf,
    /// The node found there.
    pub ino: Ino,
    /// What the node is.
    pub kind: Kind,
}

/// A node whose backing object in the side directory is no longer needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    /// The node.
    pub ino: Ino,
    /// What it is (a directory is removed with rmdir, anything else with unlink).
    pub kind: Kind,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    location: Location,
    /// Live entries (directories only).
    children: BTreeMap<OsString, Ino>,
    /// Entries as of the last fsync of this directory (directories only).
    durable: BTreeMap<OsString, Ino>,
    /// How many durable entries, of directories still tracked, name this node.
    durable_refs: u32,
    undo: UndoLog,
    /// The kernel's lookup count (entries replied minus forgotten).
    lookups: u64,
    /// Open file and directory handles.
    open: u32,
}

impl Node {
    fn new(kind: Kind, location: Location, durable_size: u64) -> Self {
        Self {
            kind,
            location,
            children: BTreeMap::new(),
            durable: BTreeMap::new(),
            durable_refs: 0,
            undo: UndoLog::new(durable_size),
            lookups: 0,
            open: 0,
        }
    }

    /// Unlinked and named by no durable entry.
    fn is_unreferenced(&self) -> bool {
        matches!(self.location, Location::Side | Location::Gone) && self.durable_refs == 0
    }
}

/// All nodes, their live names and their durable entries.
#[derive(Debug)]
pub struct Namespace {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Namespace {
    /// A namespace holding only an empty root directory.
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Kind::Directory, Location::Root, 0));
        Self {
            nodes,
            next_ino: ROOT + 1,
        }
    }

    /// How many nodes are tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root is tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    fn node_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// Adds a node found in the backing directory at mount: its name and content are durable.
    ///
    /// Returns `None` when `parent` is not a tracked directory or the name is taken.
    pub fn add_existing(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        size: u64,
    ) -> Option<Ino> {
        let ino = self.add(parent, name, kind)?;
        let node = self.node_mut(ino)?;
        node.undo = UndoLog::new(size);
        node.durable_refs = 1;
        self.node_mut(parent)?.durable.insert(name.to_owned(), ino);
        Some(ino)
    }

    /// Adds a node created through the mount: its name is not durable and its durable content
    /// is empty.
    ///
    /// Returns `None` when `parent` is not a tracked directory or the name is taken.
    pub fn add(&mut self, parent: Ino, name: &OsStr, kind: Kind) -> Option<Ino> {
        let dir = self.node(parent)?;
        if dir.kind != Kind::Directory || dir.children.contains_key(name) {
            return None;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let location = Location::Named {
            parent,
            name: name.to_owned(),
        };
        self.nodes.insert(ino, Node::new(kind, location, 0));
        self.node_mut(parent)?.children.insert(name.to_owned(), ino);
        Some(ino)
    }

    /// Whether `ino` is tracked.
    pub fn contains(&self, ino: Ino) -> bool {
        self.nodes.contains_key(&ino)
    }

    /// What `ino` is.
    pub fn kind(&self, ino: Ino) -> Option<Kind> {
        self.node(ino).map(|node| node.kind)
    }

    /// Where the backing object of `ino` is.
    pub fn location(&self, ino: Ino) -> Option<&Location> {
        self.node(ino).map(|node| &node.location)
    }

    /// The live entry `name` of directory `parent`.
    pub fn child(&self, parent: Ino, name: &OsStr) -> Option<Ino> {
        self.node(parent)?.children.get(name).copied()
    }

    /// The live entries of directory `ino`, by name.
    pub fn children(&self, ino: Ino) -> Vec<(OsString, Ino)> {
        self.node(ino).map_or_else(Vec::new, |node| {
            node.children
                .iter()
                .map(|(name, &child)| (name.clone(), child))
                .collect()
        })
    }

    /// Whether directory `ino` has no live entries.
    pub fn has_children(&self, ino: Ino) -> bool {
        self.node(ino).is_some_and(|node| !node.children.is_empty())
    }

    /// The live parent of `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Option<Ino> {
        match &self.node(ino)?.location {
            Location::Root => Some(ROOT),
            Location::Named { parent, .. } => Some(*parent),
            Location::Side | Location::Gone => None,
        }
    }

    /// The live path of `ino` relative to the root, if it has a live name.
    pub fn live_path(&self, ino: Ino) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut cursor = ino;
        // A live name chain always ends at the root; the bound only guards against a bug.
        for _ in 0..=self.nodes.len() {
            match &self.node(cursor)?.location {
                Location::Root => {
                    return Some(names.iter().rev().collect());
                }
                Location::Named { parent, name } => {
                    names.push(name.as_os_str());
                    cursor = *parent;
                }
                Location::Side | Location::Gone => return None,
            }
        }
        None
    }

    /// Whether a durable entry names `ino`, so that its backing object must be kept when its
    /// live name goes.
    pub fn is_durably_named(&self, ino: Ino) -> bool {
        self.node(ino).is_some_and(|node| node.durable_refs > 0)
    }

    /// The undo log of file `ino`.
    pub fn undo(&self, ino: Ino) -> Option<&UndoLog> {
        self.node(ino).map(|node| &node.undo)
    }

    /// The undo log of file `ino`, to record a change or an fsync.
    pub fn undo_mut(&mut self, ino: Ino) -> Option<&mut UndoLog> {
        self.node_mut(ino).map(|node| &mut node.undo)
    }

    /// The pre-image bytes held by all undo logs.
    pub fn saved_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| node.undo.saved_bytes())
            .sum()
    }

    /// Removes the live entry `name` of `parent` (unlink, rmdir, or a rename replacing it).
    ///
    /// `kept` says whether the caller moved the backing object to the side directory (it must
    /// when [`is_durably_named`](Self::is_durably_named)) or deleted it. Returns the node, and
    /// the nodes whose side objects are no longer needed.
    pub fn detach(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kept: bool,
    ) -> Option<(Ino, Vec<Discarded>)> {
        let ino = self.node_mut(parent)?.children.remove(name)?;
        let node = self.node_mut(ino)?;
        node.location = if kept { Location::Side } else { Location::Gone };
        let mut discarded = Vec::new();
        self.collect(ino, &mut discarded);
        Some((ino, discarded))
    }

    /// Gives `ino` the live name `name` in `parent` (the second half of a rename, after the
    /// old name was removed with [`unlink_name`](Self::unlink_name) and any node the new name
    /// replaced was [`detach`](Self::detach)ed).
    pub fn relink(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> Option<()> {
        self.node_mut(parent)?.children.insert(name.to_owned(), ino);
        self.node_mut(ino)?.location = Location::Named {
            parent,
            name: name.to_owned(),
        };
        Some(())
    }

    /// Removes the live entry `name` of `parent` without changing its node's location (the
    /// first half of a rename).
    pub fn unlink_name(&mut self, parent: Ino, name: &OsStr) -> Option<Ino> {
        self.node_mut(parent)?.children.remove(name)
    }

    /// Makes the live entries of directory `ino` durable (fsync of a directory).
    ///
    /// Returns the nodes whose side objects are no longer needed.
    pub fn sync_dir(&mut self, ino: Ino) -> Vec<Discarded> {
        let mut discarded = Vec::new();
        let Some(node) = self.node(ino) else {
            return discarded;
        };
        let entries = node.children.clone();
        for child in entries.values() {
            if let Some(child) = self.node_mut(*child) {
                child.durable_refs += 1;
            }
        }
        let old = match self.node_mut(ino) {
            Some(node) => std::mem::replace(&mut node.durable, entries),
            None => return discarded,
        };
        self.release_refs(old.into_values(), &mut discarded);
        discarded
    }

    /// Counts one more kernel lookup of `ino`.
    pub fn looked_up(&mut self, ino: Ino) {
        if let Some(node) = self.node_mut(ino) {
            node.lookups += 1;
        }
    }

    /// The kernel forgets `count` lookups of `ino`.
    pub fn forget(&mut self, ino: Ino, count: u64) {
        if let Some(node) = self.node_mut(ino) {
            node.lookups = node.lookups.saturating_sub(count);
        }
        self.drop_if_unused(ino);
    }

    /// Counts an open handle of `ino`.
    pub fn opened(&mut self, ino: Ino) {
        if let Some(node) = self.node_mut(ino) {
            node.open += 1;
        }
    }

    /// A handle of `ino` is released.
    pub fn released(&mut self, ino: Ino) {
        if let Some(node) = self.node_mut(ino) {
            node.open = node.open.saturating_sub(1);
        }
        self.drop_if_unused(ino);
    }

    /// The durable tree: what a power cut leaves, from the root down, directories before their
    /// entries.
    ///
    /// A file named by several durable entries (a cross-directory rename of which only one
    /// side was synced) is placed at each name. A directory is placed only at the first name
    /// found, so that the tree stays a tree.
    pub fn layout(&self) -> Vec<Placement> {
        let mut placements = vec![Placement {
            path: PathBuf::new(),
            ino: ROOT,
            kind: Kind::Directory,
        }];
        let mut placed_dirs = HashSet::from([ROOT]);
        let mut next = 0;
        while next < placements.len() {
            let Placement { path, ino, kind } = placements[next].clone();
            next += 1;
            if kind != Kind::Directory {
                continue;
            }
            let Some(dir) = self.node(ino) else {
                continue;
            };
            for (name, &child) in &dir.durable {
                let Some(node) = self.node(child) else {
                    continue;
                };
                if node.kind == Kind::Directory && !placed_dirs.insert(child) {
                    continue;
                }
                placements.push(Placement {
                    path: path.join(name),
                    ino: child,
                    kind: node.kind,
                });
            }
        }
        placements
    }

    fn release_refs(&mut self, inos: impl Iterator<Item = Ino>, discarded: &mut Vec<Discarded>) {
        for ino in inos {
            if let Some(node) = self.node_mut(ino) {
                node.durable_refs = node.durable_refs.saturating_sub(1);
            }
            self.collect(ino, discarded);
        }
    }

    /// Lets go of `ino` if nothing names it any more: its side object is discarded, and a
    /// directory's durable entries stop naming their nodes.
    fn collect(&mut self, ino: Ino, discarded: &mut Vec<Discarded>) {
        let Some(node) = self.node_mut(ino) else {
            return;
        };
        if !node.is_unreferenced() {
            return;
        }
        if node.location == Location::Side {
            discarded.push(Discarded {
                ino,
                kind: node.kind,
            });
            node.location = Location::Gone;
        }
        let entries = std::mem::take(&mut node.durable);
        self.release_refs(entries.into_values(), discarded);
        self.drop_if_unused(ino);
    }

    fn drop_if_unused(&mut self, ino: Ino) {
        let unused = self.node(ino).is_some_and(|node| {
            node.location == Location::Gone
                && node.durable_refs == 0
                && node.lookups == 0
                && node.open == 0
        });
        if unused {
            self.nodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ns: &Namespace) -> Vec<String> {
        ns.layout()
            .into_iter()
            .map(|p| p.path.display().to_string())
            .collect()
    }

    #[test]
    fn a_name_is_durable_only_after_its_directory_is_synced() {
        let mut ns = Namespace::new();
        let a = ns.add(ROOT, OsStr::new("a"), Kind::File).expect("add");
        assert_eq!(paths(&ns), vec![""]);
        assert_eq!(ns.live_path(a), Some(PathBuf::from("a")));
        assert!(ns.sync_dir(ROOT).is_empty());
        assert_eq!(paths(&ns), vec!["", "a"]);
    }

    #[test]
    fn an_unlinked_durable_file_is_kept_until_the_directory_is_synced() {
        let mut ns = Namespace::new();
        let a = ns
            .add_existing(ROOT, OsStr::new("a"), Kind::File, 10)
            .expect("add");
        assert!(ns.is_durably_named(a));
        let (ino, discarded) = ns.detach(ROOT, OsStr::new("a"), true).expect("detach");
        assert_eq!(ino, a);
        assert!(discarded.is_empty());
        assert_eq!(ns.location(a), Some(&Location::Side));
        assert_eq!(paths(&ns), vec!["", "a"]);
        let discarded = ns.sync_dir(ROOT);
        assert_eq!(
            discarded,
            vec![Discarded {
                ino: a,
                kind: Kind::File
            }]
        );
        assert!(!ns.contains(a));
        assert_eq!(paths(&ns), vec![""]);
    }

    #[test]
    fn removing_a_directory_lets_go_of_its_durable_entries() {
        let mut ns = Namespace::new();
        let d = ns.add(ROOT, OsStr::new("d"), Kind::Directory).expect("add");
        let f = ns.add(d, OsStr::new("f"), Kind::File).expect("add");
        ns.sync_dir(d);
        assert!(ns.is_durably_named(f));
        ns.detach(d, OsStr::new("f"), true).expect("unlink f");
        assert!(!ns.is_durably_named(d));
        let (_, discarded) = ns.detach(ROOT, OsStr::new("d"), false).expect("rmdir d");
        assert_eq!(
            discarded,
            vec![Discarded {
                ino: f,
                kind: Kind::File
            }]
        );
        assert!(!ns.contains(d));
        assert!(!ns.contains(f));
    }

    #[test]
    fn a_cross_directory_rename_synced_on_one_side_leaves_both_names() {
        let mut ns = Namespace::new();
        let d1 = ns
            .add_existing(ROOT, OsStr::new("d1"), Kind::Directory, 0)
            .expect("add");
        let d2 = ns
            .add_existing(ROOT, OsStr::new("d2"), Kind::Directory, 0)
            .expect("add");
        let f = ns
            .add_existing(d1, OsStr::new("f"), Kind::File, 3)
            .expect("add");
        let moved = ns.unlink_name(d1, OsStr::new("f")).expect("unlink");
        assert_eq!(moved, f);
        ns.relink(f, d2, OsStr::new("g")).expect("relink");
        assert_eq!(ns.live_path(f), Some(PathBuf::from("d2/g")));
        ns.sync_dir(d2);
        assert_eq!(paths(&ns), vec!["", "d1", "d2", "d1/f", "d2/g"]);
        ns.sync_dir(d1);
        assert_eq!(paths(&ns), vec!["", "d1", "d2", "d2/g"]);
    }

    #[test]
    fn nodes_stay_while_the_kernel_or_a_handle_knows_them() {
        let mut ns = Namespace::new();
        let a = ns.add(ROOT, OsStr::new("a"), Kind::File).expect("add");
        ns.looked_up(a);
        ns.opened(a);
        ns.detach(ROOT, OsStr::new("a"), false).expect("unlink");
        ns.forget(a, 1);
        assert!(ns.contains(a));
        ns.released(a);
        assert!(!ns.contains(a));
    }
}
