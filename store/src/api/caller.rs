//! Who a client request comes from (etcd's `AuthInfoFromCtx`): the simple
//! token in the `token` metadata, or else, with `--client-cert-auth`, the
//! common name of its verified client certificate; and the checks of
//! requests served without raft (reads, watches, admin-only RPCs).

use std::time::{Duration, Instant};

use tonic::Status;

use super::{auth_status, Context, EtcdError};
use crate::auth::perms::Access;
use crate::auth::{jwt, tokens, AuthError, AuthInfo};

/// Metadata keys a client's token may come in: clientv3's, and the one the
/// gRPC gateway forwards.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// Longest wait for the entry that issued a token to be applied here.
const TOKEN_INDEX_WAIT: Duration = Duration::from_secs(5);

impl Context {
    /// The credentials of `request`: `None` when it carries none. A token
    /// that is not (or no longer) valid is an error, as in etcd.
    pub async fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Option<AuthInfo>, Status> {
        self.resolve(&Credentials::of(request)).await
    }

    /// The user `credentials` name, checked now.
    pub async fn resolve(&self, credentials: &Credentials) -> Result<Option<AuthInfo>, Status> {
        if let Some(token) = &credentials.token {
            return self.token_caller(token).await.map(Some);
        }
        if !self.client_cert_auth() {
            return Ok(None);
        }
        Ok(credentials.common_name.clone().map(|username| AuthInfo {
            username,
            revision: self.auth().revision(),
        }))
    }

    /// The user of a simple token. A token names the log entry that issued
    /// it: one issued through another member is known here once that
    /// entry is applied, so wait for it first (as etcd does).
    async fn token_caller(&self, token: &str) -> Result<AuthInfo, Status> {
        if let Some(jwt) = self.auth().jwt() {
            if !jwt::looks_like_jwt(token) {
                return Err(EtcdError::InvalidAuthToken.into());
            }
            let (username, revision) = jwt.verify(token).ok_or(EtcdError::InvalidAuthToken)?;
            return Ok(AuthInfo { username, revision });
        }
        let index = tokens::index_of(token).ok_or(EtcdError::InvalidAuthToken)?;
        let applied = self.raft().metrics().borrow().last_applied.map(|l| l.index);
        if applied < Some(index) {
            let deadline = Instant::now() + TOKEN_INDEX_WAIT.min(self.request_timeout());
            self.wait_applied(index, deadline)
                .await
                .map_err(|_| Status::from(EtcdError::InvalidAuthToken))?;
        }
        let username = self
            .auth()
            .token_user(token)
            .ok_or(EtcdError::InvalidAuthToken)?;
        Ok(AuthInfo {
            username,
            revision: self.auth().revision(),
        })
    }

    /// Whether clients present certificates this member verified.
    fn client_cert_auth(&self) -> bool {
        self.config()
            .tls
            .client
            .as_ref()
            .is_some_and(|side| side.client_cert_auth)
    }

    /// Checks that `who` may make `needs` (requests served without raft).
    pub fn check(&self, who: Option<&AuthInfo>, needs: &[Access]) -> Result<(), Status> {
        let anonymous = AuthInfo::default();
        self.auth()
            .read()
            .check(who.unwrap_or(&anonymous), needs)
            .map_err(auth_status)
    }

    /// Checks that `who` may manage auth and the cluster (root role).
    pub fn check_admin(&self, who: Option<&AuthInfo>) -> Result<(), Status> {
        let anonymous = AuthInfo::default();
        self.auth()
            .read()
            .check_admin(who.unwrap_or(&anonymous))
            .map_err(auth_status)
    }

    /// After a read served for `who`: the auth data must not have changed
    /// meanwhile, or the answer may have been allowed by rules gone now.
    pub fn recheck_revision(&self, who: Option<&AuthInfo>) -> Result<(), Status> {
        match who {
            Some(w) if w.revision != 0 && w.revision != self.auth().revision() => {
                Err(auth_status(AuthError::AuthOldRevision))
            }
            _ => Ok(()),
        }
    }
}

/// What a request presents to say who sends it: kept by streams, whose
/// requests are checked as they come.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `token` metadata; `Some("")` for one that is not text.
    token: Option<String>,
    /// The common name of the connection's client certificate.
    common_name: Option<String>,
}

impl Credentials {
    /// The credentials `request` carries.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        let token = TOKEN_KEYS
            .iter()
            .find_map(|k| request.metadata().get(*k))
            .map(|t| t.to_str().unwrap_or_default().to_string());
        Credentials {
            token,
            common_name: common_name(request),
        }
    }
}

/// The common name of the client certificate of `request`'s connection.
fn common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
