//! The reconciler: observe -> plan -> act for one `EtcdCluster`.
//!
//! Observe reads the StatefulSet, member pods and PVCs from the API server
//! and the member list from the store; [`planner::plan`] decides; act
//! applies the objects with server-side apply, deletes PVCs of members that
//! are gone, takes at most one membership step and writes the status.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::builders::{BuildError, ClusterRef, FIELD_MANAGER};
use crate::crd::{EtcdCluster, EtcdClusterStatus};
use crate::grpc::GrpcEtcd;
use crate::manifest::{self, PdbChange};
use crate::membership::{self, EtcdApi, EtcdError, MemberStep};
use crate::metrics::Metrics;
use crate::planner::{self, Plan, Progress};
use crate::tls::CertSecret;

/// Finalizer the operator puts on every `EtcdCluster`.
pub const FINALIZER: &str = "etcdclusters.ferrocd.io/finalizer";
/// Requeue interval while a change is under way.
pub const REQUEUE_PROGRESSING: Duration = Duration::from_secs(10);
/// Requeue interval while waiting for members to recover.
pub const REQUEUE_WAITING: Duration = Duration::from_secs(30);
/// Requeue interval of a cluster that matches its spec.
pub const REQUEUE_STEADY: Duration = Duration::from_secs(300);
/// How long one reconcile waits for the store before treating it as down.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can fail a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer machinery failed, or the reconcile inside it did.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The `EtcdCluster` lacks what its children need (namespace, uid).
    #[error("cluster identity: {0}")]
    Identity(#[from] BuildError),
    /// The store rejected or did not answer a membership step.
    #[error("membership step: {0}")]
    Membership(#[source] EtcdError),
    /// No client could be created for the store's endpoint.
    #[error("store client: {0}")]
    StoreClient(#[source] EtcdError),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

impl Error {
    /// Short label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Self::Identity(_) => "identity",
            Self::Membership(_) => "membership",
            Self::StoreClient(_) => "store_client",
        }
    }
}

/// Creates the [`EtcdApi`] a reconcile talks to the store through, so tests
/// can hand the reconciler a fake store.
pub trait EtcdConnector: Send + Sync + 'static {
    /// The client type.
    type Api: EtcdApi;
    /// A client of the store behind `endpoint` (the client Service URL),
    /// presenting the client certificate `tls` when the cluster has TLS.
    fn connect(&self, endpoint: &str, tls: Option<&CertSecret>) -> Result<Self::Api, EtcdError>;
}

/// Connects over gRPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcConnector;

impl EtcdConnector for GrpcConnector {
    type Api = GrpcEtcd;

    fn connect(&self, endpoint: &str, tls: Option<&CertSecret>) -> Result<GrpcEtcd, EtcdError> {
        GrpcEtcd::new(endpoint, tls)
    }
}

