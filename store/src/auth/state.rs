//! The replicated auth data and its rules: users, roles, whether auth is
//! on, and the auth revision. Plain data with pure operations, as etcd's
//! `auth/store.go` applies them (same checks, same order, same revision
//! bumps), so the state machine applies them and tests run without a store.

use std::collections::BTreeMap;

use ferrocd_proto::authpb::{Permission, Role, User, UserAddOptions};

use super::perms::{self, Access};
use super::AuthError;

/// The name of the user and of the role that may do everything.
pub const ROOT: &str = "root";

/// Who a request comes from, as its credentials said when it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    /// The auth revision the credentials were checked at; 0 for none.
    pub revision: u64,
}

/// Users and roles that a change touched, to write back to the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub users: Vec<String>,
    pub roles: Vec<String>,
}

impl Touched {
    fn user(name: &str) -> Self {
        Touched {
            users: vec![name.to_string()],
            roles: Vec::new(),
        }
    }

    fn role(name: &str) -> Self {
        Touched {
            users: Vec::new(),
            roles: vec![name.to_string()],
        }
    }
}

/// The auth data.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    pub enabled: bool,
    /// Bumped by every change but enabling (as etcd); 1 on a new store.
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

impl AuthState {
    /// Turns auth on; refused unless `root` exists with the `root` role.
    pub fn enable(&mut self) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    /// Turns auth off; true when it was on (then the revision moved).
    pub fn disable(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        self.enabled = false;
        self.revision += 1;
        true
    }

    /// Adds a user with an already hashed password (empty with
    /// `no_password`).
    pub fn user_add(
        &mut self,
        name: &str,
        hashed_password: &str,
        options: Option<UserAddOptions>,
    ) -> Result<Touched, AuthError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let user = User {
            name: name.as_bytes().to_vec(),
            password: hashed_password.as_bytes().to_vec(),
            roles: Vec::new(),
            options: Some(options.unwrap_or_default()),
        };
        self.users.insert(name.to_string(), user);
        self.revision += 1;
        Ok(Touched::user(name))
    }

    /// Deletes a user; `root` stays while auth is on.
    pub fn user_delete(&mut self, name: &str) -> Result<Touched, AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.revision += 1;
        Ok(Touched::user(name))
    }

    /// Replaces a user's password hash.
    pub fn user_change_password(&mut self, name: &str, hashed: &str) -> Result<Touched, AuthError> {
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        user.password = hashed.as_bytes().to_vec();
        self.revision += 1;
        Ok(Touched::user(name))
    }

    /// Grants `role` (which must exist, but for `root`) to a user; granting
    /// it again changes nothing.
    pub fn user_grant_role(&mut self, name: &str, role: &str) -> Result<Touched, AuthError> {
        if !self.users.contains_key(name) {
            return Err(AuthError::UserNotFound);
        }
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.users.get_mut(name).expect("checked above");
        match user.roles.binary_search_by(|r| r.as_str().cmp(role)) {
            Ok(_) => Ok(Touched::default()),
            Err(at) => {
                user.roles.insert(at, role.to_string());
                self.revision += 1;
                Ok(Touched::user(name))
            }
        }
    }

    /// Takes `role` from a user; `root` keeps `root` while auth is on.
    pub fn user_revoke_role(&mut self, name: &str, role: &str) -> Result<Touched, AuthError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|r| r != role);
        if user.roles.len() == before {
            return Err(AuthError::RoleNotGranted);
        }
        self.revision += 1;
        Ok(Touched::user(name))
    }

    /// Adds an empty role.
    pub fn role_add(&mut self, name: &str) -> Result<Touched, AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        let role = Role {
            name: name.as_bytes().to_vec(),
            key_permission: Vec::new(),
        };
        self.roles.insert(name.to_string(), role);
        self.revision += 1;
        Ok(Touched::role(name))
    }

    /// Deletes a role and takes it from every user; `root` stays while
    /// auth is on.
    pub fn role_delete(&mut self, name: &str) -> Result<Touched, AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        let mut touched = Touched::role(name);
        for (user_name, user) in &mut self.users {
            let before = user.roles.len();
            user.roles.retain(|r| r != name);
            if user.roles.len() != before {
                touched.users.push(user_name.clone());
            }
        }
        self.revision += 1;
        Ok(touched)
    }

    /// Grants a permission to a role, replacing the type of one on the
    /// same range; permissions stay sorted by key.
    pub fn role_grant_permission(
        &mut self,
        name: &str,
        perm: Permission,
    ) -> Result<Touched, AuthError> {
        let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
        let same = role
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end);
        match same {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                let at = role
                    .key_permission
                    .partition_point(|p| p.key.as_slice() <= perm.key.as_slice());
                role.key_permission.insert(at, perm);
            }
        }
        self.revision += 1;
        Ok(Touched::role(name))
    }

    /// Revokes the permission on exactly `[key, range_end)` from a role.
    pub fn role_revoke_permission(
        &mut self,
        name: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Touched, AuthError> {
        let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key != key || p.range_end != range_end);
        if role.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.revision += 1;
        Ok(Touched::role(name))
    }

    /// Whether a user may log in now (for Authenticate's apply: the
    /// password was checked before proposing).
    pub fn can_log_in(&self, name: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if no_password(user) {
            return Err(AuthError::AuthFailed);
        }
        Ok(())
    }

    /// Whether `who` may manage auth and the cluster: everyone while auth
    /// is off, then only users with the `root` role.
    pub fn check_admin(&self, who: &AuthInfo) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if who.username.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let user = self
            .users
            .get(&who.username)
            .ok_or(AuthError::UserNotFound)?;
        if !has_root_role(user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// Whether `who` may make every access of `needs`.
    pub fn check(&self, who: &AuthInfo, needs: &[Access]) -> Result<(), AuthError> {
        if !self.enabled || needs.is_empty() {
            return Ok(());
        }
        if who.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if who.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&who.username)
            .ok_or(AuthError::PermissionDenied)?;
        if has_root_role(user) {
            return Ok(());
        }
        let granted: Vec<Permission> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.key_permission.iter().cloned())
            .collect();
        if needs.iter().all(|a| perms::allows(&granted, a)) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether user `name` has role `role` (a user may read its own roles).
    pub fn has_role(&self, name: &str, role: &str) -> bool {
        self.users
            .get(name)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
}

