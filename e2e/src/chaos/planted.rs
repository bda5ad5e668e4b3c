//! Bugs planted in a recorded history, to show the checker finds them.

use crate::linearizability::{Input, Operation, Output};

/// A planted bug: the history with one read changed to miss the write it
/// saw (as if the store had lost it): the key absent at the same header
/// revision. `None` if no read saw a value.
pub fn plant_lost_write(history: &[Operation]) -> Option<Vec<Operation>> {
    let i = history
        .iter()
        .rposition(|o| matches!(o.ret, Some((_, Output::Get { value: Some(_), .. }))))?;
    let mut planted = history.to_vec();
    if let Some((_, Output::Get { value, .. })) = &mut planted[i].ret {
        *value = None;
    }
    Some(planted)
}

/// A planted bug: one read answered with the key's previous value (a
/// stale read, as from a follower that had not applied the last write),
/// at the same header revision. `None` if no read saw a value that had an
/// acknowledged predecessor.
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
        let previous = written(key, *rev)?;
        let mut planted = history.to_vec();
        if let Some((_, Output::Get { value, .. })) = &mut planted[i].ret {
            *value = Some(previous);
        }
        Some(planted)
    })
}
