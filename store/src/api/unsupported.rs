//! Services that are not built yet. Every RPC answers `Unimplemented` with a
//! message naming what is missing, so clients fail clearly instead of hanging.

use ferrocd_proto::etcdserverpb::auth_server::Auth;
use ferrocd_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::not_yet;

/// Generates RPCs that answer `Unimplemented` for `what`.
macro_rules! not_yet_rpcs {
    ($what:literal; $($name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            // Written as `#[async_trait]` expands an `async fn`, since the
            // attribute runs before this macro does.
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _: Request<$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(not_yet($what)) })
            }
        )*
    };
}

/// The Auth service (not built yet).
pub struct AuthService;

#[tonic::async_trait]
impl Auth for AuthService {
    not_yet_rpcs! { "the Auth service";
        auth_enable(AuthEnableRequest) -> AuthEnableResponse;
        auth_disable(AuthDisableRequest) -> AuthDisableResponse;
        auth_status(AuthStatusRequest) -> AuthStatusResponse;
        authenticate(AuthenticateRequest) -> AuthenticateResponse;
        user_add(AuthUserAddRequest) -> AuthUserAddResponse;
        user_get(AuthUserGetRequest) -> AuthUserGetResponse;
        user_list(AuthUserListRequest) -> AuthUserListResponse;
        user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse;
        user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse;
        user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse;
        user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse;
        role_add(AuthRoleAddRequest) -> AuthRoleAddResponse;
        role_get(AuthRoleGetRequest) -> AuthRoleGetResponse;
        role_list(AuthRoleListRequest) -> AuthRoleListResponse;
        role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse;
        role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse;
        role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse;
    }
}

pub(super) use not_yet_rpcs;
