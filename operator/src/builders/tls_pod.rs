//! The parts of a member pod that only TLS clusters have: etcd's TLS flags,
//! the certificate Secret volumes and their mounts, and probes that work
//! with `--client-cert-auth`.

use k8s_openapi::api::core::v1::{
    ExecAction, Probe, SecretVolumeSource, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::CLIENT_PORT;
use crate::tls::{CA_CRT, TLS_CRT, TLS_KEY};

/// Where member pods mount the server certificate Secret.
pub const SERVER_TLS_DIR: &str = "/etc/ferrocd/tls/server";
/// Where member pods mount the peer certificate Secret.
pub const PEER_TLS_DIR: &str = "/etc/ferrocd/tls/peer";
/// The operator's binary in the ferrocd image: with TLS, the readiness
/// probe runs its `probe` command, since the kubelet's HTTPS probes
/// present no client certificate and `--client-cert-auth` refuses them.
pub const PROBE_BINARY: &str = "/usr/local/bin/ferrocd-operator";
pub(super) const SERVER_TLS_VOLUME: &str = "server-tls";
pub(super) const PEER_TLS_VOLUME: &str = "peer-tls";

/// etcd's TLS flags pointing at the mounted Secrets: mutual TLS on both ports.
pub(super) fn tls_args() -> Vec<String> {
    vec![
        format!("--cert-file={SERVER_TLS_DIR}/{TLS_CRT}"),
        format!("--key-file={SERVER_TLS_DIR}/{TLS_KEY}"),
        format!("--trusted-ca-file={SERVER_TLS_DIR}/{CA_CRT}"),
        "--client-cert-auth=true".to_string(),
        format!("--peer-cert-file={PEER_TLS_DIR}/{TLS_CRT}"),
        format!("--peer-key-file={PEER_TLS_DIR}/{TLS_KEY}"),
        format!("--peer-trusted-ca-file={PEER_TLS_DIR}/{CA_CRT}"),
        "--peer-client-cert-auth=true".to_string(),
    ]
}

/// Whole-Secret mounts (no `subPath`): the kubelet swaps their `..data`
/// link when a Secret changes, and ferrocd reads the new files then.
pub(super) fn tls_mounts() -> Vec<VolumeMount> {
    [
        (SERVER_TLS_VOLUME, SERVER_TLS_DIR),
        (PEER_TLS_VOLUME, PEER_TLS_DIR),
    ]
    .into_iter()
    .map(|(name, path)| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(true),
        ..Default::default()
    })
    .collect()
}

pub(super) fn secret_volume(name: &str, secret_name: String) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name),
            // Owner and group (fsGroup) may read the key, no one else.
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `/readyz` over mutual TLS on the pod's own client port, with the
/// member's server certificate (it is a client certificate too).
pub(super) fn tls_readiness_probe() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                PROBE_BINARY.to_string(),
                "probe".to_string(),
                format!("--url=https://127.0.0.1:{CLIENT_PORT}/readyz"),
                format!("--tls-dir={SERVER_TLS_DIR}"),
            ]),
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

/// The process accepts connections: liveness without a TLS handshake.
pub(super) fn tcp_probe(period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(CLIENT_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}
