//! Retention: which batches at the front of a log are deleted. Pure, property-tested.

pub use crate::log::index::BatchMeta;

/// How many batches, from the front, retention deletes. Kafka's rules, applied per batch instead
/// of per segment: a batch goes when its newest record is older than `retention_ms`, or while
/// the log without it still holds at least `retention_bytes`. Negative limits are off. Deletion
/// stops at the first batch that is kept, so the log stays contiguous.
pub fn retention_cut<'a>(
    batches: impl Iterator<Item = &'a BatchMeta>,
    total_size: u64,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> usize {
    let mut remaining = total_size;
    let mut cut = 0;
    for b in batches {
        let expired = retention_ms >= 0 && b.max_timestamp < now_ms.saturating_sub(retention_ms);
        let oversize =
            retention_bytes >= 0 && remaining.saturating_sub(b.size) >= retention_bytes as u64;
        if !(expired || oversize) {
            break;
        }
        remaining -= b.size;
        cut += 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metas(specs: &[(i64, u64)]) -> Vec<BatchMeta> {
        let mut off = 0;
        specs
            .iter()
            .map(|&(ts, size)| {
                let b = BatchMeta {
                    base_offset: off,
                    last_offset: off + 9,
                    max_timestamp: ts,
                    size,
                    producer_id: -1,
                    producer_epoch: -1,
                    base_sequence: -1,
                    records_count: 10,
                };
                off += 10;
                b
            })
            .collect()
    }

    #[test]
    fn time_and_size_limits() {
        let m = metas(&[(100, 10), (200, 10), (300, 10)]);
        assert_eq!(retention_cut(m.iter(), 30, 1000, -1, -1), 0);
        assert_eq!(retention_cut(m.iter(), 30, 1000, 750, -1), 2);
        assert_eq!(retention_cut(m.iter(), 30, 1000, 0, -1), 3);
        assert_eq!(retention_cut(m.iter(), 30, 1000, -1, 15), 1);
        assert_eq!(retention_cut(m.iter(), 30, 1000, -1, 10), 2);
        assert_eq!(retention_cut(m.iter(), 30, 1000, -1, 0), 3);
    }

    proptest! {
        #[test]
        fn retention_keeps_what_its_limits_allow(
            specs in prop::collection::vec((0i64..1000, 1u64..100), 0..50),
            now in 0i64..2000,
            retention_ms in -1i64..1500,
            retention_bytes in -1i64..3000,
        ) {
            let m = metas(&specs);
            let total: u64 = m.iter().map(|b| b.size).sum();
            let cut = retention_cut(m.iter(), total, now, retention_ms, retention_bytes);
            prop_assert!(cut <= m.len());
            let kept: u64 = m[cut..].iter().map(|b| b.size).sum();
            // Every deleted batch was expired or over the size limit when it went.
            let mut remaining = total;
            for b in &m[..cut] {
                let expired = retention_ms >= 0 && b.max_timestamp < now - retention_ms;
                let over = retention_bytes >= 0 && remaining - b.size >= retention_bytes as u64;
                prop_assert!(expired || over);
                remaining -= b.size;
            }
            // The first kept batch is neither.
            if let Some(b) = m.get(cut) {
                let expired = retention_ms >= 0 && b.max_timestamp < now - retention_ms;
                let over = retention_bytes >= 0 && kept - b.size >= retention_bytes as u64;
                prop_assert!(!expired && !over);
            }
            // With a size limit, what is kept is within the limit unless one batch exceeds it.
            if retention_bytes >= 0 && retention_ms < 0 && cut < m.len() {
                prop_assert!(kept - m[cut].size < retention_bytes as u64);
            }
        }
    }
}
