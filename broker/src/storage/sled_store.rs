//! [`Storage`] on sled: one database per broker, one tree per partition keyed by the batch's base
//! offset (big-endian, so sled's byte order is offset order), and a `meta` tree.
//!
//! Durability: sled 0.34's `flush` writes its buffers and calls `sync_file_range`, which neither
//! flushes the drive's cache nor the file's metadata, and values too large for a segment are
//! written to `blobs/` files that sled never fsyncs (with 64 KiB batches, most leaves are large
//! enough to become blobs). [`SledStorage::flush`] therefore follows sled's flush with a
//! `syncfs(2)` of the data directory's filesystem: one call that makes the log file, every blob
//! file and their directory entries durable. On a broker's own volume that is exactly its data;
//! on a shared disk it also flushes other writers' dirty pages (correct, possibly slower).

use super::{log_name, parse_log_name, BatchLog, Storage, StorageError};
use bytes::Bytes;
use std::fs::File;
use std::path::Path;

/// Storage in one sled database under the broker's data directory.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    meta: sled::Tree,
    /// An open handle on the data directory's filesystem, for `syncfs`.
    db_file: File,
}

/// A partition log: one sled tree.
#[derive(Debug, Clone)]
pub struct SledLog(sled::Tree);

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
        let db_file = File::open(dir.join("db"))?;
        Ok(Self { db, meta, db_file })
    }
}

impl BatchLog for SledLog {
    type Buf = sled::IVec;

    fn buffer(batch: &[u8]) -> sled::IVec {
        sled::IVec::from(batch)
    }

    fn put(&self, base_offset: i64, batch: sled::IVec) -> Result<(), StorageError> {
        self.0.insert(key(base_offset), batch)?;
        Ok(())
    }

    fn read(&self, from_base: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError> {
        let mut out = Vec::new();
        let mut total = 0;
        if end <= from_base {
            return Ok(out);
        }
        for item in self.0.range(key(from_base)..key(end)) {
            let (_, v) = item?;
            if !out.is_empty() && total + v.len() > max_bytes {
                break;
            }
            total += v.len();
            out.push(ivec_to_bytes(v));
        }
        Ok(out)
    }

    fn scan(&self) -> Result<Vec<(i64, Bytes)>, StorageError> {
        self.0
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((offset_of(&k)?, ivec_to_bytes(v)))
            })
            .collect()
    }

    fn remove(&self, base_offset: i64) -> Result<(), StorageError> {
        self.0.remove(key(base_offset))?;
        Ok(())
    }
}

impl Storage for SledStorage {
    type Log = SledLog;

    fn open_log(&self, topic: &str, partition: i32) -> Result<SledLog, StorageError> {
        Ok(SledLog(self.db.open_tree(log_name(topic, partition))?))
    }

    fn drop_log(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        self.db.drop_tree(log_name(topic, partition))?;
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
        // One syncfs covers the log file, every blob file and the directory entries naming them.
        rustix::fs::syncfs(&self.db_file).map_err(std::io::Error::from)?;
        Ok(())
    }
}
