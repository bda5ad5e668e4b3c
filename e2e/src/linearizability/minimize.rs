//! Shrinks a history the checker rejects to a small part of it that is
//! still rejected, for failure reports: thousands of operations become the
//! few that show the bug.
//!
//! Only parts whose rejection proves the whole is not linearizable are
//! tried (dropping a write would make any later read of it look like a
//! bug of its own, and the shrinking would find that instead):
//!
//! 1. the operations on some of the keys (with the leases their puts
//!    use), checked allowing revision gaps ([`super::check_with_gaps`]),
//!    since the operations left out took revisions: the store as seen
//!    through those keys alone;
//! 2. the operations up to a point where every answered operation has
//!    returned before the next one was called (those left out come
//!    after all of them in any order);
//! 3. reads are dropped (gets, failed conditional puts, deletes of
//!    nothing, "lease not found" answers: operations that change
//!    nothing), delta-debugging style, while the part is still rejected;
//! 4. the operations before a point where every answered one of them had
//!    returned, replaced by the store they leave, when every order of them
//!    leaves the same one (so what comes after starts from a known
//!    state); those of unknown outcome among them are kept, when taking
//!    effect before the point would change nothing (a conditional put
//!    whose compare fails there, say).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::{
    check, check_with_gaps, final_states, CheckError, Gaps, Input, Operation, Output, State,
};

/// A shrunk failing history.
#[derive(Debug, Clone)]
pub struct Minimized {
    /// Indices into the original history, in call order.
    pub kept: Vec<usize>,
    /// Whether the part was checked allowing revision gaps (it fails
    /// even so: the operations left out may have taken revisions in
    /// between); false when the whole fails only without them, and the
    /// part was checked as is.
    pub with_gaps: bool,
    /// The store the part starts from: the run's start, or the one the
    /// operations left out before it leave.
    pub start: State,
    /// How many checks the shrinking made.
    pub checks: usize,
}

/// How long shrinking may take; past it, what is left stays.
const BUDGET: Duration = Duration::from_secs(30);

/// How many points (the latest first) a later start is tried at.
const MAX_STARTS_TRIED: usize = 40;

/// Shrinks `history`, which the checker rejects from `initial`; `None`
/// if it does not.
pub fn minimize(history: &[Operation], initial: &State) -> Option<Minimized> {
    if !proven_not_linearizable(check(history, initial)) {
        return None;
    }
    let all: Vec<usize> = (0..history.len()).collect();
    let gaps = Gaps::of(history);
    let with_gaps = proven_not_linearizable(check_with_gaps(history, initial, &gaps));
    let mut s = Shrinker {
        history,
        start: initial.clone(),
        gaps: with_gaps.then_some(gaps),
        checks: 0,
        deadline: Instant::now() + BUDGET,
    };
    let mut kept = if with_gaps { s.fewer_keys(&all) } else { all };
    kept = s.shorter(&kept);
    kept = s.without_reads(&kept);
    kept = s.later_start(&kept);
    kept = s.without_reads(&kept);
    kept = s.shorter(&kept);
    kept.sort_by_key(|&i| (history[i].call, i));
    Some(Minimized {
        kept,
        with_gaps,
        start: s.start,
        checks: s.checks,
    })
}

struct Shrinker<'a> {
    history: &'a [Operation],
    start: State,
    gaps: Option<Gaps>,
    checks: usize,
    deadline: Instant,
}

