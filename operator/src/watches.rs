//! What makes an `EtcdCluster` reconcile: changes of the cluster itself, of
//! the objects it owns (StatefulSet, Services, ConfigMap, PDB, certificate
//! Secrets), and of its
//! member pods and PVCs.
//!
//! Member pods are owned by the StatefulSet and PVCs by no one, so owner
//! references do not lead back to the cluster; both carry the cluster's
//! instance label, which does. Watching them turns a pod's readiness flip,
//! a pod's or PVC's deletion into a reconcile at once instead of at the
//! next requeue.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};

use crate::builders::{INSTANCE_LABEL, MANAGED_OBJECTS_SELECTOR, MEMBER_OBJECTS_SELECTOR};
use crate::crd::EtcdCluster;

/// The controller of the `EtcdCluster`s in `namespace` (all namespaces when
/// `None`), with every watch that should trigger a reconcile.
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<EtcdCluster> {
    let owned = || watcher::Config::default().labels(MANAGED_OBJECTS_SELECTOR);
    let members = || watcher::Config::default().labels(MEMBER_OBJECTS_SELECTOR);
    Controller::new(scoped(client, namespace), watcher::Config::default())
        .owns(scoped::<StatefulSet>(client, namespace), owned())
        .owns(scoped::<Service>(client, namespace), owned())
        .owns(scoped::<ConfigMap>(client, namespace), owned())
        .owns(scoped::<Secret>(client, namespace), owned())
        .owns(scoped::<PodDisruptionBudget>(client, namespace), owned())
        .watches(scoped::<Pod>(client, namespace), members(), |pod| {
            cluster_of_member_object(&pod)
        })
        .watches(
            scoped::<PersistentVolumeClaim>(client, namespace),
            members(),
            |pvc| cluster_of_member_object(&pvc),
        )
}

/// The `EtcdCluster` a member pod or PVC belongs to, by its instance label.
pub fn cluster_of_member_object<K: Resource>(object: &K) -> Option<ObjectRef<EtcdCluster>> {
    let name = object.labels().get(INSTANCE_LABEL)?;
    let namespace = object.namespace()?;
    Some(ObjectRef::new(name).within(&namespace))
}

/// An Api over one namespace, or all when `namespace` is `None`.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests;
