//! etcd's auth: users, roles and permissions, replicated through raft and
//! stored beside the MVCC data (so they survive restarts and travel in
//! snapshots), checked at apply for writes and before reading for reads.
//!
//! [`AuthStore`] is the shared handle: the state machine applies changes
//! and authorizes writes through it, the API layer reads it and resolves
//! tokens. The rules themselves are pure: [`state`] for management and
//! checks, [`perms`] for key ranges and what a request needs.

pub mod flags;
pub mod jwt;
pub mod perms;
pub mod state;
pub mod tokens;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use ferrocd_proto::authpb::{Role, User};
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use ferrocd_proto::ferrocdpb::InternalRequest;
use prost::Message;

use crate::mvcc::{Mvcc, MvccError, WriteTxn};
pub use state::{AuthInfo, AuthState, ROOT};
use tokens::Tokens;

/// The auth data in etcd 3.4's backend layout: the `auth` bucket's
/// `authEnabled` (only once auth was switched on or off) and
/// `authRevision`, and the `authUsers` and `authRoles` buckets (name ->
/// `authpb` record), each sorted by name.
pub struct EtcdAuthBuckets {
    pub enabled: Option<bool>,
    pub revision: u64,
    pub users: Records,
    pub roles: Records,
}

/// (name, record) pairs of a bucket.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// What a snapshot of the store seen by `view` holds of the auth data.
pub fn etcd_buckets(view: &crate::mvcc::ReadTxn<'_>) -> Result<EtcdAuthBuckets, MvccError> {
    let revision = match view.meta(META_REVISION)? {
        Some(raw) => {
            let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| corrupt("revision"))?;
            u64::from_be_bytes(bytes)
        }
        // etcd's store starts at 1.
        None => 1,
    };
    let records = |prefix: &str| -> Result<Records, MvccError> {
        let mut records: Records = view
            .meta_with_prefix(prefix)?
            .into_iter()
            .map(|(name, raw)| (name.as_bytes()[prefix.len()..].to_vec(), raw.to_vec()))
            .collect();
        records.sort();
        Ok(records)
    };
    Ok(EtcdAuthBuckets {
        enabled: view.meta(META_ENABLED)?.map(|v| v.as_ref() == [1]),
        revision: revision.max(1),
        users: records(META_USER)?,
        roles: records(META_ROLE)?,
    })
}

/// The store's metadata record (name, value) for one entry of etcd's
/// auth buckets, the inverse of [`etcd_buckets`]: for restoring a snapshot
/// in etcd's format. `Ok(None)` for entries etcd keeps there that ferrocd
/// does not need; an error for a record that does not decode.
pub fn meta_of_etcd_entry(
    bucket: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<Option<(String, Vec<u8>)>, MvccError> {
    let name = || String::from_utf8(key.to_vec()).map_err(|_| corrupt("name (not UTF-8)"));
    match bucket {
        b"auth" if key == b"authEnabled" => match value {
            [0] | [1] => Ok(Some((META_ENABLED.to_string(), value.to_vec()))),
            _ => Err(corrupt("authEnabled")),
        },
        b"auth" if key == b"authRevision" => {
            let bytes: [u8; 8] = value.try_into().map_err(|_| corrupt("authRevision"))?;
            Ok(Some((META_REVISION.to_string(), bytes.to_vec())))
        }
        b"auth" => Ok(None),
        b"authUsers" => {
            let user = User::decode(value).map_err(|_| corrupt("user"))?;
            if user.name != key {
                return Err(corrupt("user (name differs from its key)"));
            }
            Ok(Some((format!("{META_USER}{}", name()?), value.to_vec())))
        }
        b"authRoles" => {
            let role = Role::decode(value).map_err(|_| corrupt("role"))?;
            if role.name != key {
                return Err(corrupt("role (name differs from its key)"));
            }
            Ok(Some((format!("{META_ROLE}{}", name()?), value.to_vec())))
        }
        _ => Ok(None),
    }
}

/// How often lapsed tokens are dropped (etcd's TTL resolution).
pub const TOKEN_SWEEP: Duration = Duration::from_secs(1);

const META_ENABLED: &str = "auth/enabled";
const META_REVISION: &str = "auth/revision";
const META_USER: &str = "auth/user/";
const META_ROLE: &str = "auth/role/";

/// Why an auth operation or check failed; each is one of etcd's errors.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
pub enum AuthError {
    #[error("root user does not exist")]
    RootUserNotExist,
    #[error("root user does not have root role")]
    RootRoleNotExist,
    #[error("user name already exists")]
    UserAlreadyExist,
    #[error("user name is empty")]
    UserEmpty,
    #[error("user name not found")]
    UserNotFound,
    #[error("role name already exists")]
    RoleAlreadyExist,
    #[error("role name not found")]
    RoleNotFound,
    #[error("role name is empty")]
    RoleEmpty,
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("permission not given")]
    PermissionNotGiven,
    #[error("permission denied")]
    PermissionDenied,
    #[error("role is not granted to the user")]
    RoleNotGranted,
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    #[error("invalid auth token")]
    InvalidAuthToken,
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    #[error("revision of auth store is old")]
    AuthOldRevision,
}