/// What every reconcile shares.
pub struct Context<C = GrpcConnector> {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Kubernetes Events about membership steps.
    pub recorder: Recorder,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Creates store clients.
    pub etcd: C,
    /// Consecutive failures per cluster, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl<C> Context<C> {
    /// A context publishing events as `ferrocd-operator`.
    pub fn new(client: Client, metrics: Arc<Metrics>, etcd: C) -> Self {
        let recorder = Recorder::new(client.clone(), FIELD_MANAGER.into());
        Self {
            client,
            recorder,
            metrics,
            etcd,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn record_outcome(&self, key: &str, failed: bool) -> u32 {
        let mut failures = self.failures.lock().expect("failure map is never poisoned");
        if failed {
            let count = failures.entry(key.to_string()).or_default();
            *count += 1;
            *count
        } else {
            failures.remove(key);
            0
        }
    }
}

/// Reconciles one `EtcdCluster`, inside the finalizer.
pub async fn reconcile<C: EtcdConnector>(
    cluster: Arc<EtcdCluster>,
    ctx: Arc<Context<C>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = cluster
        .namespace()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let key = format!("{namespace}/{}", cluster.name_any());
    let api: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            FinalizerEvent::Apply(cluster) => apply(&cluster, &ctx).await,
            FinalizerEvent::Cleanup(cluster) => cleanup(&cluster, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.record_outcome(&key, false);
    }
    result
}

/// Runs before the `EtcdCluster` goes. Every child but the PVCs carries an
/// owner reference, and the garbage collector removes those once the
/// cluster is gone. The PVCs belong to the StatefulSet controller's claim
/// templates and stay, with the data, unless `spec.storage.retainOnDelete`
/// is false; deleting them while pods still use them only marks them, they
/// go with the pods.
async fn cleanup<C>(cluster: &EtcdCluster, ctx: &Context<C>) -> Result<Action, Error> {
    if cluster.spec.storage.retain_on_delete || cluster.spec.storage.empty_dir.is_some() {
        return Ok(Action::await_change());
    }
    let cluster_ref = ClusterRef::new(cluster)?;
    let pvcs =
        Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), cluster_ref.namespace());
    let claims = pvcs
        .list(&ListParams::default().labels(&cluster_ref.label_selector()))
        .await?;
    for claim in &claims.items {
        let name = claim.name_any();
        // Only claims named after one of this cluster's members, whatever
        // else shares the labels.
        if cluster_ref.ordinal_of_pvc(&name).is_some() {
            delete_if_present(&pvcs, &name).await?;
        }
    }
    Ok(Action::await_change())
}

/// Requeues with exponential backoff per cluster: 5s, 10s, 20s, ... up to 5 minutes.
pub fn error_policy<C>(cluster: Arc<EtcdCluster>, error: &Error, ctx: Arc<Context<C>>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error);
    let key = format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    Action::requeue(backoff(ctx.record_outcome(&key, true)))
}

/// Delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (Duration::from_secs(5) * 2u32.pow(exponent)).min(REQUEUE_STEADY)
}

/// How soon to look again after a reconcile that ended at `progress`.
pub fn requeue_after(progress: &Progress) -> Duration {
    match progress {
        Progress::Bootstrapping
        | Progress::AddingMember(_)
        | Progress::WaitingForLearner(_)
        | Progress::PromotingMember(_)
        | Progress::RemovingMember(_)
        | Progress::ReplacingMember(_) => REQUEUE_PROGRESSING,
        Progress::StoreUnreachable | Progress::QuorumAtRisk | Progress::Degraded => REQUEUE_WAITING,
        Progress::Stable | Progress::Paused | Progress::InvalidSpec(_) => REQUEUE_STEADY,
    }
}

