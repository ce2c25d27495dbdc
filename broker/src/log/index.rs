//! The partition index and its checkpoint: what a partition knows of each stored batch without
//! reading it, and the persisted form that lets a restart rebuild the partition's state from
//! the index instead of from every stored batch. Pure: encodings and their checks.
//!
//! A checkpoint is one atomic write of the index entries of the batches made durable since the
//! last one, and a small record with the offset it covers up to and the log start offset.
//! Recovery reads the index entries below that offset, then reads only the batches stored
//! after it (the tail), so its time and memory grow with the data written since the last
//! checkpoint, not with the log's size. The checkpoint also holds a snapshot of the idempotent
//! producers' state at its offset, which the tail's batches bring up to date.

use runnel_codec::BatchHeader;

/// What the partition knows of one stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// First offset of the batch.
    pub base_offset: i64,
    /// Last offset of the batch.
    pub last_offset: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Stored size in bytes.
    pub size: u64,
    /// The idempotent producer that wrote it, or -1.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// Sequence number of its first record.
    pub base_sequence: i32,
    /// Records it holds (fewer than its offsets once compacted).
    pub records_count: i32,
}

impl BatchMeta {
    /// The entry of a stored batch with header `h` and `size` bytes.
    pub fn of(h: &BatchHeader, size: usize) -> Self {
        BatchMeta {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
            size: size as u64,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            records_count: h.records_count,
        }
    }

    /// The offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// Bytes of an encoded index entry (the base offset is its key).
const ENTRY_LEN: usize = 4 + 8 + 4 + 8 + 2 + 4 + 4;
/// Version byte of the checkpoint record before it carried the leader epochs.
const CHECKPOINT_V1: u8 = 1;
/// Version byte of the checkpoint record before it carried the high watermark.
const CHECKPOINT_V2: u8 = 2;
/// Version byte of the checkpoint record.
const CHECKPOINT_VERSION: u8 = 3;

/// A stored index entry or checkpoint that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IndexCorrupt(pub String);

/// Encodes an entry's value (everything but the base offset, its key).
pub fn encode_entry(m: &BatchMeta) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    let mut at = 0;
    let mut put = |b: &[u8]| {
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&((m.last_offset - m.base_offset) as i32).to_be_bytes());
    put(&m.max_timestamp.to_be_bytes());
    put(&(m.size.min(u64::from(u32::MAX)) as u32).to_be_bytes());
    put(&m.producer_id.to_be_bytes());
    put(&m.producer_epoch.to_be_bytes());
    put(&m.base_sequence.to_be_bytes());
    put(&m.records_count.to_be_bytes());
    out
}

/// Decodes the entry of the batch at `base_offset`.
pub fn decode_entry(base_offset: i64, b: &[u8]) -> Result<BatchMeta, IndexCorrupt> {
    let b: &[u8; ENTRY_LEN] = b.try_into().map_err(|_| {
        IndexCorrupt(format!(
            "index entry at offset {base_offset} has {} bytes, expected {ENTRY_LEN}",
            b.len()
        ))
    })?;
    let i32_at = |i: usize| i32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let i64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        i64::from_be_bytes(a)
    };
    let delta = i32_at(0);
    if delta < 0 {
        return Err(IndexCorrupt(format!(
            "index entry at offset {base_offset} has a negative last offset delta {delta}"
        )));
    }
    Ok(BatchMeta {
        base_offset,
        last_offset: base_offset + i64::from(delta),
        max_timestamp: i64_at(4),
        size: u64::from(u32::from_be_bytes([b[12], b[13], b[14], b[15]])),
        producer_id: i64_at(16),
        producer_epoch: i16::from_be_bytes([b[24], b[25]]),
        base_sequence: i32_at(26),
        records_count: i32_at(30),
    })
}

/// The checkpoint record of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Every stored batch below this offset has its entry in the index; recovery reads the
    /// batches from here on.
    pub end_offset: i64,
    /// The log start offset: batches below it are deleted (by retention), also when a crash
    /// interrupted the deletion.
    pub log_start_offset: i64,
    /// Compaction has cleaned the log below this offset: what is above it, up to `end_offset`,
    /// is its dirty part.
    pub cleaned_offset: i64,
    /// The high watermark when the checkpoint was taken, at most `end_offset`: a follower's
    /// copy is checkpointed up to its own durable end, which may be past what is committed.
    /// `end_offset` in a version 1 or 2 record, which were taken at the high watermark.
    pub high_watermark: i64,
    /// The leader epochs of the batches below `end_offset`: (epoch, offset of its first batch),
    /// ascending (Kafka's leader-epoch checkpoint). Empty in a version 1 record.
    pub epochs: Vec<(i32, i64)>,
    /// The idempotent producers' state at `end_offset`, encoded by the log.
    pub producers: Vec<u8>,
}

