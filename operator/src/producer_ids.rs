//! Idempotent producer ids for a cluster (Kafka's KIP-730): the controller hands each broker a
//! block of ids in the metadata, so that no two producers of the cluster share one. Pure and
//! property-tested; the metadata controller records the blocks in the Cluster's status before
//! it sends them.

use crate::crd::ProducerIdBlockStatus;
use runnel_proto::v1 as pb;
use std::collections::BTreeMap;

/// Producer ids handed to a broker at a time.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The producer id blocks of a cluster of `size` brokers (Kafka's KIP-730): each broker keeps
/// its block (`current`) until it reports (in `left`) that less than half of it is left, and
/// then, like a broker without one, gets the next `PRODUCER_ID_BLOCK` ids from `end`. Returns
/// the blocks, the new end, and whether anything changed (the caller records the new end before
/// it sends a block, so that no id is handed out twice).
pub fn allocate(
    size: i32,
    current: &[ProducerIdBlockStatus],
    end: i64,
    left: &BTreeMap<i32, i64>,
) -> (Vec<ProducerIdBlockStatus>, i64, bool) {
    let mut end = current
        .iter()
        .map(|b| b.first_id + b.count)
        .max()
        .unwrap_or(0)
        .max(end);
    let mut changed = false;
    let mut blocks = Vec::new();
    for broker_id in 0..size.max(0) {
        let held = current.iter().find(|b| b.broker_id == broker_id);
        let keep = held.filter(|b| left.get(&broker_id).is_none_or(|l| *l * 2 >= b.count));
        match keep {
            Some(b) => blocks.push(*b),
            None => {
                blocks.push(ProducerIdBlockStatus {
                    broker_id,
                    first_id: end,
                    count: PRODUCER_ID_BLOCK,
                });
                end += PRODUCER_ID_BLOCK;
                changed = true;
            }
        }
    }
    (blocks, end, changed)
}

/// The blocks in the wire format.
pub fn wire(blocks: &[ProducerIdBlockStatus]) -> Vec<pb::ProducerIdBlock> {
    blocks
        .iter()
        .map(|b| pb::ProducerIdBlock {
            broker_id: b.broker_id,
            first_id: b.first_id,
            count: b.count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Blocks never overlap, never start below what was handed out before, each broker of
        /// the cluster has one, and a broker keeps its block while more than half is left.
        #[test]
        fn producer_id_blocks_never_overlap_or_repeat(
            rounds in proptest::collection::vec(
                (1i32..6, proptest::collection::btree_map(0i32..6, 0i64..=PRODUCER_ID_BLOCK, 0..6)),
                1..20,
            ),
        ) {
            let mut blocks: Vec<ProducerIdBlockStatus> = Vec::new();
            let mut end = 0;
            let mut ever: Vec<ProducerIdBlockStatus> = Vec::new();
            for (size, left) in rounds {
                let before = end;
                let (next, new_end, changed) = allocate(size, &blocks, end, &left);
                proptest::prop_assert!(new_end >= before);
                proptest::prop_assert_eq!(next.len(), size as usize);
                for b in &next {
                    proptest::prop_assert!(b.first_id + b.count <= new_end);
                    let old = blocks.iter().find(|o| o.broker_id == b.broker_id);
                    match old {
                        Some(o) if o == b => {
                            proptest::prop_assert!(left.get(&b.broker_id).is_none_or(|l| l * 2 >= o.count));
                        }
                        _ => {
                            proptest::prop_assert!(b.first_id >= before, "a new block starts past every old one");
                            proptest::prop_assert!(changed);
                            ever.push(*b);
                        }
                    }
                }
                for (i, a) in ever.iter().enumerate() {
                    for c in &ever[i + 1..] {
                        proptest::prop_assert!(a.first_id + a.count <= c.first_id || c.first_id + c.count <= a.first_id);
                    }
                }
                blocks = next;
                end = new_end;
            }
        }
    }
}
