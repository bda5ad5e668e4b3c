//! Fills an empty tree with a history read from elsewhere (a snapshot in
//! etcd's format being restored), offline: no [`Mvcc`] is open on the tree
//! while it is filled, and opening one afterwards rebuilds the key index
//! from what was written, as after any restart.

use super::*;

/// Entries written per sled batch.
const CHUNK: usize = 10_000;

/// Why an imported history was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("revision {0}_{1} is not after the revision before it")]
    OutOfOrder(i64, i64),
    #[error("revision {0}_{1} is out of range")]
    BadRevision(i64, i64),
    #[error("the change at revision {0} has an empty key")]
    EmptyKey(i64),
    #[error("metadata name {0:?} is not for imports")]
    ReservedMeta(String),
    #[error("compacted revision {compacted} is beyond the last revision {current}")]
    CompactedAhead { compacted: i64, current: i64 },
    #[error(transparent)]
    Store(#[from] MvccError),
}

impl From<sled::Error> for ImportError {
    fn from(e: sled::Error) -> Self {
        ImportError::Store(e.into())
    }
}

/// Writes a history, in revision order, into a tree that must be empty.
pub struct Importer {
    tree: sled::Tree,
    batch: sled::Batch,
    in_batch: usize,
    last: Option<Revision>,
    revisions: u64,
}

impl Importer {
    /// Starts an import into `tree`; fails unless the tree is empty.
    pub fn new(tree: sled::Tree) -> Result<Self, ImportError> {
        if !tree.is_empty() {
            return Err(ImportError::Store(MvccError::Storage(
                "the tree to import into is not empty".into(),
            )));
        }
        Ok(Importer {
            tree,
            batch: sled::Batch::default(),
            in_batch: 0,
            last: None,
            revisions: 0,
        })
    }

    /// Adds one change. A put's `kv` is stored as given; a delete keeps
    /// only the key, with `mod_revision` set to `rev.main` as the store
    /// writes its own tombstones.
    pub fn revision(
        &mut self,
        rev: Revision,
        tombstone: bool,
        kv: KeyValue,
    ) -> Result<(), ImportError> {
        if rev.main < 1 || rev.sub < 0 {
            return Err(ImportError::BadRevision(rev.main, rev.sub));
        }
        if self.last.is_some_and(|last| rev <= last) {
            return Err(ImportError::OutOfOrder(rev.main, rev.sub));
        }
        if kv.key.is_empty() {
            return Err(ImportError::EmptyKey(rev.main));
        }
        let (kind, kv) = if tombstone {
            let kv = KeyValue {
                key: kv.key,
                mod_revision: rev.main,
                ..Default::default()
            };
            (KIND_TOMBSTONE, kv)
        } else {
            (KIND_PUT, kv)
        };
        self.add(&rev_key(rev), encode_value(kind, &kv))?;
        self.last = Some(rev);
        self.revisions += 1;
        Ok(())
    }

    /// Adds caller metadata (lease, auth and raft records), as
    /// [`WriteTxn::set_meta`] would. The store's own revision records are
    /// written by [`Importer::finish`].
    pub fn meta(&mut self, name: &str, value: &[u8]) -> Result<(), ImportError> {
        if name == META_CURRENT || name == META_COMPACTED {
            return Err(ImportError::ReservedMeta(name.to_string()));
        }
        self.add(&meta_key(name), value.to_vec())
    }