impl Shrinker<'_> {
    /// Whether the part `kept` is rejected (past the budget: counted as
    /// not, so nothing more is dropped).
    fn fails(&mut self, kept: &[usize]) -> bool {
        if Instant::now() > self.deadline {
            return false;
        }
        self.checks += 1;
        let part: Vec<Operation> = kept.iter().map(|&i| self.history[i].clone()).collect();
        proven_not_linearizable(match &self.gaps {
            Some(gaps) => check_with_gaps(&part, &self.start, gaps),
            None => check(&part, &self.start),
        })
    }

    /// The operations on the fewest keys that still fail.
    fn fewer_keys(&mut self, kept: &[usize]) -> Vec<usize> {
        let keys: Vec<&str> = kept
            .iter()
            .filter_map(|&i| key_of(&self.history[i].input))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if keys.len() > 12 {
            return kept.to_vec();
        }
        let mut subsets: Vec<u32> = (1..(1u32 << keys.len()) - 1).collect();
        subsets.sort_by_key(|m| m.count_ones());
        for mask in subsets {
            let chosen: HashSet<&str> = keys
                .iter()
                .enumerate()
                .filter(|(b, _)| mask & (1 << b) != 0)
                .map(|(_, k)| *k)
                .collect();
            let part = on_keys(self.history, kept, &chosen);
            if self.fails(&part) {
                return part;
            }
        }
        kept.to_vec()
    }

    /// The shortest prefix (in call order) that still fails, cut only
    /// where every answered operation before the cut returned before the
    /// first one after it was called.
    fn shorter(&mut self, kept: &[usize]) -> Vec<usize> {
        let h = self.history;
        let mut ops = kept.to_vec();
        ops.sort_by_key(|&i| (h[i].call, i));
        let mut cuts = cut_points(h, &ops);
        cuts.push(ops.len());
        // Rejected prefixes stay rejected when longer: the first is found
        // by bisection.
        let (mut lo, mut hi) = (0, cuts.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.fails(&ops[..cuts[mid]]) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        ops.truncate(cuts[hi]);
        ops
    }

    /// Replaces the longest prefix it can (in call order, each answered
    /// operation returned before the rest were called, every order of it
    /// leaving one state) with the state it leaves, if what is after it
    /// still fails from there. Operations of unknown outcome called before
    /// the cut are carried over into the rest (they may still take effect
    /// there, or never), which is sound only when taking effect inside the
    /// prefix would change nothing: every order of the prefix with them
    /// must leave the same one state as without them.
    fn later_start(&mut self, kept: &[usize]) -> Vec<usize> {
        let h = self.history;
        let mut ops = kept.to_vec();
        ops.sort_by_key(|&i| (h[i].call, i));
        let cuts = cut_points(h, &ops);
        for &p in cuts.iter().rev().take(MAX_STARTS_TRIED) {
            if Instant::now() > self.deadline {
                break;
            }
            let (answered, carried): (Vec<usize>, Vec<usize>) =
                ops[..p].iter().partition(|&&i| h[i].ret.is_some());
            let Some(end) = self.only_end(&answered) else {
                continue;
            };
            if !carried.is_empty() && self.only_end(&ops[..p]).as_ref() != Some(&end) {
                continue;
            }
            let rest: Vec<usize> = carried
                .into_iter()
                .chain(ops[p..].iter().copied())
                .collect();
            let before = std::mem::replace(&mut self.start, end);
            if self.fails(&rest) {
                return rest;
            }
            self.start = before;
        }
        ops
    }

    /// The one state every order of `part` leaves from the current start
    /// (operations of unknown outcome taking effect somewhere); None when
    /// orders differ or the search gives up.
    fn only_end(&self, part: &[usize]) -> Option<State> {
        let part: Vec<Operation> = part.iter().map(|&i| self.history[i].clone()).collect();
        let states = final_states(&part, &self.start, self.gaps.as_ref(), 1, 1 << 20)?;
        let [end] = &states[..] else {
            return None;
        };
        Some(end.clone())
    }

    /// Drops reads while the part still fails: chunks of them first, then
    /// smaller ones, down to one at a time.
    fn without_reads(&mut self, kept: &[usize]) -> Vec<usize> {
        let (mut reads, fixed): (Vec<usize>, Vec<usize>) = kept
            .iter()
            .partition(|&&i| changes_nothing(&self.history[i]));
        let mut chunks = 2;
        while !reads.is_empty() {
            let size = reads.len().div_ceil(chunks);
            let mut dropped = false;
            for start in (0..reads.len()).step_by(size) {
                let end = (start + size).min(reads.len());
                let part: Vec<usize> = fixed
                    .iter()
                    .chain(&reads[..start])
                    .chain(&reads[end..])
                    .copied()
                    .collect();
                if self.fails(&part) {
                    reads.drain(start..end);
                    chunks = (chunks - 1).max(2);
                    dropped = true;
                    break;
                }
            }
            if !dropped {
                if size == 1 {
                    break;
                }
                chunks = (chunks * 2).min(reads.len());
            }
        }
        fixed.into_iter().chain(reads).collect()
    }
}

