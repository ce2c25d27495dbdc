//! [`Storage`] on sled: one database per broker, one tree per partition keyed by the batch's base
//! offset (big-endian, so sled's byte order is offset order), and a `meta` tree.
//!
//! Durability: sled 0.34's `flush` writes its buffers but never calls `fsync`, and values too
//! large for a segment are written to `blobs/` files that it never syncs (with 64 KiB batches,
//! most leaves are large enough to become blobs). [`SledStorage::flush`] therefore follows
//! sled's flush with an `fsync` of each file sled wrote since the last flush and of the
//! directories naming new ones ([`super::file_sync`]).

use super::file_sync::FileSync;
use super::{index_name, log_name, parse_log_name, BatchLog, Storage, StorageError};
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs::File;
use std::path::Path;

/// Storage in one sled database under the broker's data directory.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    meta: sled::Tree,
    /// Syncs the files sled writes; one flush at a time.
    files: Mutex<FileSync>,
}

/// A partition log: a sled tree of batches and one of its index.
#[derive(Debug, Clone)]
pub struct SledLog {
    batches: sled::Tree,
    index: sled::Tree,
}

/// The index tree's key of the checkpoint record; it sorts before every entry's.
const CHECKPOINT_KEY: &[u8] = b"";

fn key(offset: i64) -> [u8; 8] {
    (offset.max(0) as u64).to_be_bytes()
}

fn offset_of(key: &[u8]) -> Result<i64, StorageError> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("batch key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(arr) as i64)
}

/// sled's own buffer as `Bytes`, without a copy (sled hands out reference-counted buffers).
fn ivec_to_bytes(v: sled::IVec) -> Bytes {
    Bytes::from_owner(v)
}

impl SledStorage {
    /// Opens (creating when missing) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache(dir, 256 << 20)
    }

    /// Opens with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // The broker decides when to flush (group commit); no background timer.
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree("meta")?;
        let files = FileSync::start(dir, &["blobs"], File::open(dir.join("db"))?)?;
        Ok(Self {
            db,
            meta,
            files: Mutex::new(files),
        })
    }
}

impl BatchLog for SledLog {
    type Buf = sled::IVec;

    fn buffer(batch: &[u8]) -> sled::IVec {
        sled::IVec::from(batch)
    }

    fn put(&self, base_offset: i64, batch: sled::IVec) -> Result<(), StorageError> {
        self.batches.insert(key(base_offset), batch)?;
        Ok(())
    }

    fn read(&self, from_base: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError> {
        let mut out = Vec::new();
        let mut total = 0;
        if end <= from_base {
            return Ok(out);
        }
        for item in self.batches.range(key(from_base)..key(end)) {
            let (_, v) = item?;
            if !out.is_empty() && total + v.len() > max_bytes {
                break;
            }
            total += v.len();
            out.push(ivec_to_bytes(v));
        }
        Ok(out)
    }

    fn scan_from(
        &self,
        from_base: i64,
        visit: &mut crate::storage::Visit<'_>,
    ) -> Result<(), StorageError> {
        for item in self.batches.range(key(from_base)..) {
            let (k, v) = item?;
            if !visit(offset_of(&k)?, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn remove(&self, base_offset: i64) -> Result<(), StorageError> {
        self.batches.remove(key(base_offset))?;
        Ok(())
    }

    fn read_index(&self) -> Result<super::StoredIndex, StorageError> {
        let checkpoint = self.index.get(CHECKPOINT_KEY)?.map(|v| v.to_vec());
        let entries = self
            .index
            .range(key(0)..)
            .map(|item| {
                let (k, v) = item?;
                Ok((offset_of(&k)?, v.to_vec()))
            })
            .collect::<Result<_, StorageError>>()?;
        Ok((checkpoint, entries))
    }

    fn rewrite(
        &self,
        replace: &[(i64, Vec<u8>)],
        remove: &[i64],
        index_put: &[(i64, Vec<u8>)],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        (&self.batches, &self.index)
            .transaction(|(batches, index)| {
                for (base, batch) in replace {
                    batches.insert(&key(*base), batch.as_slice())?;
                }
                for base in remove {
                    batches.remove(&key(*base))?;
                    index.remove(&key(*base))?;
                }
                for (base, entry) in index_put {
                    index.insert(&key(*base), entry.as_slice())?;
                }
                index.insert(CHECKPOINT_KEY, checkpoint)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StorageError::Sled(e),
                TransactionError::Abort(()) => {
                    StorageError::Corrupt("a cleaning pass's rewrite was aborted".into())
                }
            })
    }

    fn write_index(
        &self,
        put: &[(i64, Vec<u8>)],
        remove: &[i64],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (base, entry) in put {
            batch.insert(&key(*base), entry.as_slice());
        }
        for base in remove {
            batch.remove(&key(*base));
        }
        batch.insert(CHECKPOINT_KEY, checkpoint);
        self.index.apply_batch(batch)?;
        Ok(())
    }
}

impl Storage for SledStorage {
    type Log = SledLog;

    fn open_log(&self, topic: &str, partition: i32) -> Result<SledLog, StorageError> {
        Ok(SledLog {
            batches: self.db.open_tree(log_name(topic, partition))?,
            index: self.db.open_tree(index_name(topic, partition))?,
        })
    }

    fn drop_log(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        self.db.drop_tree(log_name(topic, partition))?;
        self.db.drop_tree(index_name(topic, partition))?;
        Ok(())
    }

    fn list_logs(&self) -> Result<Vec<(String, i32)>, StorageError> {
        Ok(self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| std::str::from_utf8(n).ok().and_then(parse_log_name))
            .collect())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        // Under the lock: a flush that finds no new file must still wait for the one syncing
        // the files that its own writes may depend on.
        self.files.lock().sync()?;
        Ok(())
    }
}
