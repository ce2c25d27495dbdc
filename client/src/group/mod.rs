//! Consumer groups: the [`GroupConsumer`] (a member whose partitions the coordinator assigns)
//! and the group administration behind `runnel group` ([`Admin::list_groups`],
//! [`Admin::describe_group`], [`Admin::reset_offsets`], [`Admin::delete_group`]).
//!
//! [`Admin::list_groups`]: crate::Admin::list_groups
//! [`Admin::describe_group`]: crate::Admin::describe_group
//! [`Admin::reset_offsets`]: crate::Admin::reset_offsets
//! [`Admin::delete_group`]: crate::Admin::delete_group

mod admin;
mod consumer;
mod coordinator;

pub use admin::{
    GroupDescription, GroupListing, GroupMemberInfo, GroupPartitionLag, OffsetResetPlan, ResetTo,
};
pub use consumer::{GroupConsumer, GroupConsumerConfig, RebalanceListener};

use runnel_proto::v1::TopicPartitions;
use std::collections::BTreeSet;

/// A topic and one of its partitions.
pub type TopicPartition = (String, i32);

/// Partitions grouped by topic, for the wire.
fn by_topic<'a>(parts: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<TopicPartitions> {
    TopicPartitions::group(parts)
}

fn flatten(list: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    TopicPartitions::flatten(list)
}
