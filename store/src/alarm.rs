//! The alarms a cluster has raised (etcd's alarm store): which member
//! raised which alarm. Changed only by applying Alarm requests, so every
//! member agrees; kept in the store's metadata beside the data, so alarms
//! survive a restart and travel in snapshots.
//!
//! While NOSPACE is active, apply refuses what can grow the store (puts,
//! transactions with puts, lease grants); while CORRUPT is active, every
//! write, as etcd's capped and corrupt appliers do.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use prost::Message;

use crate::kv::KvError;
use crate::mvcc::{Mvcc, MvccError, ReadTxn, WriteTxn};
use crate::quota;

/// Metadata name prefix under which alarm records are stored.
pub const META_PREFIX: &str = "alarm/";

/// The metadata name of `member`'s alarm `alarm`; its value is the
/// `AlarmMember` in protobuf, the key etcd stores in its `alarm` bucket.
fn meta_name(member: u64, alarm: i32) -> String {
    format!("{META_PREFIX}{member:016x}/{alarm}")
}

/// Decodes alarm records stored under [`META_PREFIX`].
pub fn records(meta: Vec<(String, sled::IVec)>) -> Result<Vec<AlarmMember>, MvccError> {
    meta.into_iter()
        .map(|(name, value)| {
            AlarmMember::decode(value.as_ref())
                .map_err(|_| MvccError::Storage(format!("corrupt alarm record {name}")))
        })
        .collect()
}

/// The alarm records in `view`.
pub fn records_in(view: &ReadTxn<'_>) -> Result<Vec<AlarmMember>, MvccError> {
    records(view.meta_with_prefix(META_PREFIX)?)
}

/// How etcd prints an alarm (its protobuf text form, trailing space
/// included): what `etcdctl alarm list` shows and Status lists in `errors`.
pub fn describe(m: &AlarmMember) -> String {
    let alarm = match AlarmType::try_from(m.alarm) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => m.alarm.to_string(),
    };
    format!("memberID:{} alarm:{alarm} ", m.member_id)
}

/// Whether applying `request` can grow the store: a put, a transaction
/// with puts, a lease grant.
pub fn grows(request: &Internal) -> bool {
    match request {
        Internal::Put(_) | Internal::LeaseGrant(_) => true,
        Internal::Txn(t) => quota::txn_cost(t) > 0,
        _ => false,
    }
}

/// The active alarms, as (member, alarm type).
#[derive(Default)]
pub struct Alarms {
    active: Mutex<BTreeSet<(u64, i32)>>,
    /// Set when a write that can grow the store is admitted, cleared when
    /// an alarm is cleared: whether this member's database may have grown
    /// since (see [`Alarms::take_growth`]).
    grew: AtomicBool,
}

impl Alarms {
    pub fn new() -> Self {
        Alarms::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<(u64, i32)>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the active alarms with those recorded in `mvcc`.
    pub fn restore_from(&self, mvcc: &Mvcc) -> Result<(), MvccError> {
        let recorded = records(mvcc.meta_with_prefix(META_PREFIX)?)?;
        *self.lock() = recorded.iter().map(|m| (m.member_id, m.alarm)).collect();
        Ok(())
    }

    /// The active alarms of type `alarm`, every one for NONE; by member.
    pub fn get(&self, alarm: i32) -> Vec<AlarmMember> {
        self.lock()
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None as i32 || *a == alarm)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether any member has raised `alarm`.
    pub fn is_active(&self, alarm: AlarmType) -> bool {
        self.lock().iter().any(|(_, a)| *a == alarm as i32)
    }

    /// Applies an Alarm request inside `txn`, answering as etcd: GET lists
    /// the alarms of the type asked (all for NONE); ACTIVATE answers with
    /// the alarm, new or already active (nothing for NONE); DEACTIVATE with
    /// the alarm it cleared, nothing if it was not active.
    pub fn apply(&self, txn: &mut WriteTxn<'_>, r: &AlarmRequest) -> AlarmResponse {
        let alarms = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => self.get(r.alarm),
            Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 => {
                if self.lock().insert((r.member_id, r.alarm)) {
                    let m = AlarmMember {
                        member_id: r.member_id,
                        alarm: r.alarm,
                    };
                    txn.set_meta(&meta_name(r.member_id, r.alarm), &m.encode_to_vec());
                }
                vec![AlarmMember {
                    member_id: r.member_id,
                    alarm: r.alarm,
                }]
            }
            Ok(AlarmAction::Deactivate) if self.lock().remove(&(r.member_id, r.alarm)) => {
                txn.remove_meta(&meta_name(r.member_id, r.alarm));
                self.grew.store(false, Ordering::SeqCst);
                vec![AlarmMember {
                    member_id: r.member_id,
                    alarm: r.alarm,
                }]
            }
            _ => Vec::new(),
        };
        AlarmResponse {
            header: None,
            alarms,
        }
    }

