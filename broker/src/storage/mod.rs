//! Where partition logs keep their batches.
//!
//! Storage is deliberately dumb: an ordered map from a batch's base offset to its bytes, per
//! partition, plus a small metadata map and a durability barrier. Everything with a rule in it
//! (offset assignment, high watermark, idempotence, retention) lives in [`crate::log`], so the
//! same logic runs over every implementation, and one contract suite (`tests` below) checks each.

use bytes::Bytes;

#[cfg(test)]
pub(crate) mod faulty;
pub(crate) mod file_sync;
mod memory;
mod sled_store;

pub use memory::{MemoryLog, MemoryStorage};
pub use sled_store::{SledLog, SledStorage};

/// A storage failure; always a broker-side fault, never the client's.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The embedded database failed.
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation (fsync of the data files) failed.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes could not be understood.
    #[error("storage corrupt: {0}")]
    Corrupt(String),
}

/// What [`BatchLog::scan_from`] hands each batch to: its base offset and bytes; it answers
/// whether to go on.
pub type Visit<'a> = dyn FnMut(i64, &[u8]) -> Result<bool, StorageError> + 'a;

/// A stored index: the checkpoint record, if one was written, and every entry (base offset,
/// encoded entry) in offset order.
pub type StoredIndex = (Option<Vec<u8>>, Vec<(i64, Vec<u8>)>);

/// One partition's ordered batches, keyed by base offset, and beside them its index: an entry
/// per batch and a checkpoint record, whose encodings belong to [`crate::log`].
pub trait BatchLog: Send + Sync + 'static {
    /// A batch in the form this storage keeps it: the broker copies a received batch into one
    /// with [`Self::buffer`], patches its offsets in place and hands it to [`Self::put`], so the
    /// bytes are copied once on their way in.
    type Buf: AsRef<[u8]> + AsMut<[u8]> + Send + std::fmt::Debug + 'static;
    /// Copies `batch` into a buffer for [`Self::put`].
    fn buffer(batch: &[u8]) -> Self::Buf;
    /// Stores a batch under its base offset (the bytes already carry that base offset), or
    /// replaces the one stored there.
    fn put(&self, base_offset: i64, batch: Self::Buf) -> Result<(), StorageError>;
    /// Reads batches in offset order, starting with the one whose base offset is `from_base`,
    /// until `max_bytes` is reached (at least one batch is returned when any exists) or a batch
    /// starts at or after `end` (exclusive).
    fn read(&self, from_base: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError>;
    /// Hands `visit` each stored batch whose base offset is at least `from_base`, in order, one
    /// at a time, until it returns false: recovery reads the tail of the log this way, without
    /// holding it in memory.
    fn scan_from(&self, from_base: i64, visit: &mut Visit<'_>) -> Result<(), StorageError>;
    /// Removes the batch stored under `base_offset`.
    fn remove(&self, base_offset: i64) -> Result<(), StorageError>;
    /// The stored index.
    fn read_index(&self) -> Result<StoredIndex, StorageError>;
    /// A cleaning pass's result in one atomic step: replaces the batches of `replace`, removes
    /// those of `remove` with their index entries, adds (or replaces) the index entries of
    /// `index_put`, and sets the checkpoint record.
    fn rewrite(
        &self,
        replace: &[(i64, Vec<u8>)],
        remove: &[i64],
        index_put: &[(i64, Vec<u8>)],
        checkpoint: &[u8],
    ) -> Result<(), StorageError>;
    /// Changes the index in one atomic step: adds (or replaces) `put`, removes `remove`, and
    /// sets the checkpoint record.
    fn write_index(
        &self,
        put: &[(i64, Vec<u8>)],
        remove: &[i64],
        checkpoint: &[u8],
    ) -> Result<(), StorageError>;
}

/// A broker's storage: partition logs, a metadata map, and a durability barrier.
pub trait Storage: Send + Sync + 'static {
    /// The partition log type.
    type Log: BatchLog;
    /// Opens (creating when missing) the log of `topic`/`partition`.
    fn open_log(&self, topic: &str, partition: i32) -> Result<Self::Log, StorageError>;
    /// Deletes a partition's log and every batch in it.
    fn drop_log(&self, topic: &str, partition: i32) -> Result<(), StorageError>;
    /// The partitions that have a log.
    fn list_logs(&self) -> Result<Vec<(String, i32)>, StorageError>;
    /// Reads a metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Writes a metadata value.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
    /// Returns once everything written before the call is durable on disk.
    fn flush(&self) -> Result<(), StorageError>;
}

/// The name of a partition log inside a storage: `topic/partition`. Topic names cannot hold `/`.
pub(crate) fn log_name(topic: &str, partition: i32) -> String {
    format!("log/{topic}/{partition}")
}

/// The name of a partition's index inside a storage.
pub(crate) fn index_name(topic: &str, partition: i32) -> String {
    format!("idx/{topic}/{partition}")
}

/// The inverse of [`log_name`].
pub(crate) fn parse_log_name(name: &str) -> Option<(String, i32)> {
    let rest = name.strip_prefix("log/")?;
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((topic.to_string(), partition.parse().ok()?))
}

