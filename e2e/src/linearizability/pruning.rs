//! Placements a check may skip without changing its verdict, for histories
//! with many writes of unknown outcome (timed out while a disk was slow or
//! full, say). Each of those may take effect at any point after its call,
//! or never, so a plain search tries every subset of them at every point:
//! its work doubles with each one.
//!
//! Soundness. The search accepts a history only once it has placed every
//! answered operation in an order that explains every answer; the
//! operations of unknown outcome not placed by then go after all of them,
//! which is always allowed (they have no return that bounds them, and a
//! step of an operation without an answer always succeeds). Every rule
//! here only skips placements, so none can make the search accept a
//! history that has no such order.
//!
//! No false alarms. What each rule must show is that it skips no
//! placement the verdict needs: whenever the history is linearizable, an
//! order remains that obeys every rule. Take any order that explains
//! every answer; move each operation of unknown outcome placed where it
//! changes nothing (3) to the end, and each that changes only whether its
//! lease exists (4), the latest first, to just before the next operation
//! that names the lease (or to the end), which leaves every other step as
//! it was; then swap twins (2) into call order, which changes no state.
//! Rule 5 holds for any order that explains every answer, and rule 1
//! changes only values nothing reads.
//!
//! 1. Unseen values. A write of unknown outcome whose value no read of
//!    the history saw (nor, for a part being minimised, a read of the
//!    whole: [`Gaps`]) writes [`UNSEEN`] instead. The model compares a
//!    value only with what reads answered, so a store holding one unseen
//!    value and a store holding another give the same answers to every
//!    operation, then and after any further steps: one stands for both.
//!    This lets the memo and rule 2 see such writes as one.
//! 2. Twins. Operations of unknown outcome with the same input (after 1:
//!    puts of unseen values to one key, deletes of one key) are placed in
//!    call order, the later one only once the earlier one is. An order
//!    that places the later twin where the earlier one is not yet placed
//!    stays good with the two swapped: the earlier one had been called
//!    (before the later one), neither has a return that bounds it, and
//!    the same input does the same from the same state.
//! 3. No-ops. An operation of unknown outcome is not placed where it
//!    leaves the store as it is (a failed conditional put, a delete of an
//!    absent key, a revoke of an unknown lease): taken out of an order
//!    that places it there, every later step sees the same store.
//! 4. Lease-only changes. An operation of unknown outcome placed where it
//!    changes nothing but whether its lease exists (a grant, a revoke of
//!    a lease without keys: no revision, no key) must be followed at once
//!    by an operation that names that lease (a leased put, a grant, a
//!    revoke), else it is not placed before the end. Only those look at
//!    the lease: moved from where an order places it to just before the
//!    next one that does (or to the end, when none does), it changes no
//!    step in between. The search remembers the lease the next placement
//!    must name beside the state, as part of where it is.
//! 5. Revisions only grow. A placement of an operation of unknown outcome
//!    that takes the store's revision past what an answered operation
//!    still to be placed needs is cut off: a read (or a write that
//!    changed nothing) answered at revision R needs the store at R, a
//!    write that took revision R needs it at R - 1, and no step lowers
//!    the revision (with gaps neither: [`State::step_with_gaps`] moves it
//!    only up).
//!
//! `pruning_changes_no_verdict` (in the tests) compares the verdicts with
//! and without these rules on random histories, with and without gaps.
//!
//! With 1 and 2, the writes of unknown outcome that no read saw are
//! counted per key and kind rather than told apart; with 3 and 5, one is
//! placed only where the revisions answers show leave room for it.
//!
//! [`State::step_with_gaps`]: super::State::step_with_gaps

use std::collections::{HashMap, HashSet};

use super::{Gaps, Input, Operation, Output};

/// The value rule 1 gives writes whose value no read saw (no client
/// writes a value starting with a NUL).
pub(super) const UNSEEN: &str = "\u{0}unseen";

const NIL: usize = usize::MAX;

