//! The `EtcdCluster` custom resource (`ferrocd.io/v1alpha1`): spec, status,
//! defaults and the validation the operator applies before acting on a spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EmptyDirVolumeSource, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod backup;
mod recovery;
mod restore;
mod rollout;
mod tls;
pub use backup::*;
pub use recovery::*;
pub use restore::*;
pub use rollout::*;
pub use tls::*;

/// API group of the custom resource.
pub const GROUP: &str = "ferrocd.io";
/// Image repository used when `spec.image` is not set.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/ferrocd/ferrocd";
/// Members a cluster starts with when `spec.replicas` is not set.
pub const DEFAULT_REPLICAS: i32 = 3;
/// Smallest allowed `spec.replicas`.
pub const MIN_REPLICAS: i32 = 1;
/// Largest allowed `spec.replicas`: beyond nine voters raft write latency
/// grows with no gain in fault tolerance worth having.
pub const MAX_REPLICAS: i32 = 9;
/// PVC size used when `spec.storage.size` is not set.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// ferrocd flags a user may set through `spec.options`.
///
/// Flags that decide identity, addresses and bootstrap (`name`, `data-dir`,
/// `listen-*`, `advertise-*`, `initial-*`) belong to the operator and are not
/// listed, so a user can not break the cluster's wiring through `options`.
pub const KNOWN_OPTIONS: &[&str] = &[
    "auto-compaction-mode",
    "auto-compaction-retention",
    "election-timeout",
    "heartbeat-interval",
    "log-level",
    "log-outputs",
    "logger",
    "max-request-bytes",
    "max-txn-ops",
    "quota-backend-bytes",
    "snapshot-count",
    "watch-progress-notify-interval",
];

/// Desired state of a ferrocd cluster.
// clippy reads the repeated `type_`/`name` keys of separate `printcolumn(...)`
// entries as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocd.io",
    version = "v1alpha1",
    kind = "EtcdCluster",
    namespaced,
    status = "EtcdClusterStatus",
    shortname = "fcd",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "Voting members asked for (spec.replicas)",
        json_path = ".spec.replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        description = "Members that are healthy and ready",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Members",
        type_ = "integer",
        description = "Members in the store's member list",
        json_path = ".status.replicas"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        description = "Name of the raft leader",
        json_path = ".status.leader"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Lifecycle phase",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.tls) || !has(oldSelf.tls)")
        .message("tls can not be switched off after creation")
)]
pub struct EtcdClusterSpec {
    /// Number of voting members (1 to 9; odd numbers tolerate the most failures per member).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Container image running `ferrocd`. Default: the ferrocd image of the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where members keep their data. Immutable after creation, except
    /// `retainOnDelete`.
    #[serde(default)]
    #[x_kube(validation = storage_immutability_rule())]
    pub storage: StorageSpec,
    /// Compute resources of the ferrocd container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduling and metadata applied to member pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
    /// Extra ferrocd flags without the leading dashes, e.g. `quota-backend-bytes: "8589934592"`.
    /// Bounded so the apiserver's CEL cost estimate of the key check stays small.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = options_rule())]
    pub options: BTreeMap<String, String>,
    /// PodDisruptionBudget that keeps voluntary evictions from costing quorum.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// When true the operator observes and reports but changes nothing.
    #[serde(default)]
    pub paused: bool,
    /// Mutual TLS on the client and peer ports. Absent: plain HTTP. Setting
    /// it on a running cluster turns TLS on one member at a time without
    /// losing quorum (condition `EnablingTLS`); it can not be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Bounds of rolling restarts (image or flag changes, turning TLS on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// Scheduled backups to S3 or a PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSchedule>,
    /// Bootstrap from a snapshot. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("restore is immutable"))]
    pub restore: Option<RestoreSpec>,
    /// What the operator may do on its own when a majority of members is
    /// lost for good. Absent: it only reports `QuorumLost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// Member storage: a PersistentVolumeClaim per member, or an `emptyDir` for
/// throwaway clusters whose data may be lost with the pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.emptyDir) || (!has(self.size) && !has(self.storageClassName))")
        .message("emptyDir excludes size and storageClassName")
)]
pub struct StorageSpec {
    /// Requested size of each member's PVC (default 1Gi). It may grow
    /// later: the operator raises every member's PVC when the
    /// StorageClass allows expansion (see the `VolumeExpansion`
    /// condition); it never shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass of the PVCs; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep data in an emptyDir instead of a PVC: lost when the pod goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// Keep the members' PVCs when the EtcdCluster is deleted (default
    /// true, like a StatefulSet's `Retain` policy); false deletes them
    /// with it, and the data with them.
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: None,
            storage_class_name: None,
            empty_dir: None,
            retain_on_delete: true,
        }
    }
}

