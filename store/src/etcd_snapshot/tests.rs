use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;

use ferrocd_proto::mvccpb::KeyValue;
use prost::Message;

use super::layout::*;
use super::*;
use crate::bbolt::{BoltError, DbReader, FileSource};
use crate::mvcc::{KeyRange, Mvcc, Revision, WriteTxn};

fn store() -> (sled::Db, Mvcc) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mvcc = Mvcc::open(db.open_tree("state").unwrap()).unwrap();
    (db, mvcc)
}

fn write(mvcc: &Mvcc, f: impl FnOnce(&mut WriteTxn<'_>)) {
    let mut txn = mvcc.write();
    txn.begin();
    f(&mut txn);
    txn.end();
    txn.commit().unwrap();
}

fn bucket(db: &DbReader<FileSource>, name: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    db.for_each(name, |k, v| {
        out.insert(k.to_vec(), v.unwrap().to_vec());
        Ok::<_, BoltError>(())
    })
    .unwrap();
    out
}

/// Exports into a temporary file and opens the result.
fn export_to_file(
    mvcc: &Mvcc,
    cancelled: &dyn Fn() -> bool,
) -> (tempfile::TempDir, DbReader<FileSource>, Exported) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut file = File::create_new(&path).unwrap();
    let exported = export(mvcc, &mut file, cancelled).unwrap();
    let db = DbReader::open(&path).unwrap();
    db.check().unwrap();
    (dir, db, exported)
}

#[test]
fn the_export_holds_etcds_buckets_revisions_tombstones_leases_and_compaction() {
    let (_db, mvcc) = store();
    write(&mvcc, |t| {
        t.put(b"foo", b"bar".to_vec(), 0);
    });
    write(&mvcc, |t| {
        t.put(b"gone", b"x".to_vec(), 0);
        t.set_meta(&crate::lease::meta_name(0x42), &600i64.to_be_bytes());
    });
    write(&mvcc, |t| {
        t.put(b"leased", b"v".to_vec(), 0x42);
    });
    write(&mvcc, |t| {
        t.delete_range(KeyRange::Single(b"gone"));
    });
    write(&mvcc, |t| t.compact(3).unwrap());

    let (_dir, db, exported) = export_to_file(&mvcc, &|| false);

    assert_eq!(
        db.buckets().unwrap(),
        [
            ALARM,
            AUTH,
            AUTH_ROLES,
            AUTH_USERS,
            CLUSTER,
            KEY,
            LEASE,
            MEMBERS,
            MEMBERS_REMOVED,
            META
        ]
    );
    let keys = bucket(&db, KEY);
    let tombstone = revision_key(Revision::new(5, 0), true);
    assert_eq!(
        keys.get(&tombstone)
            .map(|v| KeyValue::decode(&v[..]).unwrap()),
        Some(KeyValue {
            key: b"gone".to_vec(),
            ..Default::default()
        })
    );
    let leased = KeyValue::decode(&keys[&revision_key(Revision::new(4, 0), false)][..]).unwrap();
    assert_eq!((leased.lease, leased.create_revision), (0x42, 4));
    assert_eq!(
        bucket(&db, LEASE),
        BTreeMap::from([(lease_key(0x42).to_vec(), lease_value(0x42, 600))])
    );
    let meta = bucket(&db, META);
    let compacted = revision_key(Revision::new(3, 0), false);
    assert_eq!(meta[FINISHED_COMPACT_REV], compacted);
    assert_eq!(meta[SCHEDULED_COMPACT_REV], compacted);
    assert_eq!(exported.revision, 5);
    assert_eq!(exported.revisions, keys.len() as u64);
}

#[test]
fn an_empty_store_has_no_compaction_records() {
    let (_db, mvcc) = store();
    let (_dir, db, exported) = export_to_file(&mvcc, &|| false);
    assert!(bucket(&db, KEY).is_empty());
    let meta = bucket(&db, META);
    assert_eq!(meta.keys().collect::<Vec<_>>(), [CONSISTENT_INDEX]);
    assert_eq!(exported.revision, 1);
}

