//! What the checker knows of etcd: the operations clients make, the
//! answers the store gives, and the store's state as the model sees it
//! (its revision, every live key's value, mod revision and lease, every
//! lease and the keys attached to it).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Input {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// `if mod_revision(key) == expect then put(key, value)`: kube-apiserver's
    /// create (expect 0) and update.
    PutIf {
        key: String,
        expect: i64,
        value: String,
    },
    /// LeaseGrant with a lease ID the client chose (and a TTL far longer
    /// than a run: leases end only when revoked).
    Grant {
        lease: i64,
    },
    /// A put that attaches the key to `lease`.
    PutLeased {
        key: String,
        value: String,
        lease: i64,
    },
    /// LeaseRevoke: the lease ends and its keys are deleted, in one
    /// revision.
    Revoke {
        lease: i64,
    },
}

/// What the store answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Output {
    /// The value and mod revision of the key (`None` if absent), and the
    /// header revision.
    Get {
        value: Option<(String, i64)>,
        revision: i64,
    },
    /// A put's (a leased put's too) header revision.
    Put {
        revision: i64,
    },
    Delete {
        deleted: i64,
        revision: i64,
    },
    PutIf {
        succeeded: bool,
        revision: i64,
    },
    Granted {
        revision: i64,
    },
    Revoked {
        revision: i64,
    },
    /// `etcdserver: requested lease not found`, to a leased put or a
    /// revoke: nothing changed.
    LeaseNotFound,
}

impl Output {
    /// The header revision of the answer (0 for an error).
    pub fn revision(&self) -> i64 {
        match self {
            Output::Get { revision, .. }
            | Output::Put { revision }
            | Output::Delete { revision, .. }
            | Output::PutIf { revision, .. }
            | Output::Granted { revision }
            | Output::Revoked { revision } => *revision,
            Output::LeaseNotFound => 0,
        }
    }
}

/// One operation of a history. Times are any monotonic clock's (ns).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    pub client: usize,
    pub input: Input,
    pub call: u64,
    /// `None`: the outcome is unknown.
    pub ret: Option<(u64, Output)>,
}

/// The value `input` writes, if it writes one.
fn written_value(input: &Input) -> Option<&str> {
    match input {
        Input::Put { value, .. } | Input::PutIf { value, .. } | Input::PutLeased { value, .. } => {
            Some(value)
        }
        _ => None,
    }
}

/// What a sub-history's check knows of the whole: the mod revision reads
/// saw each value with (values are unique to their write).
#[derive(Debug, Default)]
pub struct Gaps {
    written: std::collections::HashMap<String, i64>,
}

impl Gaps {
    /// Collects what the reads of `history` saw.
    pub fn of(history: &[Operation]) -> Gaps {
        let mut written = std::collections::HashMap::new();
        for op in history {
            if let Some((
                _,
                Output::Get {
                    value: Some((v, r)),
                    ..
                },
            )) = &op.ret
            {
                written.insert(v.clone(), *r);
            }
        }
        Gaps { written }
    }

    /// The values reads saw.
    pub(super) fn values(&self) -> impl Iterator<Item = &str> {
        self.written.keys().map(String::as_str)
    }
}

/// The store as the model sees it: its revision, every live key's value
/// and mod revision, and every lease with the keys attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct State {
    revision: i64,
    keys: BTreeMap<String, (String, i64)>,
    leases: BTreeMap<i64, BTreeSet<String>>,
}

impl State {
    /// A store whose revision is `revision` and that holds `keys` (and no
    /// leases).
    pub fn new(revision: i64, keys: BTreeMap<String, (String, i64)>) -> State {
        State {
            revision,
            keys,
            leases: BTreeMap::new(),
        }
    }

    /// Writes `key` at the next revision, attached to `lease` (0: none),
    /// detached from the lease it had.
    fn write(&mut self, key: &str, value: &str, lease: i64) -> i64 {
        self.detach(key);
        if let Some(keys) = self.leases.get_mut(&lease) {
            keys.insert(key.to_string());
        }
        self.revision += 1;
        self.keys
            .insert(key.to_string(), (value.to_string(), self.revision));
        self.revision
    }

    fn detach(&mut self, key: &str) {
        for keys in self.leases.values_mut() {
            keys.remove(key);
        }
    }

    /// Like [`State::step`], but operations left out of the history may
    /// have taken revisions between this state and `input` (`gaps`: the
    /// check of a sub-history, see [`super::minimize`]): the revision
    /// moves up to what `output` shows, never down; a write whose outcome
    /// is unknown takes the mod revision a read saw its value with
    /// (`gaps.written`), if one did.
    pub(super) fn step_with_gaps(
        &self,
        input: &Input,
        output: Option<&Output>,
        gaps: &Gaps,
    ) -> Option<State> {
        let shown = match output {
            Some(Output::LeaseNotFound) => None,
            Some(out) => Some(out.revision() - i64::from(self.bumps(input))),
            // Placed where a read saw it, when it can be; otherwise (it
            // never took effect, say) as without gaps.
            None => written_value(input)
                .and_then(|v| gaps.written.get(v))
                .map(|r| r - 1)
                .filter(|&r| r >= self.revision),
        };
        match shown {
            Some(r) if r < self.revision => None,
            Some(r) => State {
                revision: r,
                ..self.clone()
            }
            .step(input, output),
            None => self.step(input, output),
        }
    }

