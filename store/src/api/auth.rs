//! The Auth service. Changes go through raft (passwords hashed before they
//! are proposed, so apply is deterministic and the log holds no password);
//! reads are linearizable and served from this member's auth data.

use std::sync::Arc;

use ferrocd_proto::etcdserverpb::auth_server::Auth;
use ferrocd_proto::etcdserverpb::*;
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use ferrocd_proto::ferrocdpb::InternalAuthenticate;
use tokio::sync::{watch, Semaphore};
use tonic::{Request, Response, Status};

use super::{auth_status, Context, EtcdError, Sender};
use crate::auth::{self, tokens, AuthError, AuthInfo};
use crate::raft::Response as Applied;

/// etcd's Auth service.
pub struct AuthService {
    ctx: Context,
    /// Password hashes and checks running at once: each takes a core for
    /// tens of milliseconds, so a flood of logins queues here instead of
    /// starving everything else.
    bcrypt: Arc<Semaphore>,
}

impl AuthService {
    pub fn new(ctx: Context) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AuthService {
            ctx,
            bcrypt: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Runs `work` (bcrypt) on the blocking pool, a few at a time.
    async fn bcrypt<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let _permit = self
            .bcrypt
            .acquire()
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))
    }

    /// Hashes `password` with `--bcrypt-cost`.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.ctx.config().auth.bcrypt_cost;
        self.bcrypt(move || auth::hash_password(&password, cost))
            .await?
            .map_err(|e| Status::internal(format!("etcdserver: hashing the password: {e}")))
    }

    /// Proposes an auth change for the caller of `request`; answers an
    /// empty response of type `T` with its header.
    async fn change<R, T: Default + WithHeader>(
        &self,
        request: &Request<R>,
        change: Internal,
    ) -> Result<Response<T>, Status> {
        let who = self.ctx.caller(request).await?;
        self.change_as(who.as_ref(), change).await
    }

    async fn change_as<T: Default + WithHeader>(
        &self,
        who: Option<&AuthInfo>,
        change: Internal,
    ) -> Result<Response<T>, Status> {
        match self.ctx.propose(Sender::Client(who), change).await? {
            Applied::AuthDone => {
                let mut resp = T::default();
                *resp.header_mut() = Some(self.ctx.header(0));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    /// For reads: the caller, once this member has caught up with the
    /// leader (auth data reads are linearizable, as etcd's go through raft).
    async fn reader<R>(&self, request: &Request<R>) -> Result<Option<AuthInfo>, Status> {
        let who = self.ctx.caller(request).await?;
        self.ctx.linearizable().await?;
        Ok(who)
    }
}

/// Auth responses carry only a header besides their payload.
trait WithHeader {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! with_header {
    ($($t:ty),*) => {
        $(impl WithHeader for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

with_header!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthUserAddResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse
);

fn unexpected(other: Applied) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result {other:?}"))
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let r = *request.get_ref();
        self.change(&request, Internal::AuthEnable(r)).await
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let r = *request.get_ref();
        self.change(&request, Internal::AuthDisable(r)).await
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let who = self.reader(&request).await?;
        self.ctx.check_admin(who.as_ref())?;
        let state = self.ctx.auth().read();
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.ctx.header(0)),
            enabled: state.enabled,
            auth_revision: state.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        self.ctx.linearizable().await?;
        let r = request.into_inner();
        // The password is checked here, against the data as applied; the
        // proposal only records the token. Should the data change between
        // check and apply, the check runs again (etcd's loop).
        loop {
            let (checked_at, user) = {
                let state = self.ctx.auth().read();
                if !state.enabled {
                    return Err(auth_status(AuthError::AuthNotEnabled));
                }
                let user = state.users.get(&r.name).cloned();
                (state.revision, user.ok_or(AuthError::AuthFailed))
            };
            let user = user.map_err(auth_status)?;
            let password = r.password.clone();
            if !self
                .bcrypt(move || auth::password_matches(&user, &password))
                .await?
            {
                return Err(auth_status(AuthError::AuthFailed));
            }
            if let Some(jwt) = self.ctx.auth().jwt() {
                // Signed here, checked by any member: nothing to replicate.
                let token = jwt
                    .sign(&r.name, checked_at)
                    .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
                return Ok(Response::new(AuthenticateResponse {
                    header: Some(self.ctx.header(0)),
                    token,
                }));
            }
            let prefix = tokens::new_prefix()
                .map_err(|e| Status::internal(format!("etcdserver: token: {e}")))?;
            let login = Internal::Authenticate(InternalAuthenticate {
                name: r.name.clone(),
                simple_token_prefix: prefix,
            });
            let token = match self.ctx.propose(Sender::Client(None), login).await? {
                Applied::Token(token) => token,
                other => return Err(unexpected(other)),
            };
            if checked_at == self.ctx.auth().revision() {
                return Ok(Response::new(AuthenticateResponse {
                    header: Some(self.ctx.header(0)),
                    token,
                }));
            }
        }
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = self.ctx.caller(&request).await?;
        // Refuse early what apply would refuse: a hash costs real time.
        self.ctx.check_admin(who.as_ref())?;
        let mut r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut r.password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            self.hash(password).await?
        };
        self.change_as(who.as_ref(), Internal::UserAdd(r)).await
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let who = self.reader(&request).await?;
        let name = &request.get_ref().name;
        let itself = who.as_ref().is_some_and(|w| &w.username == name);
        if !itself {
            self.ctx.check_admin(who.as_ref())?;
        }
        let state = self.ctx.auth().read();
        let user = state.users.get(name).ok_or(AuthError::UserNotFound);
        Ok(Response::new(AuthUserGetResponse {
            header: Some(self.ctx.header(0)),
            roles: user.map_err(auth_status)?.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let who = self.reader(&request).await?;
        self.ctx.check_admin(who.as_ref())?;
        Ok(Response::new(AuthUserListResponse {
            header: Some(self.ctx.header(0)),
            users: self.ctx.auth().read().users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::UserDelete(r)).await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = self.ctx.caller(&request).await?;
        self.ctx.check_admin(who.as_ref())?;
        let mut r = request.into_inner();
        let password = std::mem::take(&mut r.password);
        r.hashed_password = self.hash(password).await?;
        self.change_as(who.as_ref(), Internal::UserChangePassword(r))
            .await
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::UserGrantRole(r)).await
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::UserRevokeRole(r)).await
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::RoleAdd(r)).await
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let who = self.reader(&request).await?;
        let role = &request.get_ref().role;
        let own = who
            .as_ref()
            .is_some_and(|w| self.ctx.auth().read().has_role(&w.username, role));
        if !own {
            self.ctx.check_admin(who.as_ref())?;
        }
        let state = self.ctx.auth().read();
        let found = state.roles.get(role).ok_or(AuthError::RoleNotFound);
        Ok(Response::new(AuthRoleGetResponse {
            header: Some(self.ctx.header(0)),
            perm: found.map_err(auth_status)?.key_permission.clone(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let who = self.reader(&request).await?;
        self.ctx.check_admin(who.as_ref())?;
        Ok(Response::new(AuthRoleListResponse {
            header: Some(self.ctx.header(0)),
            roles: self.ctx.auth().read().roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::RoleDelete(r)).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::RoleGrantPermission(r))
            .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref().clone();
        self.change(&request, Internal::RoleRevokePermission(r))
            .await
    }
}

/// Drops lapsed tokens every second until `stop`.
pub async fn sweep_tokens(ctx: Context, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(auth::TOKEN_SWEEP);
    loop {
        tokio::select! {
            _ = tick.tick() => ctx.auth().sweep_tokens(),
            _ = stop.changed() => return,
        }
    }
}
