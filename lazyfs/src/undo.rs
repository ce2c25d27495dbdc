//! What a file's durable content is, kept as an undo log over its live content.
//!
//! The live content of a file is the backing file itself. Its durable content is the live
//! content rolled back to the file's last fsync: the file cut to the size it had then, and every
//! byte overwritten since (inside that size) put back. [`UndoLog`] holds exactly that: the
//! durable size, and the pre-image of each byte the first time it is overwritten, truncated
//! away or punched out after the last fsync. Bytes beyond the durable size need no pre-image:
//! a rollback cuts them off. An fsync therefore costs nothing but dropping the pre-images, and a
//! file that only grows (a log) never needs one.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

/// The durable size of one file and the pre-images of the bytes changed since its last fsync.
///
/// Pre-images never overlap: a byte's first pre-image after an fsync is its durable value, and
/// later writes to the same byte change only the live content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndoLog {
    durable_size: u64,
    /// Pre-images keyed by their offset in the file; no two overlap.
    preimages: BTreeMap<u64, Vec<u8>>,
    saved_bytes: u64,
}

impl UndoLog {
    /// A file whose live content is durable as it is, `durable_size` bytes long.
    pub fn new(durable_size: u64) -> Self {
        Self {
            durable_size,
            preimages: BTreeMap::new(),
            saved_bytes: 0,
        }
    }

    /// The size the file has after a power cut.
    pub fn durable_size(&self) -> u64 {
        self.durable_size
    }

    /// How many bytes of pre-images are held (memory the log costs until the next fsync).
    pub fn saved_bytes(&self) -> u64 {
        self.saved_bytes
    }

    /// Whether a power cut would leave the live content as it is, given the file's live size.
    pub fn is_clean(&self, live_size: u64) -> bool {
        self.preimages.is_empty() && live_size == self.durable_size
    }

    /// The parts of `range` whose durable bytes are still live and have no pre-image yet, that
    /// is, what must be saved before `range` is overwritten, truncated or punched.
    pub fn missing(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let end = range.end.min(self.durable_size);
        let mut cursor = range.start;
        let mut gaps = Vec::new();
        if cursor >= end {
            return gaps;
        }
        // The pre-image that starts before `cursor` may still reach into the range.
        let first = self
            .preimages
            .range(..=cursor)
            .next_back()
            .map_or(cursor, |(&start, _)| start);
        for (&start, bytes) in self.preimages.range(first..end) {
            let stop = start + bytes.len() as u64;
            if stop <= cursor {
                continue;
            }
            if start > cursor {
                gaps.push(cursor..start);
            }
            cursor = stop;
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            gaps.push(cursor..end);
        }
        gaps
    }

    /// Saves the durable bytes of `range` that have no pre-image yet, reading each missing part
    /// with `read(offset, buffer)` (which fills the whole buffer, with zeros past the live end).
    ///
    /// Call it before the live bytes of `range` change.
    pub fn preserve(
        &mut self,
        range: Range<u64>,
        mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        for gap in self.missing(range) {
            let len = usize::try_from(gap.end - gap.start).map_err(io::Error::other)?;
            let mut bytes = vec![0; len];
            read(gap.start, &mut bytes)?;
            self.saved_bytes += bytes.len() as u64;
            self.preimages.insert(gap.start, bytes);
        }
        Ok(())
    }

    /// Makes the live content durable: it is `live_size` bytes long and nothing is rolled back.
    pub fn sync(&mut self, live_size: u64) {
        self.durable_size = live_size;
        self.preimages.clear();
        self.saved_bytes = 0;
    }

    /// The pre-images, by offset: writing them back over the live content cut (or extended) to
    /// [`durable_size`](Self::durable_size) gives the durable content.
    pub fn preimages(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.preimages
            .iter()
            .map(|(&offset, bytes)| (offset, bytes.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file kept in memory with its undo log, as the filesystem keeps a backing file.
    #[derive(Debug, Default)]
    struct Model {
        live: Vec<u8>,
        durable: Vec<u8>,
        undo: UndoLog,
    }

    impl Model {
        fn read(live: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<()> {
            buf.fill(0);
            let start = (offset as usize).min(live.len());
            let end = (start + buf.len()).min(live.len());
            buf[..end - start].copy_from_slice(&live[start..end]);
            Ok(())
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            let end = offset + data.len() as u64;
            let live = &self.live;
            self.undo
                .preserve(offset..end, |at, buf| Self::read(live, at, buf))
                .expect("reading memory does not fail");
            if self.live.len() < end as usize {
                self.live.resize(end as usize, 0);
            }
            self.live[offset as usize..end as usize].copy_from_slice(data);
        }

        fn truncate(&mut self, size: u64) {
            let live = &self.live;
            self.undo
                .preserve(size..u64::MAX, |at, buf| Self::read(live, at, buf))
                .expect("reading memory does not fail");
            self.live.resize(size as usize, 0);
        }

        fn fsync(&mut self) {
            self.undo.sync(self.live.len() as u64);
            self.durable = self.live.clone();
        }

        /// What the filesystem does to a backing file on a power cut.
        fn rolled_back(&self) -> Vec<u8> {
            let mut content = self.live.clone();
            content.resize(self.undo.durable_size() as usize, 0);
            for (offset, bytes) in self.undo.preimages() {
                let start = offset as usize;
                content[start..start + bytes.len()].copy_from_slice(bytes);
            }
            content
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Fsync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300, proptest::collection::vec(any::<u8>(), 1..64))
                .prop_map(|(offset, data)| Op::Write(offset, data)),
            1 => (0u64..300).prop_map(Op::Truncate),
            1 => Just(Op::Fsync),
        ]
    }

    proptest! {
        #[test]
        fn rollback_gives_the_content_of_the_last_fsync(
            initial in proptest::collection::vec(any::<u8>(), 0..200),
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let mut model = Model {
                live: initial.clone(),
                durable: initial.clone(),
                undo: UndoLog::new(initial.len() as u64),
            };
            for op in ops {
                match op {
                    Op::Write(offset, data) => model.write(offset, &data),
                    Op::Truncate(size) => model.truncate(size),
                    Op::Fsync => model.fsync(),
                }
                prop_assert_eq!(model.rolled_back(), model.durable.clone());
                // A byte is saved at most once per fsync.
                prop_assert!(model.undo.saved_bytes() <= model.undo.durable_size());
            }
        }
    }

    fn gap(start: u64, end: u64) -> Range<u64> {
        Range { start, end }
    }

    #[test]
    fn appends_need_no_preimage() {
        let mut undo = UndoLog::new(10);
        assert!(undo.missing(10..100).is_empty());
        assert_eq!(undo.missing(5..100), vec![gap(5, 10)]);
        undo.preserve(5..100, |_, buf| {
            buf.fill(7);
            Ok(())
        })
        .expect("preserve");
        assert_eq!(undo.missing(0..100), vec![gap(0, 5)]);
        assert_eq!(undo.saved_bytes(), 5);
        undo.preserve(0..3, |_, buf| {
            buf.fill(1);
            Ok(())
        })
        .expect("preserve");
        assert_eq!(undo.missing(0..100), vec![gap(3, 5)]);
        undo.sync(100);
        assert_eq!(undo.missing(0..100), vec![gap(0, 100)]);
    }
}
