//! Choosing a partition: Kafka's default partitioner.
//!
//! Keyed records go to `(murmur2(key) & 0x7fffffff) % partitions`, byte-compatible with the Java
//! client's `Utils.murmur2`, so a key lands on the same partition whichever client wrote it.
//! Records without a key stick to one partition until its batch is shipped (KIP-480), then move
//! on, which keeps batches full without skewing load over time.

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

/// A tiny xorshift generator for sticky-partition choice and benchmark payloads: good enough
/// to spread load, no dependency, no syscalls.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock and an address, so two producers started together differ.
    pub(crate) fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x2545_f491_4f6c_dd1d);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        Self::new(nanos ^ addr.rotate_left(32))
    }

    pub(crate) fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (n ≥ 1).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The sticky choice for records without a key: a partition other than `previous` (when there
/// is more than one), picked at random.
pub(crate) fn next_sticky(rng: &mut XorShift, partitions: usize, previous: Option<i32>) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    match previous {
        Some(prev) if (prev as usize) < partitions => {
            // Uniform over the other partitions.
            let step = 1 + rng.below(partitions - 1);
            ((prev as usize + step) % partitions) as i32
        }
        _ => rng.below(partitions) as i32,
    }
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

    #[test]
    fn sticky_moves_to_another_partition() {
        let mut rng = XorShift::new(42);
        for _ in 0..1000 {
            let p = next_sticky(&mut rng, 4, Some(2));
            assert!((0..4).contains(&p) && p != 2);
        }
        assert_eq!(next_sticky(&mut rng, 1, Some(0)), 0);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[next_sticky(&mut rng, 5, None) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
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