/// Pod settings passed through to every member pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Extra labels; the operator's own selector labels win on conflict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of member pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Affinity of member pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of member pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Topology spread constraints of member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// Whether the operator manages a PodDisruptionBudget for the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create the PDB (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Observed state of a ferrocd cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase, a summary of the conditions for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Available, Progressing and Degraded, following Kubernetes
    /// conventions; one per type (a map list keyed by `type`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Members in the store's member list, voters and learners.
    #[serde(default)]
    pub replicas: i32,
    /// Members that are healthy and whose pods are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The store's member list as last observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Name of the raft leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Cluster ID in hex, as etcdctl prints it.
    #[serde(default, rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// etcd API version the members report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address clients connect to (the client Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_endpoint: Option<String>,
    /// With TLS: the Secret (`ca.crt`, `tls.crt`, `tls.key`) a client such
    /// as kube-apiserver connects with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// With TLS: the certificates' serials and expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// The StatefulSet revision (pod template: image, flags) members are
    /// being moved onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Members whose pods run `updateRevision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// With `spec.backup`: the schedule's last runs (written by the backup scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ScheduledBackupStatus>,
    /// With `spec.restore`: the resolved source and how restoring went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// With `spec.recovery.mode: FromLatestBackup`: the rebuild under way and the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
}

/// One entry of the store's member list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member name (the pod name).
    pub name: String,
    /// Member ID in hex; a u64 does not survive JSON numbers.
    pub id: String,
    /// Peer URL the member advertises.
    #[serde(rename = "peerURL")]
    pub peer_url: String,
    /// Client URLs the member advertises.
    #[serde(default, rename = "clientURLs", skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// Whether the member is a non-voting learner.
    #[serde(default)]
    pub is_learner: bool,
    /// Whether the member is the raft leader.
    #[serde(default)]
    pub is_leader: bool,
    /// Whether the member answered a status request.
    #[serde(default)]
    pub healthy: bool,
    /// UID of the PVC the member was first seen healthy on. A PVC with
    /// another UID under the member's pod means its data is gone, and the
    /// member is replaced.
    #[serde(default, rename = "pvcUID", skip_serializing_if = "Option::is_none")]
    pub pvc_uid: Option<String>,
}

/// Lifecycle phase shown in `kubectl get`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects created, members not yet up.
    Creating,
    /// All members healthy, spec reached.
    Running,
    /// A membership change is under way.
    Scaling,
    /// Quorum holds but some member is unhealthy.
    Degraded,
    /// The spec is invalid or quorum is lost.
    Failed,
    /// `spec.paused` is true.
    Paused,
}

