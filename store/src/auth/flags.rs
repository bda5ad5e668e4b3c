//! The auth flags, named and defaulted as etcd's.

use std::time::Duration;

use clap::Args;

use super::jwt::JwtOptions;

/// etcd's default bcrypt cost (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// `--auth-token`, `--auth-token-ttl`, `--bcrypt-cost`; each also readable
/// from `ETCD_<FLAG>`.
#[derive(Args, Debug, Clone)]
pub struct AuthFlags {
    /// Specify a v3 authentication token type and its options: 'simple', or
    /// 'jwt,pub-key=<path>,priv-key=<path>,sign-method=<RS256|...>,ttl=5m'.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// Time (in seconds) of the auth-token-ttl.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// Specify the cost / strength of the bcrypt algorithm for hashing auth
    /// passwords. Valid values are between 4 and 31.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = DEFAULT_BCRYPT_COST)]
    pub bcrypt_cost: u32,
}

/// The validated auth settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// How long a simple token lives unused.
    pub token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// `--auth-token=jwt,...`: signed tokens instead of simple ones.
    pub jwt: Option<JwtOptions>,
}

impl AuthFlags {
    /// Validates the flags; notes (to log at start) go to `notes`.
    pub fn settings(&self, notes: &mut Vec<String>) -> Result<AuthSettings, String> {
        let (kind, options) = self
            .auth_token
            .split_once(',')
            .unwrap_or((self.auth_token.as_str(), ""));
        let jwt = match kind {
            "simple" => None,
            "jwt" => Some(JwtOptions::parse(options)?),
            other => return Err(format!("--auth-token: unknown token type {other:?}")),
        };
        let mut bcrypt_cost = self.bcrypt_cost;
        if !(4..=31).contains(&bcrypt_cost) {
            // etcd also falls back to the default, with a warning.
            notes.push(format!(
                "--bcrypt-cost={bcrypt_cost} is outside 4..=31; using the default {DEFAULT_BCRYPT_COST}"
            ));
            bcrypt_cost = DEFAULT_BCRYPT_COST;
        }
        // etcd treats a TTL of 0 as its default.
        let ttl = if self.auth_token_ttl == 0 {
            300
        } else {
            self.auth_token_ttl
        };
        Ok(AuthSettings {
            token_ttl: Duration::from_secs(ttl),
            bcrypt_cost,
            jwt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(token: &str, ttl: u64, cost: u32) -> AuthFlags {
        AuthFlags {
            auth_token: token.into(),
            auth_token_ttl: ttl,
            bcrypt_cost: cost,
        }
    }

    #[test]
    fn simple_and_jwt_tokens_are_accepted_and_others_refused() {
        let mut notes = Vec::new();
        let s = flags("simple", 300, 10).settings(&mut notes).unwrap();
        assert_eq!(s.token_ttl, Duration::from_secs(300));
        assert_eq!(s.bcrypt_cost, 10);
        assert_eq!(s.jwt, None);
        let jwt = flags("jwt,pub-key=a,priv-key=b,sign-method=RS256", 300, 10)
            .settings(&mut notes)
            .unwrap();
        assert_eq!(jwt.jwt.unwrap().method, "RS256");
        let e = flags("jwt,pub-key=a", 300, 10)
            .settings(&mut notes)
            .unwrap_err();
        assert!(e.contains("sign-method"), "{e}");
        assert!(flags("magic", 300, 10).settings(&mut notes).is_err());
    }

    #[test]
    fn a_bcrypt_cost_out_of_range_falls_back_to_the_default() {
        let mut notes = Vec::new();
        let s = flags("simple", 300, 3).settings(&mut notes).unwrap();
        assert_eq!(s.bcrypt_cost, DEFAULT_BCRYPT_COST);
        assert_eq!(notes.len(), 1);
    }
}
