//! An in-memory [`Storage`], for tests of the logic above storage.

use super::{log_name, parse_log_name, BatchLog, Storage, StorageError, StoredIndex};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One partition's batches and index.
#[derive(Debug, Default)]
struct Partition {
    batches: BTreeMap<i64, Bytes>,
    index: BTreeMap<i64, Vec<u8>>,
    checkpoint: Option<Vec<u8>>,
}

type Shared = Arc<Mutex<Partition>>;

/// Storage that keeps everything in memory and forgets it on drop.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    logs: Mutex<BTreeMap<String, Shared>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
}

/// A partition log of [`MemoryStorage`].
#[derive(Debug, Clone)]
pub struct MemoryLog(Shared);

impl BatchLog for MemoryLog {
    type Buf = Vec<u8>;

    fn buffer(batch: &[u8]) -> Vec<u8> {
        batch.to_vec()
    }

    fn put(&self, base_offset: i64, batch: Vec<u8>) -> Result<(), StorageError> {
        self.0
            .lock()
            .batches
            .insert(base_offset, Bytes::from(batch));
        Ok(())
    }

    fn read(&self, from_base: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError> {
        let p = self.0.lock();
        let mut out = Vec::new();
        let mut total = 0;
        if end <= from_base {
            return Ok(out);
        }
        for (_, b) in p.batches.range(from_base..end) {
            if !out.is_empty() && total + b.len() > max_bytes {
                break;
            }
            total += b.len();
            out.push(b.clone());
        }
        Ok(out)
    }

    fn scan_from(
        &self,
        from_base: i64,
        visit: &mut crate::storage::Visit<'_>,
    ) -> Result<(), StorageError> {
        let batches: Vec<(i64, Bytes)> = self
            .0
            .lock()
            .batches
            .range(from_base..)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (base, b) in batches {
            if !visit(base, &b)? {
                break;
            }
        }
        Ok(())
    }

    fn remove(&self, base_offset: i64) -> Result<(), StorageError> {
        self.0.lock().batches.remove(&base_offset);
        Ok(())
    }

    fn read_index(&self) -> Result<StoredIndex, StorageError> {
        let p = self.0.lock();
        Ok((
            p.checkpoint.clone(),
            p.index.iter().map(|(k, v)| (*k, v.clone())).collect(),
        ))
    }

    fn rewrite(
        &self,
        replace: &[(i64, Vec<u8>)],
        remove: &[i64],
        index_put: &[(i64, Vec<u8>)],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        let mut p = self.0.lock();
        for (base, batch) in replace {
            p.batches.insert(*base, Bytes::from(batch.clone()));
        }
        for base in remove {
            p.batches.remove(base);
            p.index.remove(base);
        }
        for (base, entry) in index_put {
            p.index.insert(*base, entry.clone());
        }
        p.checkpoint = Some(checkpoint.to_vec());
        Ok(())
    }

    fn write_index(
        &self,
        put: &[(i64, Vec<u8>)],
        remove: &[i64],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        let mut p = self.0.lock();
        for (base, entry) in put {
            p.index.insert(*base, entry.clone());
        }
        for base in remove {
            p.index.remove(base);
        }
        p.checkpoint = Some(checkpoint.to_vec());
        Ok(())
    }
}

impl Storage for MemoryStorage {
    type Log = MemoryLog;

    fn open_log(&self, topic: &str, partition: i32) -> Result<MemoryLog, StorageError> {
        let mut logs = self.logs.lock();
        Ok(MemoryLog(
            logs.entry(log_name(topic, partition)).or_default().clone(),
        ))
    }

    fn drop_log(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        if let Some(log) = self.logs.lock().remove(&log_name(topic, partition)) {
            *log.lock() = Partition::default();
        }
        Ok(())
    }

    fn list_logs(&self) -> Result<Vec<(String, i32)>, StorageError> {
        Ok(self
            .logs
            .lock()
            .keys()
            .filter_map(|k| parse_log_name(k))
            .collect())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.lock().get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.lock().insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