/// Why a spec can not be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `replicas` outside 1..=9.
    #[error("spec.replicas must be between {MIN_REPLICAS} and {MAX_REPLICAS}, got {0}")]
    ReplicasOutOfRange(i32),
    /// An `options` key that is not a known, user-settable ferrocd flag.
    #[error("spec.options: unknown or operator-managed ferrocd flag {0:?}")]
    UnknownOption(String),
    /// `emptyDir` combined with PVC settings.
    #[error("spec.storage: emptyDir excludes size and storageClassName")]
    ConflictingStorage,
    /// `spec.tls` can not be acted on.
    #[error(transparent)]
    Tls(#[from] TlsSpecError),
    /// `spec.rollout` can not be acted on.
    #[error(transparent)]
    Rollout(#[from] RolloutSpecError),
}

impl EtcdClusterSpec {
    /// Checks what the schema also checks, for objects that reached the
    /// operator without the CRD's validation (older CRD, tests, fixtures).
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(MIN_REPLICAS..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(SpecError::ReplicasOutOfRange(self.replicas));
        }
        if let Some(unknown) = self
            .options
            .keys()
            .find(|k| !KNOWN_OPTIONS.contains(&k.as_str()))
        {
            return Err(SpecError::UnknownOption(unknown.clone()));
        }
        let storage = &self.storage;
        if storage.empty_dir.is_some()
            && (storage.size.is_some() || storage.storage_class_name.is_some())
        {
            return Err(SpecError::ConflictingStorage);
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        self.rollout_bounds()?;
        Ok(())
    }

    /// The rolling restart's bounds, defaults applied.
    pub fn rollout_bounds(&self) -> Result<crate::rollout::Bounds, RolloutSpecError> {
        self.rollout.clone().unwrap_or_default().bounds()
    }

    /// The image to run: `spec.image`, or the ferrocd image of this operator's version.
    pub fn image_or_default(&self) -> String {
        self.image.clone().unwrap_or_else(default_image)
    }
}

impl Default for EtcdClusterSpec {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            image: None,
            storage: StorageSpec::default(),
            resources: None,
            pod_template: None,
            options: BTreeMap::new(),
            pod_disruption_budget: PodDisruptionBudgetSpec::default(),
            paused: false,
            tls: None,
            rollout: None,
            backup: None,
            restore: None,
            recovery: None,
        }
    }
}

