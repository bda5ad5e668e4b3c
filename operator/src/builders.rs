//! Pure builders of the Kubernetes objects behind an `EtcdCluster`: the
//! headless peer Service, the client Service, the bootstrap ConfigMap, the
//! StatefulSet and the PodDisruptionBudget. No I/O; the reconciler applies
//! what these return with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::backup::restore_pod;
use crate::crd::{EtcdClusterSpec, DEFAULT_STORAGE_SIZE};
use crate::tls;
use crate::tls::enable::{Listener, PHASE_ANNOTATION, SIDE_CLIENT_PORT, SIDE_PEER_PORT};

mod cluster_ref;
mod tls_pod;
use cluster_ref::scheme;
pub use cluster_ref::ClusterRef;
use tls_pod::{secret_volume, tcp_probe, tls_args, tls_mounts, tls_readiness_probe};
pub use tls_pod::{PEER_TLS_DIR, PROBE_BINARY, SERVER_TLS_DIR};
use tls_pod::{PEER_TLS_VOLUME, SERVER_TLS_VOLUME};

/// Port clients (and probes) talk to.
pub const CLIENT_PORT: i32 = 2379;
/// Port members talk raft on.
pub const PEER_PORT: i32 = 2380;
/// Where the data volume is mounted in member pods.
pub const DATA_DIR: &str = "/var/lib/ferrocd";
/// Name of the data volume, and so the prefix of member PVC names.
pub const DATA_VOLUME: &str = "data";
/// Field manager the operator applies its objects with.
pub const FIELD_MANAGER: &str = "ferrocd-operator";
/// The user and group the ferrocd image runs as (distroless "nonroot").
pub const MEMBER_UID: i64 = 65532;
/// Label naming the application; `ferrocd` on every member pod and PVC.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Label naming the `EtcdCluster` a member pod or PVC belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label marking objects the operator applies (PVCs, made by the
/// StatefulSet controller, do not carry it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label selector matching the member pods and PVCs of every cluster:
/// what the reconciler watches besides the objects it owns.
pub const MEMBER_OBJECTS_SELECTOR: &str =
    "app.kubernetes.io/name=ferrocd,app.kubernetes.io/instance";
/// Label selector matching the objects the operator applies.
pub const MANAGED_OBJECTS_SELECTOR: &str = "app.kubernetes.io/managed-by=ferrocd-operator";

const CONFIG_INITIAL_CLUSTER: &str = "initial-cluster";
const CONFIG_INITIAL_CLUSTER_STATE: &str = "initial-cluster-state";
/// Key of the bootstrap ConfigMap naming the one member (pod) to start
/// with `--force-new-cluster` during a recovery; written by the recovery
/// step alone, under a field manager of its own.
pub const CONFIG_FORCE_NEW_CLUSTER_MEMBER: &str = "force-new-cluster-member";

/// Why objects could not be built for a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The object has not been stored yet, so it has no namespace or uid to own children by.
    #[error("EtcdCluster has no {0}; only stored objects can own children")]
    MissingMetadata(&'static str),
}

/// Whether pods bootstrap a new cluster or join the existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    /// All members listed in `--initial-cluster` start together and form a cluster.
    New,
    /// A member joins a cluster that already has it in its member list.
    Existing,
}

impl InitialClusterState {
    fn as_flag(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }
}