/// What applying an auth request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The change is made (or was not needed).
    Done,
    /// A user logged in with this token.
    Token(String),
}

/// The auth data of this member, and the tokens it knows.
pub struct AuthStore {
    state: RwLock<AuthState>,
    tokens: Tokens,
    /// With `--auth-token=jwt,...`: tokens are signed, not recorded.
    jwt: Option<jwt::Jwt>,
}

impl AuthStore {
    /// An empty store whose tokens lapse after `token_ttl` unused.
    pub fn new(token_ttl: Duration) -> Self {
        AuthStore {
            state: RwLock::new(AuthState::default()),
            tokens: Tokens::new(token_ttl),
            jwt: None,
        }
    }

    /// The store issuing and taking JWT tokens signed with `jwt`'s keys.
    pub fn with_jwt(mut self, jwt: jwt::Jwt) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// The JWT keys, when tokens are JWTs.
    pub fn jwt(&self) -> Option<&jwt::Jwt> {
        self.jwt.as_ref()
    }

    /// Replaces the auth data with what `mvcc` holds (at start, and after
    /// a snapshot replaced the store).
    pub fn restore_from(&self, mvcc: &Mvcc) -> Result<(), MvccError> {
        let mut state = AuthState {
            enabled: mvcc.meta(META_ENABLED)?.is_some_and(|v| v.as_ref() == [1]),
            ..AuthState::default()
        };
        if let Some(raw) = mvcc.meta(META_REVISION)? {
            let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| corrupt("revision"))?;
            state.revision = u64::from_be_bytes(bytes);
        }
        for (name, raw) in mvcc.meta_with_prefix(META_USER)? {
            let user = User::decode(raw.as_ref()).map_err(|_| corrupt(&name))?;
            state
                .users
                .insert(name[META_USER.len()..].to_string(), user);
        }
        for (name, raw) in mvcc.meta_with_prefix(META_ROLE)? {
            let role = Role::decode(raw.as_ref()).map_err(|_| corrupt(&name))?;
            state
                .roles
                .insert(name[META_ROLE.len()..].to_string(), role);
        }
        if !state.enabled {
            self.tokens.clear();
        }
        *self.write() = state;
        Ok(())
    }

    /// The auth data as of now; hold it briefly (apply waits for it).
    pub fn read(&self) -> RwLockReadGuard<'_, AuthState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AuthState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.read().enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// The user a simple token belongs to, if it is live (its lifetime
    /// starts over).
    pub fn token_user(&self, token: &str) -> Option<String> {
        self.tokens.user(token, Instant::now())
    }

    /// Drops lapsed tokens; run every [`TOKEN_SWEEP`].
    pub fn sweep_tokens(&self) {
        self.tokens.sweep(Instant::now());
    }

    /// Whether the sender of `req` may make it, against the auth data as
    /// applied so far (etcd's authApplierV3). `lease_keys` lists the keys
    /// attached to a lease.
    pub fn authorize(
        &self,
        req: &InternalRequest,
        lease_keys: impl Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        let state = self.read();
        if !state.enabled || req.by_member {
            return Ok(());
        }
        let who = AuthInfo {
            username: req.username.clone(),
            revision: req.auth_revision,
        };
        let Some(request) = &req.request else {
            return Ok(());
        };
        let needs = match request {
            Internal::Put(p) => {
                let mut needs = perms::put(p);
                if p.lease != 0 {
                    needs.extend(perms::lease_keys(lease_keys(p.lease)));
                }
                needs
            }
            Internal::DeleteRange(d) => perms::delete_range(d),
            Internal::Txn(t) => {
                let mut needs = perms::txn(t);
                for lease in perms::txn_leases(t) {
                    needs.extend(perms::lease_keys(lease_keys(lease)));
                }
                needs
            }
            Internal::LeaseRevoke(r) => perms::lease_keys(lease_keys(r.id)),
            Internal::Compaction(_)
            | Internal::LeaseGrant(_)
            | Internal::LeaseCheckpoint(_)
            // etcd lets any caller list, raise and clear alarms.
            | Internal::Alarm(_)
            | Internal::Authenticate(_) => Vec::new(),
            Internal::AuthEnable(_)
            | Internal::AuthDisable(_)
            | Internal::UserAdd(_)
            | Internal::UserDelete(_)
            | Internal::UserChangePassword(_)
            | Internal::UserGrantRole(_)
            | Internal::UserRevokeRole(_)
            | Internal::RoleAdd(_)
            | Internal::RoleDelete(_)
            | Internal::RoleGrantPermission(_)
            | Internal::RoleRevokePermission(_) => return state.check_admin(&who),
        };
        state.check(&who, &needs)
    }

    /// Applies an auth request inside `txn`, entry `index` of the log;
    /// `None` for requests of other kinds.
    pub fn apply(
        &self,
        txn: &mut WriteTxn<'_>,
        request: &Internal,
        index: u64,
    ) -> Option<Result<Outcome, AuthError>> {
        let mut state = self.write();
        let touched = match request {
            Internal::AuthEnable(_) => state.enable().map(|()| state::Touched::default()),
            Internal::AuthDisable(_) => {
                if state.disable() {
                    self.tokens.clear();
                }
                Ok(state::Touched::default())
            }
            Internal::Authenticate(a) => {
                return Some(state.can_log_in(&a.name).map(|()| {
                    let token = format!("{}.{index}", a.simple_token_prefix);
                    self.tokens.assign(token.clone(), &a.name);
                    Outcome::Token(token)
                }));
            }
            Internal::UserAdd(r) => state.user_add(&r.name, &r.hashed_password, r.options),
            Internal::UserDelete(r) => state.user_delete(&r.name).inspect(|_| {
                self.tokens.invalidate_user(&r.name);
            }),
            Internal::UserChangePassword(r) => state
                .user_change_password(&r.name, &r.hashed_password)
                .inspect(|_| self.tokens.invalidate_user(&r.name)),
            Internal::UserGrantRole(r) => state.user_grant_role(&r.user, &r.role),
            Internal::UserRevokeRole(r) => state.user_revoke_role(&r.name, &r.role),
            Internal::RoleAdd(r) => state.role_add(&r.name),
            Internal::RoleDelete(r) => state.role_delete(&r.role),
            Internal::RoleGrantPermission(r) => match &r.perm {
                Some(perm) => state.role_grant_permission(&r.name, perm.clone()),
                None => Err(AuthError::PermissionNotGiven),
            },
            Internal::RoleRevokePermission(r) => {
                state.role_revoke_permission(&r.role, &r.key, &r.range_end)
            }
            _ => return None,
        };
        Some(touched.map(|touched| {
            persist(txn, &state, &touched);
            Outcome::Done
        }))
    }
}

