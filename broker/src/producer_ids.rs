//! Where a broker's idempotent producer ids come from (Kafka's KIP-730), and what it persists
//! so that a restart never hands out an id twice. Pure: the broker persists the watermark it
//! returns.
//!
//! A standalone broker is its own controller: it may hand out any id, and persists a watermark
//! in steps of [`STEP`], below which every id it issued lies. In a cluster, the controller (the
//! operator) hands each broker a block of ids in the metadata; the broker issues ids from its
//! block, persists its watermark the same way, and once the block is used up refuses until the
//! controller hands it the next (which it does when the broker reports half of it used).

/// Ids persisted at a time: a restart skips at most this many (a tenth of the controller's
/// blocks).
pub const STEP: i64 = 100;

/// The ids a broker may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIds {
    /// The next id to hand out.
    next: i64,
    /// Every id handed out is below this, and it is persisted.
    watermark: i64,
    /// Where the ids come from.
    source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A standalone broker: any id.
    Own,
    /// A block from the controller (`first`, `count`; none before the first metadata), and the
    /// cluster's end of handed-out ids (0 while unknown: any id is taken). `distrust`: nothing
    /// was persisted (a new broker, or one whose disk was lost), so the first block it is sent
    /// may have been used by an earlier life of this broker: it is taken as used up, and the
    /// controller sends a new one, as Kafka's brokers ask for a new block at every start.
    Controller {
        block: Option<(i64, i64)>,
        cluster_end: i64,
        distrust: bool,
    },
}

/// What handing out an id needs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The id, once `persist` (when set) is made durable as the new watermark.
    Id {
        /// The id.
        id: i64,
        /// The watermark to persist before answering with it.
        persist: Option<i64>,
    },
    /// The block is used up (or there is none yet).
    Exhausted {
        /// The block's first id.
        first: i64,
        /// Its end (exclusive).
        end: i64,
    },
}

impl ProducerIds {
    /// A standalone broker whose persisted watermark is `watermark`.
    pub fn standalone(watermark: i64) -> Self {
        Self {
            next: watermark,
            watermark,
            source: Source::Own,
        }
    }

    /// A broker in a cluster whose persisted watermark is `watermark` (`None`: nothing
    /// persisted), before it has metadata.
    pub fn in_cluster(watermark: Option<i64>) -> Self {
        Self {
            next: watermark.unwrap_or(0),
            watermark: watermark.unwrap_or(0),
            source: Source::Controller {
                block: None,
                cluster_end: 0,
                distrust: watermark.is_none(),
            },
        }
    }

    /// Takes the block the controller handed this broker (`first`, `count`) and the cluster's
    /// end of handed-out ids, from new metadata.
    pub fn set_block(&mut self, block: Option<(i64, i64)>, cluster_end: i64) {
        let Source::Controller {
            block: current,
            cluster_end: end,
            distrust,
        } = &mut self.source
        else {
            return;
        };
        *end = cluster_end;
        if *current == block {
            return;
        }
        *current = block;
        self.next = match block {
            Some((first, count)) if *distrust => {
                *distrust = false;
                first.saturating_add(count)
            }
            // Ids of the block below the watermark may have been handed out before a restart.
            Some((first, count)) => self.watermark.max(first).min(first.saturating_add(count)),
            None => self.watermark,
        };
    }

    /// The end (exclusive) of what this broker may hand out now.
    fn end(&self) -> i64 {
        match self.source {
            Source::Own => i64::MAX,
            Source::Controller {
                block: Some((first, count)),
                ..
            } => first.saturating_add(count),
            // No block yet: nothing to hand out until the controller sends one.
            Source::Controller { block: None, .. } => self.next,
        }
    }

    /// The next id to hand out.
    pub fn next(&self) -> Next {
        let end = self.end();
        if self.next >= end {
            let (first, count) = self.block().map_or((self.next, 0), |(b, _)| b);
            return Next::Exhausted {
                first,
                end: first + count,
            };
        }
        let persist =
            (self.next >= self.watermark).then(|| self.next.saturating_add(STEP).min(end));
        Next::Id {
            id: self.next,
            persist,
        }
    }