    /// Whether the active alarms let `request` be applied: while CORRUPT is
    /// active no write is; while NOSPACE is, nothing that can grow the
    /// store (a transaction without puts still is).
    pub fn admits(&self, request: &Internal) -> Result<(), KvError> {
        let active = self.lock();
        if active.is_empty() {
            return Ok(());
        }
        let raised = |alarm: AlarmType| active.iter().any(|(_, a)| *a == alarm as i32);
        let writes = matches!(
            request,
            Internal::Put(_)
                | Internal::DeleteRange(_)
                | Internal::Txn(_)
                | Internal::Compaction(_)
                | Internal::LeaseGrant(_)
                | Internal::LeaseRevoke(_)
        );
        if writes && raised(AlarmType::Corrupt) {
            return Err(KvError::Corrupt);
        }
        if grows(request) && raised(AlarmType::Nospace) {
            return Err(KvError::NoSpace);
        }
        Ok(())
    }

    /// Notes that `request` was admitted (see [`Alarms::admits`]).
    pub fn note_admitted(&self, request: &Internal) {
        if grows(request) {
            self.grew.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a write that can grow the store was admitted since the last
    /// call and since the last alarm was cleared; resets it. etcd's apply
    /// raises NOSPACE when such a write finds the database full, and only
    /// then: a cleared alarm stays off until the next write.
    pub fn take_growth(&self) -> bool {
        self.grew.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{
        request_op, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
        RangeRequest, RequestOp, TxnRequest,
    };

    fn store() -> Mvcc {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Mvcc::open(db.open_tree("t").unwrap()).unwrap()
    }

    fn request(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        }
    }

    fn apply(alarms: &Alarms, mvcc: &Mvcc, r: AlarmRequest) -> Vec<AlarmMember> {
        let mut txn = mvcc.write();
        let resp = alarms.apply(&mut txn, &r);
        txn.commit().unwrap();
        resp.alarms
    }

    fn nospace(member_id: u64) -> AlarmMember {
        AlarmMember {
            member_id,
            alarm: AlarmType::Nospace as i32,
        }
    }

    #[test]
    fn activate_answers_with_the_alarm_new_or_not() {
        let (alarms, mvcc) = (Alarms::new(), store());
        let r = request(AlarmAction::Activate, 7, AlarmType::Nospace);
        assert_eq!(apply(&alarms, &mvcc, r), vec![nospace(7)]);
        assert_eq!(apply(&alarms, &mvcc, r), vec![nospace(7)]);
        assert_eq!(alarms.get(AlarmType::None as i32), vec![nospace(7)]);
    }

    #[test]
    fn activating_none_raises_nothing() {
        let (alarms, mvcc) = (Alarms::new(), store());
        let r = request(AlarmAction::Activate, 7, AlarmType::None);
        assert!(apply(&alarms, &mvcc, r).is_empty());
        assert!(alarms.get(AlarmType::None as i32).is_empty());
    }

    #[test]
    fn deactivate_answers_with_the_cleared_alarm_only_if_it_was_active() {
        let (alarms, mvcc) = (Alarms::new(), store());
        let off = request(AlarmAction::Deactivate, 7, AlarmType::Nospace);
        assert!(apply(&alarms, &mvcc, off).is_empty());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 7, AlarmType::Nospace),
        );
        assert_eq!(apply(&alarms, &mvcc, off), vec![nospace(7)]);
        assert!(!alarms.is_active(AlarmType::Nospace));
    }