/// `history` with rule 1 applied.
pub(super) fn canonical(history: &[Operation], gaps: Option<&Gaps>) -> Vec<Operation> {
    let mut seen: HashSet<&str> = history
        .iter()
        .filter_map(|op| match &op.ret {
            Some((
                _,
                Output::Get {
                    value: Some((v, _)),
                    ..
                },
            )) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    if let Some(gaps) = gaps {
        seen.extend(gaps.values());
    }
    if seen.contains(UNSEEN) {
        // Not a history of this harness's clients: left as it is.
        return history.to_vec();
    }
    let mut history = history.to_vec();
    for op in history.iter_mut().filter(|op| op.ret.is_none()) {
        if let Input::Put { value, .. }
        | Input::PutIf { value, .. }
        | Input::PutLeased { value, .. } = &mut op.input
        {
            if !seen.contains(value.as_str()) {
                *value = UNSEEN.to_string();
            }
        }
    }
    history
}

/// Rules 2 to 5 for one history (rule 1 applied), and what they need to
/// know of the search's progress.
pub(super) struct Pruning {
    /// For an operation of unknown outcome, its twin called just before
    /// it (rule 2).
    twin_before: Vec<usize>,
    /// Answered operations that show a revision, with the highest
    /// revision the store may have when they are placed, lowest first
    /// (rule 5).
    bounds: Vec<(i64, usize)>,
    /// Where each operation is in `bounds` (NIL: not there).
    position: Vec<usize>,
    /// The first place in `bounds` whose operation is not placed.
    lowest: usize,
    /// Which operations were answered.
    answered: Vec<bool>,
    /// Answered operations not placed.
    answered_left: usize,
}

impl Pruning {
    pub(super) fn new(history: &[Operation]) -> Pruning {
        let mut by_call: Vec<usize> = (0..history.len()).collect();
        by_call.sort_by_key(|&i| (history[i].call, i));
        let mut twin_before = vec![NIL; history.len()];
        let mut last: HashMap<&Input, usize> = HashMap::new();
        for &i in by_call.iter().filter(|&&i| history[i].ret.is_none()) {
            if let Some(before) = last.insert(&history[i].input, i) {
                twin_before[i] = before;
            }
        }
        let mut bounds: Vec<(i64, usize)> = history
            .iter()
            .enumerate()
            .filter_map(|(i, op)| Some((highest_revision(op)?, i)))
            .collect();
        bounds.sort_unstable();
        let mut position = vec![NIL; history.len()];
        for (p, &(_, i)) in bounds.iter().enumerate() {
            position[i] = p;
        }
        Pruning {
            twin_before,
            bounds,
            position,
            lowest: 0,
            answered: history.iter().map(|op| op.ret.is_some()).collect(),
            answered_left: history.iter().filter(|op| op.ret.is_some()).count(),
        }
    }

    /// Whether `op`, of unknown outcome, may be placed now (rule 2).
    pub(super) fn may_place(&self, op: usize, linearized: &[bool]) -> bool {
        let twin = self.twin_before[op];
        twin == NIL || linearized[twin]
    }

    /// Records that `op` is placed (`linearized` says so already).
    pub(super) fn place(&mut self, op: usize, linearized: &[bool]) {
        if self.answered[op] {
            self.answered_left -= 1;
        }
        while self.lowest < self.bounds.len() && linearized[self.bounds[self.lowest].1] {
            self.lowest += 1;
        }
    }

    /// Records that `op` is no longer placed.
    pub(super) fn unplace(&mut self, op: usize) {
        if self.answered[op] {
            self.answered_left += 1;
        }
        self.lowest = self.lowest.min(self.position[op]);
    }

    /// Whether a store at `revision` can still give the answers of every
    /// answered operation not placed (rule 5).
    pub(super) fn within_bounds(&self, revision: i64) -> bool {
        self.bounds
            .get(self.lowest)
            .is_none_or(|&(bound, _)| revision <= bound)
    }

    /// Whether every answered operation is placed: the rest can go after
    /// them.
    pub(super) fn all_answered_placed(&self) -> bool {
        self.answered_left == 0
    }
}

/// The lease `input` names, if it names one (rule 4).
pub(super) fn lease_named(input: &Input) -> Option<i64> {
    match input {
        Input::Grant { lease } | Input::PutLeased { lease, .. } | Input::Revoke { lease } => {
            Some(*lease)
        }
        _ => None,
    }
}

/// The highest revision the store may have where `op` is placed: what it
/// answered, less one if it took a revision. `None`: no answer, or one
/// without a revision ("lease not found").
fn highest_revision(op: &Operation) -> Option<i64> {
    let (_, out) = op.ret.as_ref()?;
    let took_one = matches!(
        (&op.input, out),
        (
            Input::Put { .. } | Input::PutLeased { .. },
            Output::Put { .. }
        ) | (Input::Delete { .. }, Output::Delete { deleted: 1.., .. })
            | (
                Input::PutIf { .. },
                Output::PutIf {
                    succeeded: true,
                    ..
                }
            )
    );
    match out {
        Output::LeaseNotFound => None,
        out => Some(out.revision() - i64::from(took_one)),
    }
}
