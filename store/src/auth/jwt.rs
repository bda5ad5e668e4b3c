//! etcd's JWT tokens (`--auth-token jwt,pub-key=...,priv-key=...,
//! sign-method=RS256,ttl=5m`): signed by the member a client authenticates
//! with, verified by any member holding the public key, no state kept. The
//! claims are etcd's: `username`, `revision` (the auth revision when the
//! token was made: a token from before an auth change is refused as old),
//! `exp`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// etcd's default token lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// The options after `jwt,` in `--auth-token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    pub method: String,
    pub pub_key: PathBuf,
    pub priv_key: Option<PathBuf>,
    pub ttl: Duration,
}

impl JwtOptions {
    /// Parses `pub-key=...,priv-key=...,sign-method=...,ttl=...`.
    pub fn parse(options: &str) -> Result<JwtOptions, String> {
        let (mut method, mut pub_key, mut priv_key, mut ttl) = (None, None, None, DEFAULT_TTL);
        for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| format!("--auth-token: jwt option {option:?} is not name=value"))?;
            match name {
                "sign-method" => method = Some(value.to_string()),
                "pub-key" => pub_key = Some(PathBuf::from(value)),
                "priv-key" => priv_key = Some(PathBuf::from(value)),
                "ttl" => {
                    ttl = crate::config::parse_duration(value)
                        .map_err(|e| format!("--auth-token: jwt ttl: {e}"))?
                }
                other => return Err(format!("--auth-token: unknown jwt option {other:?}")),
            }
        }
        let method = method.ok_or("--auth-token: jwt needs sign-method")?;
        algorithm(&method)?;
        let pub_key = match (pub_key, &priv_key) {
            (Some(p), _) => p,
            // HMAC signs and verifies with the same secret.
            (None, Some(secret)) if method.starts_with("HS") => secret.clone(),
            _ => return Err("--auth-token: jwt needs pub-key to verify tokens".into()),
        };
        Ok(JwtOptions {
            method,
            pub_key,
            priv_key,
            ttl,
        })
    }
}

fn algorithm(method: &str) -> Result<Algorithm, String> {
    Ok(match method {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "EdDSA" => Algorithm::EdDSA,
        other => {
            return Err(format!(
                "--auth-token: jwt sign-method {other:?} is not supported (RS256/384/512, PS256/384/512, ES256/384, HS256/384/512, EdDSA are)"
            ))
        }
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Signs and verifies tokens.
pub struct Jwt {
    algorithm: Algorithm,
    /// `None` on a member given only the public key: it verifies, but
    /// cannot issue tokens.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithm", &self.algorithm)
            .field("signs", &self.encoding.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("--auth-token: jwt key {}: {e}", path.display()))
}

impl Jwt {
    /// Reads the keys `options` name.
    pub fn load(options: &JwtOptions) -> Result<Jwt, String> {
        let algorithm = algorithm(&options.method)?;
        let bad = |which: &Path, e: jsonwebtoken::errors::Error| {
            format!(
                "--auth-token: jwt key {} is not a {} key: {e}",
                which.display(),
                options.method
            )
        };
        let public = read(&options.pub_key)?;
        let decoding = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                Ok(DecodingKey::from_secret(&public))
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&public),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&public),
            _ => DecodingKey::from_rsa_pem(&public),
        }
        .map_err(|e| bad(&options.pub_key, e))?;
        let encoding = match &options.priv_key {
            None => None,
            Some(path) => {
                let private = read(path)?;
                Some(
                    match algorithm {
                        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                            Ok(EncodingKey::from_secret(&private))
                        }
                        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&private),
                        Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
                        _ => EncodingKey::from_rsa_pem(&private),
                    }
                    .map_err(|e| bad(path, e))?,
                )
            }
        };
        let jwt = Jwt {
            algorithm,
            encoding,
            decoding,
            ttl: options.ttl,
        };
        // A key pair that does not belong together would only show at the
        // first login: check it now.
        if jwt.encoding.is_some() {
            let probe = jwt
                .sign("probe", 0)
                .map_err(|e| format!("--auth-token: jwt: {e}"))?;
            if jwt.verify(&probe).is_none() {
                return Err("--auth-token: jwt pub-key does not verify what priv-key signs".into());
            }
        }
        Ok(jwt)
    }

    /// A token for `username` at auth revision `revision`.
    pub fn sign(&self, username: &str, revision: u64) -> Result<String, String> {
        let key = self
            .encoding
            .as_ref()
            .ok_or("this member has no jwt priv-key to sign tokens with")?;
        let exp = SystemTime::now()
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_secs());
        let claims = Claims {
            username: username.to_string(),
            revision,
            exp,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| e.to_string())
    }

    /// The user and auth revision of a valid, unexpired `token`.
    pub fn verify(&self, token: &str) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        Some((data.claims.username, data.claims.revision))
    }
}

/// Whether `token` is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, secret: &[u8], ttl: &str) -> JwtOptions {
        let key = dir.join("secret");
        std::fs::write(&key, secret).unwrap();
        JwtOptions::parse(&format!(
            "priv-key={},sign-method=HS256,ttl={ttl}",
            key.display()
        ))
        .unwrap()
    }

    #[test]
    fn options_parse_as_etcds_and_refuse_what_cannot_work() {
        let o = JwtOptions::parse("pub-key=a.pub,priv-key=a,sign-method=RS256").unwrap();
        assert_eq!(o.ttl, DEFAULT_TTL);
        assert_eq!(o.pub_key, PathBuf::from("a.pub"));
        assert!(JwtOptions::parse("pub-key=a.pub")
            .unwrap_err()
            .contains("sign-method"));
        assert!(JwtOptions::parse("priv-key=a,sign-method=RS256")
            .unwrap_err()
            .contains("pub-key"));
        assert!(JwtOptions::parse("pub-key=a,sign-method=ES512")
            .unwrap_err()
            .contains("not supported"));
        assert!(JwtOptions::parse("pub-key=a,sign-method=RS256,colour=red").is_err());
    }

    #[test]
    fn a_signed_token_names_its_user_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let jwt = Jwt::load(&options(dir.path(), b"s3cret", "5m")).unwrap();
        let token = jwt.sign("alice", 7).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(jwt.verify(&token), Some(("alice".into(), 7)));
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jwt = Jwt::load(&options(dir.path(), b"s3cret", "5m")).unwrap();
        let token = jwt.sign("alice", 7).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replace('a', "b");
        assert_eq!(jwt.verify(&parts.join(".")), None);
        let other_dir = tempfile::tempdir().unwrap();
        let other = Jwt::load(&options(other_dir.path(), b"other", "5m")).unwrap();
        assert_eq!(other.verify(&token), None);
        let short = Jwt::load(&options(dir.path(), b"s3cret", "1s")).unwrap();
        let soon_stale = short.sign("alice", 7).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(short.verify(&soon_stale), None);
    }
}
