//! What the controller decides, as the broker carries it out: topics (a standalone broker is
//! its own controller), the metadata the operator sends, and the producer ids handed out.

use super::*;

impl<S: Storage> Broker<S> {
    /// Hands out a new idempotent producer id at epoch 0 (persisted in blocks, so ids never
    /// repeat), or, for a producer that names its id and epoch, the next epoch of that id
    /// (Kafka's KIP-360), which fences the older one on every partition.
    pub fn init_producer_id(&self, current: Option<(i64, i32)>) -> Result<(i64, i16), BrokerError> {
        if let Some((id, epoch)) = current {
            if !(0..self.producer_id_end()).contains(&id) {
                return Err(BrokerError::InvalidRequest(format!(
                    "producer id {id} was never issued: ask for a new one without an id"
                )));
            }
            let Ok(epoch) = i16::try_from(epoch).map(|e| e.max(0)) else {
                return Err(BrokerError::InvalidRequest(format!(
                    "producer epoch {epoch} is out of range (0 to {})",
                    i16::MAX
                )));
            };
            // The last epoch is used up: a new id, as Kafka does.
            if epoch < i16::MAX - 1 {
                return Ok((id, epoch + 1));
            }
        }
        let mut ids = self.producer_ids.lock();
        match ids.next() {
            Next::Exhausted { first, end } => Err(BrokerError::ProducerIdsExhausted { first, end }),
            Next::Id { id, persist } => {
                if let Some(watermark) = persist {
                    self.storage
                        .put_meta(META_PRODUCER_ID_LIMIT, &watermark.to_be_bytes())?;
                    self.storage.flush()?;
                }
                ids.issued(id, persist);
                Ok((id, 0))
            }
        }
    }

    /// Producer ids below this may have been issued in the cluster; batches with others are
    /// refused.
    pub fn producer_id_end(&self) -> i64 {
        self.producer_ids.lock().cluster_end()
    }

    /// The block of producer ids the controller handed this broker, and how many are left.
    pub fn producer_id_block(&self) -> Option<(runnel_proto::v1::ProducerIdBlock, i64)> {
        let me = self.settings.broker_id;
        self.producer_ids
            .lock()
            .block()
            .map(|((first_id, count), left)| {
                (
                    runnel_proto::v1::ProducerIdBlock {
                        broker_id: me,
                        first_id,
                        count,
                    },
                    left,
                )
            })
    }

