//! `[http.auth]`: the credentials every route but `/healthz` asks for, so that pictures of
//! people and the daemon's state reach only those who hold them. A bearer token suits
//! scrapers and scripts; HTTP Basic suits browsers (they ask once and send it after).
//! Credentials come from a file, read when the server starts and read again every
//! [`LOOK_EVERY`] (rotating them needs no restart; the file is tiny, and its time stamps
//! cannot be trusted to tell a change); a file that cannot be read locks the routes rather
//! than opening them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::HttpAuth;

/// Why the credentials file is of no use.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds nothing usable.
    #[error("{path} {reason}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How often the credentials file is read again.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The gate in force, shared by every request; [`watched`] replaces it when its file's
/// content changes.
pub type Shared = Arc<RwLock<Gate>>;

/// Who may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Everyone (no `[http.auth]`).
    Open,
    /// Holders of this bearer token.
    Token(String),
    /// Holders of these Basic credentials (`user:password`).
    Basic(String),
    /// Nobody: the credentials file was unreadable.
    Locked,
}

impl Gate {
    /// The gate `auth` asks for, its file read on a blocking thread; logs and locks when
    /// the file is of no use.
    pub async fn load(auth: Option<HttpAuth>) -> Gate {
        let Some(auth) = auth else { return Gate::Open };
        let (gate, problem) = Gate::fetch(auth).await;
        match problem {
            None => tracing::info!("HTTP credentials read (read again every {} s)", LOOK_EVERY.as_secs()),
            Some(e) => tracing::error!(error = %e, "HTTP credentials unusable: every route but /healthz answers 401"),
        }
        gate
    }

    /// The gate `auth` asks for, its file read on a blocking thread, and why it is locked
    /// when the file is of no use (not logged: the watcher logs changes only).
    async fn fetch(auth: HttpAuth) -> (Gate, Option<String>) {
        match tokio::task::spawn_blocking(move || Gate::read(&auth)).await {
            Ok(Ok(gate)) => (gate, None),
            Ok(Err(e)) => (Gate::Locked, Some(e.to_string())),
            Err(e) => (Gate::Locked, Some(format!("cannot read the HTTP credentials: {e}"))),
        }
    }

    /// Reads the credentials file `auth` names.
    pub fn read(auth: &HttpAuth) -> Result<Gate, AuthError> {
        let file = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|source| AuthError::Read { path: path.to_path_buf(), source })
        };
        match auth {
            HttpAuth::Token(path) => match file(path)? {
                t if t.is_empty() || t.contains(char::is_whitespace) => {
                    Err(AuthError::Content { path: path.clone(), reason: "must hold one token, without spaces" })
                }
                t => Ok(Gate::Token(t)),
            },
            HttpAuth::Basic(path) => match file(path)? {
                b if b.lines().count() != 1
                    || !b.split_once(':').is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()) =>
                {
                    Err(AuthError::Content { path: path.clone(), reason: "must hold one line user:password" })
                }
                b => Ok(Gate::Basic(b)),
            },
        }
    }

    /// Whether a request with this `Authorization` header may pass.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let given = authorization.and_then(|a| std::str::from_utf8(a).ok()).unwrap_or("");
        match self {
            Gate::Open => true,
            Gate::Locked => false,
            Gate::Token(token) => scheme(given, "Bearer").is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes())),
            Gate::Basic(pair) => scheme(given, "Basic")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                .is_some_and(|decoded| same(&decoded, pair.as_bytes())),
        }
    }

    /// The challenge a 401 carries.
    fn challenge(&self) -> &'static str {
        match self {
            Gate::Token(_) => "Bearer realm=\"clefd\"",
            _ => "Basic realm=\"clefd\", charset=\"UTF-8\"",
        }
    }
}

/// The file `auth` names.
fn file(auth: &HttpAuth) -> &Path {
    match auth {
        HttpAuth::Token(path) | HttpAuth::Basic(path) => path,
    }
}