    /// Whether `input` takes a revision from this state.
    fn bumps(&self, input: &Input) -> bool {
        match input {
            Input::Get { .. } | Input::Grant { .. } => false,
            Input::Put { .. } => true,
            Input::PutLeased { lease, .. } => self.leases.contains_key(lease),
            Input::Delete { key } => self.keys.contains_key(key),
            Input::PutIf { key, expect, .. } => {
                self.keys.get(key).map_or(0, |(_, rev)| *rev) == *expect
            }
            Input::Revoke { lease } => self.leases.get(lease).is_some_and(|k| !k.is_empty()),
        }
    }

    /// Applies `input`; `Some(next state)` if `output` (when known) is what
    /// etcd answers from this state.
    pub(super) fn step(&self, input: &Input, output: Option<&Output>) -> Option<State> {
        let (next, answer) = self.apply(input);
        match output {
            Some(seen) if *seen != answer => None,
            _ => Some(next),
        }
    }

    /// Applies `input`: the state after it and etcd's answer.
    pub(super) fn apply(&self, input: &Input) -> (State, Output) {
        let mut next = self.clone();
        let answer = match input {
            Input::Get { key } => Output::Get {
                value: self.keys.get(key).cloned(),
                revision: self.revision,
            },
            Input::Put { key, value } => Output::Put {
                revision: next.write(key, value, 0),
            },
            Input::Delete { key } => {
                if next.keys.remove(key).is_some() {
                    next.detach(key);
                    next.revision += 1;
                    Output::Delete {
                        deleted: 1,
                        revision: next.revision,
                    }
                } else {
                    Output::Delete {
                        deleted: 0,
                        revision: self.revision,
                    }
                }
            }
            Input::PutIf { key, expect, value } => {
                let current = self.keys.get(key).map_or(0, |(_, rev)| *rev);
                if current == *expect {
                    Output::PutIf {
                        succeeded: true,
                        revision: next.write(key, value, 0),
                    }
                } else {
                    Output::PutIf {
                        succeeded: false,
                        revision: self.revision,
                    }
                }
            }
            Input::Grant { lease } => {
                // Lease IDs are unique to their client's grant: a second
                // grant of one ID is never made.
                next.leases.entry(*lease).or_default();
                Output::Granted {
                    revision: self.revision,
                }
            }
            Input::PutLeased { key, value, lease } => {
                if self.leases.contains_key(lease) {
                    Output::Put {
                        revision: next.write(key, value, *lease),
                    }
                } else {
                    Output::LeaseNotFound
                }
            }
            Input::Revoke { lease } => match next.leases.remove(lease) {
                None => Output::LeaseNotFound,
                Some(keys) => {
                    if !keys.is_empty() {
                        next.revision += 1;
                        for key in keys {
                            next.keys.remove(&key);
                        }
                    }
                    Output::Revoked {
                        revision: next.revision,
                    }
                }
            },
        };
        (next, answer)
    }

    /// Whether `other` has the same revision and keys (its leases may
    /// differ).
    pub(super) fn same_keys(&self, other: &State) -> bool {
        self.revision == other.revision && self.keys == other.keys
    }

    /// The store's revision.
    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    pub(super) fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(state: &State, input: Input, output: Output) -> State {
        state
            .step(&input, Some(&output))
            .unwrap_or_else(|| panic!("{input:?} -> {output:?} refused from {state:?}"))
    }

    fn leased(key: &str, lease: i64) -> Input {
        Input::PutLeased {
            key: key.into(),
            value: "v".into(),
            lease,
        }
    }

    #[test]
    fn a_revoke_deletes_the_keys_of_its_lease_in_one_revision() {
        let s = State::new(1, BTreeMap::new());
        let s = step(
            &s,
            Input::Grant { lease: 7 },
            Output::Granted { revision: 1 },
        );
        let s = step(&s, leased("a", 7), Output::Put { revision: 2 });
        let s = step(&s, leased("b", 7), Output::Put { revision: 3 });
        let s = step(
            &s,
            Input::Revoke { lease: 7 },
            Output::Revoked { revision: 4 },
        );
        let get = Input::Get { key: "a".into() };
        let gone = Output::Get {
            value: None,
            revision: 4,
        };
        step(&s, get.clone(), gone);
        assert!(s
            .step(
                &Input::Revoke { lease: 7 },
                Some(&Output::Revoked { revision: 4 })
            )
            .is_none());
        step(&s, Input::Revoke { lease: 7 }, Output::LeaseNotFound);
        step(&s, leased("c", 7), Output::LeaseNotFound);
    }

    #[test]
    fn a_plain_put_detaches_a_key_from_its_lease() {
        let s = State::new(1, BTreeMap::new());
        let s = step(
            &s,
            Input::Grant { lease: 7 },
            Output::Granted { revision: 1 },
        );
        let s = step(&s, leased("a", 7), Output::Put { revision: 2 });
        let put = Input::Put {
            key: "a".into(),
            value: "w".into(),
        };
        let s = step(&s, put, Output::Put { revision: 3 });
        // Revoking the now keyless lease deletes nothing: same revision.
        let s = step(
            &s,
            Input::Revoke { lease: 7 },
            Output::Revoked { revision: 3 },
        );
        let get = Input::Get { key: "a".into() };
        let kept = Output::Get {
            value: Some(("w".into(), 3)),
            revision: 3,
        };
        step(&s, get, kept);
    }

    #[test]
    fn a_leased_put_on_an_unknown_lease_changes_nothing() {
        let s = State::new(1, BTreeMap::new());
        assert!(s
            .step(&leased("a", 9), Some(&Output::Put { revision: 2 }))
            .is_none());
        let s = step(&s, leased("a", 9), Output::LeaseNotFound);
        assert_eq!(s, State::new(1, BTreeMap::new()));
    }
}
