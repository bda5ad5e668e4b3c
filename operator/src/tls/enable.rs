//! Turning TLS on for a running plain-text cluster, one member at a time,
//! without losing quorum: the phases, what members listen on and advertise
//! in each, and when to move on. Pure; the reconciler's side is
//! `controller::enable_tls`.
//!
//! # Design
//!
//! etcd (and ferrocd) take the scheme of each listener from its URL, so a
//! member can serve plain and TLS on different ports at once, and dials a
//! peer with the scheme of the URL the peer advertises. A port can only
//! have one scheme, and members advertise the peer URL others dial, which
//! `MemberUpdate` changes without a restart. So TLS comes on through side
//! ports (peer 2382, client 2381) and moves back onto 2380/2379 at the end:
//!
//! | phase     | peer listeners           | client listeners         | advertised peer URL | operator dials |
//! |-----------|--------------------------|--------------------------|---------------------|----------------|
//! | Plain     | http 2380                | http 2379                | http :2380          | http :2379     |
//! | Dual      | http 2380, https 2382    | http 2379, https 2381    | http :2380          | http :2379     |
//! | PeerTls   | = Dual                   | = Dual                   | https :2382         | https :2381    |
//! | Swap      | https 2380, https 2382   | https 2379, https 2381   | https :2382         | https :2381    |
//! | Home      | = Swap                   | = Swap                   | https :2380         | https :2379    |
//! | Tls       | https 2380               | https 2379               | https :2380         | https :2379    |
//!
//! Dual, Swap and Tls change the pod template: the operator rolls the
//! members with the upgrade rollout (`crate::rollout`: `OnDelete`, one pod
//! at a time, only when all are healthy and caught up, the leader last),
//! and moves on when every pod runs the new template and is ready.
//! PeerTls and Home change no pod: the operator sends `MemberUpdate` for
//! each member (any order; raft keeps working because the old and the new
//! URL are both served) and moves on when every member advertises the new
//! URL. The certificates (`auto`, `secretRefs` or `issuerRef`) exist before
//! Dual; their names do not depend on the phase.
//!
//! Why no phase can split the cluster (checked exhaustively in the tests):
//! while a template rolls, pods of the old and the new template serve the
//! advertised peer URL; while peer URLs change, every pod serves both the
//! old and the new URL; and every template from Dual on has the peer
//! certificates to dial https. Plain-text clients keep working until Swap;
//! from Swap on the client Service speaks TLS, which is what turning TLS on
//! means for them. Turning TLS off is the same table read upwards.

use crate::builders::{CLIENT_PORT, PEER_PORT};

/// Peer port that carries TLS while 2380 is still plain (and back).
pub const SIDE_PEER_PORT: i32 = 2382;
/// Client port that carries TLS while 2379 is still plain (and back).
pub const SIDE_CLIENT_PORT: i32 = 2381;

/// Annotation on the StatefulSet (not its pod template, so it rolls no
/// pod) recording the phase its template was rendered for.
pub const PHASE_ANNOTATION: &str = "ferrocd.io/tls-phase";

/// Where turning TLS on stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnablePhase {
    /// No TLS anywhere.
    Plain,
    /// Members also listen with TLS on the side ports.
    Dual,
    /// Members advertise their TLS side peer port.
    PeerTls,
    /// The main ports switch to TLS.
    Swap,
    /// Members advertise their TLS main peer port.
    Home,
    /// TLS only, on the main ports.
    Tls,
}

/// A listener: scheme and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// Whether it speaks TLS.
    pub tls: bool,
    /// Its port.
    pub port: i32,
}

/// What a member's pod template runs in a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `--listen-peer-urls`.
    pub peer: Vec<Listener>,
    /// `--listen-client-urls`.
    pub client: Vec<Listener>,
    /// Whether the peer certificate flags are set (needed to dial https).
    pub peer_certificates: bool,
}

/// What, if anything, the phase waits for before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every pod on the phase's template and ready.
    Rolled,
    /// Every member advertising the phase's peer URL.
    Advertised,
    /// Nothing: the last phase.
    Done,
}

const fn plain(port: i32) -> Listener {
    Listener { tls: false, port }
}

const fn tls(port: i32) -> Listener {
    Listener { tls: true, port }
}

impl EnablePhase {
    /// Every phase, in order.
    pub const ALL: [EnablePhase; 6] = [
        EnablePhase::Plain,
        EnablePhase::Dual,
        EnablePhase::PeerTls,
        EnablePhase::Swap,
        EnablePhase::Home,
        EnablePhase::Tls,
    ];