#[cfg(test)]
pub(crate) mod contract {
    //! The contract every [`Storage`] implementation meets, run against each of them.
    use super::*;

    fn batch(base: i64, len: usize) -> Vec<u8> {
        let mut v = base.to_be_bytes().to_vec();
        v.resize(len, base as u8);
        v
    }

    fn scan<L: BatchLog>(log: &L) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        log.scan_from(0, &mut |base, b| {
            out.push((base, b.to_vec()));
            Ok(true)
        })
        .expect("scan");
        out
    }

    pub(crate) fn run<S: Storage>(storage: &S) {
        let log = storage.open_log("orders", 0).expect("open");
        assert!(scan(&log).is_empty());
        for base in [0, 10, 20, 30] {
            log.put(base, S::Log::buffer(&batch(base, 100)))
                .expect("put");
        }
        // Reads start at the requested batch and respect the end bound.
        let got = log.read(10, 30, usize::MAX).expect("read");
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][..], &batch(10, 100)[..]);
        assert_eq!(&got[1][..], &batch(20, 100)[..]);
        // max_bytes is soft: at least one batch comes back.
        assert_eq!(log.read(0, i64::MAX, 1).expect("read").len(), 1);
        assert_eq!(log.read(0, i64::MAX, 250).expect("read").len(), 2);
        // Removal from the front.
        log.remove(0).expect("remove");
        let bases: Vec<i64> = scan(&log).iter().map(|(b, _)| *b).collect();
        assert_eq!(bases, vec![10, 20, 30]);
        // A scan from an offset, stopped by its visitor.
        let mut seen = Vec::new();
        log.scan_from(15, &mut |base, _| {
            seen.push(base);
            Ok(seen.is_empty())
        })
        .expect("scan");
        assert_eq!(seen, vec![20]);
        // The index changes atomically with its checkpoint record.
        assert_eq!(log.read_index().expect("index"), (None, vec![]));
        log.write_index(&[(10, vec![1]), (20, vec![2])], &[], b"c1")
            .expect("index");
        log.write_index(&[(30, vec![3])], &[10], b"c2")
            .expect("index");
        assert_eq!(
            log.read_index().expect("index"),
            (Some(b"c2".to_vec()), vec![(20, vec![2]), (30, vec![3])])
        );
        // A rewrite replaces and removes batches with their index entries, atomically.
        log.rewrite(&[(20, batch(20, 50))], &[30], &[(20, vec![7])], b"c3")
            .expect("rewrite");
        assert_eq!(
            log.read_index().expect("index"),
            (Some(b"c3".to_vec()), vec![(20, vec![7])])
        );
        assert_eq!(scan(&log), vec![(10, batch(10, 100)), (20, batch(20, 50))]);
        log.put(30, S::Log::buffer(&batch(30, 100)))
            .expect("put back");
        // Logs are independent and listed.
        let other = storage.open_log("orders", 1).expect("open");
        other.put(0, S::Log::buffer(&batch(0, 10))).expect("put");
        let mut logs = storage.list_logs().expect("list");
        logs.sort();
        assert_eq!(
            logs,
            vec![("orders".to_string(), 0), ("orders".to_string(), 1)]
        );
        other
            .write_index(&[(0, vec![9])], &[], b"c")
            .expect("index");
        storage.drop_log("orders", 1).expect("drop");
        assert_eq!(
            storage
                .open_log("orders", 1)
                .expect("open")
                .read_index()
                .expect("index"),
            (None, vec![]),
            "dropping a log drops its index"
        );
        storage.drop_log("orders", 1).expect("drop");
        assert_eq!(
            storage.list_logs().expect("list"),
            vec![("orders".to_string(), 0)]
        );
        // Metadata round trip and the durability barrier.
        assert_eq!(storage.get_meta("k").expect("get"), None);
        storage.put_meta("k", b"v").expect("put");
        assert_eq!(storage.get_meta("k").expect("get"), Some(b"v".to_vec()));
        storage.flush().expect("flush");
    }

    #[test]
    fn memory_storage_meets_the_contract() {
        run(&MemoryStorage::default());
    }

    #[test]
    fn sled_storage_meets_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(&SledStorage::open(dir.path()).expect("open"));
    }

    #[test]
    fn sled_storage_keeps_batches_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = SledStorage::open(dir.path()).expect("open");
            let log = s.open_log("t", 2).expect("open");
            log.put(5, SledLog::buffer(&batch(5, 64))).expect("put");
            s.put_meta("m", b"1").expect("meta");
            s.flush().expect("flush");
        }
        let s = SledStorage::open(dir.path()).expect("reopen");
        assert_eq!(s.list_logs().expect("list"), vec![("t".to_string(), 2)]);
        let got = scan(&s.open_log("t", 2).expect("open"));
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].1[..], &batch(5, 64)[..]);
        assert_eq!(s.get_meta("m").expect("meta"), Some(b"1".to_vec()));
    }

    #[test]
    fn log_names_round_trip() {
        assert_eq!(
            parse_log_name(&log_name("a.b-c_d", 7)),
            Some(("a.b-c_d".into(), 7))
        );
        assert_eq!(parse_log_name("meta"), None);
    }
}