/// The ferrocd image matching the operator's own version.
pub fn default_image() -> String {
    format!("{DEFAULT_IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// The CRD as YAML, exactly as `crdgen` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = EtcdCluster::crd();
    let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML");
    format!("---\n{yaml}")
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

fn default_true() -> bool {
    true
}

/// Fields of `spec.storage` that decide where the data lives: after
/// creation only `size` (which the operator lets grow, see
/// `controller::expand`) and `retainOnDelete` may change.
const IMMUTABLE_STORAGE_FIELDS: &[&str] = &["storageClassName", "emptyDir"];

/// `spec.storage` may change only in `size` and `retainOnDelete`: every
/// other field keeps its presence and its value. (The API server of
/// Kubernetes 1.26 has no quantity comparison in CEL: the operator refuses
/// a smaller size itself.)
fn storage_immutability_rule() -> Rule {
    let rule = IMMUTABLE_STORAGE_FIELDS
        .iter()
        .map(|f| {
            format!(
                "has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
            )
        })
        .collect::<Vec<_>>()
        .join(" && ");
    Rule::new(rule).message("storage is immutable, except size (which may grow) and retainOnDelete")
}

/// CEL rule mirroring [`EtcdClusterSpec::validate`]'s check of option names.
fn options_rule() -> Rule {
    let names = KNOWN_OPTIONS
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Rule::new(format!("self.all(k, k in [{names}])"))
        .message("options may only name known, user-settable ferrocd flags")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_from_yaml(yaml: &str) -> EtcdClusterSpec {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn empty_spec_gets_documented_defaults() {
        let spec = spec_from_yaml("{}");
        assert_eq!(spec, EtcdClusterSpec::default());
        assert_eq!(spec.replicas, 3);
        assert!(spec.pod_disruption_budget.enabled);
        assert!(!spec.paused);
        assert!(spec.storage.retain_on_delete, "data outlives the cluster");
    }

    #[test]
    fn storage_without_retain_on_delete_keeps_its_data() {
        let spec = spec_from_yaml("storage: {size: 2Gi}");
        assert!(spec.storage.retain_on_delete);
        let spec = spec_from_yaml("storage: {size: 2Gi, retainOnDelete: false}");
        assert!(!spec.storage.retain_on_delete);
    }

    #[test]
    fn default_image_follows_operator_version() {
        let spec = EtcdClusterSpec::default();
        assert_eq!(
            spec.image_or_default(),
            format!("ghcr.io/ferrocd/ferrocd:{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn explicit_image_wins_over_default() {
        let spec = spec_from_yaml("image: example.org/ferrocd:dev");
        assert_eq!(spec.image_or_default(), "example.org/ferrocd:dev");
    }

    #[test]
    fn known_options_are_accepted() {
        let spec =
            spec_from_yaml("options: {quota-backend-bytes: '8589934592', snapshot-count: '5000'}");
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn unknown_option_is_rejected() {
        let spec = spec_from_yaml("options: {quota-backend-byte: '1'}");
        assert_eq!(
            spec.validate(),
            Err(SpecError::UnknownOption("quota-backend-byte".into()))
        );
    }

    #[test]
    fn operator_managed_flag_is_rejected_as_option() {
        let spec = spec_from_yaml("options: {initial-cluster-state: existing}");
        assert_eq!(
            spec.validate(),
            Err(SpecError::UnknownOption("initial-cluster-state".into()))
        );
    }

    #[test]
    fn replicas_outside_one_to_nine_are_rejected() {
        for replicas in [0, 10, -1] {
            let spec = EtcdClusterSpec {
                replicas,
                ..Default::default()
            };
            assert_eq!(
                spec.validate(),
                Err(SpecError::ReplicasOutOfRange(replicas))
            );
        }
    }

    #[test]
    fn empty_dir_with_size_is_rejected() {
        let spec = spec_from_yaml("storage: {emptyDir: {}, size: 2Gi}");
        assert_eq!(spec.validate(), Err(SpecError::ConflictingStorage));
    }

    #[test]
    fn status_serializes_member_urls_in_etcd_spelling() {
        let member = MemberStatus {
            name: "c-0".into(),
            id: "8e9e05c52164694d".into(),
            peer_url: "http://c-0.c-peer.ns.svc:2380".into(),
            client_urls: vec!["http://c-0.c-peer.ns.svc:2379".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(&member).unwrap();
        assert_eq!(json["peerURL"], "http://c-0.c-peer.ns.svc:2380");
        assert_eq!(json["clientURLs"][0], "http://c-0.c-peer.ns.svc:2379");
    }

    #[test]
    fn crd_carries_storage_immutability_and_options_rules() {
        let crd = serde_json::to_value(EtcdCluster::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let storage_rules = &spec["properties"]["storage"]["x-kubernetes-validations"];
        let immutability = storage_rules
            .as_array()
            .unwrap()
            .iter()
            .find_map(|r| r["rule"].as_str().filter(|r| r.contains("oldSelf")))
            .expect("a transition rule on storage");
        for field in IMMUTABLE_STORAGE_FIELDS {
            assert!(
                immutability.contains(&format!("self.{field} == oldSelf.{field}")),
                "{immutability}"
            );
        }
        assert!(!immutability.contains("retainOnDelete"), "{immutability}");
        assert!(!immutability.contains("size"), "{immutability}");
        let options_rule = spec["properties"]["options"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap();
        assert!(options_rule.contains("'quota-backend-bytes'"));
    }

    #[test]
    fn crd_is_namespaced_with_short_name_and_printer_columns() {
        let crd = EtcdCluster::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["fcd".to_string()]));
        let columns: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            columns,
            ["Desired", "Ready", "Members", "Leader", "Phase", "Age"]
        );
    }

    #[test]
    fn crd_has_a_scale_subresource_on_spec_replicas() {
        let crd = serde_json::to_value(EtcdCluster::crd()).unwrap();
        let scale = &crd["spec"]["versions"][0]["subresources"]["scale"];
        assert_eq!(scale["specReplicasPath"], ".spec.replicas");
        assert_eq!(scale["statusReplicasPath"], ".status.replicas");
    }

    #[test]
    fn conditions_are_a_map_list_keyed_by_type() {
        let crd = serde_json::to_value(EtcdCluster::crd()).unwrap();
        let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
    }
}
