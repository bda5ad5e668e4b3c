//! The Wing–Gong–Lowe search: the calls and returns of a history in time
//! order, in a doubly linked list; an operation whose call comes before
//! the first return left may be placed next (lifted out of the list) if
//! the model explains its answer; when none can, the last placement is
//! undone. Porcupine's memo (the set of operations placed and the state
//! they left) keeps the search from exploring a point twice.
//!
//! A check (not the collection of final states) also applies
//! [`Pruning`]: see there for why it changes no verdict.

use std::collections::HashSet;

use super::pruning::{canonical, lease_named, Pruning};
use super::{CheckError, Gaps, Operation, State, Violation, MAX_MEMO};

/// What [`search`] collects when asked for the states every order of a
/// history ends in.
pub(super) struct Finals {
    pub(super) states: Vec<State>,
    /// More than this many states: stop.
    pub(super) limit: usize,
}

/// One call or return in time order, in a doubly linked list the search
/// lifts operations out of.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return entry.
    partner: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// Searches for an order of `history` from `initial` (with `gaps`: see
/// [`State::step_with_gaps`]) that explains every answer; how many steps
/// it took. With `finals`, it goes on past the first such order,
/// collecting the states orders end in. `prune`: with [`Pruning`] (the
/// tests compare verdicts without).
pub(super) fn search(
    history: &[Operation],
    initial: &State,
    gaps: Option<&Gaps>,
    finals: Option<&mut Finals>,
    max_steps: u64,
    prune: bool,
) -> Result<u64, CheckError> {
    // The final states are those of every order, operations of unknown
    // outcome included: no pruning for them.
    let prune = prune && finals.is_none();
    let canonical_history = prune.then(|| canonical(history, gaps));
    let history = canonical_history.as_deref().unwrap_or(history);
    let mut s = Search {
        history,
        gaps,
        entries: entries_in_time_order(history),
        head: 0,
        linearized: vec![false; history.len()],
        order: Vec::new(),
        stack: Vec::new(),
        state: initial.clone(),
        only_lease: None,
        pruning: prune.then(|| Pruning::new(history)),
    };
    s.head = s.entries.len();
    // A sentinel before the first entry makes lifting uniform.
    let first = if s.head > 0 { 0 } else { NIL };
    s.entries.push(Entry {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: first,
    });
    if first != NIL {
        s.entries[first].prev = s.head;
    }
    s.run(finals, max_steps)
}

struct Search<'a> {
    history: &'a [Operation],
    gaps: Option<&'a Gaps>,
    entries: Vec<Entry>,
    /// The sentinel entry before the first.
    head: usize,
    linearized: Vec<bool>,
    /// The operations placed, in order.
    order: Vec<usize>,
    /// For each placement, its call entry, and the state and lease rule
    /// before it.
    stack: Vec<(usize, State, Option<i64>)>,
    state: State,
    /// The lease the next placement must name (pruning's rule 4).
    only_lease: Option<i64>,
    pruning: Option<Pruning>,
}

