//! Bugs planted in a recorded history, to show the checker finds them.

use crate::linearizability::{Input, Operation, Output};

/// Whether the read `i` of `history` is a place to plant a bug that the
/// minimiser can shrink to a few operations: no write of unknown outcome
/// that could change its key (one naming it, or any lease revoke) was
/// called before it. Such a write may take effect at any later point, so
/// every history that explains the bug has to keep it and what follows.
fn plantable(history: &[Operation], i: usize) -> bool {
    let Input::Get { key } = &history[i].input else {
        return false;
    };
    !history.iter().any(|o| {
        o.ret.is_none()
            && o.call < history[i].call
            && match &o.input {
                Input::Put { key: k, .. }
                | Input::Delete { key: k }
                | Input::PutIf { key: k, .. }
                | Input::PutLeased { key: k, .. } => k == key,
                Input::Revoke { .. } => true,
                Input::Get { .. } | Input::Grant { .. } => false,
            }
    })
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