    fn add(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), ImportError> {
        self.batch.insert(key, value);
        self.in_batch += 1;
        if self.in_batch >= CHUNK {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// How many changes were added so far.
    pub fn revisions(&self) -> u64 {
        self.revisions
    }

    /// Writes the current revision (the last change's, or `at_least` if
    /// higher: a compaction may have removed the last changes' records)
    /// and the compacted one (`None`: never compacted), and makes the
    /// tree durable. Returns the current revision.
    pub fn finish(mut self, at_least: i64, compacted: Option<i64>) -> Result<i64, ImportError> {
        let last = self.last.map_or(1, |r| r.main);
        let current = last.max(at_least).max(1);
        if let Some(compacted) = compacted {
            if compacted > current {
                return Err(ImportError::CompactedAhead { compacted, current });
            }
            self.batch
                .insert(meta_key(META_COMPACTED), &compacted.to_be_bytes()[..]);
        }
        self.batch
            .insert(meta_key(META_CURRENT), &current.to_be_bytes()[..]);
        self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        self.tree.flush()?;
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("t").unwrap()
    }

    fn kv(key: &str, value: &str, created: i64, modified: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: created,
            mod_revision: modified,
            version,
            lease: 0,
        }
    }

    #[test]
    fn an_imported_history_reads_as_the_one_written() {
        let t = tree();
        let mut imp = Importer::new(t.clone()).unwrap();
        imp.revision(Revision::new(2, 0), false, kv("a", "1", 2, 2, 1))
            .unwrap();
        imp.revision(Revision::new(3, 0), false, kv("a", "2", 2, 3, 2))
            .unwrap();
        imp.revision(Revision::new(3, 1), false, kv("b", "x", 3, 3, 1))
            .unwrap();
        imp.revision(Revision::new(4, 0), true, kv("b", "", 0, 0, 0))
            .unwrap();
        imp.meta("lease/0000000000000007", &60i64.to_be_bytes())
            .unwrap();
        assert_eq!(imp.finish(4, None).unwrap(), 4);

        let mvcc = Mvcc::open(t).unwrap();
        assert_eq!(mvcc.current_revision(), 4);
        let view = mvcc.read();
        let now = view
            .range(KeyRange::From(b""), RangeOptions::default())
            .unwrap();
        assert_eq!(now.kvs, vec![kv("a", "2", 2, 3, 2)]);
        let then = view
            .range(
                KeyRange::From(b""),
                RangeOptions {
                    rev: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(then.kvs.len(), 2);
        let (events, _) = view.history(KeyRange::From(b""), 4, 4, 10).unwrap();
        assert_eq!(events[0].r#type, EventType::Delete as i32);
        assert_eq!(events[0].kv.as_ref().unwrap().mod_revision, 4);
        assert!(view.meta("lease/0000000000000007").unwrap().is_some());
    }

    #[test]
    fn a_compacted_import_drops_what_the_compaction_freed() {
        let t = tree();
        let mut imp = Importer::new(t.clone()).unwrap();
        imp.revision(Revision::new(2, 0), false, kv("a", "1", 2, 2, 1))
            .unwrap();
        imp.revision(Revision::new(3, 0), false, kv("a", "2", 2, 3, 2))
            .unwrap();
        // A compaction at 5 may leave the current revision above the last
        // stored change.
        assert_eq!(imp.finish(5, Some(5)).unwrap(), 5);
        let mvcc = Mvcc::open(t).unwrap();
        assert_eq!(mvcc.compacted_revision(), 5);
        assert_eq!(mvcc.current_revision(), 5);
        let err = mvcc
            .read()
            .range(
                KeyRange::Single(b"a"),
                RangeOptions {
                    rev: 2,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(err, MvccError::Compacted);
    }

    #[test]
    fn disorder_and_bad_revisions_are_refused() {
        let mut imp = Importer::new(tree()).unwrap();
        imp.revision(Revision::new(3, 0), false, kv("a", "1", 3, 3, 1))
            .unwrap();
        assert_eq!(
            imp.revision(Revision::new(2, 0), false, kv("a", "1", 2, 2, 1)),
            Err(ImportError::OutOfOrder(2, 0))
        );
        assert_eq!(
            imp.revision(Revision::new(0, 0), false, kv("a", "1", 2, 2, 1)),
            Err(ImportError::BadRevision(0, 0))
        );
        assert_eq!(
            imp.revision(Revision::new(4, 0), false, kv("", "1", 4, 4, 1)),
            Err(ImportError::EmptyKey(4))
        );
        assert!(matches!(
            imp.meta(META_CURRENT, b""),
            Err(ImportError::ReservedMeta(_))
        ));
        assert_eq!(
            imp.finish(3, Some(9)),
            Err(ImportError::CompactedAhead {
                compacted: 9,
                current: 3
            })
        );
    }

    #[test]
    fn only_an_empty_tree_is_imported_into() {
        let t = tree();
        t.insert(b"x", b"y").unwrap();
        assert!(Importer::new(t).is_err());
    }
}
