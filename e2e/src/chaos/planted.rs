//! Bugs planted in a recorded history, to show the checker finds them.

use crate::linearizability::{Input, Operation, Output};

/// How many operations on a read's key (lease grants and revokes
/// counted) may overlap it, directly or through one another, for a bug
/// planted there to shrink to a few: the minimiser cuts a history only
/// where no operations overlap, so the overlapping ones all stay.
const MAX_OVERLAPPING: usize = 4;

/// Whether the read `i` of `history` is a place to plant a bug that the
/// minimiser can shrink to a few operations:
/// - no operation of unknown outcome that could change its key (one
///   naming it, or any lease grant or revoke) was called before it. Such
///   an operation may take effect at any later point, so every history
///   that explains the bug has to keep it and what follows;
/// - at most [`MAX_OVERLAPPING`] operations touching it overlap it (as
///   they do around a killed leader, when calls wait out the election).
fn plantable(history: &[Operation], i: usize) -> bool {
    let Input::Get { key } = &history[i].input else {
        return false;
    };
    let touches = |o: &Operation| match &o.input {
        Input::Get { key: k }
        | Input::Put { key: k, .. }
        | Input::Delete { key: k }
        | Input::PutIf { key: k, .. }
        | Input::PutLeased { key: k, .. } => k == key,
        Input::Revoke { .. } | Input::Grant { .. } => true,
    };
    let unknown_before = history.iter().any(|o| {
        o.ret.is_none()
            && o.call < history[i].call
            && !matches!(o.input, Input::Get { .. })
            && touches(o)
    });
    !unknown_before && overlapping(history, i, touches) <= MAX_OVERLAPPING
}

/// How many answered operations `touches` selects overlap operation `i`
/// (itself included), directly or through a chain of overlapping ones.
fn overlapping(history: &[Operation], i: usize, touches: impl Fn(&Operation) -> bool) -> usize {
    let mut ops: Vec<usize> = (0..history.len())
        .filter(|&j| j == i || (history[j].ret.is_some() && touches(&history[j])))
        .collect();
    ops.sort_by_key(|&j| (history[j].call, j));
    // Runs of operations between points where every earlier one has
    // returned before the next is called.
    let (mut run, mut last_return) = (Vec::new(), 0);
    for j in ops {
        if !run.is_empty() && last_return < history[j].call {
            if run.contains(&i) {
                break;
            }
            run.clear();
        }
        run.push(j);
        if let Some((ret, _)) = &history[j].ret {
            last_return = last_return.max(*ret);
        }
    }
    run.len()
}

/// A planted bug: the history with one read changed to miss the write it
/// saw (as if the store had lost it): the key absent at the same header
/// revision. `None` if no plantable read saw a value.
pub fn plant_lost_write(history: &[Operation]) -> Option<Vec<Operation>> {
    let i = (0..history.len()).rev().find(|&i| {
        matches!(
            history[i].ret,
            Some((_, Output::Get { value: Some(_), .. }))
        ) && plantable(history, i)
    })?;
    let mut planted = history.to_vec();
    if let Some((_, Output::Get { value, .. })) = &mut planted[i].ret {
        *value = None;
    }
    Some(planted)
}

/// A planted bug: one read answered with the key's previous value (a
/// stale read, as from a follower that had not applied the last write),
/// at the same header revision. `None` if no plantable read saw a value
/// that had an acknowledged predecessor.
pub fn plant_stale_read(history: &[Operation]) -> Option<Vec<Operation>> {
    let written = |key: &str, below: i64| -> Option<(String, i64)> {
        history
            .iter()
            .filter_map(|o| match (&o.input, &o.ret) {
                (Input::Put { key: k, value }, Some((_, Output::Put { revision })))
                | (
                    Input::PutIf { key: k, value, .. },
                    Some((
                        _,
                        Output::PutIf {
                            succeeded: true,
                            revision,
                        },
                    )),
                ) if k == key && *revision < below => Some((value.clone(), *revision)),
                _ => None,
            })
            .max_by_key(|(_, r)| *r)
    };
    history.iter().enumerate().rev().find_map(|(i, o)| {
        let (
            Input::Get { key },
            Some((
                _,
                Output::Get {
                    value: Some((_, rev)),
                    ..
                },
            )),
        ) = (&o.input, &o.ret)
        else {
            return None;
        };
        if !plantable(history, i) {
            return None;
        }
        let previous = written(key, *rev)?;
        let mut planted = history.to_vec();
        if let Some((_, Output::Get { value, .. })) = &mut planted[i].ret {
            *value = Some(previous);
        }
        Some(planted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(input: Input, call: u64, ret: Option<(u64, Output)>) -> Operation {
        Operation {
            client: 0,
            input,
            call,
            ret,
        }
    }

    fn put(key: &str, call: u64, ret: u64, revision: i64) -> Operation {
        let input = Input::Put {
            key: key.into(),
            value: format!("v{revision}"),
        };
        op(input, call, Some((ret, Output::Put { revision })))
    }

    fn get(key: &str, call: u64, ret: u64, seen: i64) -> Operation {
        let value = Some((format!("v{seen}"), seen));
        let output = Output::Get {
            value,
            revision: seen,
        };
        op(Input::Get { key: key.into() }, call, Some((ret, output)))
    }

    #[test]
    fn a_read_in_a_quiet_stretch_is_plantable_one_inside_a_long_overlap_is_not() {
        let mut h = vec![put("a", 0, 10, 2), get("a", 20, 30, 2)];
        // From 100, a put waits 1000 (an election) while five more calls
        // on "a" overlap it, the read at 600 among them.
        h.push(put("a", 100, 1100, 3));
        for n in 0..5u64 {
            h.push(get("a", 200 + n * 100, 250 + n * 100, 2));
        }
        // Operations on another key overlap too, and do not count.
        h.push(put("b", 150, 1200, 4));
        assert_eq!(overlapping(&h, 1, touches_a), 1);
        assert_eq!(overlapping(&h, 5, touches_a), 6);
        assert!(plantable(&h, 1));
        assert!(!plantable(&h, 5));
        // A grant of unknown outcome before a read makes it unplantable.
        h.insert(0, op(Input::Grant { lease: 7 }, 0, None));
        assert!(!plantable(&h, 2));
    }

    fn touches_a(o: &Operation) -> bool {
        matches!(&o.input, Input::Put { key, .. } | Input::Get { key } if key == "a")
    }
}