impl Checkpoint {
    /// Its stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(37 + 12 * self.epochs.len() + self.producers.len());
        v.push(CHECKPOINT_VERSION);
        v.extend_from_slice(&self.end_offset.to_be_bytes());
        v.extend_from_slice(&self.log_start_offset.to_be_bytes());
        v.extend_from_slice(&self.cleaned_offset.to_be_bytes());
        v.extend_from_slice(&self.high_watermark.to_be_bytes());
        v.extend_from_slice(&(self.epochs.len() as u32).to_be_bytes());
        for (epoch, start) in &self.epochs {
            v.extend_from_slice(&epoch.to_be_bytes());
            v.extend_from_slice(&start.to_be_bytes());
        }
        v.extend_from_slice(&self.producers);
        v
    }

    /// Reads a stored checkpoint.
    pub fn decode(b: &[u8]) -> Result<Self, IndexCorrupt> {
        let i64_at = |rest: &[u8], i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&rest[i..i + 8]);
            i64::from_be_bytes(a)
        };
        match b {
            [version @ (CHECKPOINT_V1 | CHECKPOINT_V2 | CHECKPOINT_VERSION), rest @ ..] => {
                // The fixed fields: end, log start, cleaned offset, and from version 3 the
                // high watermark.
                let fixed = if *version == CHECKPOINT_VERSION {
                    32
                } else {
                    24
                };
                if rest.len() < fixed {
                    return Err(IndexCorrupt(format!(
                        "checkpoint record of {} bytes is too short for version {version}",
                        b.len()
                    )));
                }
                let mut at = fixed;
                let mut epochs = Vec::new();
                if *version != CHECKPOINT_V1 {
                    let count = rest
                        .get(at..at + 4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
                        .ok_or_else(|| {
                            IndexCorrupt("checkpoint record without its epochs".into())
                        })?;
                    at += 4;
                    if rest.len() < at + 12 * count {
                        return Err(IndexCorrupt(format!(
                            "checkpoint record of {} bytes is too short for its {count} epochs",
                            b.len()
                        )));
                    }
                    for _ in 0..count {
                        let e = &rest[at..at + 4];
                        epochs.push((
                            i32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                            i64_at(rest, at + 4),
                        ));
                        at += 12;
                    }
                }
                let end_offset = i64_at(rest, 0);
                Ok(Checkpoint {
                    end_offset,
                    log_start_offset: i64_at(rest, 8),
                    cleaned_offset: i64_at(rest, 16),
                    high_watermark: if *version == CHECKPOINT_VERSION {
                        i64_at(rest, 24)
                    } else {
                        end_offset
                    },
                    epochs,
                    producers: rest[at..].to_vec(),
                })
            }
            _ => Err(IndexCorrupt(format!(
                "checkpoint record of {} bytes (version {:?}) is not one this broker reads",
                b.len(),
                b.first()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_and_checkpoints_round_trip(
            base in 0i64..i64::MAX / 2,
            delta in 0i32..i32::MAX,
            ts in any::<i64>(),
            size in 0u64..u64::from(u32::MAX),
            pid in any::<i64>(),
            epoch in any::<i16>(),
            seq in any::<i32>(),
            count in any::<i32>(),
            end in any::<i64>(),
            start in any::<i64>(),
            cleaned in any::<i64>(),
            epochs in proptest::collection::vec((any::<i32>(), any::<i64>()), 0..5),
        ) {
            let m = BatchMeta {
                base_offset: base,
                last_offset: base + i64::from(delta),
                max_timestamp: ts,
                size,
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
                records_count: count,
            };
            prop_assert_eq!(decode_entry(base, &encode_entry(&m)), Ok(m));
            let c = Checkpoint { end_offset: end, log_start_offset: start, cleaned_offset: cleaned, high_watermark: end / 2, epochs, producers: vec![1, 2, 3] };
            prop_assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn damaged_records_are_refused() {
        assert!(decode_entry(0, &[0; 5]).is_err());
        assert!(Checkpoint::decode(&[9; 25]).is_err());
        // A version 1 record (before epochs) still reads, with no epochs.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&[0; 24]);
        v1.extend_from_slice(&[7, 7]);
        let c = Checkpoint::decode(&v1).expect("v1");
        assert_eq!((c.epochs.len(), c.producers), (0, vec![7, 7]));
        // A version 2 record (before the high watermark) reads it as the end offset.
        let mut v2 = vec![2u8];
        v2.extend_from_slice(&9i64.to_be_bytes());
        v2.extend_from_slice(&[0; 16]);
        v2.extend_from_slice(&1u32.to_be_bytes());
        v2.extend_from_slice(&3i32.to_be_bytes());
        v2.extend_from_slice(&4i64.to_be_bytes());
        let c = Checkpoint::decode(&v2).expect("v2");
        assert_eq!(
            (c.end_offset, c.high_watermark, c.epochs),
            (9, 9, vec![(3, 4)])
        );
        assert!(
            Checkpoint::decode(&[3u8; 30]).is_err(),
            "a version 3 record needs 32 bytes"
        );
        let mut short = vec![2u8];
        short.extend_from_slice(&[0; 24]);
        short.extend_from_slice(&5u32.to_be_bytes());
        assert!(Checkpoint::decode(&short).is_err());
        assert!(Checkpoint::decode(&[1; 20]).is_err());
        assert!(Checkpoint::decode(&[]).is_err());
    }
}
