//! Reads for exporting the whole store (etcd-format snapshots) without
//! holding writers off for the whole export: the history up to a revision
//! is read in chunks, each chunk under its own short view. Revisions at or
//! below the export's revision never change afterwards, except that a
//! compaction or an installed snapshot may remove them; a reader notices
//! both by comparing [`ReadTxn::compacted`] and [`ReadTxn::epoch`] with
//! what its first view saw.

use super::*;

/// One change as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRevision {
    pub rev: Revision,
    /// Whether the change deleted the key.
    pub tombstone: bool,
    /// The key-value written. For a tombstone only `key` and
    /// `mod_revision` are set.
    pub kv: KeyValue,
}

impl ReadTxn<'_> {
    /// Which store this view reads: changes when an installed snapshot
    /// replaced the store.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Up to `max` stored changes from revision `from` on, none past main
    /// revision `upto`, in revision order.
    pub fn revisions(
        &self,
        from: Revision,
        upto: i64,
        max: usize,
    ) -> Result<Vec<StoredRevision>, MvccError> {
        let end = rev_key(Revision::new(upto, i64::MAX));
        let mut out = Vec::new();
        for item in self.staged.range(
            self.state.epoch,
            &self.state.tree,
            Bound::Included(&rev_key(from)),
            Bound::Included(&end),
        ) {
            if out.len() == max {
                break;
            }
            let (k, v) = item?;
            let rev = Revision::from_bytes(&k[1..]).ok_or_else(|| corrupt("revision key"))?;
            let (kind, kv) = decode_value(&v)?;
            if !scan::is_kept(&self.state, rev, kind == KIND_TOMBSTONE, &kv.key) {
                continue;
            }
            out.push(StoredRevision {
                rev,
                tombstone: kind == KIND_TOMBSTONE,
                kv,
            });
        }
        Ok(out)
    }

    /// Reads metadata stored by [`WriteTxn::set_meta`].
    pub fn meta(&self, name: &str) -> Result<Option<sled::IVec>, MvccError> {
        Ok(self
            .staged
            .get(self.state.epoch, &self.state.tree, &meta_key(name))?)
    }

    /// Metadata entries whose names start with `prefix`, as (name, value).
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, sled::IVec)>, MvccError> {
        self.staged
            .scan_prefix(self.state.epoch, &self.state.tree, &meta_key(prefix))
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k[1..]).into_owned(), v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Mvcc {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Mvcc::open(db.open_tree("t").unwrap()).unwrap()
    }

    fn write(mvcc: &Mvcc, f: impl FnOnce(&mut WriteTxn<'_>)) {
        let mut txn = mvcc.write();
        txn.begin();
        f(&mut txn);
        txn.end();
        txn.commit().unwrap();
    }

    #[test]
    fn revisions_come_in_order_in_chunks_and_stop_at_the_bound() {
        let mvcc = store();
        write(&mvcc, |t| {
            t.put(b"a", b"1".to_vec(), 0);
            t.put(b"b", b"2".to_vec(), 0);
        });
        write(&mvcc, |t| {
            t.delete_range(KeyRange::Single(b"a"));
        });
        write(&mvcc, |t| {
            t.put(b"c", b"3".to_vec(), 0);
        });
        let view = mvcc.read();
        let first = view.revisions(Revision::new(0, 0), 3, 2).unwrap();
        let revs: Vec<_> = first.iter().map(|r| (r.rev, r.tombstone)).collect();
        assert_eq!(
            revs,
            vec![(Revision::new(2, 0), false), (Revision::new(2, 1), false)]
        );
        let next = Revision::new(2, 2);
        let rest = view.revisions(next, 3, 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].tombstone);
        assert_eq!(rest[0].kv.key, b"a");
    }

    #[test]
    fn replacing_the_tree_changes_the_epoch() {
        let mvcc = store();
        let before = mvcc.read().epoch();
        let db = sled::Config::new().temporary(true).open().unwrap();
        mvcc.replace_tree(db.open_tree("other").unwrap()).unwrap();
        assert_ne!(mvcc.read().epoch(), before);
    }
}