/// Whether a check found a violation (an inconclusive one proves nothing:
/// a part that exhausts the budget is not kept as failing).
fn proven_not_linearizable(checked: Result<(), CheckError>) -> bool {
    matches!(checked, Err(CheckError::NotLinearizable(_)))
}

/// The operations of `kept` on `keys`, and the grants and revokes of the
/// leases their puts use.
fn on_keys(history: &[Operation], kept: &[usize], keys: &HashSet<&str>) -> Vec<usize> {
    let leases: HashSet<i64> = kept
        .iter()
        .filter_map(|&i| match &history[i].input {
            Input::PutLeased { key, lease, .. } if keys.contains(key.as_str()) => Some(*lease),
            _ => None,
        })
        .collect();
    kept.iter()
        .copied()
        .filter(|&i| match &history[i].input {
            Input::Grant { lease } | Input::Revoke { lease } => leases.contains(lease),
            input => key_of(input).is_some_and(|k| keys.contains(k)),
        })
        .collect()
}

fn key_of(input: &Input) -> Option<&str> {
    match input {
        Input::Get { key }
        | Input::Put { key, .. }
        | Input::Delete { key }
        | Input::PutIf { key, .. }
        | Input::PutLeased { key, .. } => Some(key),
        Input::Grant { .. } | Input::Revoke { .. } => None,
    }
}

/// Whether `op` was answered and changed nothing: leaving it out cannot
/// make a linearizable history fail.
fn changes_nothing(op: &Operation) -> bool {
    matches!(
        (&op.input, &op.ret),
        (_, Some((_, Output::LeaseNotFound)))
            | (Input::Get { .. }, Some(_))
            | (
                Input::PutIf { .. },
                Some((
                    _,
                    Output::PutIf {
                        succeeded: false,
                        ..
                    }
                ))
            )
            | (
                Input::Delete { .. },
                Some((_, Output::Delete { deleted: 0, .. }))
            )
    )
}

