//! A linearizability checker for histories of etcd KV operations (the
//! Wing–Gong–Lowe search, with the memoisation porcupine adds): is there one
//! order of the operations, each taking effect at some instant between its
//! call and its return, in which every answer is what etcd's KV (keys,
//! values, mod revisions, the store's revision) gives?
//!
//! The model ([`model`]) covers puts, gets, deletes, conditional puts and
//! leases: granted, attached to keys by puts, revoked with their keys.
//!
//! An operation whose outcome is unknown (timed out, connection lost) has no
//! return: it may take effect at any point after its call, or never (placed
//! after everything else, where no answer can see it). Histories with many
//! of them would make the search try every subset of them at every point;
//! [`pruning`] skips the placements no verdict depends on (with the
//! argument why), and a check that still runs out of its budget
//! ([`MAX_STEPS`], [`MAX_MEMO`]) says so ([`CheckError::Inconclusive`]):
//! it never passes a history it has not explained.

mod minimize;
mod model;
mod pruning;
mod search;

pub use minimize::{minimize, Minimized};
pub use model::{Gaps, Input, Operation, Output, State};
use search::{search, Finals};

/// How many steps (operations tried at a point of the search) a check may
/// take before it gives up as inconclusive. Measured on the debug build
/// of the e2e crate on the 2-core machine: about a minute; the histories
/// of fault runs take well under a million.
pub const MAX_STEPS: u64 = 20_000_000;

/// How many (linearized set, state) pairs the search may remember before
/// it gives up as inconclusive: each takes a bit per operation of the
/// history and more, so this bounds the check's memory (about 1 GB for a
/// history of 3000 operations).
pub const MAX_MEMO: usize = 3_000_000;

/// Why a history was not found linearizable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// No order explains every answer.
    #[error("not linearizable: {} operations linearized at most", .0.longest_prefix.len())]
    NotLinearizable(Violation),
    /// The search took its whole budget without finding an order or
    /// ruling every order out: neither a pass nor a proven violation.
    #[error("linearizability check inconclusive after {steps} steps ({memo} states remembered)")]
    Inconclusive { steps: u64, memo: usize },
}

/// Why a history is not linearizable: the operations linearized in the
/// longest order found, and the operations none of whose placements after
/// it explains their answers.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Indices into the history, in the order they were linearized.
    pub longest_prefix: Vec<usize>,
    /// The operations pending at that point (their calls had come, they
    /// were not linearized).
    pub stuck: Vec<usize>,
}

/// Checks `history` against a store that starts as `initial`, within
/// [`MAX_STEPS`].
pub fn check(history: &[Operation], initial: &State) -> Result<(), CheckError> {
    check_within(history, initial, MAX_STEPS).map(|_| ())
}

/// Checks `history` against a store that starts as `initial`, giving up
/// after `max_steps` steps of the search (or [`MAX_MEMO`] states
/// remembered); how many steps it took.
pub fn check_within(
    history: &[Operation],
    initial: &State,
    max_steps: u64,
) -> Result<u64, CheckError> {
    search(history, initial, None, None, max_steps, true)
}

/// Checks `history`, a part of a longer history that `gaps` describes,
/// allowing the revisions that operations left out took (see
/// [`State::step_with_gaps`]). More histories pass than with [`check`]:
/// one that fails here fails there too.
pub fn check_with_gaps(
    history: &[Operation],
    initial: &State,
    gaps: &Gaps,
) -> Result<(), CheckError> {
    search(history, initial, Some(gaps), None, MAX_STEPS, true).map(|_| ())
}

/// The states a store that starts as `initial` can be in once every
/// operation of `history` has taken effect (`gaps` as for
/// [`check_with_gaps`]): up to `limit + 1` of them, or `None` past
/// `max_steps` steps of the search.
pub(super) fn final_states(
    history: &[Operation],
    initial: &State,
    gaps: Option<&Gaps>,
    limit: usize,
    max_steps: u64,
) -> Option<Vec<State>> {
    let mut finals = Finals {
        states: Vec::new(),
        limit,
    };
    match search(history, initial, gaps, Some(&mut finals), max_steps, false) {
        Err(CheckError::Inconclusive { .. }) => None,
        _ => Some(finals.states),
    }
}

#[cfg(test)]
mod tests;
