//! The leader's view of its followers: how far each has stored and synced its copy, whether it
//! keeps up, and from that the in-sync replicas it asks the controller to record (Kafka's
//! AlterPartition) and the copies a batch must reach before it is committed. Pure: the broker
//! feeds it progress and the clock.
//!
//! # Rules, in Kafka's terms
//!
//! * A follower is **caught up** at a moment when its log end offset reaches what the leader
//!   had stored then: when it reports an end at or past the leader's, or past what the leader
//!   had stored when it last sent it data (Kafka's `lastCaughtUpTimeMs`).
//! * An ISR member that has not been caught up for `replica.lag.time.max.ms` while behind is
//!   **out of sync**: the leader stops asking for it, but it keeps counting for the high
//!   watermark until the controller has recorded the smaller ISR, so a leader elected from the
//!   recorded ISR always holds every committed batch.
//! * A follower outside the ISR **joins** once it holds the leader's current epoch (its end is
//!   at or past where the epoch began) and has the committed batches on disk (its durable end
//!   reaches the high watermark). It counts for the high watermark at once (Kafka's maximal
//!   ISR) and is asked for until recorded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many sends to a follower are remembered to date its catching up.
const SENDS_KEPT: usize = 256;

#[derive(Debug, Clone, Default)]
struct Follower {
    log_end: i64,
    durable_end: i64,
    caught_up_ms: i64,
    /// (leader's stored end when data was sent, when): the follower is caught up as of a send
    /// once its end reaches what the leader held then.
    sends: VecDeque<(i64, i64)>,
    /// It has reported progress in this epoch.
    seen: bool,
    /// The highest durable end it reported in this epoch.
    most_durable: i64,
    /// It reported less on disk than before in this epoch: it lost synced data (a wiped or
    /// replaced disk), so it no longer holds what was committed with it. Out of sync at once,
    /// until it is out of the recorded ISR and joins again as any follower does.
    lost: bool,
}

/// One partition's leader state.
#[derive(Debug, Clone)]
pub struct IsrTracker {
    me: i32,
    epoch: i32,
    replicas: Vec<i32>,
    /// The ISR as the metadata records it.
    isr: BTreeSet<i32>,
    /// Followers that caught up and count already, not recorded yet.
    joining: BTreeSet<i32>,
    followers: BTreeMap<i32, Follower>,
    /// Where this leader's epoch began.
    epoch_start: i64,
    lag_max_ms: i64,
}