    /// The phase's name, as the annotation and the condition write it.
    pub fn name(self) -> &'static str {
        match self {
            EnablePhase::Plain => "Plain",
            EnablePhase::Dual => "Dual",
            EnablePhase::PeerTls => "PeerTls",
            EnablePhase::Swap => "Swap",
            EnablePhase::Home => "Home",
            EnablePhase::Tls => "Tls",
        }
    }

    /// The phase named `name`.
    pub fn parse(name: &str) -> Option<EnablePhase> {
        EnablePhase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The phase before this one.
    pub fn previous(self) -> Option<EnablePhase> {
        EnablePhase::ALL
            .into_iter()
            .find(|p| p.next() == Some(self))
    }

    /// The phase after this one.
    pub fn next(self) -> Option<EnablePhase> {
        let at = EnablePhase::ALL.iter().position(|p| *p == self)?;
        EnablePhase::ALL.get(at + 1).copied()
    }

    /// The pod template of this phase.
    pub fn template(self) -> Template {
        use EnablePhase::*;
        let (peer, client) = match self {
            Plain => (vec![plain(PEER_PORT)], vec![plain(CLIENT_PORT)]),
            Dual | PeerTls => (
                vec![plain(PEER_PORT), tls(SIDE_PEER_PORT)],
                vec![plain(CLIENT_PORT), tls(SIDE_CLIENT_PORT)],
            ),
            Swap | Home => (
                vec![tls(PEER_PORT), tls(SIDE_PEER_PORT)],
                vec![tls(CLIENT_PORT), tls(SIDE_CLIENT_PORT)],
            ),
            Tls => (vec![tls(PEER_PORT)], vec![tls(CLIENT_PORT)]),
        };
        Template {
            peer,
            client,
            peer_certificates: self != Plain,
        }
    }

    /// The phase whose pod template (and bootstrap ConfigMap) this one
    /// keeps: phases that only move peer URLs restart no pod, and a pod
    /// that restarts anyway must find its flags as they were.
    pub fn template_phase(self) -> EnablePhase {
        match self {
            EnablePhase::PeerTls => EnablePhase::Dual,
            EnablePhase::Home => EnablePhase::Swap,
            other => other,
        }
    }

    /// The peer URL members advertise in this phase.
    pub fn advertised_peer(self) -> Listener {
        use EnablePhase::*;
        match self {
            Plain | Dual => plain(PEER_PORT),
            PeerTls | Swap => tls(SIDE_PEER_PORT),
            Home | Tls => tls(PEER_PORT),
        }
    }

    /// The client listener the operator talks to in this phase.
    pub fn operator_client(self) -> Listener {
        use EnablePhase::*;
        match self {
            Plain | Dual => plain(CLIENT_PORT),
            PeerTls | Swap => tls(SIDE_CLIENT_PORT),
            Home | Tls => tls(CLIENT_PORT),
        }
    }

    /// What this phase waits for once entered.
    pub fn wait(self) -> Wait {
        use EnablePhase::*;
        match self {
            Plain | Dual | Swap => Wait::Rolled,
            PeerTls | Home => Wait::Advertised,
            Tls => Wait::Done,
        }
    }
}

/// The phase a cluster is in: with `spec.tls` unset, `Plain`; otherwise
/// what the StatefulSet's annotation says, or, on a StatefulSet without
/// one, `Tls` when its template has the peer certificate flags (a cluster
/// created with TLS) and `Plain` when not (TLS was just asked for). A
/// cluster not created yet starts on `Tls`.
pub fn observed(tls_wanted: bool, stateful_set: Option<(Option<&str>, bool)>) -> EnablePhase {
    if !tls_wanted {
        return EnablePhase::Plain;
    }
    match stateful_set {
        None => EnablePhase::Tls,
        Some((annotation, has_peer_certificates)) => annotation
            .and_then(EnablePhase::parse)
            .unwrap_or(if has_peer_certificates {
                EnablePhase::Tls
            } else {
                EnablePhase::Plain
            }),
    }
}

/// The phase to be in: the next one once the current phase's wait is over
/// (`rolled`: every pod on the template and ready; `advertised`: every
/// member advertises the phase's peer URL). `Plain` moves on only when TLS
/// is wanted.
pub fn advance(phase: EnablePhase, wanted: bool, rolled: bool, advertised: bool) -> EnablePhase {
    let over = match phase {
        EnablePhase::Plain => wanted && rolled,
        _ => match phase.wait() {
            Wait::Rolled => rolled,
            Wait::Advertised => advertised,
            Wait::Done => false,
        },
    };
    match (over, phase.next()) {
        (true, Some(next)) => next,
        _ => phase,
    }
}

#[cfg(test)]
#[path = "enable/tests.rs"]
mod tests;