async fn apply<C: EtcdConnector>(cluster: &EtcdCluster, ctx: &Context<C>) -> Result<Action, Error> {
    let cluster_ref = ClusterRef::new(cluster)?;
    let Some(resolved) = restore::resolve(cluster, &cluster_ref, ctx).await? else {
        return Ok(Action::requeue(REQUEUE_WAITING));
    };
    let resolved = recovery::with_source(resolved);
    let cluster = resolved.as_ref();
    let previous_members = cluster.status.as_ref().map_or(&[][..], |s| &s.members[..]);
    let (seen, etcd) = observe(cluster, &cluster_ref, previous_members, ctx).await?;
    let cluster_ref = cluster_ref.with_phase(seen.phase);
    let mut plan = planner::plan(&cluster_ref, &cluster.spec, &seen.planner);
    let recovery = recovery::step(cluster, &cluster_ref, &seen, etcd.as_ref(), ctx).await?;
    if recovery
        .as_ref()
        .is_some_and(|r| r.decision.holds_objects())
    {
        plan.objects = None;
        plan.delete_pvcs.clear();
    }
    // While a member is being forced, no membership step and no rollout.
    let recovering = recovery
        .as_ref()
        .is_some_and(|r| r.decision.is_recovering());
    tracing::info!(
        cluster = %cluster.name_any(),
        progress = ?plan.progress,
        step = ?plan.step,
        "planned"
    );
    let volumes = expand::Volumes {
        live: seen.stateful_set.as_ref(),
        pvcs: &seen.pvcs,
    };
    let (certificates, expansion) = act(cluster, &cluster_ref, &plan, volumes, ctx).await?;
    if let Some(certificates) = &certificates {
        certificates::record_issued(cluster, certificates, ctx).await;
    }
    let step_result = match (&plan.step, &etcd) {
        (Some(step), Some(etcd)) if !recovering => {
            take_step(cluster, &cluster_ref, step, etcd, ctx).await
        }
        _ => Ok(()),
    };
    // Pods move to a new revision only between membership changes.
    let rollout = match (&plan.step, &etcd, &seen.store, &plan.progress) {
        (None, Some(etcd), Some(store), Progress::Stable | Progress::Degraded) if !recovering => {
            let sts = seen.stateful_set.as_ref();
            Some(upgrade::step(cluster, &cluster_ref, sts, &seen.pods, store, etcd, ctx).await)
        }
        _ => None,
    };
    let outcome = rollout.as_ref().and_then(|r| r.as_ref().ok());
    let transition = match (&etcd, &seen.store, &rollout) {
        // Pods of the next phase mount the certificate Secrets: no phase
        // moves on while they are missing or not current.
        (Some(etcd), Some(store), None | Some(Ok(_)))
            if certificates.as_ref().is_some_and(|c| c.problem.is_none()) =>
        {
            let ready = seen.ready_pods.len();
            enable_tls::step(
                cluster,
                &cluster_ref,
                &plan,
                volumes,
                ready,
                store,
                outcome,
                etcd,
                ctx,
            )
            .await
        }
        _ => Ok(None),
    };
    let mut status = build_status(cluster, &cluster_ref, &plan, &seen);
    let next_rotation = certificates.as_ref().and_then(|c| c.next_rotation);
    certificates::report(cluster, &mut status, certificates);
    upgrade::report(cluster, &cluster_ref, &mut status, outcome);
    let moving = transition.as_ref().ok().and_then(Option::as_ref);
    enable_tls::report(cluster, &mut status, moving);
    expand::report(cluster, &mut status, &expansion);
    let mut requeue = match outcome {
        _ if moving.is_some_and(|t| *t != enable_tls::Transition::Enabled) => {
            upgrade::REQUEUE_ROLLING
        }
        Some(o) if o.rolling() => upgrade::REQUEUE_ROLLING,
        _ => requeue_after(&plan.progress),
    };
    if let Some(recovery) = recovery {
        status
            .conditions
            .extend(recovery.conditions.iter().cloned());
        requeue = requeue.min(recovery.requeue().unwrap_or(requeue));
    }
    patch_status(cluster, &cluster_ref, status, ctx).await?;
    step_result?;
    rollout.transpose()?;
    transition?;
    Ok(Action::requeue(certificates::requeue_with_rotation(
        requeue,
        next_rotation,
        Timestamp::now(),
    )))
}

/// Applies the planned objects in order, with the certificates of a TLS
/// cluster between the Services (whose ClusterIP they carry) and the
/// StatefulSet (whose pods mount them), growing the volumes first when the
/// spec's size grew past the running StatefulSet's (`volumes`: what the
/// reconcile saw), and deletes PVCs of
/// members that are gone. Returns the certificate step's outcome, if there
/// was one, and where the volumes stand.
async fn act<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    plan: &Plan,
    volumes: expand::Volumes<'_>,
    ctx: &Context<C>,
) -> Result<(Option<certificates::Certificates>, expand::Expansion), Error> {
    let client = &ctx.client;
    let namespace = cluster_ref.namespace();
    let mut certificates = None;
    let mut expansion = expand::Expansion::Nothing;
    if let Some(desired) = &plan.objects {
        let mut manifest = manifest::render(cluster_ref, &cluster.spec, desired);
        if let Some(config_map) = &manifest.config_map {
            server_side_apply::<ConfigMap>(client, namespace, config_map).await?;
        }
        server_side_apply::<Service>(client, namespace, &manifest.peer_service).await?;
        let client_service =
            server_side_apply::<Service>(client, namespace, &manifest.client_service).await?;
        if let Some(tls) = &cluster.spec.tls {
            let ip = client_service
                .spec
                .and_then(|spec| spec.cluster_ip)
                .and_then(|ip| ip.parse().ok());
            certificates = Some(certificates::ensure(client, cluster, cluster_ref, tls, ip).await?);
        }
        expansion = expand::prepare(
            cluster,
            cluster_ref,
            volumes,
            &mut manifest.stateful_set,
            ctx,
        )
        .await?;
        server_side_apply::<StatefulSet>(client, namespace, &manifest.stateful_set).await?;
        match &manifest.pdb {
            PdbChange::Apply(pdb) => {
                server_side_apply::<PodDisruptionBudget>(client, namespace, pdb).await?;
            }
            PdbChange::Keep => {}
            PdbChange::Delete => {
                let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
                delete_if_present(&pdbs, cluster_ref.name()).await?;
            }
        }
    }
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    for &ordinal in &plan.delete_pvcs {
        delete_if_present(&pvcs, &cluster_ref.pvc_name(ordinal)).await?;
    }
    Ok((certificates, expansion))
}

