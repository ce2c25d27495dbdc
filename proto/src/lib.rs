//! Runnel's wire contract: the `runnel.v1` gRPC services (`Broker`, `Groups`, `Admin`) and their messages.
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

/// Package `runnel.v1`.
pub mod v1 {
    tonic::include_proto!("runnel.v1");

    /// The encoded `FileDescriptorSet` of `runnel.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("runnel_descriptor");

    impl TopicPartitions {
        /// `(topic, partition)` pairs grouped by topic, topics and partitions sorted.
        pub fn group<'a>(
            parts: impl IntoIterator<Item = &'a (String, i32)>,
        ) -> Vec<TopicPartitions> {
            let mut by: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
            for (t, p) in parts {
                by.entry(t.as_str()).or_default().push(*p);
            }
            by.into_iter()
                .map(|(topic, mut partitions)| {
                    partitions.sort_unstable();
                    partitions.dedup();
                    TopicPartitions {
                        topic: topic.to_string(),
                        partitions,
                    }
                })
                .collect()
        }

        /// The `(topic, partition)` pairs of a list.
        pub fn flatten(list: &[TopicPartitions]) -> std::collections::BTreeSet<(String, i32)> {
            list.iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
                .collect()
        }
    }
}
