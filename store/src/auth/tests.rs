//! The auth store as the state machine drives it: changes applied inside
//! MVCC write transactions, read back after a restart, and requests
//! authorized against them.

use std::time::Duration;

use ferrocd_proto::authpb::permission::Type as PermType;
use ferrocd_proto::authpb::Permission;
use ferrocd_proto::etcdserverpb::*;
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use ferrocd_proto::ferrocdpb::{InternalAuthenticate, InternalRequest};

use super::*;

fn temp_mvcc() -> (sled::Db, Mvcc) {
    let db = sled::Config::new().temporary(true).open().expect("temp db");
    let mvcc = Mvcc::open(db.open_tree("state").expect("tree")).expect("mvcc");
    (db, mvcc)
}

/// Applies `requests` in one write transaction, as log entry `index`.
fn apply(
    auth: &AuthStore,
    mvcc: &Mvcc,
    index: u64,
    requests: Vec<Internal>,
) -> Vec<Result<Outcome, AuthError>> {
    let mut txn = mvcc.write();
    let out = requests
        .iter()
        .map(|r| auth.apply(&mut txn, r, index).expect("an auth request"))
        .collect();
    txn.commit().unwrap();
    out
}

fn user_add(name: &str) -> Internal {
    Internal::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: "hash".into(),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> Internal {
    Internal::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn grant_read(role: &str, key: &str, range_end: &str) -> Internal {
    Internal::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: PermType::Read as i32,
            key: key.into(),
            range_end: range_end.into(),
        }),
    })
}

/// root with the root role, and `reader` with read on [a, c); auth on.
fn populated(auth: &AuthStore, mvcc: &Mvcc) {
    let results = apply(
        auth,
        mvcc,
        1,
        vec![
            user_add(ROOT),
            grant_role(ROOT, ROOT),
            Internal::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
            grant_read("r", "a", "c"),
            user_add("reader"),
            grant_role("reader", "r"),
            Internal::AuthEnable(AuthEnableRequest {}),
        ],
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

fn request(username: &str, auth: &AuthStore, request: Internal) -> InternalRequest {
    InternalRequest {
        request: Some(request),
        username: username.into(),
        auth_revision: auth.revision(),
        ..Default::default()
    }
}

fn put(key: &str, lease: i64) -> Internal {
    Internal::Put(PutRequest {
        key: key.into(),
        lease,
        ..Default::default()
    })
}

#[test]
fn auth_data_survives_a_restart() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    populated(&auth, &mvcc);
    apply(
        &auth,
        &mvcc,
        2,
        vec![Internal::UserDelete(AuthUserDeleteRequest {
            name: "reader".into(),
        })],
    );
    let reopened = AuthStore::new(Duration::from_secs(300));
    reopened.restore_from(&mvcc).unwrap();
    assert_eq!(*reopened.read(), *auth.read());
    assert!(reopened.enabled());
    assert!(!reopened.read().users.contains_key("reader"));
}

#[test]
fn a_refused_change_writes_nothing() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    let results = apply(
        &auth,
        &mvcc,
        1,
        vec![Internal::AuthEnable(Default::default())],
    );
    assert_eq!(results, vec![Err(AuthError::RootUserNotExist)]);
    assert!(mvcc.meta_with_prefix("auth/").unwrap().is_empty());
}

#[test]
fn logging_in_assigns_a_token_named_after_the_entry() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    populated(&auth, &mvcc);
    let login = Internal::Authenticate(InternalAuthenticate {
        name: "reader".into(),
        simple_token_prefix: "abcdefghijklmnop".into(),
    });
    let out = apply(&auth, &mvcc, 42, vec![login]);
    assert_eq!(out, vec![Ok(Outcome::Token("abcdefghijklmnop.42".into()))]);
    assert_eq!(
        auth.token_user("abcdefghijklmnop.42"),
        Some("reader".into())
    );
    // A password change logs the user out.
    apply(
        &auth,
        &mvcc,
        43,
        vec![Internal::UserChangePassword(
            AuthUserChangePasswordRequest {
                name: "reader".into(),
                hashed_password: "other".into(),
                ..Default::default()
            },
        )],
    );
    assert_eq!(auth.token_user("abcdefghijklmnop.42"), None);
}

