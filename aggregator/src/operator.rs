//! The operator's client of a running aggregator's admin endpoints (bearer
//! admin token), shared by `restart`, `signers` and `nodes`.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the aggregator is and how to prove the operator's right to command it.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The aggregator's base URL.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// File holding the admin token.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        global = true
    )]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("aggregator unreachable: {0}")]
    Unreachable(String),
    #[error("refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
}

impl CliError {
    /// `sysexits.h`: 64 usage, 69 unavailable; 1 for a refusal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 64,
            Self::Unreachable(_) => 69,
            Self::Refused { .. } => 1,
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(target: &Target) -> Result<Self, CliError> {
        let path = target.admin_token_file.as_ref().ok_or_else(|| {
            CliError::Usage(
                "--admin-token-file (or GETH_AGGREGATOR_ADMIN_TOKEN_FILE) is required".into(),
            )
        })?;
        let token = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self {
            http,
            base: target.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends one request; a non-2xx answer is a refusal with the server's
    /// `error` text, a 2xx one must parse as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CliError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CliError::Refused {
                status: status.as_u16(),
                reason,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::Refused {
            status: status.as_u16(),
            reason: format!("unreadable answer: {e}"),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CliError> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

/// `HH:MM:SS` (UTC) of a Unix-ms time, for progress lines.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock((25 * 3600 + 61) * 1000 + 5), "01:01:01");
    }
}