#[test]
fn writes_during_the_export_are_not_in_it() {
    let (_db, mvcc) = store();
    for i in 0..2500u32 {
        write(&mvcc, |t| {
            t.put(&i.to_be_bytes(), vec![1], 0);
        });
    }
    let before = mvcc.current_revision();
    // Between chunks, more writes land.
    let (_dir, db, exported) = export_to_file(&mvcc, &|| {
        write(&mvcc, |t| {
            t.put(b"late", vec![2], 0);
        });
        false
    });
    assert_eq!(exported.revision, before);
    let keys = bucket(&db, KEY);
    assert_eq!(keys.len(), 2500);
    let (last, _) = parse_revision_key(keys.keys().last().unwrap()).unwrap();
    assert_eq!(last.main, before);
}

#[test]
fn a_compaction_during_the_export_makes_it_start_over() {
    let (_db, mvcc) = store();
    for i in 0..2500u32 {
        write(&mvcc, |t| {
            t.put(b"k", i.to_be_bytes().to_vec(), 0);
        });
    }
    let compact_at = mvcc.current_revision() - 10;
    let calls = Cell::new(0);
    let (_dir, db, exported) = export_to_file(&mvcc, &|| {
        calls.set(calls.get() + 1);
        // After the first chunk was written, history below it goes.
        if calls.get() == 2 {
            write(&mvcc, |t| t.compact(compact_at).unwrap());
        }
        false
    });
    assert_eq!(exported.compacted, compact_at);
    // Only the revisions from the compaction on are left: 11 of them.
    assert_eq!(bucket(&db, KEY).len(), 11);
}

#[test]
fn a_cancelled_export_stops() {
    let (_db, mvcc) = store();
    let dir = tempfile::tempdir().unwrap();
    let mut file = File::create_new(dir.path().join("db")).unwrap();
    let err = export(&mvcc, &mut file, &|| true).unwrap_err();
    assert!(matches!(err, SnapshotError::Cancelled), "{err}");
}

#[test]
fn status_counts_every_bucket_and_takes_the_last_revision() {
    let (_db, mvcc) = store();
    write(&mvcc, |t| {
        t.put(b"a", b"1".to_vec(), 0);
    });
    write(&mvcc, |t| {
        t.delete_range(KeyRange::Single(b"a"));
    });
    let (dir, _, _) = export_to_file(&mvcc, &|| false);
    let s = status(&dir.path().join("db")).unwrap();
    assert_eq!(s.revision, 3);
    // 2 revisions, authRevision, clusterVersion, consistent_index.
    assert_eq!(s.total_key, 5);
}

#[test]
fn active_alarms_are_keys_of_the_alarm_bucket_as_etcd_writes_them() {
    use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
    use ferrocd_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
    let (_db, mvcc) = store();
    let alarms = crate::alarm::Alarms::new();
    for (action, member_id) in [
        (AlarmAction::Activate, 10276657743932975437),
        (AlarmAction::Activate, 2),
        (AlarmAction::Deactivate, 2),
    ] {
        write(&mvcc, |t| {
            let r = AlarmRequest {
                action: action as i32,
                member_id,
                alarm: AlarmType::Nospace as i32,
            };
            alarms.apply(t, &r);
        });
    }
    let (_dir, db, _) = export_to_file(&mvcc, &|| false);
    let member = AlarmMember {
        member_id: 10276657743932975437,
        alarm: AlarmType::Nospace as i32,
    };
    // The key etcd 3.4 writes for this alarm (read from one of its
    // snapshots): the AlarmMember in protobuf, with an empty value.
    let etcds_key = b"\x08\xcd\xd2\x91\x8b\xd2\xb8\x81\xcf\x8e\x01\x10\x01".to_vec();
    assert_eq!(member.encode_to_vec(), etcds_key);
    assert_eq!(
        bucket(&db, ALARM),
        BTreeMap::from([(etcds_key, Vec::new())])
    );
}
