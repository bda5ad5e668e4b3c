//! Turns the planner's [`DesiredObjects`] into the Kubernetes objects to
//! apply, so the reconciler only has to apply them in field order.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::builders::{
    bootstrap_config_map, client_service, peer_service, pod_disruption_budget, stateful_set,
    ClusterRef,
};
use crate::crd::EtcdClusterSpec;
use crate::planner::DesiredObjects;

/// The objects of one reconcile. Apply them in field order: the ConfigMap
/// before the StatefulSet, so a pod created by a grown StatefulSet never
/// reads a stale `--initial-cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The bootstrap ConfigMap; `None`: leave it as it is.
    pub config_map: Option<ConfigMap>,
    /// The headless peer Service.
    pub peer_service: Service,
    /// The client Service.
    pub client_service: Service,
    /// The StatefulSet.
    pub stateful_set: StatefulSet,
    /// What to do with the PodDisruptionBudget.
    pub pdb: PdbChange,
}

/// What happens to the PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq)]
pub enum PdbChange {
    /// Apply this PDB.
    Apply(Box<PodDisruptionBudget>),
    /// Leave the PDB as it is: the voter count is unknown right now.
    Keep,
    /// `podDisruptionBudget.enabled` is false: delete the PDB if it exists.
    Delete,
}

/// The objects for `desired`.
pub fn render(cluster: &ClusterRef, spec: &EtcdClusterSpec, desired: &DesiredObjects) -> Manifest {
    let pdb = match (spec.pod_disruption_budget.enabled, desired.pdb_voters) {
        (false, _) => PdbChange::Delete,
        (true, Some(voters)) => PdbChange::Apply(Box::new(pod_disruption_budget(cluster, voters))),
        (true, None) => PdbChange::Keep,
    };
    Manifest {
        config_map: desired
            .bootstrap
            .map(|b| bootstrap_config_map(cluster, b.members, b.state)),
        peer_service: peer_service(cluster),
        client_service: client_service(cluster),
        stateful_set: stateful_set(cluster, spec, desired.replicas),
        pdb,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::builders::InitialClusterState;
    use crate::crd::{EtcdCluster, PodDisruptionBudgetSpec};
    use crate::planner::Bootstrap;

    fn cluster() -> ClusterRef {
        let mut resource = EtcdCluster::new("demo", EtcdClusterSpec::default());
        resource.metadata.namespace = Some("prod".into());
        resource.metadata.uid = Some("9d1e6a3c-65a3-4f59-a3f5-0d7b8e2b1c44".into());
        ClusterRef::new(&resource).unwrap()
    }

    fn desired(bootstrap: Option<Bootstrap>, pdb_voters: Option<i32>) -> DesiredObjects {
        DesiredObjects {
            replicas: 4,
            bootstrap,
            pdb_voters,
        }
    }

    #[test]
    fn statefulset_gets_the_planned_replicas() {
        let manifest = render(
            &cluster(),
            &EtcdClusterSpec::default(),
            &desired(None, None),
        );
        assert_eq!(manifest.stateful_set.spec.unwrap().replicas, Some(4));
    }

    #[test]
    fn bootstrap_config_is_rendered_only_when_planned() {
        let spec = EtcdClusterSpec::default();
        let bootstrap = Some(Bootstrap {
            members: 4,
            state: InitialClusterState::Existing,
        });
        let with = render(&cluster(), &spec, &desired(bootstrap, None));
        let data = with.config_map.unwrap().data.unwrap();
        assert_eq!(data["initial-cluster-state"], "existing");
        let without = render(&cluster(), &spec, &desired(None, None));
        assert_eq!(without.config_map, None);
    }

    #[test]
    fn pdb_is_sized_by_planned_voters() {
        let manifest = render(
            &cluster(),
            &EtcdClusterSpec::default(),
            &desired(None, Some(5)),
        );
        let PdbChange::Apply(pdb) = manifest.pdb else {
            panic!("expected a PDB to apply, got {:?}", manifest.pdb);
        };
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(2)));
    }

    #[test]
    fn pdb_is_kept_when_voters_are_unknown() {
        let manifest = render(
            &cluster(),
            &EtcdClusterSpec::default(),
            &desired(None, None),
        );
        assert_eq!(manifest.pdb, PdbChange::Keep);
    }

    #[test]
    fn disabled_pdb_is_deleted() {
        let spec = EtcdClusterSpec {
            pod_disruption_budget: PodDisruptionBudgetSpec { enabled: false },
            ..Default::default()
        };
        let manifest = render(&cluster(), &spec, &desired(None, Some(3)));
        assert_eq!(manifest.pdb, PdbChange::Delete);
    }
}
