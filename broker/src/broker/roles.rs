//! What this broker's copy of each partition is, from the metadata: the leader (it takes
//! produce, stamps its leader epoch, tracks its followers and commits by its ISR), a follower
//! (it takes only its leader's batches, see [`crate::replication`]), or a copy of a partition
//! with no leader (it takes nothing).

use super::*;
use crate::log::{Commit, Role};
use crate::replication::IsrTracker;
use runnel_proto::v1::PartitionMetadata;

impl<S: Storage> Broker<S> {
    /// Gives every held copy the role the installed metadata says.
    pub(super) fn apply_roles(&self) {
        let view = self.metadata.read().clone();
        for ((topic, partition), log) in self.held_logs() {
            self.apply_role(&view.cluster, &topic, partition, &log);
        }
        self.leading
            .lock()
            .retain(|(t, p), _| leads(&view.cluster, t, *p, self.settings.broker_id));
        self.metadata_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Gives one copy the role `cluster` says.
    pub(super) fn apply_role(
        &self,
        cluster: &ClusterMetadata,
        topic: &str,
        partition: i32,
        log: &Log<S>,
    ) {
        let me = self.settings.broker_id;
        let Some(p) = partition_of(cluster, topic, partition) else {
            return;
        };
        if !p.replicas.contains(&me) {
            return;
        }
        let key = (topic.to_string(), partition);
        let fenced = {
            let mut fenced = self.fenced_epochs.lock();
            match fenced.get(&key) {
                Some(e) if p.leader_epoch <= *e => true,
                Some(_) => {
                    fenced.remove(&key);
                    false
                }
                None => false,
            }
        };
        if p.leader != me || fenced {
            self.leading.lock().remove(&(topic.to_string(), partition));
            if log.role() != (Role::Follower, p.leader_epoch) {
                log.become_follower(p.leader_epoch);
            }
            return;
        }
        let now = now_ms();
        let tracker = {
            let mut leading = self.leading.lock();
            match leading.get(&key) {
                Some(t) if t.lock().epoch() == p.leader_epoch => {
                    t.lock().confirm(&p.replicas, &p.isr, now);
                    t.clone()
                }
                _ => {
                    let t = Arc::new(Mutex::new(IsrTracker::new(
                        me,
                        p.leader_epoch,
                        &p.replicas,
                        &p.isr,
                        log.log_end_offset(),
                        self.settings.replica_lag_time_max_ms,
                        now,
                    )));
                    leading.insert(key, t.clone());
                    t
                }
            }
        };
        let commit = commit_of(&tracker.lock());
        if log.role() != (Role::Leader, p.leader_epoch) {
            log.become_leader(p.leader_epoch, commit);
        } else {
            log.set_commit(commit);
        }
    }

    /// Whether this broker leads the partition now (the metadata says so, and it is not a
    /// leader that restarted waiting for a new epoch).
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        self.leader_state(topic, partition).is_some()
    }