    #[test]
    fn get_filters_by_type_and_none_lists_all() {
        let (alarms, mvcc) = (Alarms::new(), store());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 9, AlarmType::Nospace),
        );
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 3, AlarmType::Corrupt),
        );
        let get = |t| apply(&alarms, &mvcc, request(AlarmAction::Get, 0, t));
        assert_eq!(get(AlarmType::Nospace), vec![nospace(9)]);
        assert_eq!(get(AlarmType::None).len(), 2);
        assert_eq!(get(AlarmType::None)[0].member_id, 3);
    }

    #[test]
    fn alarms_are_read_back_from_the_store() {
        let (alarms, mvcc) = (Alarms::new(), store());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 7, AlarmType::Nospace),
        );
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 8, AlarmType::Nospace),
        );
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Deactivate, 8, AlarmType::Nospace),
        );
        let restored = Alarms::new();
        restored.restore_from(&mvcc).unwrap();
        assert_eq!(restored.get(0), vec![nospace(7)]);
    }

    #[test]
    fn alarms_print_as_etcds_text_form() {
        assert_eq!(
            describe(&nospace(10276657743932975437)),
            "memberID:10276657743932975437 alarm:NOSPACE "
        );
        let odd = AlarmMember {
            member_id: 1,
            alarm: 9,
        };
        assert_eq!(describe(&odd), "memberID:1 alarm:9 ");
    }

    fn put() -> Internal {
        Internal::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
    }

    fn txn(ops: Vec<RequestOp>) -> Internal {
        Internal::Txn(TxnRequest {
            success: ops,
            ..Default::default()
        })
    }

    #[test]
    fn nospace_refuses_only_what_grows_the_store() {
        let (alarms, mvcc) = (Alarms::new(), store());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 7, AlarmType::Nospace),
        );
        let put_op = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest::default())),
        };
        let range_op = RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest::default())),
        };
        assert_eq!(alarms.admits(&put()), Err(KvError::NoSpace));
        assert_eq!(alarms.admits(&txn(vec![put_op])), Err(KvError::NoSpace));
        assert_eq!(
            alarms.admits(&Internal::LeaseGrant(LeaseGrantRequest::default())),
            Err(KvError::NoSpace)
        );
        assert_eq!(alarms.admits(&txn(vec![range_op])), Ok(()));
        assert_eq!(
            alarms.admits(&Internal::DeleteRange(DeleteRangeRequest::default())),
            Ok(())
        );
        assert_eq!(
            alarms.admits(&Internal::Compaction(CompactionRequest::default())),
            Ok(())
        );
    }

    #[test]
    fn corrupt_refuses_every_write() {
        let (alarms, mvcc) = (Alarms::new(), store());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 7, AlarmType::Corrupt),
        );
        assert_eq!(alarms.admits(&put()), Err(KvError::Corrupt));
        assert_eq!(
            alarms.admits(&Internal::DeleteRange(DeleteRangeRequest::default())),
            Err(KvError::Corrupt)
        );
        assert_eq!(
            alarms.admits(&Internal::Alarm(request(
                AlarmAction::Deactivate,
                7,
                AlarmType::Corrupt
            ))),
            Ok(())
        );
    }

    #[test]
    fn no_alarm_admits_everything() {
        assert_eq!(Alarms::new().admits(&put()), Ok(()));
    }

    #[test]
    fn growth_is_reported_once_and_forgotten_when_an_alarm_is_cleared() {
        let (alarms, mvcc) = (Alarms::new(), store());
        alarms.note_admitted(&Internal::DeleteRange(DeleteRangeRequest::default()));
        assert!(!alarms.take_growth());
        alarms.note_admitted(&put());
        assert!(alarms.take_growth());
        assert!(!alarms.take_growth());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Activate, 7, AlarmType::Nospace),
        );
        alarms.note_admitted(&put());
        apply(
            &alarms,
            &mvcc,
            request(AlarmAction::Deactivate, 7, AlarmType::Nospace),
        );
        assert!(!alarms.take_growth());
    }
}
