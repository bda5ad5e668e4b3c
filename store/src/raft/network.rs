//! The peer network, client side: openraft's RPCs to other members over the
//! peer protocol (gRPC on their peer URLs), and the connections a member
//! uses to reach the leader for its own clients.
//!
//! openraft's requests and responses travel bincode-encoded inside
//! `RaftMessage`; the server side is `crate::api::peer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_proto::ferrocdpb::peer_client::PeerClient;
use ferrocd_proto::ferrocdpb::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::liveness::Liveness;
use super::peer_failure::{PeerFailure, Refusal};
use super::{Member, TypeConfig};
use crate::tls::client::ClientTls;

/// What the leader answers a removed member (etcd's words).
pub const REMOVED: &str = "etcdserver: the member has been permanently removed from the cluster";

/// The metadata key carrying the sender's cluster id (hex) on peer calls
/// whose messages are etcd's and have no field for it.
pub const CLUSTER_ID_METADATA: &str = "ferrocd-cluster-id";

/// Marks `req` as sent by a member of cluster `cluster_id`.
pub fn with_cluster_id<T>(mut req: tonic::Request<T>, cluster_id: u64) -> tonic::Request<T> {
    if let Ok(value) = format!("{cluster_id:x}").parse() {
        req.metadata_mut().insert(CLUSTER_ID_METADATA, value);
    }
    req
}

/// Largest peer message: a batch of log entries or a snapshot chunk.
pub const MAX_PEER_MESSAGE: usize = 256 << 20;

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a peer may go unheard and still count as connected: three
/// liveness pings (one a second), besides raft's own messages.
pub const LIVENESS_STALE: Duration = Duration::from_secs(3);

/// Connections to peers, one per peer URL, shared by raft replication and
/// request forwarding.
pub struct PeerClients {
    cluster_id: u64,
    /// This member's peer certificate, for `https://` peer URLs.
    tls: Option<Arc<ClientTls>>,
    /// Set when the leader says this member was removed from the cluster.
    removed: tokio::sync::watch::Sender<bool>,
    channels: Mutex<HashMap<String, PeerClient<Channel>>>,
    /// How long this member has been connected to each other one.
    liveness: Liveness,
}

/// Why a peer could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("member has no peer URL")]
    NoUrl,
    #[error("invalid peer URL {0:?}: {1}")]
    BadUrl(String, String),
    #[error("peer URL {0} is https:// but this member has no peer certificate (--peer-cert-file, --peer-key-file)")]
    NoTls(String),
    #[error("peer {url}: {status}")]
    Status { url: String, status: tonic::Status },
    #[error("undecodable answer from a peer: {0}")]
    Decode(String),
}

impl PeerClients {
    pub fn new(cluster_id: u64, tls: Option<Arc<ClientTls>>) -> Arc<Self> {
        Arc::new(PeerClients {
            cluster_id,
            tls,
            removed: tokio::sync::watch::Sender::new(false),
            channels: Mutex::new(HashMap::new()),
            liveness: Liveness::new(LIVENESS_STALE),
        })
    }

    /// How long this member has been connected to each other one.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// The cluster messages are sent in the name of.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Resolves once a leader has told this member it was removed.
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Records that a leader said this member was removed.
    pub fn mark_removed(&self) {
        self.removed.send_replace(true);
    }

    /// A client for the member at `url`; connects lazily and reconnects by
    /// itself after failures.
    pub fn client(&self, url: &str) -> Result<PeerClient<Channel>, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let bad = |e: String| PeerError::BadUrl(url.to_string(), e);
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let secure = parsed.scheme() == "https";
        // tonic would refuse an https:// endpoint without its own TLS
        // setup: the connector below speaks TLS under a plain endpoint.
        let plain = if secure {
            format!("http://{}", &url["https://".len()..])
        } else {
            url.to_string()
        };
        let endpoint = Endpoint::from_shared(plain)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = if secure {
            let tls = self
                .tls
                .as_ref()
                .ok_or_else(|| PeerError::NoTls(url.to_string()))?;
            endpoint.connect_with_connector_lazy(tls.connector(&parsed).map_err(bad)?)
        } else {
            endpoint.connect_lazy()
        };
        let client = PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE);
        channels.insert(url.to_string(), client.clone());
        Ok(client)
    }

    /// A client for `member` (its first peer URL).
    pub fn member(&self, member: &Member) -> Result<PeerClient<Channel>, PeerError> {
        let url = member.peer_urls.first().ok_or(PeerError::NoUrl)?;
        self.client(url)
    }
}