    /// Records that `id` was handed out, with the watermark persisted for it.
    pub fn issued(&mut self, id: i64, persisted: Option<i64>) {
        if let Some(w) = persisted {
            self.watermark = w;
        }
        self.next = id + 1;
    }

    /// Every producer id below this may have been handed out in the cluster: batches with
    /// another are refused.
    pub fn cluster_end(&self) -> i64 {
        match self.source {
            Source::Own => self.watermark,
            Source::Controller { cluster_end, .. } if cluster_end > 0 => cluster_end,
            Source::Controller { .. } => i64::MAX,
        }
    }

    /// The block, and how many of its ids are left.
    pub fn block(&self) -> Option<((i64, i64), i64)> {
        match self.source {
            Source::Controller { block: Some(b), .. } => {
                Some((b, (b.0.saturating_add(b.1) - self.next).max(0)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hands out one id, persisting as asked; `None` when exhausted.
    fn take(ids: &mut ProducerIds, persisted: &mut i64) -> Option<i64> {
        match ids.next() {
            Next::Id { id, persist } => {
                if let Some(w) = persist {
                    *persisted = w;
                }
                ids.issued(id, persist);
                Some(id)
            }
            Next::Exhausted { .. } => None,
        }
    }

    #[test]
    fn a_block_is_used_up_and_refused_until_the_next() {
        let mut persisted = 0;
        let mut ids = ProducerIds::in_cluster(Some(persisted));
        assert!(take(&mut ids, &mut persisted).is_none(), "no block yet");
        ids.set_block(Some((5000, 3)), 6000);
        let got: Vec<_> = (0..4).map(|_| take(&mut ids, &mut persisted)).collect();
        assert_eq!(got, vec![Some(5000), Some(5001), Some(5002), None]);
        assert_eq!(persisted, 5003);
        assert_eq!(ids.cluster_end(), 6000);
        ids.set_block(Some((7000, 1000)), 8000);
        assert_eq!(take(&mut ids, &mut persisted), Some(7000));
        assert_eq!(ids.block(), Some(((7000, 1000), 999)));
    }

    #[test]
    fn a_broker_without_a_watermark_takes_its_first_block_as_used_up() {
        // New, or its disk was lost: the block it is sent may be one it used before.
        let mut persisted = 0;
        let mut ids = ProducerIds::in_cluster(None);
        ids.set_block(Some((5000, 100)), 5100);
        assert!(take(&mut ids, &mut persisted).is_none());
        assert_eq!(ids.block(), Some(((5000, 100), 0)), "reported used up");
        ids.set_block(Some((5100, 100)), 5200);
        assert_eq!(take(&mut ids, &mut persisted), Some(5100));
    }

    proptest! {
        /// Across restarts (the persisted watermark is all that survives) and new blocks, no id
        /// is handed out twice, every id comes from the broker's blocks, and every id is below
        /// the cluster's end.
        #[test]
        fn no_id_is_handed_out_twice(
            steps in prop::collection::vec((0u8..4, 1i64..3000), 1..60),
            standalone in any::<bool>(),
        ) {
            let mut persisted = 0i64;
            let mut end = 0i64;
            let mut blocks: Vec<(i64, i64)> = Vec::new();
            let start = |p: i64| if standalone { ProducerIds::standalone(p) } else { ProducerIds::in_cluster(Some(p)) };
            let mut ids = start(persisted);
            let mut seen = std::collections::HashSet::new();
            for (what, n) in steps {
                match what {
                    0 | 1 => {
                        for _ in 0..n.min(500) {
                            let Some(id) = take(&mut ids, &mut persisted) else { break };
                            prop_assert!(seen.insert(id), "id {} twice", id);
                            prop_assert!(id < ids.cluster_end());
                            if !standalone {
                                prop_assert!(blocks.iter().any(|(f, c)| (*f..f + c).contains(&id)));
                            }
                        }
                    }
                    2 => {
                        // A restart: only the persisted watermark and the metadata survive.
                        let block = blocks.last().copied();
                        ids = start(persisted);
                        if !standalone {
                            ids.set_block(block, end);
                        }
                    }
                    _ => {
                        if !standalone {
                            let block = (end, n);
                            end += n;
                            blocks.push(block);
                            ids.set_block(Some(block), end);
                        }
                    }
                }
            }
        }
    }
}
