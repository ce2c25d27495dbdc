//! Consumer groups: the pure parts (the [`assignor`]s, a [`group`]'s membership and
//! reconciliation, the [`offsets`] records) and the [`coordinator`] that runs them over the
//! broker's partitions of `__consumer_offsets`.

pub mod assignor;
pub mod coordinator;
pub mod group;
pub mod offsets;

pub use coordinator::{
    offsets_topic_config, Coordinator, GroupDescription, PlannedReset, OFFSETS_TOPIC,
};
pub use group::{GroupError, GroupSettings, GroupState, Heartbeat, HeartbeatReply, Subscription};
pub use offsets::{Committed, ResetTo};
