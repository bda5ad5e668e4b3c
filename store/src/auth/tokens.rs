//! etcd's simple tokens: `<16 random letters>.<raft index>`, assigned when
//! the Authenticate entry is applied (so every member knows each token),
//! and forgotten after `--auth-token-ttl` without use.
//!
//! Tokens are not replicated state: like etcd, each member keeps them in
//! memory and expires them on its own clock. Apply only records a token;
//! its deadline is set by the first use or the next sweep, so apply never
//! reads the clock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Letters of a token prefix, as etcd's.
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Length of a token prefix, as etcd's.
const PREFIX_LEN: usize = 16;

struct Entry {
    user: String,
    /// When the token lapses; `None` until first used or swept.
    deadline: Option<Instant>,
}

/// The tokens this member knows.
pub struct Tokens {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Tokens {
    /// Tokens that lapse after `ttl` unused.
    pub fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `token` as `user`'s (at apply).
    pub fn assign(&self, token: String, user: &str) {
        self.lock().insert(
            token,
            Entry {
                user: user.to_string(),
                deadline: None,
            },
        );
    }

    /// The user of a live `token`, whose lifetime starts over.
    pub fn user(&self, token: &str, now: Instant) -> Option<String> {
        let mut entries = self.lock();
        let entry = entries.get_mut(token)?;
        if entry.deadline.is_some_and(|d| d <= now) {
            entries.remove(token);
            return None;
        }
        entry.deadline = Some(now + self.ttl);
        Some(entry.user.clone())
    }

    /// Drops lapsed tokens and starts the clock of new ones.
    pub fn sweep(&self, now: Instant) {
        self.lock().retain(|_, e| match e.deadline {
            None => {
                e.deadline = Some(now + self.ttl);
                true
            }
            Some(d) => d > now,
        });
    }

    /// Forgets every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.lock().retain(|_, e| e.user != user);
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// A fresh random token prefix.
pub fn new_prefix() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; PREFIX_LEN];
    getrandom::fill(&mut bytes)?;
    // 256 is not a multiple of 52: the first letters are slightly likelier,
    // which costs well under a bit of the prefix's ~91.
    Ok(bytes
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect())
}

/// The raft index a token was assigned at, if it is shaped like one.
pub fn index_of(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.is_empty() || index.contains('.') {
        return None;
    }
    index.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn a_token_lapses_after_the_ttl_unused() {
        let tokens = Tokens::new(TTL);
        let t0 = Instant::now();
        tokens.assign("abc.5".into(), "u");
        tokens.sweep(t0);
        assert_eq!(tokens.user("abc.5", t0 + TTL / 2), Some("u".into()));
        // The use pushed the deadline to t0 + 1.5 TTL.
        assert_eq!(tokens.user("abc.5", t0 + TTL), Some("u".into()));
        assert_eq!(tokens.user("abc.5", t0 + 3 * TTL), None);
        assert_eq!(tokens.user("abc.5", t0), None, "an expired token is gone");
    }

    #[test]
    fn sweeping_drops_lapsed_tokens_only() {
        let tokens = Tokens::new(TTL);
        let t0 = Instant::now();
        tokens.assign("old.1".into(), "u");
        tokens.sweep(t0);
        tokens.assign("new.2".into(), "u");
        tokens.sweep(t0 + TTL);
        assert_eq!(tokens.user("old.1", t0 + TTL), None);
        assert_eq!(tokens.user("new.2", t0 + TTL), Some("u".into()));
    }

    #[test]
    fn invalidating_a_user_forgets_only_its_tokens() {
        let tokens = Tokens::new(TTL);
        tokens.assign("a.1".into(), "u");
        tokens.assign("b.2".into(), "v");
        tokens.invalidate_user("u");
        let now = Instant::now();
        assert_eq!(tokens.user("a.1", now), None);
        assert_eq!(tokens.user("b.2", now), Some("v".into()));
        tokens.clear();
        assert_eq!(tokens.user("b.2", now), None);
    }

    #[test]
    fn prefixes_are_sixteen_letters_and_indexes_parse() {
        let p = new_prefix().unwrap();
        assert_eq!(p.len(), PREFIX_LEN);
        assert!(p.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_eq!(index_of(&format!("{p}.42")), Some(42));
        assert_eq!(index_of("nodot"), None);
        assert_eq!(index_of("a.b"), None);
        assert_eq!(index_of("a.1.2"), None);
    }
}