#[test]
fn writes_are_authorized_against_the_sender() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    populated(&auth, &mvcc);
    let no_keys = |_| Vec::new();
    let root_put = request(ROOT, &auth, put("z", 0));
    assert_eq!(auth.authorize(&root_put, no_keys), Ok(()));
    let reader_put = request("reader", &auth, put("a", 0));
    assert_eq!(
        auth.authorize(&reader_put, no_keys),
        Err(AuthError::PermissionDenied)
    );
    let anonymous = InternalRequest {
        request: Some(put("a", 0)),
        ..Default::default()
    };
    assert_eq!(
        auth.authorize(&anonymous, no_keys),
        Err(AuthError::UserEmpty)
    );
    let role_add = request(
        "reader",
        &auth,
        Internal::RoleAdd(AuthRoleAddRequest { name: "x".into() }),
    );
    assert_eq!(
        auth.authorize(&role_add, no_keys),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn revoking_a_lease_needs_write_on_its_keys_unless_a_member_expires_it() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    populated(&auth, &mvcc);
    apply(
        &auth,
        &mvcc,
        2,
        vec![Internal::RoleGrantPermission(
            AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(Permission {
                    perm_type: PermType::Readwrite as i32,
                    key: b"a".to_vec(),
                    range_end: b"c".to_vec(),
                }),
            },
        )],
    );
    let attached = |_| vec![b"b".to_vec(), b"x".to_vec()];
    let revoke = Internal::LeaseRevoke(LeaseRevokeRequest { id: 7 });
    let mut by_reader = request("reader", &auth, revoke);
    assert_eq!(
        auth.authorize(&by_reader, attached),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(auth.authorize(&by_reader, |_| vec![b"b".to_vec()]), Ok(()));
    by_reader.by_member = true;
    by_reader.username.clear();
    assert_eq!(auth.authorize(&by_reader, attached), Ok(()));
    // Attaching a key to that lease is refused too.
    let put_on_lease = request("reader", &auth, put("a", 7));
    assert_eq!(
        auth.authorize(&put_on_lease, attached),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn a_stale_auth_revision_is_refused() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    populated(&auth, &mvcc);
    let read = Internal::Txn(TxnRequest {
        compare: vec![Compare {
            key: b"a".to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let stale = request("reader", &auth, read);
    assert_eq!(auth.authorize(&stale, |_| Vec::new()), Ok(()));
    apply(&auth, &mvcc, 2, vec![user_add("another")]);
    assert_eq!(
        auth.authorize(&stale, |_| Vec::new()),
        Err(AuthError::AuthOldRevision)
    );
}

#[test]
fn passwords_are_bcrypt_hashes() {
    let hash = hash_password("secret", 4).unwrap();
    let user = ferrocd_proto::authpb::User {
        password: hash.into_bytes(),
        ..Default::default()
    };
    assert!(password_matches(&user, "secret"));
    assert!(!password_matches(&user, "Secret"));
}

#[test]
fn auth_data_travels_in_a_snapshot_of_the_store() {
    let (_db, mvcc) = temp_mvcc();
    let auth = AuthStore::new(Duration::from_secs(300));
    populated(&auth, &mvcc);
    // As a follower installs a snapshot: the exported entries loaded into
    // a fresh tree, which then becomes the store.
    let db2 = sled::Config::new().temporary(true).open().unwrap();
    let tree = db2.open_tree("state").unwrap();
    mvcc.export_to(&mut |k, v| tree.insert(k, v).map(|_| ()).map_err(std::io::Error::other))
        .unwrap();
    let follower = crate::mvcc::Mvcc::open(tree).unwrap();
    let caught_up = AuthStore::new(Duration::from_secs(300));
    caught_up.restore_from(&follower).unwrap();
    assert_eq!(*caught_up.read(), *auth.read());
}