    /// Standalone: creates a topic whose partitions this broker leads.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        config: TopicConfig,
    ) -> Result<TopicMetadata, BrokerError> {
        if !self.settings.standalone {
            return Err(BrokerError::NotController);
        }
        if name == crate::groups::OFFSETS_TOPIC {
            return Err(BrokerError::InvalidTopicName {
                name: name.to_string(),
                reason: "it is Runnel's internal topic of committed offsets, which the broker creates itself".into(),
            });
        }
        self.create_topic_unchecked(name, partitions, replication_factor, config)
    }

    /// Standalone: creates an internal topic (`__consumer_offsets`).
    pub fn create_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
    ) -> Result<TopicMetadata, BrokerError> {
        if !self.settings.standalone {
            return Err(BrokerError::NotController);
        }
        self.create_topic_unchecked(name, partitions, 1, config)
    }

    fn create_topic_unchecked(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        config: TopicConfig,
    ) -> Result<TopicMetadata, BrokerError> {
        metadata::validate_topic_name(name)?;
        metadata::validate_partition_count(partitions)?;
        if !(0..=1).contains(&replication_factor) {
            return Err(BrokerError::InvalidReplicationFactor {
                factor: replication_factor,
                reason: "a standalone broker is a cluster of one broker, so the factor must be 1"
                    .into(),
            });
        }
        metadata::validate_topic_config(&config)?;
        let _change = self.metadata_change.lock();
        let mut cluster = self.cluster_metadata();
        if find_topic(&cluster, name).is_some() {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let topic =
            metadata::single_broker_topic(name, partitions, self.settings.broker_id, config);
        cluster.topics.push(topic.clone());
        cluster.epoch += 1;
        cluster.brokers = vec![self.self_info()];
        self.persist_metadata(&cluster)?;
        self.install_metadata(cluster);
        for p in 0..partitions {
            self.open_log(name, p)?;
        }
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Standalone: deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if !self.settings.standalone {
            return Err(BrokerError::NotController);
        }
        if name == crate::groups::OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "`{name}` is Runnel's internal topic of committed offsets and cannot be deleted; delete consumer groups instead (`runnel group delete`)"
            )));
        }
        let _change = self.metadata_change.lock();
        let mut cluster = self.cluster_metadata();
        let before = cluster.topics.len();
        cluster.topics.retain(|t| t.name != name);
        if cluster.topics.len() == before {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        cluster.epoch += 1;
        self.persist_metadata(&cluster)?;
        self.install_metadata(cluster);
        self.delete_partitions(name, &[])?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Deletes the data of a topic's partitions held here (all when `partitions` is empty).
    pub fn delete_partitions(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<i32>, BrokerError> {
        let held: Vec<(String, i32)> = self
            .storage
            .list_logs()?
            .into_iter()
            .filter(|(t, p)| t == topic && (partitions.is_empty() || partitions.contains(p)))
            .collect();
        // A copy of a replicated partition that the metadata still places here is not deleted:
        // its leader or followers would take the empty copy for the partition's truth.
        {
            let view = self.metadata.read();
            let me = self.settings.broker_id;
            for (t, p) in &held {
                if let Some(m) = roles::partition_of(&view.cluster, t, *p)
                    .filter(|m| m.replicas.len() > 1 && m.replicas.contains(&me))
                {
                    return Err(BrokerError::StillAssigned {
                        topic: t.clone(),
                        partition: *p,
                        replicas: m.replicas.clone(),
                        epoch: view.cluster.epoch,
                    });
                }
            }
        }
        let mut deleted = Vec::new();
        for (t, p) in held {
            let mut logs = self.logs.write();
            logs.remove(&(t.clone(), p));
            self.metrics.partitions.set(logs.len() as i64);
            drop(logs);
            self.storage.drop_log(&t, p)?;
            self.storage
                .put_meta(&lso_key(&t, p), &0i64.to_be_bytes())?;
            deleted.push(p);
        }
        self.storage.flush()?;
        deleted.sort_unstable();
        Ok(deleted)
    }

    /// Installs metadata from the controller; returns whether it was newer, and the epoch held.
    pub fn apply_metadata(&self, cluster: ClusterMetadata) -> Result<(bool, i64), BrokerError> {
        let _change = self.metadata_change.lock();
        let current = self.applied_epoch.load(Ordering::SeqCst);
        if cluster.epoch <= current {
            return Ok((false, current));
        }
        self.persist_metadata(&cluster)?;
        let me = self.settings.broker_id;
        // The first metadata since the start, where this broker had none (a new broker, or
        // one whose disk was wiped): it declines to lead a replicated partition under an epoch
        // it is handed, as a restarted leader does, since it may hold none of its records. The
        // controller elects again, the most caught-up copy first.
        if !self.metadata_received.swap(true, Ordering::SeqCst) && current == 0 {
            let mut fenced = self.fenced_epochs.lock();
            for t in &cluster.topics {
                for p in &t.partitions {
                    if p.leader == me && p.replicas.len() > 1 {
                        let e = fenced
                            .entry((t.name.clone(), p.partition))
                            .or_insert(p.leader_epoch);
                        *e = (*e).max(p.leader_epoch);
                    }
                }
            }
        }
        let mine: Vec<(String, i32)> = cluster
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&me))
                    .map(move |p| (t.name.clone(), p.partition))
            })
            .collect();
        let epoch = cluster.epoch;
        self.install_metadata(cluster);
        for (t, p) in mine {
            self.open_log(&t, p)?;
        }
        Ok((true, epoch))
    }

    /// This broker as the metadata lists it.
    pub fn self_info(&self) -> runnel_proto::v1::BrokerInfo {
        runnel_proto::v1::BrokerInfo {
            id: self.settings.broker_id,
            address: self.settings.advertised_address.clone(),
            rack: self.settings.rack.clone(),
        }
    }
}
