//! A partition's entry in a Topic's status ([`PartitionStatus`]) and the controller's
//! [`PartitionState`] of it: the metadata controller plans from the status it wrote last
//! ([`state`]) and writes the plan back with the leader's offsets ([`status`]).

use crate::crd::PartitionStatus;
use runnel_control::partition::{PartitionState, Report, NO_LEADER};

/// The state recorded in a partition's status, to plan from; `None` when it has no replicas
/// yet (the partition is new).
pub fn state(status: &PartitionStatus) -> Option<PartitionState> {
    if status.replicas.is_empty() {
        return None;
    }
    Some(PartitionState {
        replicas: status.replicas.clone(),
        isr: status.isr.clone(),
        leader: status.leader.unwrap_or(NO_LEADER),
        leader_epoch: status.leader_epoch.unwrap_or(0),
        adding: status.adding_replicas.clone(),
        removing: status.removing_replicas.clone(),
    })
}

/// The status of partition `partition` from its planned state and its leader's report (the
/// offsets are kept from `previous` while the leader does not report).
pub fn status(
    partition: i32,
    state: &PartitionState,
    leader_report: Option<&Report>,
    previous: Option<&PartitionStatus>,
) -> PartitionStatus {
    let (log_start_offset, log_end_offset, high_watermark, size_bytes) = match leader_report {
        Some(r) => (
            r.log_start_offset,
            r.log_end_offset,
            r.high_watermark,
            r.size_bytes,
        ),
        None => previous.map_or((0, 0, 0, 0), |p| {
            (
                p.log_start_offset,
                p.log_end_offset,
                p.high_watermark,
                p.size_bytes,
            )
        }),
    };
    PartitionStatus {
        partition,
        leader: (state.leader != NO_LEADER).then_some(state.leader),
        leader_epoch: Some(state.leader_epoch),
        replicas: state.replicas.clone(),
        isr: state.isr.clone(),
        adding_replicas: state.adding.clone(),
        removing_replicas: state.removing.clone(),
        log_start_offset,
        log_end_offset,
        high_watermark,
        size_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_control::partition::plan;
    use std::collections::{BTreeMap, BTreeSet};

    fn copy(leo: i64, hw: i64) -> Report {
        Report {
            log_end_offset: leo,
            high_watermark: hw,
            size_bytes: leo * 10,
            ..Report::default()
        }
    }

    #[test]
    fn status_takes_offsets_from_the_leader_or_keeps_the_previous_ones() {
        let p = plan(&[0], None, &BTreeMap::new(), &BTreeSet::from([0]), false);
        let s = status(0, &p, Some(&copy(7, 5)), None);
        assert_eq!(
            (s.log_end_offset, s.high_watermark, s.size_bytes),
            (7, 5, 70)
        );
        let kept = status(0, &p, None, Some(&s));
        assert_eq!((kept.log_end_offset, kept.high_watermark), (7, 5));
    }

    #[test]
    fn the_state_goes_through_the_status_unchanged() {
        let planned = PartitionState {
            replicas: vec![2, 0, 1],
            isr: vec![2, 1],
            leader: 2,
            leader_epoch: 4,
            adding: vec![2],
            removing: vec![1],
        };
        let s = status(3, &planned, None, None);
        assert_eq!(state(&s), Some(planned.clone()));
        let offline = PartitionState {
            leader: NO_LEADER,
            ..planned
        };
        let s = status(3, &offline, None, None);
        assert_eq!(s.leader, None);
        assert_eq!(state(&s), Some(offline));
        // A status without replicas is a new partition.
        assert_eq!(state(&PartitionStatus::default()), None);
    }
}
