//! The other end of `kiln server`'s API: hosts post signed reports, and
//! `kiln report` reads with the bearer token.

use std::io::Read as _;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::store::Envelope;

/// How long one request may take: an unreachable server must not hold
/// a converge up for long.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Answers are JSON lists of at most a fleet's hosts or a host's runs.
const MAX_ANSWER: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: try again later.
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered no; sending the same again will not help.
    #[error("{url}: refused with HTTP {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    /// The server failed (HTTP 5xx): try again later.
    #[error("{url}: the server failed (HTTP {status}): {message}")]
    Failed {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: the answer is not what kiln expects: {reason}")]
    Answer { url: String, reason: String },
}

impl ClientError {
    /// Whether a later try may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Failed { .. } => true,
            ClientError::Refused { status, .. } => *status == 408 || *status == 429,
            ClientError::Answer { .. } => false,
        }
    }
}

/// `base` without a trailing slash, joined with `path`.
fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn agent(url: &str) -> Result<ureq::Agent, ClientError> {
    crate::agent::fetch::http_client(url.starts_with("https://"), TIMEOUT).map_err(|e| {
        ClientError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        }
    })
}

/// The status and body of a response, the body bounded.
fn answer(url: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<String, ClientError> {
    let status = resp.status().as_u16();
    let mut body = String::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_ANSWER)
        .read_to_string(&mut body)
        .map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            reason: format!("reading the answer: {e}"),
        })?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or(body);
    let url = url.to_string();
    Err(if status >= 500 {
        ClientError::Failed {
            url,
            status,
            message,
        }
    } else {
        ClientError::Refused {
            url,
            status,
            message,
        }
    })
}

/// Sends one signed report to the server at `base`.
pub fn post_report(base: &str, envelope: &Envelope) -> Result<(), ClientError> {
    let url = join(base, "/api/v1/reports");
    let body = serde_json::to_vec(envelope).unwrap_or_default();
    let resp = agent(&url)?
        .post(&url)
        .header("Content-Type", "application/json")
        .send(&body[..])
        .map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    answer(&url, resp).map(|_| ())
}

/// A reader of the store, with the server's token.
pub struct Reader {
    pub base: String,
    pub token: String,
}

impl Reader {
    /// GETs `path` with `query` and reads the JSON answer as `T`.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let url = join(&self.base, path);
        let mut rq = agent(&url)?
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in query {
            rq = rq.query(*k, v);
        }
        let resp = rq.call().map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let body = answer(&url, resp)?;
        serde_json::from_str(&body).map_err(|e| ClientError::Answer {
            url,
            reason: e.to_string(),
        })
    }
}