/// The positions in `ops` (indices into `h`, in call order) where every
/// answered operation before the position returned before the one at it
/// was called: the places a history can be cut without splitting
/// overlapping operations (one of unknown outcome never returns, so it
/// overlaps everything after its call; the callers deal with it).
fn cut_points(h: &[Operation], ops: &[usize]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut last_return = 0;
    for (p, &i) in ops.iter().enumerate() {
        if p > 0 && last_return < h[i].call {
            cuts.push(p);
        }
        if let Some((ret, _)) = &h[i].ret {
            last_return = last_return.max(*ret);
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn put(client: usize, key: &str, value: &str, call: u64, revision: i64) -> Operation {
        Operation {
            client,
            input: Input::Put {
                key: key.into(),
                value: value.into(),
            },
            call,
            ret: Some((call + 5, Output::Put { revision })),
        }
    }

    fn get(client: usize, key: &str, seen: Option<(&str, i64)>, call: u64, rev: i64) -> Operation {
        Operation {
            client,
            input: Input::Get { key: key.into() },
            call,
            ret: Some((
                call + 5,
                Output::Get {
                    value: seen.map(|(v, r)| (v.to_string(), r)),
                    revision: rev,
                },
            )),
        }
    }

    #[test]
    fn a_stale_read_among_many_operations_shrinks_to_the_read_from_the_state_it_missed() {
        // Writes to "a" and "b" alternate, each read after; one read of
        // "b" near the end misses the write of "b" just before it.
        let mut h = Vec::new();
        let mut rev = 1;
        for n in 0..100u64 {
            let key = if n % 2 == 0 { "a" } else { "b" };
            rev += 1;
            let v = format!("v{n}");
            h.push(put(0, key, &v, n * 100, rev));
            h.push(get(1, key, Some((&v, rev)), n * 100 + 50, rev));
        }
        // The last read, of "b" after v99 at `rev`, sees v97 (at rev - 2).
        let stale = h.len() - 1;
        assert_eq!(h[stale].input, Input::Get { key: "b".into() });
        h[stale] = get(1, "b", Some(("v97", rev - 2)), h[stale].call, rev);
        let start = State::new(1, BTreeMap::new());
        let m = minimize(&h, &start).expect("the history fails");
        assert!(m.with_gaps);
        let part: Vec<Operation> = m.kept.iter().map(|&i| h[i].clone()).collect();
        assert!(matches!(
            check(&part, &start),
            Err(CheckError::NotLinearizable(_))
        ));
        // The read alone, from the store every write before it leaves
        // (where "b" is v99).
        assert_eq!(part, vec![h[stale].clone()]);
        assert!(format!("{:?}", m.start).contains("v99"), "{:?}", m.start);
    }

    #[test]
    fn an_early_operation_of_unknown_outcome_that_changes_nothing_does_not_stop_a_later_start() {
        // A conditional put that never returned, called first, whose
        // compare fails in every state the history passes through.
        let mut h = vec![Operation {
            client: 2,
            input: Input::PutIf {
                key: "a".into(),
                expect: 999,
                value: "never".into(),
            },
            call: 1,
            ret: None,
        }];
        let mut rev = 1;
        for n in 0..40u64 {
            rev += 1;
            let v = format!("v{n}");
            h.push(put(0, "a", &v, 10 + n * 100, rev));
            h.push(get(1, "a", Some((&v, rev)), 10 + n * 100 + 50, rev));
        }
        // The last read misses the last write.
        let lost = h.len() - 1;
        h[lost] = get(1, "a", None, h[lost].call, rev);
        let start = State::new(1, BTreeMap::new());
        let m = minimize(&h, &start).expect("the history fails");
        let part: Vec<Operation> = m.kept.iter().map(|&i| h[i].clone()).collect();
        assert!(
            m.kept.len() <= 3 && m.kept.contains(&lost),
            "{} operations left: {part:?}",
            m.kept.len()
        );
        assert!(matches!(
            check(&part, &m.start),
            Err(CheckError::NotLinearizable(_))
        ));
    }

    #[test]
    fn a_linearizable_history_is_not_shrunk() {
        let h = vec![put(0, "a", "1", 0, 2), get(1, "a", Some(("1", 2)), 10, 2)];
        assert!(minimize(&h, &State::new(1, BTreeMap::new())).is_none());
    }

    #[test]
    fn reads_are_dropped_and_a_known_prefix_becomes_the_start() {
        let h = vec![
            put(0, "a", "1", 0, 2),
            get(1, "a", Some(("1", 2)), 10, 2),
            get(1, "a", Some(("1", 2)), 20, 2),
            put(0, "a", "2", 30, 3),
            get(1, "a", Some(("1", 2)), 40, 3), // stale
            get(1, "a", Some(("2", 3)), 50, 3),
        ];
        let m = minimize(&h, &State::new(1, BTreeMap::new())).unwrap();
        // From the store after the second write.
        assert_eq!(m.kept, vec![4]);
        assert!(format!("{:?}", m.start).contains("\"2\""), "{:?}", m.start);
    }
}
