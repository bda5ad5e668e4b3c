//! Which PVC holds each member's data.
//!
//! A missing PVC is easy to see, but it rarely stays missing: the
//! StatefulSet controller creates a new, empty claim as soon as it recreates
//! the pod. So each member is recorded in status with the UID of the PVC it
//! was seen healthy on; when its ordinal later has a PVC with another UID,
//! the member's data is gone although a PVC exists, and the planner replaces
//! the member (remove, then re-add as a learner that receives a snapshot).

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::MemberStatus;

/// PVC UIDs by StatefulSet ordinal.
pub type PvcUids = BTreeMap<i32, String>;

/// A member of the store's member list, as far as volumes are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberVolume {
    /// Member ID.
    pub id: u64,
    /// StatefulSet ordinal of its pod, if the operator named it.
    pub ordinal: Option<i32>,
    /// Whether the member answered a status request.
    pub healthy: bool,
}

/// The PVC UIDs a previous status recorded, by member ID.
pub fn recorded(previous: &[MemberStatus]) -> BTreeMap<u64, String> {
    previous
        .iter()
        .filter_map(|m| {
            let uid = m.pvc_uid.clone()?;
            let id = u64::from_str_radix(&m.id, 16).ok()?;
            Some((id, uid))
        })
        .collect()
}

/// Ordinals whose member was recorded on a PVC other than the one there now.
pub fn replaced(
    recorded: &BTreeMap<u64, String>,
    members: &[MemberVolume],
    pvcs: &PvcUids,
) -> BTreeSet<i32> {
    members
        .iter()
        .filter_map(|m| {
            let ordinal = m.ordinal?;
            let was = recorded.get(&m.id)?;
            let now = pvcs.get(&ordinal)?;
            (was != now).then_some(ordinal)
        })
        .collect()
}

/// The PVC UID to record for `member`: the one recorded before, so a
/// replacement stays visible until the member is removed; else, once the
/// member is healthy, the UID of its ordinal's PVC now.
pub fn record(
    recorded: &BTreeMap<u64, String>,
    member: &MemberVolume,
    pvcs: &PvcUids,
) -> Option<String> {
    if let Some(uid) = recorded.get(&member.id) {
        return Some(uid.clone());
    }
    if !member.healthy {
        return None;
    }
    pvcs.get(&member.ordinal?).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, ordinal: i32, healthy: bool) -> MemberVolume {
        MemberVolume {
            id,
            ordinal: Some(ordinal),
            healthy,
        }
    }

    fn pvcs(uids: &[(i32, &str)]) -> PvcUids {
        uids.iter().map(|(o, u)| (*o, u.to_string())).collect()
    }

    fn records(entries: &[(u64, &str)]) -> BTreeMap<u64, String> {
        entries.iter().map(|(id, u)| (*id, u.to_string())).collect()
    }

    #[test]
    fn recorded_uids_are_read_back_by_hex_member_id() {
        let previous = [
            MemberStatus {
                id: "cdf818194e3a8c32".into(),
                pvc_uid: Some("uid-a".into()),
                ..Default::default()
            },
            MemberStatus {
                id: "2a".into(),
                ..Default::default()
            },
        ];
        assert_eq!(
            recorded(&previous),
            records(&[(0xcdf8_1819_4e3a_8c32, "uid-a")])
        );
    }

    #[test]
    fn healthy_member_is_recorded_on_its_current_pvc() {
        let now = pvcs(&[(1, "uid-b")]);
        assert_eq!(
            record(&BTreeMap::new(), &member(7, 1, true), &now),
            Some("uid-b".into())
        );
    }

    #[test]
    fn member_not_yet_healthy_is_not_recorded() {
        let now = pvcs(&[(1, "uid-b")]);
        assert_eq!(record(&BTreeMap::new(), &member(7, 1, false), &now), None);
    }

    #[test]
    fn recorded_uid_is_kept_even_when_the_pvc_changed() {
        let before = records(&[(7, "uid-a")]);
        let now = pvcs(&[(1, "uid-b")]);
        assert_eq!(
            record(&before, &member(7, 1, true), &now),
            Some("uid-a".into())
        );
    }

    #[test]
    fn pvc_with_another_uid_than_recorded_is_replaced() {
        let before = records(&[(7, "uid-a"), (8, "uid-c")]);
        let now = pvcs(&[(1, "uid-b"), (2, "uid-c")]);
        let members = [member(7, 1, false), member(8, 2, true)];
        assert_eq!(replaced(&before, &members, &now), BTreeSet::from([1]));
    }

    #[test]
    fn unrecorded_member_or_missing_pvc_is_not_called_replaced() {
        let before = records(&[(7, "uid-a")]);
        let members = [member(7, 1, true), member(9, 3, true)];
        // Ordinal 1 has no PVC at all: the planner sees that on its own.
        let now = pvcs(&[(3, "uid-d")]);
        assert!(replaced(&before, &members, &now).is_empty());
    }

    #[test]
    fn re_added_member_has_a_new_id_and_starts_a_new_record() {
        // Member 7 was replaced by member 10 at the same ordinal.
        let before = records(&[(7, "uid-a")]);
        let now = pvcs(&[(1, "uid-b")]);
        let members = [member(10, 1, true)];
        assert!(replaced(&before, &members, &now).is_empty());
        assert_eq!(record(&before, &members[0], &now), Some("uid-b".into()));
    }
}