/// Writes what a change touched, with the flag and revision, into `txn`.
fn persist(txn: &mut WriteTxn<'_>, state: &AuthState, touched: &state::Touched) {
    txn.set_meta(META_ENABLED, &[u8::from(state.enabled)]);
    txn.set_meta(META_REVISION, &state.revision.to_be_bytes());
    for name in &touched.users {
        let meta = format!("{META_USER}{name}");
        match state.users.get(name) {
            Some(user) => txn.set_meta(&meta, &user.encode_to_vec()),
            None => txn.remove_meta(&meta),
        }
    }
    for name in &touched.roles {
        let meta = format!("{META_ROLE}{name}");
        match state.roles.get(name) {
            Some(role) => txn.set_meta(&meta, &role.encode_to_vec()),
            None => txn.remove_meta(&meta),
        }
    }
}

/// A bcrypt hash of `password` at `cost` (slow on purpose: run it off the
/// async runtime).
pub fn hash_password(password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(password, cost)
}

/// Whether `password` is `user`'s (slow on purpose, as above). A user
/// added with `no_password` has none.
pub fn password_matches(user: &User, password: &str) -> bool {
    if state::no_password(user) {
        return false;
    }
    let hash = String::from_utf8_lossy(&user.password);
    bcrypt::verify(password, &hash).unwrap_or(false)
}

fn corrupt(what: &str) -> MvccError {
    MvccError::Storage(format!("corrupt auth record {what}"))
}

#[cfg(test)]
mod tests;
