//! The Topic controller: the part of a Topic's life that does not need its Cluster. Placing
//! partitions, talking to brokers and the status of a Topic whose Cluster exists are the
//! metadata controller's ([`super::metadata`]), per Cluster. Here:
//!
//! * a Topic whose Cluster does not exist (or is being deleted) gets `Ready=False`
//!   (`ClusterNotFound`);
//! * a deleted Topic whose Cluster is gone has its finalizer released at once: there is no
//!   broker left to delete data from, and a namespace being deleted never hangs on it.

use super::metadata::{topic_name, TOPIC_FINALIZER};
use super::{apply_status, condition, Context, Error, FIELD_MANAGER};
use crate::crd::{Cluster, Topic, TopicStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

/// The controller's name in metrics and logs.
const CONTROLLER: &str = "Topic";

/// Removes the operator's finalizer from `topic` (optimistically locked on its resource
/// version, so a concurrent change is not overwritten).
pub async fn release(api: &Api<Topic>, topic: &Topic) -> Result<(), Error> {
    let finalizers: Vec<String> = topic
        .finalizers()
        .iter()
        .filter(|f| *f != TOPIC_FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": topic.resource_version(),
        }
    });
    match api
        .patch(
            &topic.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing to release.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("releasing the finalizer of Topic `{}`", topic.name_any()),
            source,
        }),
    }
}

/// The status of a Topic whose Cluster does not exist.
pub fn orphan_status(topic: &Topic, now: Timestamp) -> TopicStatus {
    TopicStatus {
        observed_generation: topic.metadata.generation,
        conditions: vec![condition(
            topic.status.as_ref().map_or(&[][..], |s| &s.conditions),
            "Ready",
            false,
            "ClusterNotFound",
            format!(
                "Cluster `{}` does not exist in this namespace",
                topic.spec.cluster
            ),
            topic.metadata.generation,
            now,
        )],
        topic_name: Some(topic_name(topic)),
        partitions: Vec::new(),
        totals: None,
    }
}

/// Handles a Topic whose Cluster is missing.
#[tracing::instrument(skip_all, fields(topic = %topic.name_any(), namespace = ?topic.namespace()))]
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = check_cluster(&topic, &ctx).await;
    if let Err(error) = &result {
        ctx.metrics.failure(CONTROLLER, error);
        ctx.warn(&topic.object_ref(&()), "ReconcileFailed", error.to_string())
            .await;
    }
    result
}

async fn check_cluster(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    let name = topic.name_any();
    let namespace = topic.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: CONTROLLER,
        name: name.clone(),
    })?;
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let cluster = clusters
        .get_opt(&topic.spec.cluster)
        .await
        .map_err(|source| Error::Kube {
            action: format!("reading Cluster `{}`", topic.spec.cluster),
            source,
        })?;
    let gone = cluster
        .as_ref()
        .is_none_or(|c| c.metadata.deletion_timestamp.is_some());
    if !gone {
        // The metadata controller of the Cluster looks after this Topic.
        return Ok(Action::await_change());
    }
    let topics: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    if topic.metadata.deletion_timestamp.is_some() {
        if topic.finalizers().iter().any(|f| f == TOPIC_FINALIZER) {
            release(&topics, topic).await?;
            tracing::info!("Cluster is gone: finalizer released");
        }
        return Ok(Action::await_change());
    }
    let status = orphan_status(topic, Timestamp::now());
    if topic.status.as_ref() != Some(&status) {
        apply_status(&topics, &name, &status, FIELD_MANAGER).await?;
    }
    Ok(Action::await_change())
}

/// What to do after a failed reconciliation: try again soon.
pub fn error_policy(topic: Arc<Topic>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(topic = %topic.name_any(), %error, "reconcile failed");
    ctx.retry_after_failure("Topic", &*topic)
}
