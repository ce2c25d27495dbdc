//! Choosing a partition: Kafka's default partitioner.
//!
//! Keyed records go to `(murmur2(key) & 0x7fffffff) % partitions`, byte-compatible with the Java
//! client's `Utils.murmur2`, so a key lands on the same partition whichever client wrote it.
//! Records without a key stick to one partition until its batch is shipped (KIP-480), then move
//! on, which keeps batches full without skewing load over time.

pub use runnel_codec::{murmur2, partition_for_key, to_positive};

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
}
