//! Committed offsets as records of `__consumer_offsets`, in Kafka's own binary layout, so that
//! the topic reads the same as Kafka's to a tool that knows it:
//!
//! ```text
//! key   (OffsetCommitKey, version 1): version i16 | group string | topic string | partition i32
//! value (OffsetCommitValue, version 3): version i16 | offset i64 | leader_epoch i32 |
//!                                       metadata string | commit_timestamp i64
//! string: length i16 | UTF-8 bytes
//! ```
//!
//! A record without a value (a tombstone) deletes the offset; the topic is compacted, so it
//! keeps the last record per key and stays as large as the offsets it holds. Sans-io.

use super::assignor::TopicPartition;

/// The key version of an offset commit (Kafka's `OffsetCommitKey` v1).
const KEY_VERSION: i16 = 1;
/// The value version written (Kafka's `OffsetCommitValue` v3).
const VALUE_VERSION: i16 = 3;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The offset of the next record to consume.
    pub offset: i64,
    /// The leader epoch the consumer saw; -1 when unknown.
    pub leader_epoch: i32,
    /// Free text from the consumer.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp_ms: i64,
}

/// A record of `__consumer_offsets` read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    /// An offset committed (`Some`) or deleted (`None`).
    Commit {
        /// The group.
        group: String,
        /// The topic and partition.
        partition: TopicPartition,
        /// The offset, or none for a tombstone.
        value: Option<Committed>,
    },
    /// A record of another kind (Kafka's group metadata records): skipped.
    Other,
}

/// A key or value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an offset record cannot be read: {0}")]
pub struct OffsetRecordError(String);

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    out.extend_from_slice(&(len as i16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

/// The key of `group`'s offset of `topic`/`partition`.
pub fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + group.len() + topic.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

/// The value of a committed offset.
pub fn encode_value(c: &Committed) -> Vec<u8> {
    let mut out = Vec::with_capacity(26 + c.metadata.len());
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    put_str(&mut out, &c.metadata);
    out.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], OffsetRecordError> {
        if self.0.len() < N {
            return Err(OffsetRecordError(format!("{what} is cut short")));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        Ok(a)
    }
    fn i16(&mut self, what: &str) -> Result<i16, OffsetRecordError> {
        self.take::<2>(what).map(i16::from_be_bytes)
    }
    fn i32(&mut self, what: &str) -> Result<i32, OffsetRecordError> {
        self.take::<4>(what).map(i32::from_be_bytes)
    }
    fn i64(&mut self, what: &str) -> Result<i64, OffsetRecordError> {
        self.take::<8>(what).map(i64::from_be_bytes)
    }
    fn string(&mut self, what: &str) -> Result<String, OffsetRecordError> {
        let len = self.i16(what)?;
        let len = usize::try_from(len)
            .map_err(|_| OffsetRecordError(format!("{what} has length {len}")))?;
        if self.0.len() < len {
            return Err(OffsetRecordError(format!("{what} is cut short")));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(head.to_vec())
            .map_err(|_| OffsetRecordError(format!("{what} is not UTF-8")))
    }
}

/// Reads one record of `__consumer_offsets`.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<OffsetRecord, OffsetRecordError> {
    let mut k = Reader(key);
    let version = k.i16("the key version")?;
    if !(0..=1).contains(&version) {
        return Ok(OffsetRecord::Other);
    }
    let group = k.string("the group")?;
    let topic = k.string("the topic")?;
    let partition = k.i32("the partition")?;
    let value = match value {
        None => None,
        Some(v) => {
            let mut v = Reader(v);
            let version = v.i16("the value version")?;
            let offset = v.i64("the offset")?;
            let leader_epoch = if version >= 3 {
                v.i32("the leader epoch")?
            } else {
                -1
            };
            let metadata = v.string("the metadata")?;
            let commit_timestamp_ms = v.i64("the commit timestamp")?;
            Some(Committed {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            })
        }
    };
    Ok(OffsetRecord::Commit {
        group,
        partition: (topic, partition),
        value,
    })
}

/// Where a reset moves offsets to (Kafka's `--to-earliest`, `--to-latest`, `--to-datetime`,
/// `--to-offset`, `--shift-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset at or after this timestamp (ms since the epoch).
    Timestamp(i64),
    /// This offset.
    Offset(i64),
    /// The committed offset moved by this many records.
    ShiftBy(i64),
}

/// What a reset needs to know of a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRange {
    /// Its first offset.
    pub log_start_offset: i64,
    /// Its high watermark.
    pub high_watermark: i64,
    /// For a timestamp reset: the first offset at or after the time, if any.
    pub at_time: Option<i64>,
}

