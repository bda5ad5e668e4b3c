//! `ferrocd-operator`: the `EtcdCluster` custom resource and the parts of its
//! reconciliation that need no Kubernetes API server.
//!
//! Reconciliation is observe -> plan -> act:
//! * [`crd`]: the resource types, defaults and spec validation; `crdgen` prints the CRD.
//! * [`builders`]: pure builders of the Services, ConfigMap, StatefulSet and PDB.
//! * [`membership`]: the [`membership::EtcdApi`] trait, the one-step executor,
//!   member observation, and an in-memory fake enforcing etcd's membership rules.
//! * [`grpc`]: `EtcdApi` over the etcd v3 gRPC API.
//! * [`planner`]: the pure planner from spec and observations to objects and one step.
//! * [`manifest`]: the planner's desired objects rendered for apply.
//! * [`rollout`]: the pure planner of image upgrades, one member pod at a time.
//! * [`status`]: phase and conditions from the planner's progress.
//! * [`volumes`]: which PVC holds each member's data, to see volumes re-created empty.
//! * [`controller`]: the reconciler wiring all of the above to the API server.
//! * [`watches`]: what triggers a reconcile, member pods and PVCs included.
//! * [`metrics`]: Prometheus metrics of the reconciler.
//! * [`leader`]: leader election over a Lease.
//! * [`tls`]: the certificates of TLS clusters: names, Secrets, rotation, the CA.
//! * [`probe`]: the readiness probe of TLS members, run in the member pod.
//! * [`backup`]: snapshots streamed to S3 or a PVC, and the Job that takes them.

pub mod backup;
pub mod builders;
pub mod controller;
pub mod crd;
pub mod grpc;
pub mod leader;
pub mod manifest;
pub mod membership;
pub mod metrics;
pub mod planner;
pub mod probe;
pub mod recovery;
pub mod rollout;
pub mod status;
pub mod tls;
pub mod volumes;
pub mod watches;
