//! The observe step of a reconcile: the StatefulSet, member pods and PVCs
//! from the API server, the phase of turning TLS on, and the member list
//! with each member's status from the store.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::report::member_volumes;
use super::{certificates, upgrade, Context, Error, EtcdConnector, STORE_TIMEOUT};
use crate::builders::ClusterRef;
use crate::crd::{EtcdCluster, MemberStatus};
use crate::membership::{self, StoreView};
use crate::planner::Observed;
use crate::tls::{self, enable::EnablePhase};
use crate::volumes::{self, PvcUids};

/// What observe found, beyond what the planner takes.
pub(super) struct Seen {
    pub(super) planner: Observed,
    pub(super) ready_pods: BTreeSet<String>,
    pub(super) pvc_uids: PvcUids,
    pub(super) store: Option<StoreView>,
    pub(super) stateful_set: Option<StatefulSet>,
    pub(super) pods: Vec<Pod>,
    /// The members' PVCs.
    pub(super) pvcs: Vec<PersistentVolumeClaim>,
    /// Where turning TLS on stands, from the StatefulSet.
    pub(super) phase: EnablePhase,
}

pub(super) async fn observe<C: EtcdConnector>(
    resource: &EtcdCluster,
    cluster: &ClusterRef,
    previous_members: &[MemberStatus],
    ctx: &Context<C>,
) -> Result<(Seen, Option<C::Api>), Error> {
    let namespace = cluster.namespace();
    let selector = ListParams::default().labels(&cluster.label_selector());
    let stateful_set = Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .get_opt(cluster.name())
        .await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&selector)
        .await?;
    let pvc_list = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace)
        .list(&selector)
        .await?;
    let ready_pods = pods
        .items
        .iter()
        .filter(|pod| cluster.ordinal_of_member(&pod.name_any()).is_some() && is_ready(pod))
        .map(|pod| pod.name_any())
        .collect();
    let pvcs: BTreeSet<i32> = pvc_list
        .items
        .iter()
        .filter_map(|pvc| cluster.ordinal_of_pvc(&pvc.name_any()))
        .collect();
    let pvc_uids: PvcUids = pvc_list
        .items
        .iter()
        .filter_map(|pvc| Some((cluster.ordinal_of_pvc(&pvc.name_any())?, pvc.uid()?)))
        .collect();
    let phase = tls::enable::observed(
        resource.spec.tls.is_some(),
        stateful_set.as_ref().map(|sts| {
            (
                sts.annotations()
                    .get(tls::enable::PHASE_ANNOTATION)
                    .map(String::as_str),
                has_peer_certificates(sts),
            )
        }),
    );
    let cluster = &cluster.clone().with_phase(phase);
    let stateful_set_replicas = stateful_set.as_ref().map(|sts| {
        sts.spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            // The API server defaults replicas to 1.
            .unwrap_or(1)
    });
    // Before the StatefulSet exists there is no store to ask; a TLS store
    // not before the operator has its client certificate.
    let client_tls = match &resource.spec.tls {
        Some(_) if !cluster.operator_tls() => Some(None),
        Some(tls) if stateful_set_replicas.is_some() => {
            certificates::operator_client(&ctx.client, cluster, tls)
                .await?
                .map(Some)
        }
        Some(_) => None,
        None => Some(None),
    };
    let (store, etcd) = if let (Some(_), Some(client_tls)) = (stateful_set_replicas, client_tls) {
        let etcd = ctx
            .etcd
            .connect(&cluster.client_endpoint(), client_tls.as_ref())
            .map_err(Error::StoreClient)?;
        let observe = membership::observe_store_at(&etcd, membership::STATUS_TIMEOUT, |member| {
            upgrade::client_url(cluster, member)
        });
        let store = tokio::time::timeout(STORE_TIMEOUT, observe)
            .await
            .ok()
            .flatten();
        (store, Some(etcd))
    } else {
        (None, None)
    };
    let replaced_pvcs = store.as_ref().map_or_else(BTreeSet::new, |store| {
        volumes::replaced(
            &volumes::recorded(previous_members),
            &member_volumes(cluster, store),
            &pvc_uids,
        )
    });
    let seen = Seen {
        planner: Observed {
            stateful_set_replicas,
            pvcs,
            replaced_pvcs,
            members: store.as_ref().map(StoreView::observed),
        },
        ready_pods,
        pvc_uids,
        store,
        stateful_set,
        pods: pods.items,
        pvcs: pvc_list
            .items
            .into_iter()
            .filter(|pvc| cluster.ordinal_of_pvc(&pvc.name_any()).is_some())
            .collect(),
        phase,
    };
    Ok((seen, etcd))
}

/// Whether the StatefulSet's members have the peer certificate flags.
fn has_peer_certificates(stateful_set: &StatefulSet) -> bool {
    stateful_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .is_some_and(|pod| {
            pod.containers.iter().any(|c| {
                c.args
                    .iter()
                    .flatten()
                    .any(|a| a.starts_with("--peer-cert-file"))
            })
        })
}

pub(super) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
