//! [`EtcdApi`] over the store's etcd v3 gRPC API (`ferrocd-proto`), so the
//! same code drives ferrocd and etcd.

use std::time::Duration;

use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{
    self as pb, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, MoveLeaderRequest, StatusRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::membership::{EndpointStatus, EtcdApi, EtcdError, Member, MemberList};
use crate::tls::CertSecret;

/// How long connecting to one member may take.
pub const MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one member may take to answer a status request.
pub const MEMBER_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a leader may take to hand leadership over (it waits for the
/// target to catch up and for an election).
pub const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(8);

/// A connection to a cluster through one client endpoint (the client Service).
#[derive(Debug, Clone)]
pub struct GrpcEtcd {
    cluster: ClusterClient<Channel>,
    tls: Option<ClientTlsConfig>,
}

impl GrpcEtcd {
    /// A lazily connecting client of `endpoint` (e.g. `http://demo.prod.svc:2379`):
    /// a cluster that is down shows up as failing calls, not a failing constructor.
    /// With `tls`, an `https://` endpoint is verified against its `ca.crt`
    /// and the client presents its certificate.
    pub fn new(endpoint: &str, tls: Option<&CertSecret>) -> Result<Self, EtcdError> {
        let tls = tls.map(|files| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&files.ca_pem))
                .identity(Identity::from_pem(&files.cert_pem, &files.key_pem))
        });
        let channel = endpoint_of(endpoint, tls.as_ref())?.connect_lazy();
        Ok(Self {
            cluster: ClusterClient::new(channel),
            tls,
        })
    }
}

fn endpoint_of(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, EtcdError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| EtcdError::Other(format!("bad endpoint {url}: {e}")))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| EtcdError::Other(format!("TLS configuration for {url}: {e}"))),
        None => Ok(endpoint),
    }
}

impl EtcdApi for GrpcEtcd {
    async fn member_list(&self) -> Result<MemberList, EtcdError> {
        let response = self
            .cluster
            .clone()
            .member_list(MemberListRequest { linearizable: true })
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(MemberList {
            cluster_id: response.header.map_or(0, |h| h.cluster_id),
            members: response.members.into_iter().map(member).collect(),
        })
    }

    async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Member, EtcdError> {
        let response = self
            .cluster
            .clone()
            .member_add(MemberAddRequest {
                peer_ur_ls: peer_urls,
                is_learner,
            })
            .await
            .map_err(from_status)?;
        response
            .into_inner()
            .member
            .map(member)
            .ok_or_else(|| EtcdError::Other("MemberAdd answered without the member".into()))
    }

    async fn member_remove(&self, id: u64) -> Result<(), EtcdError> {
        self.cluster
            .clone()
            .member_remove(MemberRemoveRequest { id })
            .await
            .map(drop)
            .map_err(from_status)
    }

    async fn member_promote(&self, id: u64) -> Result<(), EtcdError> {
        self.cluster
            .clone()
            .member_promote(MemberPromoteRequest { id })
            .await
            .map(drop)
            .map_err(from_status)
    }

    async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<(), EtcdError> {
        self.cluster
            .clone()
            .member_update(MemberUpdateRequest {
                id,
                peer_ur_ls: peer_urls,
            })
            .await
            .map(drop)
            .map_err(from_status)
    }

    async fn status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        // Status is about one member, so it goes to that member's own URL.
        let mut client = MaintenanceClient::new(self.member_channel(endpoint).await?);
        let status = client
            .status(StatusRequest {})
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(EndpointStatus {
            member_id: status.header.map_or(0, |h| h.member_id),
            leader: status.leader,
            raft_index: status.raft_index,
            raft_applied_index: status.raft_applied_index,
            version: status.version,
            is_learner: status.is_learner,
        })
    }

    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), EtcdError> {
        let channel = endpoint_of(leader_endpoint, self.tls.as_ref())?
            .connect_timeout(MEMBER_CONNECT_TIMEOUT)
            .timeout(MOVE_LEADER_TIMEOUT)
            .connect()
            .await
            .map_err(|e| EtcdError::Unavailable(format!("{leader_endpoint}: {e}")))?;
        MaintenanceClient::new(channel)
            .move_leader(MoveLeaderRequest { target_id: target })
            .await
            .map(drop)
            .map_err(from_status)
    }
}