    /// The leader state of a partition this broker leads.
    pub fn leader_state(&self, topic: &str, partition: i32) -> Option<Arc<Mutex<IsrTracker>>> {
        self.leading
            .lock()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Follower `id` reports its copy of a partition led here: stored below `log_end`, durable
    /// below `durable_end`. Moves the ISR and the high watermark.
    pub fn follower_progress(
        &self,
        tracker: &Mutex<IsrTracker>,
        log: &Log<S>,
        id: i32,
        log_end: i64,
        durable_end: i64,
    ) {
        let summary = log.summary();
        let mut t = tracker.lock();
        t.progress(
            id,
            log_end,
            durable_end,
            log.stored_end_offset(),
            summary.high_watermark,
            now_ms(),
        );
        log.set_commit(commit_of(&t));
    }

    /// The ISR this broker, as leader, asks the controller to record; the metadata's for a
    /// partition it does not lead.
    pub fn wanted_isr(&self, topic: &str, partition: i32, log: &Log<S>) -> Vec<i32> {
        match self.leader_state(topic, partition) {
            Some(t) => {
                let end = log.stored_end_offset();
                let now = now_ms();
                let mut t = t.lock();
                t.tick(end, now);
                let isr = t.wanted_isr(end, now);
                log.set_commit(commit_of(&t));
                isr
            }
            None => partition_of(&self.metadata.read().cluster, topic, partition)
                .map(|p| p.isr.clone())
                .unwrap_or_default(),
        }
    }

    /// Refuses acks=all while the partition has fewer in-sync replicas than its
    /// `min.insync.replicas` (Kafka's NOT_ENOUGH_REPLICAS): nothing is appended.
    pub(super) fn check_min_isr(
        &self,
        topic: &str,
        partition: i32,
        config: &LogConfig,
    ) -> Result<(), BrokerError> {
        if config.min_insync_replicas <= 1 {
            return Ok(());
        }
        let view = self.metadata.read();
        let isr = partition_of(&view.cluster, topic, partition)
            .map(|p| p.isr.clone())
            .unwrap_or_default();
        if (isr.len() as i32) < config.min_insync_replicas {
            return Err(BrokerError::NotEnoughReplicas {
                topic: topic.to_string(),
                partition,
                isr,
                min: config.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// Sees a stored append: wakes the streams to followers.
    pub(super) fn note_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every append stored here.
    pub fn watch_appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// A receiver that sees every metadata change.
    pub fn watch_metadata(&self) -> watch::Receiver<u64> {
        self.metadata_changed.subscribe()
    }

    /// A receiver that sees every group commit.
    pub fn watch_flushed(&self) -> watch::Receiver<u64> {
        self.group_commit.watch_flushed()
    }

    /// Appends the leader's batches to a follower copy on its partition's appender thread,
    /// and marks it for the next group commit. Returns the copy's new log end offset.
    pub async fn append_replicated(
        &self,
        topic: &str,
        partition: i32,
        log: &Log<S>,
        batches: Vec<Bytes>,
    ) -> Result<i64, BrokerError> {
        let l = log.clone();
        let end = self
            .on_appender(topic, partition, move || {
                l.append_replicated(&batches, now_ms())
            })
            .await?
            .map_err(|e| BrokerError::log(topic, partition, e))?;
        self.group_commit.mark_dirty(topic, partition, log);
        self.note_appended();
        Ok(end)
    }

    /// A copy that holds batches on disk past a gap its leader's compaction left counts as
    /// durable only up to the gap until a checkpoint covers it: checkpoints it and flushes, on
    /// its appender thread, so that its progress goes on. Nothing to do for other copies.
    pub async fn checkpoint_gaps(
        &self,
        topic: &str,
        partition: i32,
        log: &Log<S>,
    ) -> Result<(), BrokerError> {
        if !log.wants_gap_checkpoint() {
            return Ok(());
        }
        let (l, storage) = (log.clone(), self.storage.clone());
        let done = self
            .on_appender(topic, partition, move || -> Result<(), LogError> {
                l.checkpoint()?;
                // What the flush makes durable: the checkpoint as it is before it starts.
                let (_, end) = l.unchecked();
                storage.flush()?;
                l.gaps_checkpointed(end);
                Ok(())
            })
            .await?;
        if let Err(e) = done {
            self.fail_storage(&format!("checkpoint failed: {e}"));
            return Err(BrokerError::log(topic, partition, e));
        }
        Ok(())
    }

    /// Runs `job` on a partition's appender thread, after the stores queued there.
    pub async fn on_appender<T: Send + 'static>(
        &self,
        topic: &str,
        partition: i32,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BrokerError> {
        self.appenders
            .run(topic, partition, job)
            .await
            .map_err(|_| BrokerError::AppendAborted {
                topic: topic.to_string(),
                partition,
            })
    }
}

/// The commit rule of a leader with `t`'s members.
fn commit_of(t: &IsrTracker) -> Commit {
    let members = t.commit_members();
    if members.is_empty() {
        Commit::Local
    } else {
        Commit::Replicated(members)
    }
}

/// A partition in the metadata.
pub(crate) fn partition_of<'a>(
    cluster: &'a ClusterMetadata,
    topic: &str,
    partition: i32,
) -> Option<&'a PartitionMetadata> {
    find_topic(cluster, topic).and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
}

fn leads(cluster: &ClusterMetadata, topic: &str, partition: i32, me: i32) -> bool {
    partition_of(cluster, topic, partition).is_some_and(|p| p.leader == me)
}
