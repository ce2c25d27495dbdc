//! Log compaction, as Kafka's log cleaner does it: what one cleaning pass keeps. Pure and
//! property-tested; [`crate::log`] reads and rewrites the batches around it.
//!
//! A pass covers the cleanable part of a partition: from its log start offset to its last
//! checkpoint (everything there is durable and below the high watermark). The part written
//! since the last pass is *dirty*; the pass runs once the dirty part is at least
//! `min.cleanable.dirty.ratio` of the cleanable part. It maps each key of the dirty part to its
//! latest offset, then keeps a record when no later record of its key is in that map, drops
//! records without a key, and drops tombstones (null values) older than `delete.retention.ms`.
//! Offsets never change and records never move: a batch keeps its offsets and loses records,
//! and a batch left with none goes, unless it is the last batch of its producer, whose sequence
//! numbers the broker must remember.

use std::collections::HashMap;

/// The most distinct keys one pass maps; a dirty part with more is cleaned in several passes.
pub const MAX_KEYS_PER_PASS: usize = 1 << 20;

/// The latest offset of each key in the dirty part of a partition.
#[derive(Debug)]
pub struct KeyMap {
    latest: HashMap<Vec<u8>, i64>,
    max_keys: usize,
}

impl Default for KeyMap {
    fn default() -> Self {
        Self::with_limit(MAX_KEYS_PER_PASS)
    }
}

impl KeyMap {
    /// A map of at most `max_keys` keys.
    pub fn with_limit(max_keys: usize) -> Self {
        Self {
            latest: HashMap::new(),
            max_keys,
        }
    }

    /// Notes a record of the dirty part; false once the map is full and the key is new (the
    /// pass then ends before this record's batch).
    pub fn note(&mut self, key: &[u8], offset: i64) -> bool {
        if let Some(latest) = self.latest.get_mut(key) {
            *latest = (*latest).max(offset);
            return true;
        }
        if self.latest.len() >= self.max_keys {
            return false;
        }
        self.latest.insert(key.to_vec(), offset);
        true
    }

    /// Keys mapped.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no key is mapped.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// The latest offset of `key` in the dirty part.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }
}

/// One record as the cleaner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its offset.
    pub offset: i64,
    /// Its key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Whether its value is null.
    pub tombstone: bool,
    /// Its timestamp.
    pub timestamp: i64,
}

/// Whether a pass keeps `record` of the part it cleans (everything below the end of the map's
/// dirty part). `now_ms` and `delete_retention_ms` decide for tombstones.
pub fn keeps(record: &Candidate<'_>, map: &KeyMap, now_ms: i64, delete_retention_ms: i64) -> bool {
    let Some(key) = record.key else {
        return false;
    };
    if map.latest(key).is_some_and(|latest| record.offset < latest) {
        return false;
    }
    !(record.tombstone && now_ms.saturating_sub(record.timestamp) > delete_retention_ms)
}

/// Whether a partition is due for a pass: its dirty part (`dirty_bytes`) is at least
/// `min_ratio` of its cleanable part (`cleanable_bytes`).
pub fn due(dirty_bytes: u64, cleanable_bytes: u64, min_ratio: f64) -> bool {
    dirty_bytes > 0 && dirty_bytes as f64 >= min_ratio * cleanable_bytes as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (key, tombstone, timestamp) per offset, from offset 0.
    fn records() -> impl Strategy<Value = Vec<(Option<u8>, bool, i64)>> {
        prop::collection::vec(
            (
                prop::option::weighted(0.95, 0u8..8),
                any::<bool>(),
                0i64..100,
            ),
            0..200,
        )
    }

    proptest! {
        /// Over a whole log whose dirty part starts at `clean_end`, a pass keeps exactly, for
        /// each key, its latest record (unless that is an expired tombstone), as long as the
        /// clean part held at most one record per key (what earlier passes leave).
        #[test]
        fn a_pass_keeps_the_latest_record_of_each_key(
            log in records(),
            split in 0usize..200,
            now in 0i64..200,
            delete_retention in 0i64..100,
        ) {
            let split = split.min(log.len());
            // Make the clean part look cleaned: one record per key, its latest.
            let mut clean: Vec<(i64, Option<u8>, bool, i64)> = Vec::new();
            for (o, r) in log[..split].iter().enumerate() {
                if let Some(k) = r.0 {
                    clean.retain(|c| c.1 != Some(k));
                    clean.push((o as i64, Some(k), r.1, r.2));
                }
            }
            let dirty: Vec<(i64, Option<u8>, bool, i64)> = log[split..]
                .iter()
                .enumerate()
                .map(|(i, r)| ((split + i) as i64, r.0, r.1, r.2))
                .collect();
            let mut map = KeyMap::default();
            for (o, k, _, _) in &dirty {
                if let Some(k) = k {
                    prop_assert!(map.note(&[*k], *o));
                }
            }
            let all: Vec<_> = clean.iter().chain(&dirty).copied().collect();
            let kept: Vec<i64> = all
                .iter()
                .filter(|(o, k, t, ts)| {
                    let key = k.map(|k| [k]);
                    keeps(
                        &Candidate { offset: *o, key: key.as_ref().map(|k| &k[..]), tombstone: *t, timestamp: *ts },
                        &map,
                        now,
                        delete_retention,
                    )
                })
                .map(|r| r.0)
                .collect();
            // The model: the latest record of each key, if it is not an expired tombstone.
            let mut latest: HashMap<u8, (i64, bool, i64)> = HashMap::new();
            for (o, k, t, ts) in &all {
                if let Some(k) = k {
                    latest.insert(*k, (*o, *t, *ts));
                }
            }
            let mut expected: Vec<i64> = latest
                .values()
                .filter(|(_, t, ts)| !(*t && now - ts > delete_retention))
                .map(|(o, _, _)| *o)
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(kept, expected);
        }
    }

    #[test]
    fn due_at_the_ratio_and_never_when_clean() {
        assert!(due(50, 100, 0.5));
        assert!(!due(49, 100, 0.5));
        assert!(!due(0, 100, 0.0));
        assert!(due(1, 100, 0.0));
    }

    #[test]
    fn a_full_map_refuses_new_keys_only() {
        let mut map = KeyMap::with_limit(100);
        for i in 0..100u32 {
            assert!(map.note(&i.to_be_bytes(), i64::from(i)));
        }
        assert!(
            map.note(&0u32.to_be_bytes(), 1 << 40),
            "a known key still updates"
        );
        assert_eq!(map.latest(&0u32.to_be_bytes()), Some(1 << 40));
        assert!(!map.note(b"new", 5));
        assert_eq!(map.len(), 100);
    }
}
