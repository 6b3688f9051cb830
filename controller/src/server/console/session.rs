//! Console sign-in: one-time codes handed out by `gantry console login` (an admin call,
//! so authenticated by the admin's certificate) become browser sessions bound to that
//! admin's name and role.
//!
//! Codes and sessions live in memory only: a controller restart signs every browser out,
//! and a code is never written anywhere. Both are kept by the SHA-256 of their secret, so
//! a lookup compares digests, not secrets. A used code stays known (as used) until it
//! would have expired, so replaying a link is told apart from a code never issued.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gantry_shared::protocol::admin::Role;
use sha2::{Digest, Sha256};

/// How long a sign-in code may wait to be used.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Who a session (or a code) acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub admin: String,
    pub role: Role,
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub grant: Grant,
    /// The token every form of this session carries (`csrf`), compared in constant time.
    pub csrf: String,
    pub expires_at_ms: u64,
    /// What the last action came to, shown once on the next page (good, text).
    pub flash: Option<(bool, String)>,
}

/// Why a sign-in code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodeRefusal {
    #[error(
        "this sign-in code was never issued by this controller (mistyped, forged, or issued before it restarted)"
    )]
    Unknown,
    #[error(
        "this sign-in code was already used: each code signs in once; get a new one with `gantry console login`"
    )]
    Replayed,
    #[error(
        "this sign-in code expired: codes are valid for 5 minutes; get a new one with `gantry console login`"
    )]
    Expired,
}

/// Why a session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionRefusal {
    #[error(
        "the session cookie is not one this controller issued (forged, signed out, or the controller restarted)"
    )]
    Unknown,
    #[error("the session expired")]
    Expired,
}

#[derive(Debug)]
struct Code {
    grant: Grant,
    expires_at_ms: u64,
    used: bool,
}

#[derive(Debug, Default)]
struct Inner {
    codes: HashMap<[u8; 32], Code>,
    sessions: HashMap<[u8; 32], Session>,
}

/// Every code and session of the console.
#[derive(Debug)]
pub(crate) struct Sessions {
    lifetime: Duration,
    inner: Mutex<Inner>,
}

/// 32 random bytes as hex: a code, a session token or a CSRF token.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// Sessions that last `lifetime` from sign-in.
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new code for `grant`, valid once until the returned time.
    pub(crate) fn issue_code(&self, grant: Grant, now_ms: u64) -> (String, u64) {
        let code = secret();
        let expires_at_ms = now_ms + duration_ms(CODE_LIFETIME);
        let mut inner = self.inner.lock().expect("console sessions");
        inner.purge(now_ms);
        inner.codes.insert(
            digest(&code),
            Code {
                grant,
                expires_at_ms,
                used: false,
            },
        );
        (code, expires_at_ms)
    }

    /// Uses `code`: a new session (its token, and the session) when the code is good.
    pub(crate) fn redeem(
        &self,
        code: &str,
        now_ms: u64,
    ) -> Result<(String, Session), (CodeRefusal, Option<Grant>)> {
        let mut inner = self.inner.lock().expect("console sessions");
        let Some(entry) = inner.codes.get_mut(&digest(code.trim())) else {
            return Err((CodeRefusal::Unknown, None));
        };
        if entry.used {
            return Err((CodeRefusal::Replayed, Some(entry.grant.clone())));
        }
        if now_ms >= entry.expires_at_ms {
            return Err((CodeRefusal::Expired, Some(entry.grant.clone())));
        }
        entry.used = true;
        let session = Session {
            grant: entry.grant.clone(),
            csrf: secret(),
            expires_at_ms: now_ms + duration_ms(self.lifetime),
            flash: None,
        };
        let token = secret();
        inner.sessions.insert(digest(&token), session.clone());
        Ok((token, session))
    }

    /// The session of cookie value `token`.
    pub(crate) fn session(&self, token: &str, now_ms: u64) -> Result<Session, SessionRefusal> {
        let mut inner = self.inner.lock().expect("console sessions");
        let key = digest(token);
        match inner.sessions.get(&key) {
            None => Err(SessionRefusal::Unknown),
            Some(s) if now_ms >= s.expires_at_ms => {
                inner.sessions.remove(&key);
                Err(SessionRefusal::Expired)
            }
            Some(s) => Ok(s.clone()),
        }
    }

    /// Keeps what an action came to, for the session's next page.
    pub(crate) fn set_flash(&self, token: &str, good: bool, text: String) {
        if let Some(s) = self
            .inner
            .lock()
            .expect("console sessions")
            .sessions
            .get_mut(&digest(token))
        {
            s.flash = Some((good, text));
        }
    }

    /// What the last action came to, once.
    pub(crate) fn take_flash(&self, token: &str) -> Option<(bool, String)> {
        self.inner
            .lock()
            .expect("console sessions")
            .sessions
            .get_mut(&digest(token))
            .and_then(|s| s.flash.take())
    }

    /// Ends the session of `token` (sign-out); whether there was one.
    pub(crate) fn end(&self, token: &str) -> bool {
        self.inner
            .lock()
            .expect("console sessions")
            .sessions
            .remove(&digest(token))
            .is_some()
    }
}