impl IsrTracker {
    /// The state of a leader that takes over at `epoch` with its log ending at `epoch_start`.
    /// Every recorded ISR member starts caught up (it gets `lag_max_ms` to show it).
    pub fn new(
        me: i32,
        epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        epoch_start: i64,
        lag_max_ms: i64,
        now_ms: i64,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|b| **b != me)
            .map(|b| {
                (
                    *b,
                    Follower {
                        caught_up_ms: now_ms,
                        ..Follower::default()
                    },
                )
            })
            .collect();
        Self {
            me,
            epoch,
            replicas: replicas.to_vec(),
            isr: isr
                .iter()
                .copied()
                .filter(|b| replicas.contains(b))
                .collect(),
            joining: BTreeSet::new(),
            followers,
            epoch_start,
            lag_max_ms,
        }
    }

    /// The leader epoch this state is for.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Takes the metadata's ISR and replicas (same epoch): recorded members stop joining.
    pub fn confirm(&mut self, replicas: &[i32], isr: &[i32], now_ms: i64) {
        for b in replicas.iter().filter(|b| **b != self.me) {
            self.followers.entry(*b).or_insert_with(|| Follower {
                caught_up_ms: now_ms,
                ..Follower::default()
            });
        }
        self.followers.retain(|b, _| replicas.contains(b));
        self.replicas = replicas.to_vec();
        self.isr = isr
            .iter()
            .copied()
            .filter(|b| replicas.contains(b))
            .collect();
        let isr = &self.isr;
        self.joining.retain(|b| !isr.contains(b));
    }

    /// The recorded ISR.
    pub fn recorded_isr(&self) -> &BTreeSet<i32> {
        &self.isr
    }

    /// Whether `id` is one of this partition's followers.
    pub fn is_follower(&self, id: i32) -> bool {
        self.followers.contains_key(&id)
    }

    /// Follower `id` opened a new stream: what it sent before counts no more (it may have
    /// restarted and lost what it had not synced).
    pub fn new_session(&mut self, id: i32) {
        if let Some(f) = self.followers.get_mut(&id) {
            f.sends.clear();
            f.seen = false;
        }
        self.joining.remove(&id);
    }

    /// Notes that data up to `leader_end` was sent to follower `id`.
    pub fn sent(&mut self, id: i32, leader_end: i64, now_ms: i64) {
        if let Some(f) = self.followers.get_mut(&id) {
            if f.sends.len() == SENDS_KEPT {
                f.sends.pop_front();
            }
            f.sends.push_back((leader_end, now_ms));
        }
    }

    /// Follower `id` has stored its copy up to `log_end` and synced it up to `durable_end`;
    /// the leader has stored up to `leader_end` and committed up to `high_watermark`.
    pub fn progress(
        &mut self,
        id: i32,
        log_end: i64,
        durable_end: i64,
        leader_end: i64,
        high_watermark: i64,
        now_ms: i64,
    ) {
        let Some(f) = self.followers.get_mut(&id) else {
            return;
        };
        f.seen = true;
        // As reported, also when lower: a follower that restarted lost what it had not synced,
        // and truncation takes off what the leader does not hold. What it synced it keeps
        // through a crash; reporting less of that means its disk lost it.
        if durable_end < f.most_durable {
            f.lost = true;
        }
        f.most_durable = f.most_durable.max(durable_end);
        f.log_end = log_end;
        f.durable_end = durable_end;
        if f.log_end >= leader_end {
            f.caught_up_ms = now_ms;
            f.sends.clear();
        } else {
            while let Some((end, at)) = f.sends.front().copied() {
                if end > f.log_end {
                    break;
                }
                f.caught_up_ms = f.caught_up_ms.max(at);
                f.sends.pop_front();
            }
        }
        if !self.isr.contains(&id) {
            if f.log_end >= self.epoch_start && f.durable_end >= high_watermark {
                f.lost = false;
                f.most_durable = f.durable_end;
                self.joining.insert(id);
            } else {
                self.joining.remove(&id);
            }
        }
    }

    fn in_sync(&self, id: i32, leader_end: i64, now_ms: i64) -> bool {
        if id == self.me {
            return true;
        }
        self.followers.get(&id).is_some_and(|f| {
            !f.lost
                && ((f.seen && f.log_end >= leader_end)
                    || now_ms - f.caught_up_ms <= self.lag_max_ms)
        })
    }

    /// Drops joining followers that fell behind again (they were never recorded).
    pub fn tick(&mut self, leader_end: i64, now_ms: i64) {
        let keep: BTreeSet<i32> = self
            .joining
            .iter()
            .copied()
            .filter(|b| self.in_sync(*b, leader_end, now_ms))
            .collect();
        self.joining = keep;
    }

    /// The other copies a batch must reach: recorded and joining ISR members but the leader,
    /// each with the offset below which it is durable.
    pub fn commit_members(&self) -> BTreeMap<i32, i64> {
        self.isr
            .iter()
            .chain(&self.joining)
            .filter(|b| **b != self.me)
            .map(|b| (*b, self.followers.get(b).map_or(0, |f| f.durable_end)))
            .collect()
    }

    /// The ISR this leader asks the controller to record, in replica order: itself, the
    /// members that keep up, and the followers that joined.
    pub fn wanted_isr(&self, leader_end: i64, now_ms: i64) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| {
                *b == self.me
                    || ((self.isr.contains(b) || self.joining.contains(b))
                        && self.in_sync(*b, leader_end, now_ms))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAG: i64 = 1000;

    fn tracker() -> IsrTracker {
        IsrTracker::new(0, 3, &[0, 1, 2], &[0, 1, 2], 100, LAG, 0)
    }

    #[test]
    fn the_high_watermark_waits_for_every_member_and_a_laggard_is_dropped_after_the_lag_time() {
        let mut t = tracker();
        t.progress(1, 150, 150, 150, 100, 10);
        t.progress(2, 120, 110, 150, 100, 10);
        assert_eq!(t.commit_members(), BTreeMap::from([(1, 150), (2, 110)]));
        assert_eq!(t.wanted_isr(150, 500), vec![0, 1, 2]);
        // Broker 2 stops; the leader goes on to 300 and broker 1 keeps up.
        t.sent(2, 150, 20);
        t.progress(1, 300, 300, 300, 110, 1500);
        assert_eq!(t.wanted_isr(300, 1500), vec![0, 1]);
        // Until the controller records it, broker 2 still counts.
        assert_eq!(t.commit_members().get(&2), Some(&110));
        t.confirm(&[0, 1, 2], &[0, 1], 1600);
        assert_eq!(t.commit_members(), BTreeMap::from([(1, 300)]));
    }

    #[test]
    fn a_follower_rejoins_once_it_holds_the_epoch_and_the_committed_batches() {
        let mut t = IsrTracker::new(0, 3, &[0, 1, 2], &[0, 1], 100, LAG, 0);
        t.progress(2, 90, 90, 200, 150, 10);
        assert!(
            !t.wanted_isr(200, 10).contains(&2),
            "before the epoch began"
        );
        t.progress(2, 160, 140, 200, 150, 20);
        assert!(
            !t.wanted_isr(200, 20).contains(&2),
            "not durable to the high watermark"
        );
        t.progress(2, 200, 200, 200, 150, 30);
        assert_eq!(t.wanted_isr(200, 30), vec![0, 1, 2]);
        assert_eq!(t.commit_members().get(&2), Some(&200), "counts at once");
    }

    #[test]
    fn a_follower_behind_under_load_is_caught_up_as_of_what_it_was_sent() {
        let mut t = tracker();
        t.sent(1, 200, 100);
        t.sent(1, 300, 900);
        // At 1500 it reports 250: it reached what it was sent at 100, not at 900.
        t.progress(1, 250, 250, 400, 100, 1500);
        assert!(!t.wanted_isr(400, 1500).contains(&1));
        t.progress(1, 300, 300, 400, 100, 1600);
        assert!(t.wanted_isr(400, 1600).contains(&1), "caught up as of 900");
    }

    #[test]
    fn a_restarted_follower_counts_with_what_it_reports_now() {
        let mut t = IsrTracker::new(0, 3, &[0, 1, 2], &[0, 1], 100, LAG, 0);
        t.progress(2, 500, 500, 500, 400, 10);
        assert!(t.commit_members().contains_key(&2));
        t.confirm(&[0, 1, 2], &[0, 1], 20);
        // Out of the ISR, it restarts with less than it reported before.
        t.confirm(&[0, 1, 2], &[0, 1], 30);
        t.new_session(2);
        t.progress(2, 300, 300, 600, 500, 40);
        assert!(!t.wanted_isr(600, 40).contains(&2));
        assert!(
            !t.commit_members().contains_key(&2),
            "joins only with the committed batches"
        );
    }

    #[test]
    fn a_follower_that_lost_synced_data_is_out_of_sync_at_once() {
        let mut t = IsrTracker::new(0, 3, &[0, 1, 2], &[0, 1, 2], 0, LAG, 0);
        t.progress(1, 500, 500, 500, 500, 10);
        t.progress(2, 500, 500, 500, 500, 10);
        assert_eq!(t.wanted_isr(500, 20), vec![0, 1, 2]);
        // Broker 2 comes back with an empty disk, well within the lag time.
        t.new_session(2);
        t.progress(2, 0, 0, 500, 500, 30);
        assert_eq!(t.wanted_isr(500, 40), vec![0, 1], "out before the lag time");
        // Still counted until the controller records it out; then it joins as any follower.
        assert!(t.commit_members().contains_key(&2));
        t.confirm(&[0, 1, 2], &[0, 1], 50);
        t.progress(2, 500, 500, 500, 500, 60);
        assert_eq!(t.wanted_isr(500, 70), vec![0, 1, 2]);
    }

    proptest! {
        /// Whatever happens, the copies a batch must reach include every recorded member, so a
        /// leader elected from the recorded ISR holds every committed batch.
        #[test]
        fn recorded_members_always_count(
            steps in proptest::collection::vec((1..3i32, 0..500i64, 0..500i64, 0..3000i64, any::<bool>()), 0..40)
        ) {
            let mut t = tracker();
            let mut now = 0;
            for (id, end, durable, dt, confirm) in steps {
                now += dt;
                t.progress(id, end, durable.min(end), 500, 100, now);
                t.tick(500, now);
                if confirm {
                    let isr = t.wanted_isr(500, now);
                    t.confirm(&[0, 1, 2], &isr, now);
                }
                let members = t.commit_members();
                for b in t.recorded_isr() {
                    prop_assert!(*b == 0 || members.contains_key(b));
                }
                prop_assert!(t.wanted_isr(500, now).contains(&0));
            }
        }
    }
}