/// The offset a reset commits: always inside the log, as Kafka's tool clamps it. A shift of a
/// partition with nothing committed starts from the log start.
pub fn reset_target(to: ResetTo, previous: i64, r: LogRange) -> i64 {
    let (start, end) = (r.log_start_offset, r.high_watermark.max(r.log_start_offset));
    let clamp = |o: i64| o.clamp(start, end);
    match to {
        ResetTo::Earliest => start,
        ResetTo::Latest => end,
        ResetTo::Timestamp(_) => r.at_time.map_or(end, clamp),
        ResetTo::Offset(o) => clamp(o),
        ResetTo::ShiftBy(n) => clamp(if previous < 0 { start } else { previous }.saturating_add(n)),
    }
}

/// The partition of `__consumer_offsets` that holds `group`: Kafka's
/// `abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16.
pub fn partition_for_group(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let h = if h == i32::MIN { 0 } else { h.abs() };
    h % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_match_kafkas_layout() {
        let k = encode_key("g", "t", 3);
        assert_eq!(k, vec![0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
    }

    #[test]
    fn group_partitions_match_kafka() {
        // Java: "my-group".hashCode() == 1_226_427_573 (computed by hand from the definition).
        let mut h: i32 = 0;
        for c in "my-group".chars() {
            h = h.wrapping_mul(31).wrapping_add(c as i32);
        }
        assert_eq!(partition_for_group("my-group", 50), h.abs() % 50);
        assert_eq!(partition_for_group("", 50), 0);
        for g in ["a", "orders-consumers", "ünïcode"] {
            assert!((0..50).contains(&partition_for_group(g, 50)));
        }
    }

    #[test]
    fn resets_stay_inside_the_log() {
        let r = LogRange {
            log_start_offset: 10,
            high_watermark: 100,
            at_time: Some(40),
        };
        assert_eq!(reset_target(ResetTo::Earliest, 50, r), 10);
        assert_eq!(reset_target(ResetTo::Latest, 50, r), 100);
        assert_eq!(reset_target(ResetTo::Timestamp(0), 50, r), 40);
        let none = LogRange { at_time: None, ..r };
        assert_eq!(reset_target(ResetTo::Timestamp(0), 50, none), 100);
        assert_eq!(reset_target(ResetTo::Offset(5), 50, r), 10);
        assert_eq!(reset_target(ResetTo::Offset(500), 50, r), 100);
        assert_eq!(reset_target(ResetTo::ShiftBy(-20), 50, r), 30);
        assert_eq!(reset_target(ResetTo::ShiftBy(-200), 50, r), 10);
        assert_eq!(reset_target(ResetTo::ShiftBy(5), -1, r), 15);
    }

    #[test]
    fn tombstones_and_other_records_decode() {
        let key = encode_key("g", "t", 0);
        assert_eq!(
            decode(&key, None).expect("decode"),
            OffsetRecord::Commit {
                group: "g".into(),
                partition: ("t".into(), 0),
                value: None
            }
        );
        // Group metadata key (version 2): not an offset.
        assert_eq!(
            decode(&[0, 2, 0, 1, b'g'], Some(&[0, 3])).expect("decode"),
            OffsetRecord::Other
        );
        assert!(decode(&[0, 1, 0, 9, b'g'], None).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(
            group in "\\PC{0,40}",
            topic in "[a-z._-]{1,40}",
            partition in 0..10_000i32,
            offset in 0..i64::MAX,
            leader_epoch in -1..1000i32,
            metadata in "\\PC{0,20}",
            ts in 0..i64::MAX,
        ) {
            let c = Committed { offset, leader_epoch, metadata, commit_timestamp_ms: ts };
            let r = decode(&encode_key(&group, &topic, partition), Some(&encode_value(&c)));
            prop_assert_eq!(
                r,
                Ok(OffsetRecord::Commit { group, partition: (topic, partition), value: Some(c) })
            );
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(key in proptest::collection::vec(any::<u8>(), 0..40),
                                            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))) {
            let _ = decode(&key, value.as_deref());
        }
    }
}