/// Applies `object` and returns it as the API server stored it.
async fn server_side_apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?)
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Takes one membership step and records an Event about it.
async fn take_step<C: EtcdConnector>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    step: &MemberStep,
    etcd: &C::Api,
    ctx: &Context<C>,
) -> Result<(), Error> {
    let result = with_timeout(membership::execute(etcd, step)).await;
    ctx.metrics.member_step(step, result.is_ok());
    let (action, reason, note) = describe(cluster_ref, step);
    let event = match &result {
        Ok(()) => Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        },
        Err(error) => Event {
            type_: EventType::Warning,
            reason: "MemberStepFailed".into(),
            note: Some(format!("{note}: {error}")),
            action: action.into(),
            secondary: None,
        },
    };
    // An Event is a courtesy to humans; failing to record one must not fail
    // a reconcile whose step already happened.
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "recording event failed");
    }
    result.map_err(Error::Membership)
}

async fn with_timeout<T>(
    future: impl Future<Output = Result<T, EtcdError>>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(STORE_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err(EtcdError::Unavailable("timed out".into())))
}

/// Event action, reason and note of a step.
fn describe(cluster: &ClusterRef, step: &MemberStep) -> (&'static str, &'static str, String) {
    match step {
        MemberStep::AddLearner { ordinal, peer_url } => (
            "AddLearner",
            "MemberAdded",
            format!(
                "added {} ({peer_url}) as a learner",
                cluster.member_name(*ordinal)
            ),
        ),
        MemberStep::Promote { id, ordinal } => (
            "PromoteMember",
            "MemberPromoted",
            format!(
                "promoted learner {} ({id:x}) to voter",
                cluster.member_name(*ordinal)
            ),
        ),
        MemberStep::Remove { id, ordinal } => (
            "RemoveMember",
            "MemberRemoved",
            format!("removed member {} ({id:x})", cluster.member_name(*ordinal)),
        ),
    }
}

async fn patch_status<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    status: EtcdClusterStatus,
    ctx: &Context<C>,
) -> Result<(), Error> {
    apply_cluster_status(
        &ctx.client,
        cluster,
        cluster_ref.namespace(),
        json!(status),
        FIELD_MANAGER,
    )
    .await
}

/// Applies `status` (the whole status, or some fields of it) to `cluster`
/// in `namespace` as field manager `manager`: each writer of the status
/// (reconciler, restore, scheduler, rebuild) owns its own fields.
pub(crate) async fn apply_cluster_status(
    client: &kube::Client,
    cluster: &EtcdCluster,
    namespace: &str,
    status: serde_json::Value,
    manager: &str,
) -> Result<(), Error> {
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), namespace);
    let patch = json!({
        "apiVersion": EtcdCluster::api_version(&()),
        "kind": EtcdCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

pub mod backup;
pub mod certificates;
pub mod enable_tls;
pub mod expand;
mod observe;
mod recovery;
mod report;
pub mod restore;
pub mod schedule;
pub mod upgrade;

use observe::{is_ready, observe, Seen};
use report::build_status;

#[cfg(test)]
mod tests;