/// The gate `auth` asks for, shared, and a task that reads the file again every
/// [`LOOK_EVERY`] (until the task is dropped) and puts in the gate it gives: a rotated
/// token or password takes effect within a few seconds whatever the file's time stamps
/// say, a file gone or spoilt locks the routes, and a file readable again (its content
/// or only its permissions put right) opens them.
pub async fn watched(auth: Option<HttpAuth>) -> (Shared, Option<impl std::future::Future<Output = ()>>) {
    let Some(auth) = auth else { return (Arc::new(RwLock::new(Gate::Open)), None) };
    let gate = Arc::new(RwLock::new(Gate::load(Some(auth.clone())).await));
    let shared = gate.clone();
    let watch = async move {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let (fresh, problem) = Gate::fetch(auth.clone()).await;
            let mut held = gate.write().unwrap_or_else(|p| p.into_inner());
            if *held == fresh {
                continue;
            }
            let file = file(&auth).display().to_string();
            match problem {
                None => tracing::info!(file, "the HTTP credentials changed: the new ones are in force"),
                Some(e) => {
                    tracing::error!(error = %e, "HTTP credentials unusable: every route but /healthz answers 401")
                }
            }
            *held = fresh;
        }
    };
    (shared, Some(watch))
}

/// The rest of `header` after its scheme (compared without regard to case).
fn scheme<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(name).then_some(rest)
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: passes requests the gate admits, answers the others 401 with a challenge.
pub async fn check(State(gate): State<Shared>, request: Request, next: Next) -> Response {
    let challenge = {
        let gate = gate.read().unwrap_or_else(|p| p.into_inner());
        if gate.admits(request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
            None
        } else {
            Some(gate.challenge())
        }
    };
    let Some(challenge) = challenge else { return next.run(request).await };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge), (header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "credentials required (see http.auth in the config)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_passes_only_as_a_bearer_and_only_whole() {
        let gate = Gate::Token("s3cret".into());
        assert!(gate.admits(Some(b"Bearer s3cret")));
        assert!(gate.admits(Some(b"bearer s3cret")), "the scheme is not case-sensitive");
        for wrong in [&b"Bearer s3cre"[..], b"Bearer s3cretX", b"Basic s3cret", b"s3cret", b""] {
            assert!(!gate.admits(Some(wrong)), "{}", String::from_utf8_lossy(wrong));
        }
        assert!(!gate.admits(None));
    }

    #[test]
    fn basic_credentials_pass_encoded_and_nothing_else_does() {
        let gate = Gate::Basic("ada:pa:ss".into());
        let encode = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(gate.admits(Some(encode("ada:pa:ss").as_bytes())));
        for wrong in ["ada:pa:sx", "ada:pa", "bob:pa:ss", ""] {
            assert!(!gate.admits(Some(encode(wrong).as_bytes())), "{wrong}");
        }
        assert!(!gate.admits(Some(b"Basic !!notbase64")));
        assert!(!Gate::Locked.admits(Some(encode("ada:pa:ss").as_bytes())));
        assert!(Gate::Open.admits(None));
    }

    #[test]
    fn files_that_hold_no_usable_credentials_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        assert_eq!(Gate::read(&HttpAuth::Token(write("t", "abc\n"))).unwrap(), Gate::Token("abc".into()));
        assert_eq!(Gate::read(&HttpAuth::Basic(write("b", "ada:pw\n"))).unwrap(), Gate::Basic("ada:pw".into()));
        for (name, text) in [("e", "\n"), ("s", "a b")] {
            assert!(matches!(Gate::read(&HttpAuth::Token(write(name, text))), Err(AuthError::Content { .. })));
        }
        for (name, text) in [("n", "adapw"), ("u", ":pw"), ("p", "ada:"), ("l", "a:b\nc:d")] {
            assert!(
                matches!(Gate::read(&HttpAuth::Basic(write(name, text))), Err(AuthError::Content { .. })),
                "{text}"
            );
        }
        let missing = HttpAuth::Token(dir.path().join("nope"));
        assert!(matches!(Gate::read(&missing), Err(AuthError::Read { .. })));
    }
}
