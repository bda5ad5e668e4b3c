//! Member and cluster IDs, derived as etcd derives them so that every member
//! computes the same IDs from the same flags without talking to the others.

use sha1::{Digest, Sha1};

/// A member's ID: the first 8 bytes (big-endian) of SHA-1 over its sorted
/// peer URLs concatenated, followed by the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// The cluster's ID: SHA-1 over the sorted member IDs, 8 bytes each, big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_single_member_ids_match_etcds() {
        // etcd started with no flags reports these IDs.
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
    }

    #[test]
    fn url_order_does_not_matter() {
        let a = member_id(&["http://b:2380".into(), "http://a:2380".into()], "t");
        let b = member_id(&["http://a:2380".into(), "http://b:2380".into()], "t");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["http://a:2380".into(), "http://b:2380".into()], "other")
        );
    }
}
