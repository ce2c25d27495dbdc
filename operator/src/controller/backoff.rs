//! How long a controller waits before retrying an object whose reconcile failed: 1 s, doubling
//! with each failure in a row, at most 5 minutes, back to 1 s once a reconcile succeeds (as
//! kube-rs's controller-rs does). Counted per controller and object, so a Cluster failing
//! in the metadata controller does not slow its cluster controller down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The first retry's delay.
pub const INITIAL: Duration = Duration::from_secs(1);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);

/// The delay after `failures` failed reconciles in a row (1 for the first failure).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    INITIAL.saturating_mul(1 << doublings).min(MAX)
}

/// A controller's name (as in its log lines), the object's namespace and name.
type Key = (&'static str, Option<String>, String);

/// Failures in a row per controller and object, shared by the controllers in the `Context`.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: Arc<Mutex<HashMap<Key, u32>>>,
}

impl Backoff {
    /// Records a failed reconcile of `namespace/name` in `controller`; the delay before its retry.
    pub fn failed(
        &self,
        controller: &'static str,
        namespace: Option<String>,
        name: String,
    ) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry((controller, namespace, name)).or_insert(0);
        *count = count.saturating_add(1);
        delay(*count)
    }

    /// Forgets the failures of `namespace/name` in `controller` after a reconcile succeeded.
    pub fn succeeded(&self, controller: &'static str, namespace: Option<String>, name: String) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&(controller, namespace, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(delay(0), INITIAL);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn counts_per_controller_and_object_and_resets_on_success() {
        let b = Backoff::default();
        let ns = || Some("events".to_string());
        assert_eq!(
            b.failed("Cluster", ns(), "a".into()),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.failed("Cluster", ns(), "a".into()),
            Duration::from_secs(2)
        );
        assert_eq!(
            b.failed("Cluster", ns(), "a".into()),
            Duration::from_secs(4)
        );
        // Another object, another controller of the same object: their own counts.
        assert_eq!(
            b.failed("Cluster", ns(), "b".into()),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.failed("Metadata", ns(), "a".into()),
            Duration::from_secs(1)
        );
        b.succeeded("Cluster", ns(), "a".into());
        assert_eq!(
            b.failed("Cluster", ns(), "a".into()),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.failed("Cluster", ns(), "b".into()),
            Duration::from_secs(2)
        );
    }
}
