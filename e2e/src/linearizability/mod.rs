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
//! after everything else, where no answer can see it).

use std::collections::HashSet;

mod minimize;
mod model;

pub use minimize::{minimize, Minimized};
pub use model::{Gaps, Input, Operation, Output, State};

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
    search_all(history, initial, None, None, max_steps)
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
    search_all(history, initial, Some(gaps), None, MAX_STEPS).map(|_| ())
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
    match search_all(history, initial, gaps, Some(&mut finals), max_steps) {
        Err(CheckError::Inconclusive { .. }) => None,
        _ => Some(finals.states),
    }
}

/// What [`final_states`] collects.
struct Finals {
    states: Vec<State>,
    limit: usize,
}

/// The search; with `finals`, it goes on past the first order that
/// explains every answer, collecting the states orders end in.
fn search_all(
    history: &[Operation],
    initial: &State,
    gaps: Option<&Gaps>,
    mut finals: Option<&mut Finals>,
    max_steps: u64,
) -> Result<u64, CheckError> {
    let mut entries = entries_in_time_order(history);
    let head_sentinel = entries.len();
    // A sentinel before the first entry makes lifting uniform.
    entries.push(Entry {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: if head_sentinel > 0 { 0 } else { NIL },
    });
    if head_sentinel > 0 {
        entries[0].prev = head_sentinel;
    }

    let mut linearized = vec![false; history.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck_at_longest: Vec<usize> = Vec::new();
    let mut seen: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = initial.clone();
    let mut entry = entries[head_sentinel].next;
    let mut steps = 0u64;

    loop {
        if entries[head_sentinel].next == NIL {
            let Some(f) = finals.as_deref_mut() else {
                return Ok(steps);
            };
            if !f.states.contains(&state) {
                f.states.push(state.clone());
            }
            // Other orders may end in other states.
            if f.states.len() > f.limit
                || !backtrack(
                    &mut entries,
                    &mut stack,
                    &mut state,
                    &mut linearized,
                    &mut order,
                    &mut entry,
                )
            {
                return Ok(steps);
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
        if entry == NIL || !entries[entry].is_call {
            if !backtrack(
                &mut entries,
                &mut stack,
                &mut state,
                &mut linearized,
                &mut order,
                &mut entry,
            ) {
                return Err(CheckError::NotLinearizable(Violation {
                    longest_prefix: longest,
                    stuck: stuck_at_longest,
                }));
            }
            continue;
        }
        let e = entries[entry];
        let op = &history[e.op];
        let output = op.ret.as_ref().map(|(_, out)| out);
        let next = match gaps {
            None => state.step(&op.input, output),
            Some(gaps) => state.step_with_gaps(&op.input, output, gaps),
        };
        if let Some(next) = next {
            linearized[e.op] = true;
            let key = (bits(&linearized), next.fingerprint());
            if seen.insert(key) {
                stack.push((entry, state));
                state = next;
                order.push(e.op);
                lift(&mut entries, entry);
                if order.len() > longest.len() {
                    longest = order.clone();
                    stuck_at_longest = pending(&entries, head_sentinel);
                }
                entry = entries[head_sentinel].next;
                continue;
            }
            linearized[e.op] = false;
        }
        entry = e.next;
    }
}

fn backtrack(
    entries: &mut [Entry],
    stack: &mut Vec<(usize, State)>,
    state: &mut State,
    linearized: &mut [bool],
    order: &mut Vec<usize>,
    entry: &mut usize,
) -> bool {
    let Some((call, before)) = stack.pop() else {
        return false;
    };
    *state = before;
    linearized[entries[call].op] = false;
    order.pop();
    unlift(entries, call);
    *entry = entries[call].next;
    true
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn op(client: usize, input: Input, call: u64, ret: Option<(u64, Output)>) -> Operation {
        Operation {
            client,
            input,
            call,
            ret,
        }
    }

    fn put(k: &str, v: &str) -> Input {
        Input::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn get(k: &str) -> Input {
        Input::Get { key: k.into() }
    }

    fn seen(v: Option<(&str, i64)>, revision: i64) -> Output {
        Output::Get {
            value: v.map(|(s, r)| (s.to_string(), r)),
            revision,
        }
    }

    fn start() -> State {
        State::new(1, BTreeMap::new())
    }

    /// Whether the check proves `h` is not linearizable from [`start`].
    fn violated(h: &[Operation]) -> bool {
        matches!(check(h, &start()), Err(CheckError::NotLinearizable(_)))
    }

    #[test]
    fn concurrent_writes_and_reads_in_some_order_pass() {
        let h = vec![
            op(0, put("a", "1"), 0, Some((10, Output::Put { revision: 3 }))),
            op(1, put("a", "2"), 1, Some((9, Output::Put { revision: 2 }))),
            op(2, get("a"), 2, Some((11, seen(Some(("2", 2)), 2)))),
            op(2, get("a"), 12, Some((13, seen(Some(("1", 3)), 3)))),
        ];
        assert!(check(&h, &start()).is_ok());
    }

    #[test]
    fn a_stale_read_is_found() {
        // The put finished before the read began; the read misses it.
        let h = vec![
            op(0, put("a", "1"), 0, Some((5, Output::Put { revision: 2 }))),
            op(1, get("a"), 6, Some((7, seen(None, 1)))),
        ];
        let Err(CheckError::NotLinearizable(v)) = check(&h, &start()) else {
            panic!("the stale read passed");
        };
        assert_eq!(v.longest_prefix, vec![0]);
        assert_eq!(v.stuck, vec![1]);
    }

    #[test]
    fn a_lost_acknowledged_write_is_found() {
        let h = vec![
            op(0, put("a", "1"), 0, Some((5, Output::Put { revision: 2 }))),
            op(0, put("b", "1"), 6, Some((8, Output::Put { revision: 3 }))),
            // Revision 3 is there, but the write of "a" is not.
            op(1, get("a"), 9, Some((10, seen(None, 3)))),
        ];
        assert!(violated(&h));
    }

    #[test]
    fn a_write_whose_outcome_is_unknown_may_or_may_not_have_happened() {
        let applied = vec![
            op(0, put("a", "1"), 0, None),
            op(1, get("a"), 5, Some((6, seen(Some(("1", 2)), 2)))),
        ];
        assert!(check(&applied, &start()).is_ok());
        let lost = vec![
            op(0, put("a", "1"), 0, None),
            op(1, get("a"), 5, Some((6, seen(None, 1)))),
        ];
        assert!(check(&lost, &start()).is_ok());
        // But not both: once seen, it cannot vanish.
        let flicker = vec![
            op(0, put("a", "1"), 0, None),
            op(1, get("a"), 5, Some((6, seen(Some(("1", 2)), 2)))),
            op(1, get("a"), 7, Some((8, seen(None, 1)))),
        ];
        assert!(violated(&flicker));
    }

    #[test]
    fn revisions_must_match_the_order_of_writes() {
        // Two writes, one after the other, with revisions the wrong way round.
        let h = vec![
            op(0, put("a", "1"), 0, Some((2, Output::Put { revision: 3 }))),
            op(0, put("a", "2"), 3, Some((4, Output::Put { revision: 2 }))),
        ];
        assert!(violated(&h));
    }

    #[test]
    fn conditional_puts_follow_mod_revisions() {
        let create = |expect, call, ret, ok, rev| {
            op(
                call as usize,
                Input::PutIf {
                    key: "k".into(),
                    expect,
                    value: format!("v{call}"),
                },
                call,
                Some((
                    ret,
                    Output::PutIf {
                        succeeded: ok,
                        revision: rev,
                    },
                )),
            )
        };
        // Two concurrent creates: exactly one may win.
        let ok = vec![create(0, 0, 10, true, 2), create(0, 1, 11, false, 2)];
        assert!(check(&ok, &start()).is_ok());
        let both_won = vec![create(0, 0, 10, true, 2), create(0, 1, 11, true, 3)];
        assert!(violated(&both_won));
    }

    #[test]
    fn deletes_bump_the_revision_only_when_they_delete() {
        let h = vec![
            op(
                0,
                Input::Delete { key: "a".into() },
                0,
                Some((
                    1,
                    Output::Delete {
                        deleted: 0,
                        revision: 1,
                    },
                )),
            ),
            op(0, put("a", "x"), 2, Some((3, Output::Put { revision: 2 }))),
            op(
                0,
                Input::Delete { key: "a".into() },
                4,
                Some((
                    5,
                    Output::Delete {
                        deleted: 1,
                        revision: 3,
                    },
                )),
            ),
            op(0, get("a"), 6, Some((7, seen(None, 3)))),
        ];
        assert!(check(&h, &start()).is_ok());
        let mut wrong = h.clone();
        wrong[2].ret = Some((
            5,
            Output::Delete {
                deleted: 1,
                revision: 2,
            },
        ));
        assert!(violated(&wrong));
    }

    /// Writes whose outcome is unknown and that change nothing where
    /// they may be placed (deletes of a key never written), among 300
    /// acknowledged writes: each may take effect anywhere or never.
    fn unknown_noops_among_writes(unknown: usize) -> Vec<Operation> {
        let mut h: Vec<Operation> = (0..unknown)
            .map(|i| {
                op(
                    9,
                    Input::Delete {
                        key: format!("never-written-{i}"),
                    },
                    i as u64,
                    None,
                )
            })
            .collect();
        for n in 0..300u64 {
            h.push(op(
                0,
                put("a", &n.to_string()),
                1000 + n * 10,
                Some((
                    1005 + n * 10,
                    Output::Put {
                        revision: 2 + n as i64,
                    },
                )),
            ));
        }
        // A lost write at the end: the search must rule out every order.
        h.push(op(1, get("a"), 9000, Some((9001, seen(None, 301)))));
        h
    }

    #[test]
    fn a_check_out_of_steps_is_inconclusive_not_a_pass() {
        let h = unknown_noops_among_writes(12);
        let t = std::time::Instant::now();
        let steps = 1_000_000;
        let checked = check_within(&h, &start(), steps);
        println!("{steps} steps in {:?}", t.elapsed());
        assert!(
            matches!(checked, Err(CheckError::Inconclusive { steps: s, .. }) if s == steps),
            "{checked:?}"
        );
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 5 clients, 400 writes to 4 keys in rounds where everyone overlaps.
        let mut h = Vec::new();
        let mut revision = 1;
        for round in 0..80u64 {
            for c in 0..5u64 {
                revision += 1;
                h.push(op(
                    c as usize,
                    put(&format!("k{}", c % 4), &format!("{round}")),
                    round * 100 + c,
                    Some((round * 100 + 50 + c, Output::Put { revision })),
                ));
            }
        }
        let t = std::time::Instant::now();
        assert!(check(&h, &start()).is_ok());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }
}
