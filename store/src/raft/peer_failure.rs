//! How a call to another member failed, as a type: whether the request
//! certainly never took effect (safe to send again, also for a write), may
//! have taken effect (a write must not be sent again), or was answered with
//! an error to pass on. Decided from the error's kind and from a marker the
//! peer service puts on its refusals, never from message text, so a
//! reworded message cannot turn a safe retry into a duplicate write.

use tonic::metadata::MetadataValue;
use tonic::Status;

/// The metadata key of the marker on the peer service's refusals.
const MARKER: &str = "ferrocd-peer-error";

/// Why a member refused a request without acting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It is not the leader.
    NotLeader,
    /// It knows no leader.
    NoLeader,
    /// The asking member has been removed from the cluster.
    Removed,
    /// The request never left this member (no usable peer URL, say).
    NotSent,
}

impl Refusal {
    fn name(self) -> &'static str {
        match self {
            Refusal::NotLeader => "not-leader",
            Refusal::NoLeader => "no-leader",
            Refusal::Removed => "removed",
            Refusal::NotSent => "not-sent",
        }
    }

    /// `status` marked as this refusal.
    pub fn mark(self, mut status: Status) -> Status {
        status
            .metadata_mut()
            .insert(MARKER, MetadataValue::from_static(self.name()));
        status
    }

    fn of(status: &Status) -> Option<Refusal> {
        let marker = status.metadata().get(MARKER)?.to_str().ok()?;
        [
            Refusal::NotLeader,
            Refusal::NoLeader,
            Refusal::Removed,
            Refusal::NotSent,
        ]
        .into_iter()
        .find(|r| r.name() == marker)
    }
}

/// What a failed call to another member came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFailure {
    /// Refused before acting on it (or never sent): safe to send again.
    Refused(Refusal),
    /// The connection could not be opened: nothing was sent.
    Unreachable,
    /// The call failed on the way (connection lost, timed out): the request
    /// may have taken effect.
    Ambiguous,
    /// The member answered with an error of its own.
    Answered,
}

impl PeerFailure {
    /// Classifies a failed call's status.
    pub fn of(status: &Status) -> PeerFailure {
        if let Some(refusal) = Refusal::of(status) {
            return PeerFailure::Refused(refusal);
        }
        // A status made on this side from a transport error keeps that
        // error as its source; one decoded from the member's answer has
        // none.
        let Some(source) = std::error::Error::source(status) else {
            return PeerFailure::Answered;
        };
        if never_connected(source) {
            PeerFailure::Unreachable
        } else {
            PeerFailure::Ambiguous
        }
    }

    /// Whether sending the same request again cannot apply it twice.
    pub fn nothing_happened(self) -> bool {
        matches!(self, PeerFailure::Refused(_) | PeerFailure::Unreachable)
    }
}

/// Whether the error chain says the connection was never established.
fn never_connected(mut e: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_survive_a_trip_through_metadata() {
        for r in [
            Refusal::NotLeader,
            Refusal::NoLeader,
            Refusal::Removed,
            Refusal::NotSent,
        ] {
            let status = r.mark(Status::unavailable("refused"));
            // As the receiving side sees it: rebuilt from the wire form.
            let wire = Status::with_metadata(
                status.code(),
                status.message().to_string(),
                status.metadata().clone(),
            );
            assert_eq!(PeerFailure::of(&wire), PeerFailure::Refused(r));
            assert!(PeerFailure::of(&wire).nothing_happened());
        }
    }

    #[test]
    fn an_unmarked_answer_is_passed_on_whatever_it_says() {
        // The same text as a refusal, but not marked: not retried.
        let lookalike = Status::unavailable("etcdserver: not leader");
        assert_eq!(PeerFailure::of(&lookalike), PeerFailure::Answered);
        assert!(!PeerFailure::of(&lookalike).nothing_happened());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_nothing_was_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let peers = crate::raft::PeerClients::new(1, None);
        let mut client = peers.client(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client
            .read_index(ferrocd_proto::ferrocdpb::ReadIndexRequest { cluster_id: 1 })
            .await
            .unwrap_err();
        assert_eq!(PeerFailure::of(&err), PeerFailure::Unreachable, "{err:?}");
    }
}