impl Search<'_> {
    fn run(&mut self, mut finals: Option<&mut Finals>, max_steps: u64) -> Result<u64, CheckError> {
        let mut longest: Vec<usize> = Vec::new();
        let mut stuck_at_longest: Vec<usize> = Vec::new();
        let mut seen: HashSet<(Vec<u64>, u64, Option<i64>)> = HashSet::new();
        let mut entry = self.entries[self.head].next;
        let mut steps = 0u64;
        loop {
            let done = self.entries[self.head].next == NIL
                || self
                    .pruning
                    .as_ref()
                    .is_some_and(Pruning::all_answered_placed);
            if done {
                let Some(f) = finals.as_deref_mut() else {
                    return Ok(steps);
                };
                if !f.states.contains(&self.state) {
                    f.states.push(self.state.clone());
                }
                // Other orders may end in other states.
                match self.backtrack() {
                    Some(next) if f.states.len() <= f.limit => entry = next,
                    _ => return Ok(steps),
                }
                continue;
            }
            if steps == max_steps || seen.len() >= MAX_MEMO {
                return Err(CheckError::Inconclusive {
                    steps,
                    memo: seen.len(),
                });
            }
            steps += 1;
            // Every candidate was tried, or a return came before its
            // operation was placed: undo the last step.
            if entry == NIL || !self.entries[entry].is_call {
                match self.backtrack() {
                    Some(next) => entry = next,
                    None => {
                        return Err(CheckError::NotLinearizable(Violation {
                            longest_prefix: longest,
                            stuck: stuck_at_longest,
                        }))
                    }
                }
                continue;
            }
            let e = self.entries[entry];
            if let Some((next, only_lease)) = self.try_place(e.op) {
                if seen.insert((bits(&self.linearized), next.fingerprint(), only_lease)) {
                    let before = std::mem::replace(&mut self.state, next);
                    let rule = std::mem::replace(&mut self.only_lease, only_lease);
                    self.stack.push((entry, before, rule));
                    self.order.push(e.op);
                    lift(&mut self.entries, entry);
                    if self.order.len() > longest.len() {
                        longest = self.order.clone();
                        stuck_at_longest = pending(&self.entries, self.head);
                    }
                    entry = self.entries[self.head].next;
                    continue;
                }
                self.unmark(e.op);
            }
            entry = e.next;
        }
    }

    /// The state after `op` if it may be placed now, and the lease the
    /// next placement must name, with `op` marked as placed.
    fn try_place(&mut self, op: usize) -> Option<(State, Option<i64>)> {
        let o = &self.history[op];
        let unknown = o.ret.is_none();
        if let Some(lease) = self.only_lease {
            if lease_named(&o.input) != Some(lease) {
                return None;
            }
        }
        if let Some(p) = &self.pruning {
            if unknown && !p.may_place(op, &self.linearized) {
                return None;
            }
        }
        let output = o.ret.as_ref().map(|(_, out)| out);
        let next = match self.gaps {
            None => self.state.step(&o.input, output),
            Some(gaps) => self.state.step_with_gaps(&o.input, output, gaps),
        }?;
        let Some(p) = &mut self.pruning else {
            self.linearized[op] = true;
            return Some((next, None));
        };
        let mut only_lease = None;
        if unknown {
            if next == self.state {
                return None;
            }
            if next.same_keys(&self.state) {
                only_lease = lease_named(&o.input);
            }
        }
        self.linearized[op] = true;
        p.place(op, &self.linearized);
        // Only for operations of unknown outcome: an answered one
        // shows its own revision, and the violation report is the
        // clearer for failing at the read it contradicts.
        if unknown && !p.within_bounds(next.revision()) {
            self.unmark(op);
            return None;
        }
        Some((next, only_lease))
    }

    /// Marks `op` as not placed.
    fn unmark(&mut self, op: usize) {
        self.linearized[op] = false;
        if let Some(p) = &mut self.pruning {
            p.unplace(op);
        }
    }

    /// Undoes the last placement; the entry to try next, or `None` if
    /// nothing was placed.
    fn backtrack(&mut self) -> Option<usize> {
        let (call, before, rule) = self.stack.pop()?;
        self.state = before;
        self.only_lease = rule;
        self.unmark(self.entries[call].op);
        self.order.pop();
        unlift(&mut self.entries, call);
        Some(self.entries[call].next)
    }
}

fn entries_in_time_order(history: &[Operation]) -> Vec<Entry> {
    // (time, kind, op): calls sort before returns at the same instant, so
    // operations that touch are treated as concurrent.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(history.len() * 2);
    for (i, op) in history.iter().enumerate() {
        events.push((op.call, 0, i));
        let ret = op.ret.as_ref().map_or(u64::MAX, |(t, _)| *t);
        events.push((ret.max(op.call), 1, i));
    }
    events.sort();
    let mut entries: Vec<Entry> = events
        .iter()
        .enumerate()
        .map(|(i, &(_, kind, op))| Entry {
            op,
            is_call: kind == 0,
            partner: NIL,
            prev: if i == 0 { NIL } else { i - 1 },
            next: if i + 1 == events.len() { NIL } else { i + 1 },
        })
        .collect();
    let mut call_of = vec![NIL; history.len()];
    for (i, e) in entries.iter().enumerate() {
        if e.is_call {
            call_of[e.op] = i;
        }
    }
    for i in 0..entries.len() {
        if !entries[i].is_call {
            let call = call_of[entries[i].op];
            entries[call].partner = i;
        }
    }
    entries
}

/// Takes a call and its return out of the list.
fn lift(entries: &mut [Entry], call: usize) {
    for i in [call, entries[call].partner] {
        let (prev, next) = (entries[i].prev, entries[i].next);
        if prev != NIL {
            entries[prev].next = next;
        }
        if next != NIL {
            entries[next].prev = prev;
        }
    }
}

/// Puts them back, in the reverse order.
fn unlift(entries: &mut [Entry], call: usize) {
    for i in [entries[call].partner, call] {
        let (prev, next) = (entries[i].prev, entries[i].next);
        if prev != NIL {
            entries[prev].next = i;
        }
        if next != NIL {
            entries[next].prev = i;
        }
    }
}

fn pending(entries: &[Entry], head: usize) -> Vec<usize> {
    let mut ops = Vec::new();
    let mut i = entries[head].next;
    while i != NIL {
        if entries[i].is_call {
            ops.push(entries[i].op);
        } else {
            break;
        }
        i = entries[i].next;
    }
    ops
}

fn bits(linearized: &[bool]) -> Vec<u64> {
    let mut words = vec![0u64; linearized.len().div_ceil(64)];
    for (i, &on) in linearized.iter().enumerate() {
        if on {
            words[i / 64] |= 1 << (i % 64);
        }
    }
    words
}