/// Whether a user was added with `no_password` (it cannot log in).
pub fn no_password(user: &User) -> bool {
    user.options.as_ref().is_some_and(|o| o.no_password)
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::perms::Kind;
    use ferrocd_proto::authpb::permission::Type as PermType;

    fn with_root() -> AuthState {
        let mut s = AuthState::default();
        s.user_add(ROOT, "hash", None).unwrap();
        s.user_grant_role(ROOT, ROOT).unwrap();
        s
    }

    fn who(s: &AuthState, name: &str) -> AuthInfo {
        AuthInfo {
            username: name.to_string(),
            revision: s.revision,
        }
    }

    fn access(kind: Kind, key: &str) -> Access {
        Access {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
        }
    }

    #[test]
    fn enabling_needs_root_with_the_root_role() {
        let mut s = AuthState::default();
        assert_eq!(s.enable(), Err(AuthError::RootUserNotExist));
        s.user_add(ROOT, "hash", None).unwrap();
        assert_eq!(s.enable(), Err(AuthError::RootRoleNotExist));
        s.user_grant_role(ROOT, ROOT).unwrap();
        assert_eq!(s.enable(), Ok(()));
        assert!(s.enabled);
    }

    #[test]
    fn root_cannot_be_deleted_or_lose_root_while_auth_is_on() {
        let mut s = with_root();
        s.role_add(ROOT).unwrap();
        s.enable().unwrap();
        assert_eq!(s.user_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(
            s.user_revoke_role(ROOT, ROOT),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(s.role_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        s.disable();
        assert!(s.user_revoke_role(ROOT, ROOT).is_ok());
        assert!(s.user_delete(ROOT).is_ok());
    }

    #[test]
    fn every_change_but_enabling_bumps_the_revision() {
        let mut s = AuthState::default();
        assert_eq!(s.revision, 1);
        s.user_add(ROOT, "h", None).unwrap();
        s.user_grant_role(ROOT, ROOT).unwrap();
        assert_eq!(s.revision, 3);
        s.user_grant_role(ROOT, ROOT).unwrap();
        assert_eq!(s.revision, 3, "granting a held role changes nothing");
        s.enable().unwrap();
        assert_eq!(s.revision, 3);
        s.role_add("r").unwrap();
        s.role_grant_permission("r", Permission::default()).unwrap();
        s.role_revoke_permission("r", b"", b"").unwrap();
        s.disable();
        assert_eq!(s.revision, 7);
    }

    #[test]
    fn management_errors_come_in_etcds_order() {
        let mut s = AuthState::default();
        assert_eq!(s.user_add("", "h", None), Err(AuthError::UserEmpty));
        assert_eq!(s.role_add(""), Err(AuthError::RoleEmpty));
        assert_eq!(s.user_grant_role("u", "r"), Err(AuthError::UserNotFound));
        s.user_add("u", "h", None).unwrap();
        assert_eq!(s.user_add("u", "h", None), Err(AuthError::UserAlreadyExist));
        assert_eq!(s.user_grant_role("u", "r"), Err(AuthError::RoleNotFound));
        assert_eq!(s.user_revoke_role("u", "r"), Err(AuthError::RoleNotGranted));
        s.role_add("r").unwrap();
        assert_eq!(s.role_add("r"), Err(AuthError::RoleAlreadyExist));
        assert_eq!(
            s.role_revoke_permission("r", b"k", b""),
            Err(AuthError::PermissionNotGranted)
        );
        assert_eq!(s.role_delete("x"), Err(AuthError::RoleNotFound));
        assert_eq!(s.user_delete("x"), Err(AuthError::UserNotFound));
    }

    #[test]
    fn deleting_a_role_takes_it_from_its_users() {
        let mut s = AuthState::default();
        s.role_add("r").unwrap();
        s.user_add("u", "h", None).unwrap();
        s.user_grant_role("u", "r").unwrap();
        let touched = s.role_delete("r").unwrap();
        assert_eq!(touched.users, vec!["u".to_string()]);
        assert!(s.users["u"].roles.is_empty());
    }

    #[test]
    fn granting_a_permission_on_the_same_range_replaces_its_type() {
        let mut s = AuthState::default();
        s.role_add("r").unwrap();
        let p = |t: PermType, k: &str| Permission {
            perm_type: t as i32,
            key: k.as_bytes().to_vec(),
            range_end: Vec::new(),
        };
        s.role_grant_permission("r", p(PermType::Read, "b"))
            .unwrap();
        s.role_grant_permission("r", p(PermType::Read, "a"))
            .unwrap();
        s.role_grant_permission("r", p(PermType::Write, "b"))
            .unwrap();
        assert_eq!(
            s.roles["r"].key_permission,
            vec![p(PermType::Read, "a"), p(PermType::Write, "b")]
        );
    }

    #[test]
    fn checks_follow_roles_and_root_may_do_anything() {
        let mut s = with_root();
        s.role_add("r").unwrap();
        s.role_grant_permission(
            "r",
            Permission {
                perm_type: PermType::Read as i32,
                key: b"k".to_vec(),
                range_end: Vec::new(),
            },
        )
        .unwrap();
        s.user_add("u", "h", None).unwrap();
        s.user_grant_role("u", "r").unwrap();
        s.enable().unwrap();
        let u = who(&s, "u");
        assert_eq!(s.check(&u, &[access(Kind::Read, "k")]), Ok(()));
        assert_eq!(
            s.check(&u, &[access(Kind::Write, "k")]),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check(&who(&s, ROOT), &[access(Kind::Write, "x")]), Ok(()));
        assert_eq!(s.check_admin(&u), Err(AuthError::PermissionDenied));
        assert_eq!(s.check_admin(&who(&s, ROOT)), Ok(()));
    }

    #[test]
    fn checks_refuse_anonymous_stale_and_unknown_callers() {
        let mut s = with_root();
        s.enable().unwrap();
        let needs = [access(Kind::Read, "k")];
        assert_eq!(
            s.check(&AuthInfo::default(), &needs),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(
            s.check_admin(&AuthInfo::default()),
            Err(AuthError::UserEmpty)
        );
        let stale = AuthInfo {
            username: ROOT.to_string(),
            revision: s.revision - 1,
        };
        assert_eq!(s.check(&stale, &needs), Err(AuthError::AuthOldRevision));
        assert_eq!(
            s.check(&who(&s, "ghost"), &needs),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check_admin(&who(&s, "ghost")),
            Err(AuthError::UserNotFound)
        );
    }

    #[test]
    fn nothing_is_checked_while_auth_is_off() {
        let s = AuthState::default();
        let needs = [access(Kind::Write, "k")];
        assert_eq!(s.check(&AuthInfo::default(), &needs), Ok(()));
        assert_eq!(s.check_admin(&AuthInfo::default()), Ok(()));
    }

    #[test]
    fn no_password_users_cannot_log_in() {
        let mut s = with_root();
        s.user_add("np", "", Some(UserAddOptions { no_password: true }))
            .unwrap();
        assert_eq!(s.can_log_in(ROOT), Err(AuthError::AuthNotEnabled));
        s.enable().unwrap();
        assert_eq!(s.can_log_in(ROOT), Ok(()));
        assert_eq!(s.can_log_in("np"), Err(AuthError::AuthFailed));
        assert_eq!(s.can_log_in("nobody"), Err(AuthError::AuthFailed));
    }
}
