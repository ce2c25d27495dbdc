//! A [`Storage`] that fails on demand, wrapped around another: the storage trait's failing
//! double, for tests of what the broker does when its disk fails (a real disk cannot be made to
//! fail one call at a time).

use super::{BatchLog, Storage, StorageError, StoredIndex};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the double does wrong, switched at any time.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Stores fail with an I/O error.
    pub(crate) fail_puts: AtomicBool,
    /// Stores panic.
    pub(crate) panic_puts: AtomicBool,
    /// Flushes fail with an I/O error.
    pub(crate) fail_flush: AtomicBool,
}

impl Faults {
    fn io(&self, flag: &AtomicBool, what: &str) -> Result<(), StorageError> {
        if flag.load(Ordering::SeqCst) {
            return Err(StorageError::Io(std::io::Error::other(format!(
                "{what}: injected disk failure"
            ))));
        }
        Ok(())
    }

    /// Sets `flag`.
    pub(crate) fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
    }
}

/// `inner`, failing as [`Faults`] say.
#[derive(Debug, Default)]
pub(crate) struct FaultyStorage<S> {
    pub(crate) inner: S,
    pub(crate) faults: Arc<Faults>,
}

/// A log of [`FaultyStorage`].
#[derive(Debug, Clone)]
pub(crate) struct FaultyLog<L> {
    inner: L,
    faults: Arc<Faults>,
}

impl<L: BatchLog> BatchLog for FaultyLog<L> {
    type Buf = L::Buf;

    fn buffer(batch: &[u8]) -> L::Buf {
        L::buffer(batch)
    }

    fn put(&self, base_offset: i64, batch: L::Buf) -> Result<(), StorageError> {
        assert!(
            !self.faults.panic_puts.load(Ordering::SeqCst),
            "injected panic storing the batch at {base_offset}"
        );
        self.faults.io(&self.faults.fail_puts, "put")?;
        self.inner.put(base_offset, batch)
    }

    fn read(&self, from: i64, end: i64, max: usize) -> Result<Vec<Bytes>, StorageError> {
        self.inner.read(from, end, max)
    }

    fn scan_from(
        &self,
        from_base: i64,
        visit: &mut crate::storage::Visit<'_>,
    ) -> Result<(), StorageError> {
        self.inner.scan_from(from_base, visit)
    }

    fn remove(&self, base_offset: i64) -> Result<(), StorageError> {
        self.faults.io(&self.faults.fail_puts, "remove")?;
        self.inner.remove(base_offset)
    }

    fn read_index(&self) -> Result<StoredIndex, StorageError> {
        self.inner.read_index()
    }

    fn rewrite(
        &self,
        replace: &[(i64, Vec<u8>)],
        remove: &[i64],
        index_put: &[(i64, Vec<u8>)],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        self.faults.io(&self.faults.fail_puts, "rewrite")?;
        self.inner.rewrite(replace, remove, index_put, checkpoint)
    }

    fn write_index(
        &self,
        put: &[(i64, Vec<u8>)],
        remove: &[i64],
        checkpoint: &[u8],
    ) -> Result<(), StorageError> {
        self.faults.io(&self.faults.fail_puts, "write_index")?;
        self.inner.write_index(put, remove, checkpoint)
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    type Log = FaultyLog<S::Log>;

    fn open_log(&self, topic: &str, partition: i32) -> Result<Self::Log, StorageError> {
        Ok(FaultyLog {
            inner: self.inner.open_log(topic, partition)?,
            faults: self.faults.clone(),
        })
    }

    fn drop_log(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        self.inner.drop_log(topic, partition)
    }

    fn list_logs(&self) -> Result<Vec<(String, i32)>, StorageError> {
        self.inner.list_logs()
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get_meta(key)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.faults.io(&self.faults.fail_puts, "put_meta")?;
        self.inner.put_meta(key, value)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.faults.io(&self.faults.fail_flush, "flush")?;
        self.inner.flush()
    }
}