impl GrpcEtcd {
    /// A connection to one member, with its own connect and call timeouts:
    /// a member that accepts connections but never answers costs one
    /// timeout, not the whole observation.
    async fn member_channel(&self, endpoint: &str) -> Result<Channel, EtcdError> {
        endpoint_of(endpoint, self.tls.as_ref())?
            .connect_timeout(MEMBER_CONNECT_TIMEOUT)
            .timeout(MEMBER_CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| EtcdError::Unavailable(format!("{endpoint}: {e}")))
    }
}

fn member(m: pb::Member) -> Member {
    Member {
        id: m.id,
        name: m.name,
        peer_urls: m.peer_ur_ls,
        client_urls: m.client_ur_ls,
        is_learner: m.is_learner,
    }
}

/// Maps etcd's error texts (which ferrocd reproduces byte for byte) to [`EtcdError`].
fn from_status(status: Status) -> EtcdError {
    let message = status.message();
    match status.code() {
        Code::Unimplemented => return EtcdError::Unimplemented(message.to_string()),
        // tonic reports its own call timeout as Cancelled.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            return EtcdError::Unavailable(message.to_string())
        }
        _ => {}
    }
    match message.strip_prefix("etcdserver: ").unwrap_or(message) {
        "member not found" => EtcdError::MemberNotFound,
        "Peer URLs already exists" => EtcdError::PeerUrlExists,
        "too many learner members in cluster" => EtcdError::TooManyLearners,
        "can only promote a learner member" => EtcdError::NotALearner,
        "can only promote a learner member which is in sync with leader" => {
            EtcdError::LearnerNotReady
        }
        "re-configuration failed due to not enough started members" => {
            EtcdError::NotEnoughStartedMembers
        }
        "not leader" => EtcdError::NotLeader,
        "bad leader transferee" => EtcdError::BadLeaderTransferee,
        other => EtcdError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_error_texts_map_to_membership_errors() {
        let cases = [
            (
                Code::NotFound,
                "etcdserver: member not found",
                EtcdError::MemberNotFound,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
                EtcdError::PeerUrlExists,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
                EtcdError::TooManyLearners,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
                EtcdError::NotALearner,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
                EtcdError::LearnerNotReady,
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
                EtcdError::NotEnoughStartedMembers,
            ),
        ];
        for (code, text, expected) in cases {
            assert_eq!(from_status(Status::new(code, text)), expected, "{text}");
        }
    }

    #[test]
    fn unimplemented_and_unavailable_keep_their_meaning() {
        assert_eq!(
            from_status(Status::unimplemented("membership change")),
            EtcdError::Unimplemented("membership change".into())
        );
        assert!(matches!(
            from_status(Status::unavailable("connection refused")),
            EtcdError::Unavailable(_)
        ));
    }

    #[test]
    fn unknown_error_text_is_kept() {
        assert_eq!(
            from_status(Status::internal("etcdserver: something new")),
            EtcdError::Other("something new".into())
        );
    }

    /// A member that accepts connections and never answers costs the
    /// caller one call timeout, not a hang.
    #[tokio::test]
    async fn silent_member_fails_status_within_its_timeouts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let etcd = GrpcEtcd::new(&format!("http://{address}"), None).unwrap();
        let started = std::time::Instant::now();
        let result = etcd.status(&format!("http://{address}")).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(EtcdError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            took < MEMBER_CONNECT_TIMEOUT + MEMBER_CALL_TIMEOUT + Duration::from_secs(1),
            "status took {took:?}"
        );
        holder.abort();
    }
}
