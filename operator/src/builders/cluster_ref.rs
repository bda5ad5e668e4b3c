//! `ClusterRef`: the identity of one `EtcdCluster` (names, DNS names,
//! owner reference) and the URLs of its members in the current phase of
//! turning TLS on.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::{BuildError, DATA_VOLUME, FIELD_MANAGER, INSTANCE_LABEL, MANAGED_BY_LABEL, NAME_LABEL};
use crate::crd::EtcdCluster;
use crate::tls::enable::{EnablePhase, Listener};

/// Identity of one `EtcdCluster`: its names, DNS names and owner reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRef {
    pub(super) name: String,
    pub(super) namespace: String,
    owner: OwnerReference,
    /// Where turning TLS on stands: what pods listen on and advertise.
    pub(super) phase: EnablePhase,
}

impl ClusterRef {
    /// Takes the identity of a stored `EtcdCluster`.
    pub fn new(cluster: &EtcdCluster) -> Result<Self, BuildError> {
        let namespace = cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(Self {
            name: cluster.name_any(),
            namespace,
            owner,
            phase: if cluster.spec.tls.is_some() {
                EnablePhase::Tls
            } else {
                EnablePhase::Plain
            },
        })
    }

    /// The same cluster in `phase` of turning TLS on (see [`tls::enable`]).
    pub fn with_phase(mut self, phase: EnablePhase) -> Self {
        self.phase = phase;
        self
    }

    /// Where turning TLS on stands: `Tls` for a cluster created with TLS,
    /// `Plain` for one without.
    pub fn phase(&self) -> EnablePhase {
        self.phase
    }

    /// Scheme of the peer URL members advertise.
    pub fn scheme(&self) -> &'static str {
        scheme(self.phase.advertised_peer())
    }

    /// Peer URLs member `ordinal` may have in the member list now: the
    /// phase's, and while a `MemberUpdate` moves them, the one before.
    pub fn known_peer_urls(&self, ordinal: i32) -> Vec<String> {
        let mut urls = vec![self.peer_url(ordinal)];
        if let Some(before) = self.phase.previous() {
            let url = self.url(before.advertised_peer(), ordinal);
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }

    fn url(&self, listener: Listener, ordinal: i32) -> String {
        format!(
            "{}://{}:{}",
            scheme(listener),
            self.member_host(ordinal),
            listener.port
        )
    }

    /// Name of the cluster (and of its StatefulSet and client Service).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace of the cluster and all its objects.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Name of the headless Service that gives members stable DNS names.
    pub fn peer_service_name(&self) -> String {
        format!("{}-peer", self.name)
    }

    /// Name of the ConfigMap holding `--initial-cluster` and `--initial-cluster-state`.
    pub fn config_map_name(&self) -> String {
        format!("{}-bootstrap", self.name)
    }

    /// Name of member `ordinal`: the StatefulSet's pod name.
    pub fn member_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// Name of member `ordinal`'s PVC as the StatefulSet controller creates it.
    pub fn pvc_name(&self, ordinal: i32) -> String {
        format!("{DATA_VOLUME}-{}", self.member_name(ordinal))
    }

    /// Peer URL member `ordinal` advertises.
    pub fn peer_url(&self, ordinal: i32) -> String {
        self.url(self.phase.advertised_peer(), ordinal)
    }

    /// Client URL of member `ordinal` the operator talks to.
    pub fn client_url(&self, ordinal: i32) -> String {
        self.url(self.phase.operator_client(), ordinal)
    }

    /// Address of the client Service the operator talks to, what
    /// `status.clientEndpoint` reports.
    pub fn client_endpoint(&self) -> String {
        self.client_endpoint_in(self.phase)
    }

    /// The client Service address the operator talks to in `phase`.
    pub fn client_endpoint_in(&self, phase: EnablePhase) -> String {
        let listener = phase.operator_client();
        format!(
            "{}://{}.{}.svc:{}",
            scheme(listener),
            self.name,
            self.namespace,
            listener.port
        )
    }

    /// Whether the operator talks TLS to the members now.
    pub fn operator_tls(&self) -> bool {
        self.phase.operator_client().tls
    }

    /// `--initial-cluster` value for members `0..members`: with the peer
    /// URLs the pod template advertises, which a phase that only moves
    /// the URLs in the member list keeps from the phase before.
    pub fn initial_cluster(&self, members: i32) -> String {
        let advertised = self.phase.template_phase().advertised_peer();
        (0..members)
            .map(|i| format!("{}={}", self.member_name(i), self.url(advertised, i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--initial-cluster-token`: unique per namespace and name, so two
    /// clusters never accept each other's members.
    pub fn initial_cluster_token(&self) -> String {
        format!("{}-{}", self.namespace, self.name)
    }

    /// Label selector matching the cluster's pods and, since the
    /// StatefulSet controller copies its selector onto claims, their PVCs.
    pub fn label_selector(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Ordinal of the member pod named `name`, if it is one of this cluster's.
    pub fn ordinal_of_member(&self, name: &str) -> Option<i32> {
        let ordinal: i32 = name
            .strip_prefix(&format!("{}-", self.name))?
            .parse()
            .ok()?;
        (ordinal >= 0 && self.member_name(ordinal) == name).then_some(ordinal)
    }

    /// Ordinal of the member PVC named `name`, if it is one of this cluster's.
    pub fn ordinal_of_pvc(&self, name: &str) -> Option<i32> {
        self.ordinal_of_member(name.strip_prefix(&format!("{DATA_VOLUME}-"))?)
    }

    pub(super) fn member_host(&self, ordinal: i32) -> String {
        format!(
            "{}.{}.{}.svc",
            self.member_name(ordinal),
            self.peer_service_name(),
            self.namespace
        )
    }

    pub(super) fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_string(), "ferrocd".to_string()),
            (INSTANCE_LABEL.to_string(), self.name.clone()),
        ])
    }

    pub(super) fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string());
        labels
    }

    /// Metadata of a child object named `name`: the cluster's labels and owner.
    pub fn object_metadata(&self, name: String) -> ObjectMeta {
        self.metadata(name)
    }

    pub(super) fn metadata(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

pub(super) fn scheme(listener: Listener) -> &'static str {
    if listener.tls {
        "https"
    } else {
        "http"
    }
}
