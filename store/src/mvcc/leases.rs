//! Which live keys are attached to which lease, kept beside the key index
//! so a lease revoke finds its keys without a scan.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct LeaseIndex {
    by_key: HashMap<Vec<u8>, i64>,
    by_lease: HashMap<i64, BTreeSet<Vec<u8>>>,
}

impl LeaseIndex {
    /// Records that `key` was put with `lease` (0: no lease), replacing
    /// whatever lease it had.
    pub fn attach(&mut self, key: &[u8], lease: i64) {
        self.detach(key);
        if lease != 0 {
            self.by_key.insert(key.to_vec(), lease);
            self.by_lease.entry(lease).or_default().insert(key.to_vec());
        }
    }

    /// Records that `key` is gone.
    pub fn detach(&mut self, key: &[u8]) {
        if let Some(lease) = self.by_key.remove(key) {
            if let Some(keys) = self.by_lease.get_mut(&lease) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_lease.remove(&lease);
                }
            }
        }
    }

    /// Every attached key with its lease, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], i64)> {
        self.by_key.iter().map(|(k, l)| (&k[..], *l))
    }

    /// The keys attached to `lease`, in key order.
    pub fn keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.by_lease
            .get(&lease)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reput_moves_a_key_between_leases_and_delete_detaches() {
        let mut idx = LeaseIndex::default();
        idx.attach(b"a", 1);
        idx.attach(b"b", 1);
        idx.attach(b"a", 2);
        assert_eq!(idx.keys(1), vec![b"b".to_vec()]);
        assert_eq!(idx.keys(2), vec![b"a".to_vec()]);
        idx.attach(b"a", 0);
        assert!(idx.keys(2).is_empty());
        idx.detach(b"b");
        assert!(idx.keys(1).is_empty());
    }
}
