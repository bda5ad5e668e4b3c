//! How etcd 3.4 lays its state out in the buckets of its backend database,
//! as read from files etcd 3.4 writes: bucket names, key and value
//! encodings. Pure functions.

use prost::Message;
use serde::Serialize;

use crate::mvcc::Revision;
use crate::raft::Member;

pub const ALARM: &[u8] = b"alarm";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_ROLES: &[u8] = b"authRoles";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const CLUSTER: &[u8] = b"cluster";
pub const KEY: &[u8] = b"key";
pub const LEASE: &[u8] = b"lease";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const META: &[u8] = b"meta";

/// `auth` bucket: the auth store's revision (u64 big-endian). etcd 3.4
/// writes 1 when it first starts.
pub const AUTH_REVISION: &[u8] = b"authRevision";
/// `auth` bucket: 1 or 0, present once auth was turned on or off.
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
/// `cluster` bucket: the cluster version, as text.
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";
/// The cluster version etcd 3.4 records.
pub const CLUSTER_VERSION_3_4: &[u8] = b"3.4.0";
/// `meta` bucket: the raft index of the last applied entry (u64 BE).
pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
/// `meta` bucket: the last compaction finished and scheduled, each as a
/// revision key (main = the compacted revision, sub 0). etcd writes them
/// only once something was compacted.
pub const FINISHED_COMPACT_REV: &[u8] = b"finishedCompactRev";
pub const SCHEDULED_COMPACT_REV: &[u8] = b"scheduledCompactRev";

/// Bytes of a revision key: main (8, BE), `_`, sub (8, BE).
pub const REVISION_KEY_LEN: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

/// The `key` bucket's key for a change at `rev`; a delete gets a `t`
/// after it.
pub fn revision_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(REVISION_KEY_LEN + 1);
    k.extend_from_slice(&rev.main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        k.push(TOMBSTONE_MARK);
    }
    k
}

/// Decodes [`revision_key`]: the revision and whether it is a tombstone.
pub fn parse_revision_key(k: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match k.len() {
        REVISION_KEY_LEN => false,
        18 if k[REVISION_KEY_LEN] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if k[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(k[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(k[9..REVISION_KEY_LEN].try_into().ok()?);
    Some((Revision::new(main, sub), tombstone))
}

/// etcd's `leasepb.Lease`, the `lease` bucket's value.
#[derive(Clone, PartialEq, Message)]
pub struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    /// Set only by etcd's lease checkpoints; 0 otherwise.
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// The `lease` bucket's key: the id, 8 bytes big-endian.
pub fn lease_key(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn lease_value(id: i64, ttl: i64) -> Vec<u8> {
    LeaseRecord {
        id,
        ttl,
        remaining_ttl: 0,
    }
    .encode_to_vec()
}

/// The `members` bucket's key: the member id in lower-case hex, unpadded.
pub fn member_key(id: u64) -> String {
    format!("{id:x}")
}

/// The `members` bucket's value: etcd's member record as JSON, fields in
/// etcd's order, empty optional ones left out as etcd does.
pub fn member_value(id: u64, member: &Member, learner: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Record<'a> {
        id: u64,
        #[serde(rename = "peerURLs")]
        peer_urls: &'a [String],
        #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
        learner: bool,
        #[serde(skip_serializing_if = "str::is_empty")]
        name: &'a str,
        #[serde(rename = "clientURLs", skip_serializing_if = "<[_]>::is_empty")]
        client_urls: &'a [String],
    }
    serde_json::to_vec(&Record {
        id,
        peer_urls: &member.peer_urls,
        learner,
        name: &member.name,
        client_urls: &member.client_urls,
    })
    .expect("a member record serializes")
}

/// CRC-32 with the Castagnoli polynomial (reflected 0x82F63B78), the hash
/// `etcdctl snapshot status` prints.
#[derive(Clone)]
pub struct Crc32c {
    crc: u32,
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c { crc: !0 }
    }
}

impl Crc32c {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.crc = CRC32C_TABLE[((self.crc ^ u32::from(b)) & 0xff) as usize] ^ (self.crc >> 8);
        }
    }

    pub fn finish(&self) -> u32 {
        !self.crc
    }
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut h = Crc32c::default();
        h.update(b"123456789");
        assert_eq!(h.finish(), 0xE306_9283);
    }

    #[test]
    fn revision_keys_are_etcds() {
        let k = revision_key(Revision::new(6, 0), true);
        assert_eq!(k, b"\0\0\0\0\0\0\0\x06_\0\0\0\0\0\0\0\0t");
        assert_eq!(parse_revision_key(&k), Some((Revision::new(6, 0), true)));
        assert_eq!(parse_revision_key(&k[..16]), None);
    }

    #[test]
    fn a_lease_record_is_encoded_as_etcd_3_4_writes_it() {
        // From a lease granted with TTL 600 on etcd 3.4.23.
        let id = 0x390d_a24b_5c73_6408;
        let expected = [
            0x08, 0x88, 0xc8, 0xcd, 0xe3, 0xb5, 0xc9, 0xe8, 0x86, 0x39, 0x10, 0xd8, 0x04,
        ];
        assert_eq!(lease_value(id, 600), expected);
    }

    #[test]
    fn a_member_record_is_encoded_as_etcd_3_4_writes_it() {
        let member = Member {
            name: "default".into(),
            peer_urls: vec!["http://127.0.0.1:23801".into()],
            client_urls: vec!["http://127.0.0.1:23791".into()],
        };
        let value = member_value(13668033151171901709, &member, false);
        assert_eq!(
            String::from_utf8(value).unwrap(),
            r#"{"id":13668033151171901709,"peerURLs":["http://127.0.0.1:23801"],"name":"default","clientURLs":["http://127.0.0.1:23791"]}"#
        );
        assert_eq!(member_key(13668033151171901709), "bdae9bbc11dd390d");
    }
}
