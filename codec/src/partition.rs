//! Kafka's default partitioner for keyed records, shared by the broker (which places plain
//! records produced without a partition) and the client, so that a key lands on the same
//! partition whichever side chose it, and whichever Kafka client wrote it.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): MurmurHash2, 32-bit,
/// seed `0x9747b28c`, little-endian 4-byte blocks.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java sign-extends nothing here: it masks each trailing byte with 0xff.
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit.
#[inline]
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition of a keyed record among `partitions` (which must be at least 1).
#[inline]
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    debug_assert!(partitions > 0);
    let n = partitions.max(1) as i64;
    (i64::from(to_positive(murmur2(key))) % n) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// From Apache Kafka's `UtilsTest.testMurmur2`, plus the empty array.
    #[test]
    fn murmur2_matches_kafka_vectors() {
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"", 275_646_681),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn murmur2_covers_every_tail_length() {
        // Vectors of other Kafka clients' test suites (one per remainder length 0..3).
        let cases: [(&[u8], i32); 4] = [
            (b"string-f-24-chars-length", 124_730_809),
            (b"string-fo-25-chars-length", 1_269_511_650),
            (b"string-foo-26-chars-length", 119_165_628),
            (b"string-last-27-chars-length", 1_089_971_754),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input), expected);
        }
    }

    #[test]
    fn partition_for_key_matches_java_default_partitioner() {
        // (murmur2("foobar") & 0x7fffffff) % 50 = 16, as Kafka computes it.
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }

    proptest! {
        #[test]
        fn key_partition_is_stable_and_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), partitions in 1usize..1000) {
            let p = partition_for_key(&key, partitions);
            prop_assert!(p >= 0 && (p as usize) < partitions);
            prop_assert_eq!(p, partition_for_key(&key.clone(), partitions));
            prop_assert_eq!(i64::from(p), i64::from(to_positive(murmur2(&key))) % partitions as i64);
        }
    }
}