/// Headless Service giving every member a DNS name, published before the
/// member is ready: members must find each other to become ready at all.
pub fn peer_service(cluster: &ClusterRef) -> Service {
    Service {
        metadata: cluster.metadata(cluster.peer_service_name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster.selector_labels()),
            ports: Some(vec![
                service_port("client", CLIENT_PORT),
                service_port("peer", PEER_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ClusterIP Service clients connect to; routes only to ready members.
pub fn client_service(cluster: &ClusterRef) -> Service {
    Service {
        metadata: cluster.metadata(cluster.name.clone()),
        spec: Some(ServiceSpec {
            selector: Some(cluster.selector_labels()),
            ports: Some(client_ports(cluster, service_port)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ConfigMap read by member pods at start for `--initial-cluster` and
/// `--initial-cluster-state`.
///
/// These values change with every membership step. Kept out of the pod
/// template, they do not roll every member on each scale step; a member
/// with data ignores them, a member starting empty reads the current ones.
pub fn bootstrap_config_map(
    cluster: &ClusterRef,
    members: i32,
    state: InitialClusterState,
) -> ConfigMap {
    ConfigMap {
        metadata: cluster.metadata(cluster.config_map_name()),
        data: Some(BTreeMap::from([
            (
                CONFIG_INITIAL_CLUSTER.to_string(),
                cluster.initial_cluster(members),
            ),
            (
                CONFIG_INITIAL_CLUSTER_STATE.to_string(),
                state.as_flag().to_string(),
            ),
        ])),
        ..Default::default()
    }
}

/// StatefulSet running `replicas` member pods.
///
/// `replicas` comes from the planner, not from the spec: during a scale
/// step the StatefulSet trails or leads the spec by one member.
pub fn stateful_set(cluster: &ClusterRef, spec: &EtcdClusterSpec, replicas: i32) -> StatefulSet {
    let (mut volumes, volume_claim_templates) = match &spec.storage.empty_dir {
        Some(empty_dir) => (
            vec![Volume {
                name: DATA_VOLUME.to_string(),
                empty_dir: Some(empty_dir.clone()),
                ..Default::default()
            }],
            None,
        ),
        None => (Vec::new(), Some(vec![volume_claim_template(spec)])),
    };
    if let Some(tls_spec) = spec
        .tls
        .as_ref()
        .filter(|_| cluster.phase.template().peer_certificates)
    {
        let secrets = tls::secret_names(cluster, tls_spec);
        volumes.push(secret_volume(SERVER_TLS_VOLUME, secrets.server));
        volumes.push(secret_volume(PEER_TLS_VOLUME, secrets.peer));
    }
    let member = ferrocd_container(cluster, spec);
    let init_containers =
        restore_pod::init_container(cluster, spec, member.env.as_deref().unwrap_or_default()).map(
            |(container, restore_volumes)| {
                volumes.extend(restore_volumes);
                vec![container]
            },
        );
    let pod_template = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = pod_template.labels;
    pod_labels.extend(cluster.labels());
    let mut metadata = cluster.metadata(cluster.name.clone());
    if spec.tls.is_some() {
        metadata.annotations = Some(BTreeMap::from([(
            PHASE_ANNOTATION.to_string(),
            cluster.phase.name().to_string(),
        )]));
    }
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(cluster.peer_service_name()),
            // Bootstrap members must start together: with OrderedReady the
            // first pod would wait for readiness it can only reach with quorum.
            pod_management_policy: Some("Parallel".to_string()),
            selector: LabelSelector {
                match_labels: Some(cluster.selector_labels()),
                ..Default::default()
            },
            // The operator restarts members itself, one at a time, when
            // they are caught up, the leader last (see `rollout`).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: non_empty(pod_template.annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers,
                    containers: vec![member],
                    volumes: non_empty_vec(volumes),
                    node_selector: non_empty(pod_template.node_selector),
                    affinity: pod_template.affinity,
                    tolerations: non_empty_vec(pod_template.tolerations),
                    priority_class_name: pod_template.priority_class_name,
                    topology_spread_constraints: non_empty_vec(
                        pod_template.topology_spread_constraints,
                    ),
                    security_context: Some(restricted_pod()),
                    ..Default::default()
                }),
            },
            volume_claim_templates,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// PodDisruptionBudget allowing `(voters - 1) / 2` members down at once.
///
/// A cluster of `voters` keeps quorum while at most `voters - quorum =
/// (voters - 1) / 2` voters are down; the PDB counts pods that are already
/// unhealthy against that budget, so evictions stop exactly where one more
/// would cost quorum. It is sized by voters, not pods: a learner pod being
/// counted would let one voter too many go during a scale-up. With one or
/// two voters the budget is zero: any eviction would stop the cluster, so
/// node drains wait for a human (or `podDisruptionBudget.enabled: false`).
pub fn pod_disruption_budget(cluster: &ClusterRef, voters: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: cluster.metadata(cluster.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(voters))),
            selector: Some(LabelSelector {
                match_labels: Some(cluster.selector_labels()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Voters that may be down while a cluster of `voters` keeps quorum.
pub fn max_unavailable(voters: i32) -> i32 {
    (voters.max(1) - 1) / 2
}

fn ferrocd_container(cluster: &ClusterRef, spec: &EtcdClusterSpec) -> Container {
    let peer_host = format!(
        "$(POD_NAME).{}.{}.svc",
        cluster.peer_service_name(),
        cluster.namespace
    );
    let template = cluster.phase.template();
    let urls = |listeners: &[Listener], host: &str| {
        listeners
            .iter()
            .map(|l| format!("{}://{host}:{}", scheme(*l), l.port))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec![
        "--name=$(POD_NAME)".to_string(),
        format!("--data-dir={DATA_DIR}"),
        format!("--listen-client-urls={}", urls(&template.client, "0.0.0.0")),
        format!(
            "--advertise-client-urls={}",
            urls(&template.client, &peer_host)
        ),
        format!("--listen-peer-urls={}", urls(&template.peer, "0.0.0.0")),
        format!(
            "--initial-advertise-peer-urls={}",
            urls(
                &[cluster.phase.template_phase().advertised_peer()],
                &peer_host
            )
        ),
        "--initial-cluster=$(INITIAL_CLUSTER)".to_string(),
        "--initial-cluster-state=$(INITIAL_CLUSTER_STATE)".to_string(),
        format!(
            "--initial-cluster-token={}",
            cluster.initial_cluster_token()
        ),
    ];
    let with_tls = spec.tls.is_some() && template.peer_certificates;
    if with_tls {
        args.extend(tls_args());
    }
    // BTreeMap order keeps the template, and so the rollout, stable.
    args.extend(spec.options.iter().map(|(k, v)| format!("--{k}={v}")));
    let mut volume_mounts = vec![VolumeMount {
        name: DATA_VOLUME.to_string(),
        mount_path: DATA_DIR.to_string(),
        ..Default::default()
    }];
    if with_tls {
        volume_mounts.extend(tls_mounts());
    }
    let client_port_tls = template
        .client
        .iter()
        .any(|l| l.port == CLIENT_PORT && l.tls);
    let (readiness_probe, liveness_probe) = if client_port_tls {
        (tls_readiness_probe(), tcp_probe(10, 6))
    } else {
        // Generous liveness: a member replaying its log or receiving a
        // snapshot must not be killed for being slow.
        (http_probe("/readyz", 5, 3), http_probe("/livez", 10, 6))
    };
    Container {
        name: "ferrocd".to_string(),
        image: Some(spec.image_or_default()),
        command: Some(vec!["ferrocd".to_string()]),
        args: Some(args),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".to_string(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            config_env(cluster, "INITIAL_CLUSTER", CONFIG_INITIAL_CLUSTER),
            config_env(
                cluster,
                "INITIAL_CLUSTER_STATE",
                CONFIG_INITIAL_CLUSTER_STATE,
            ),
            // ferrocd forces a new cluster only in the pod this names.
            EnvVar {
                name: "FERROCD_FORCE_NEW_CLUSTER_MEMBER".to_string(),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: cluster.config_map_name(),
                        key: CONFIG_FORCE_NEW_CLUSTER_MEMBER.to_string(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ports: Some(
            [
                client_ports(cluster, container_port),
                peer_ports(cluster, container_port),
            ]
            .concat(),
        ),
        readiness_probe: Some(readiness_probe),
        liveness_probe: Some(liveness_probe),
        resources: spec.resources.clone(),
        volume_mounts: Some(volume_mounts),
        security_context: Some(restricted_container()),
        ..Default::default()
    }
}

/// The pod side of the `restricted` Pod Security profile, for every pod
/// the operator makes: the image's distroless "nonroot" user (fsGroup
/// makes a fresh volume writable for it) and the runtime's seccomp profile.
pub(crate) fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(MEMBER_UID),
        run_as_group: Some(MEMBER_UID),
        fs_group: Some(MEMBER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What in `pod` the `restricted` Pod Security profile (Kubernetes 1.26)
/// refuses; empty when it passes. For the tests of every pod the operator
/// makes.
#[cfg(test)]
pub(crate) fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    let seccomp_ok = |p: &Option<SeccompProfile>| {
        p.as_ref()
            .is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
    };
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        found.push("host namespaces".to_string());
    }
    for volume in pod.volumes.iter().flatten() {
        let allowed = volume.config_map.is_some()
            || volume.csi.is_some()
            || volume.downward_api.is_some()
            || volume.empty_dir.is_some()
            || volume.ephemeral.is_some()
            || volume.persistent_volume_claim.is_some()
            || volume.projected.is_some()
            || volume.secret.is_some();
        if !allowed {
            found.push(format!("volume {} of a restricted type", volume.name));
        }
    }
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let name = &c.name;
        if sc.allow_privilege_escalation != Some(false) {
            found.push(format!("{name}: allowPrivilegeEscalation not false"));
        }
        if sc.privileged == Some(true) {
            found.push(format!("{name}: privileged"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            found.push(format!("{name}: capabilities not dropped"));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            found.push(format!("{name}: capabilities added"));
        }
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
        if non_root != Some(true) {
            found.push(format!("{name}: runAsNonRoot not true"));
        }
        if sc.run_as_user.or(pod_sc.run_as_user) == Some(0) {
            found.push(format!("{name}: runs as root"));
        }
        if !seccomp_ok(&sc.seccomp_profile) && !seccomp_ok(&pod_sc.seccomp_profile) {
            found.push(format!("{name}: no seccomp profile"));
        }
        if c.ports.iter().flatten().any(|p| p.host_port.is_some()) {
            found.push(format!("{name}: host port"));
        }
    }
    found
}

/// The container side of the `restricted` profile: no privilege
/// escalation, no capabilities.
pub(crate) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volume_claim_template(spec: &EtcdClusterSpec) -> PersistentVolumeClaim {
    let size = spec
        .storage
        .size
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_STORAGE_SIZE.to_string()));
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_env(cluster: &ClusterRef, name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: cluster.config_map_name(),
                key: key.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(CLIENT_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// The client ports of the phase's template: 2379, and the TLS side port
/// while TLS is being turned on.
fn client_ports<T>(cluster: &ClusterRef, port: fn(&str, i32) -> T) -> Vec<T> {
    let mut ports = vec![port("client", CLIENT_PORT)];
    if cluster
        .phase
        .template()
        .client
        .iter()
        .any(|l| l.port == SIDE_CLIENT_PORT)
    {
        ports.push(port("client-tls", SIDE_CLIENT_PORT));
    }
    ports
}

/// The peer ports of the phase's template, likewise.
fn peer_ports<T>(cluster: &ClusterRef, port: fn(&str, i32) -> T) -> Vec<T> {
    let mut ports = vec![port("peer", PEER_PORT)];
    if cluster
        .phase
        .template()
        .peer
        .iter()
        .any(|l| l.port == SIDE_PEER_PORT)
    {
        ports.push(port("peer-tls", SIDE_PEER_PORT));
    }
    ports
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        ..Default::default()
    }
}

fn non_empty(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

fn non_empty_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests;