impl Inner {
    /// Forgets codes and sessions past their expiry.
    fn purge(&mut self, now_ms: u64) {
        self.codes.retain(|_, c| c.expires_at_ms > now_ms);
        self.sessions.retain(|_, s| s.expires_at_ms > now_ms);
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Grant {
        Grant {
            admin: "alice".to_owned(),
            role: Role::Operator,
        }
    }

    #[test]
    fn a_code_signs_in_once_and_its_replay_is_told_apart() {
        let sessions = Sessions::new(Duration::from_secs(3600));
        let (code, expires) = sessions.issue_code(alice(), 1_000);
        assert_eq!(expires, 1_000 + 300_000);
        let (token, session) = sessions.redeem(&code, 2_000).expect("first use");
        assert_eq!(session.grant, alice());
        assert_eq!(session.expires_at_ms, 2_000 + 3_600_000);
        assert_eq!(
            sessions.redeem(&code, 3_000).unwrap_err(),
            (CodeRefusal::Replayed, Some(alice()))
        );
        assert_eq!(sessions.session(&token, 4_000).unwrap().grant, alice());
    }

    #[test]
    fn a_forged_code_or_cookie_is_refused() {
        let sessions = Sessions::new(Duration::from_secs(3600));
        let (code, _) = sessions.issue_code(alice(), 0);
        let mut forged = code.clone();
        forged.replace_range(0..1, if code.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            sessions.redeem(&forged, 1).unwrap_err().0,
            CodeRefusal::Unknown
        );
        let (token, _) = sessions.redeem(&code, 1).unwrap();
        assert_eq!(
            sessions.session(&format!("{token}0"), 2).unwrap_err(),
            SessionRefusal::Unknown
        );
        assert_eq!(
            sessions.session("", 2).unwrap_err(),
            SessionRefusal::Unknown
        );
    }

    #[test]
    fn codes_and_sessions_expire() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let (code, expires) = sessions.issue_code(alice(), 0);
        assert_eq!(
            sessions.redeem(&code, expires).unwrap_err().0,
            CodeRefusal::Expired
        );
        let (code, _) = sessions.issue_code(alice(), 0);
        let (token, _) = sessions.redeem(&code, 0).unwrap();
        assert!(sessions.session(&token, 9_999).is_ok());
        assert_eq!(
            sessions.session(&token, 10_000).unwrap_err(),
            SessionRefusal::Expired
        );
        // Once told, it is gone.
        assert_eq!(
            sessions.session(&token, 10_001).unwrap_err(),
            SessionRefusal::Unknown
        );
    }

    #[test]
    fn sign_out_ends_the_session() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let (code, _) = sessions.issue_code(alice(), 0);
        let (token, _) = sessions.redeem(&code, 0).unwrap();
        sessions.set_flash(&token, true, "paused".to_owned());
        assert_eq!(
            sessions.take_flash(&token),
            Some((true, "paused".to_owned()))
        );
        assert_eq!(sessions.take_flash(&token), None);
        assert!(sessions.end(&token));
        assert!(!sessions.end(&token));
        assert_eq!(
            sessions.session(&token, 1).unwrap_err(),
            SessionRefusal::Unknown
        );
    }

    #[test]
    fn tokens_compare_by_content() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