/// Whether a failed call to a peer ran out of its own time.
pub fn timed_out(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

/// Builds openraft's connections to peers.
#[derive(Clone)]
pub struct Network {
    peers: Arc<PeerClients>,
}

impl Network {
    pub fn new(peers: Arc<PeerClients>) -> Self {
        Network { peers }
    }
}

/// openraft's connection to one peer.
pub struct Peer {
    peers: Arc<PeerClients>,
    target: u64,
    /// This peer's series of the peer metrics.
    metrics: crate::metrics::PeerMetrics,
    url: String,
    client: Result<PeerClient<Channel>, String>,
    cluster_id: u64,
    /// The open AppendEntries stream to this peer, if any.
    stream: Option<AppendChannel>,
    /// The peer answered that it has no AppendEntries stream (an older
    /// ferrocd): single calls from then on.
    calls_only: bool,
}

/// An AppendEntries stream: requests go in through `requests`, answers
/// come back in order on `answers`. One request is in flight at a time
/// (openraft waits for each answer), so the next answer is always the
/// one to the last request; anything that goes wrong drops the stream.
struct AppendChannel {
    requests: tokio::sync::mpsc::Sender<RaftMessage>,
    answers: tonic::Streaming<RaftMessage>,
    /// A request was sent and its answer not yet read. Still set when the
    /// next request comes, the caller gave up on the last one (openraft
    /// drops a call that outlives its own timeout): its answer may still
    /// arrive and must not be taken for the next one's, so the stream is
    /// dropped.
    awaiting: bool,
}

/// A stream that broke or ended without the answer: the request may or
/// may not have reached the peer.
#[derive(Debug, thiserror::Error)]
#[error("AppendEntries stream to the peer {0}")]
struct StreamBroke(&'static str);

/// A failure on the stream as a status that says so: one with a source,
/// which the peer did not send (see `PeerFailure::of`).
fn broke(what: &'static str) -> tonic::Status {
    tonic::Status::from_error(Box::new(StreamBroke(what)))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Peer {
        Peer {
            peers: self.peers.clone(),
            target,
            metrics: crate::metrics::get().peer(target),
            url: node.peer_urls.first().cloned().unwrap_or_default(),
            client: self.peers.member(node).map_err(|e| e.to_string()),
            cluster_id: self.peers.cluster_id(),
            stream: None,
            calls_only: false,
        }
    }
}

/// A raft message on its way to a peer, for the metrics.
struct Sent {
    bytes: u64,
    at: Instant,
    /// An append with no entries: a heartbeat.
    heartbeat: bool,
}

impl Sent {
    fn new(req: &tonic::Request<RaftMessage>, heartbeat: bool) -> Self {
        Sent {
            bytes: req.get_ref().payload.len() as u64,
            at: Instant::now(),
            heartbeat,
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, Member, RaftError<u64, E>>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// Encodes an openraft request as a peer message with a deadline.
pub fn encode<T: Serialize>(
    cluster_id: u64,
    value: &T,
    ttl: Duration,
) -> Result<tonic::Request<RaftMessage>, String> {
    let payload = bincode::serialize(value).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(RaftMessage {
        cluster_id,
        payload,
        incarnation: super::liveness::incarnation(),
    });
    req.set_timeout(ttl);
    Ok(req)
}

impl Peer {
    fn unreachable<E: std::error::Error>(&self, why: String) -> RPCError<u64, Member, E> {
        RPCError::Unreachable(Unreachable::new(&Failure(format!(
            "peer {:x} at {}: {why}",
            self.target, self.url
        ))))
    }

    fn client<E: std::error::Error>(
        &self,
    ) -> Result<PeerClient<Channel>, RPCError<u64, Member, E>> {
        self.client.clone().map_err(|e| self.unreachable(e))
    }

    /// Turns a peer's answer into openraft's result: transport failures
    /// make the peer unreachable (openraft backs off), a remote raft error
    /// comes back as such.
    fn decode<T, E>(
        &self,
        answer: Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let msg = match answer {
            Ok(resp) => resp.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(self.unreachable(status.message().to_string()))
            }
            Err(status) if PeerFailure::of(&status) == PeerFailure::Refused(Refusal::Removed) => {
                self.peers.mark_removed();
                return Err(self.unreachable(status.message().to_string()));
            }
            Err(status) => {
                return Err(RPCError::Network(NetworkError::new(&Failure(format!(
                    "peer {:x}: {}",
                    self.target,
                    status.message()
                )))))
            }
        };
        let result: Result<T, RaftError<u64, E>> =
            bincode::deserialize(&msg.payload).map_err(|e| {
                self.metrics.received_failures.inc();
                RPCError::Network(NetworkError::new(&Failure(e.to_string())))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Counts a call to this peer: bytes both ways, the round trip of a
    /// heartbeat, or the failure (of a heartbeat too).
    fn count(&self, sent: Sent, answer: &Result<tonic::Response<RaftMessage>, tonic::Status>) {
        let m = &self.metrics;
        let liveness = self.peers.liveness();
        match answer {
            Ok(resp) => {
                liveness.record_ok_as(self.target, resp.get_ref().incarnation, Instant::now())
            }
            // A call that ran out of time says nothing either way (a
            // loaded peer answers late); silence breaks the connection
            // once it lasts (see `liveness`).
            Err(status) if timed_out(status) => {}
            Err(status) => match PeerFailure::of(status) {
                // The peer answered, if with an error or a refusal.
                PeerFailure::Answered
                | PeerFailure::Refused(Refusal::NotLeader)
                | PeerFailure::Refused(Refusal::NoLeader)
                | PeerFailure::Refused(Refusal::Removed) => {
                    liveness.record_ok(self.target, Instant::now())
                }
                PeerFailure::Unreachable
                | PeerFailure::Ambiguous
                | PeerFailure::Refused(Refusal::NotSent) => liveness.record_failure(self.target),
            },
        }
        match answer {
            Ok(resp) => {
                m.sent_bytes.inc_by(sent.bytes);
                m.received_bytes.inc_by(resp.get_ref().payload.len() as u64);
                if sent.heartbeat {
                    m.rtt.observe(sent.at.elapsed().as_secs_f64());
                }
            }
            Err(_) => {
                m.sent_failures.inc();
                if sent.heartbeat {
                    crate::metrics::get().heartbeat_send_failures.inc();
                }
            }
        }
    }

    /// Sends `req` on the AppendEntries stream (opened first if need be)
    /// and waits at most `ttl` for its answer. A peer without the stream
    /// gets the request as a call, and calls from then on.
    async fn append_streamed(
        &mut self,
        client: &mut PeerClient<Channel>,
        req: tonic::Request<RaftMessage>,
        ttl: Duration,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let started = Instant::now();
        if self.stream.as_ref().is_some_and(|s| s.awaiting) {
            self.stream = None;
        }
        if self.stream.is_none() {
            let (requests, queued) = tokio::sync::mpsc::channel(1);
            let opening =
                client.append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(queued));
            match tokio::time::timeout(ttl, opening).await {
                Ok(Ok(answers)) => {
                    self.stream = Some(AppendChannel {
                        requests,
                        answers: answers.into_inner(),
                        awaiting: false,
                    })
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    self.calls_only = true;
                    return client.append_entries(req).await;
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    return Err(tonic::Status::deadline_exceeded(
                        "opening the AppendEntries stream",
                    ))
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(broke("was not open"));
        };
        let exchange = async {
            stream.awaiting = true;
            stream
                .requests
                .send(req.into_inner())
                .await
                .map_err(|_| broke("closed before the request"))?;
            match stream.answers.message().await {
                Ok(Some(answer)) => {
                    stream.awaiting = false;
                    Ok(tonic::Response::new(answer))
                }
                Ok(None) => Err(broke("ended before the answer")),
                Err(status) => Err(status),
            }
        };
        let left = ttl.saturating_sub(started.elapsed());
        let answer = match tokio::time::timeout(left, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(tonic::Status::deadline_exceeded("AppendEntries answer")),
        };
        if answer.is_err() {
            // Whatever it was, the next answer on this stream may not be
            // the next request's: start over.
            self.stream = None;
        }
        answer
    }

    fn request<T: Serialize, E: std::error::Error>(
        &self,
        value: &T,
        option: &RPCOption,
    ) -> Result<tonic::Request<RaftMessage>, RPCError<u64, Member, E>> {
        encode(self.cluster_id, value, option.hard_ttl())
            .map_err(|e| RPCError::Network(NetworkError::new(&Failure(e))))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    /// Pauses between attempts at an unreachable peer: short at first, so a
    /// member that is just starting (added, or restarted) is reached soon,
    /// then openraft's 500 ms.
    fn backoff(&self) -> openraft::network::Backoff {
        let soon = std::iter::repeat_n(Duration::from_millis(100), 10);
        openraft::network::Backoff::new(soon.chain(std::iter::repeat(Duration::from_millis(500))))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        let heartbeat = rpc.entries.is_empty();
        let req = self.request(&rpc, &option)?;
        let sent = Sent::new(&req, heartbeat);
        let mut client = self.client()?;
        let answer = if self.calls_only {
            client.append_entries(req).await
        } else {
            self.append_streamed(&mut client, req, option.hard_ttl())
                .await
        };
        self.count(sent, &answer);
        self.decode(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        let req = self.request(&rpc, &option)?;
        let sent = Sent::new(&req, false);
        let answer = self.client()?.install_snapshot(req).await;
        self.count(sent, &answer);
        self.decode(answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        let req = self.request(&rpc, &option)?;
        let sent = Sent::new(&req, false);
        let answer = self.client()?.vote(req).await;
        self.count(sent, &answer);
        self.decode(answer)
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
