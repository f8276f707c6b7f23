//! The app API through `blynk-client`, with the settings of this command line and its error
//! messages: what a refusal's status means and what to do about it.

use std::time::Duration;

use anyhow::{Result, anyhow};
use blynk_client::{Endpoint, Error, StatusCode};
use serde_json::Value;

pub use blynk_client::encode_component;

use crate::config::Settings;

/// A client of one server's app API.
pub struct Client {
    inner: blynk_client::Client,
}

impl Client {
    /// A client for the resolved settings.
    pub fn new(settings: &Settings) -> Result<Self> {
        let endpoint = Endpoint::parse(&settings.server)
            .map_err(explain)?
            .with_ca(settings.ca.clone());
        let inner = blynk_client::Client::new(endpoint, &settings.key)
            .map_err(explain)?
            .with_user_agent(concat!("blynk-cli/", env!("CARGO_PKG_VERSION")));
        Ok(Client { inner })
    }

    /// The client of `blynk-client`, for the WebSocket.
    pub fn inner(&self) -> &blynk_client::Client {
        &self.inner
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.inner.get(path).await.map_err(explain)
    }

    /// `GET path`, handing the body to `on_line` a line at a time as it arrives.
    pub async fn get_lines(&self, path: &str, on_line: impl FnMut(&str)) -> Result<()> {
        self.inner.get_lines(path, on_line).await.map_err(explain)
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.inner.post(path, body).await.map_err(explain)
    }

    /// `PUT path` with a JSON body; `extra` is added to the request timeout (a server-side wait).
    pub async fn put(&self, path: &str, body: &Value, extra: Duration) -> Result<Value> {
        self.inner.put(path, body, extra).await.map_err(explain)
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.inner.delete(path).await.map_err(explain)
    }
}

/// The app API path of a device (by id or name).
pub fn device_path(device: &str) -> Result<String> {
    blynk_client::device_path(device).map_err(explain)
}

/// The message for a failed call: a refusal says what its status means (and, for a refused
/// key, how to get a good one); a server out of reach says how to name the right one.
pub fn explain(error: Error) -> anyhow::Error {
    match error {
        Error::Refused {
            status, message, ..
        } => match status {
            StatusCode::UNAUTHORIZED => anyhow!(
                "the server refused the key (401 Unauthorized: {message}); \
                 `blynk-server key rotate` prints a new admin key, give it with --key or BLYNK_KEY"
            ),
            StatusCode::FORBIDDEN => anyhow!("not allowed with this key: {message}"),
            StatusCode::NOT_FOUND => anyhow!("not found: {message}"),
            StatusCode::BAD_REQUEST => anyhow!("refused: {message}"),
            StatusCode::CONFLICT => anyhow!("conflict: {message}"),
            StatusCode::TOO_MANY_REQUESTS => anyhow!("{message}"),
            other => anyhow!("the server answered {other}: {message}"),
        },
        connect @ Error::Connect { .. } => {
            anyhow!("{connect} (is blynk-server running? --server or BLYNK_SERVER sets the URL)")
        }
        Error::TlsDisabled { url } => {
            anyhow!("{url} needs TLS, but this blynk was built without the `tls` feature")
        }
        other => anyhow::Error::new(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blynk_client::StatusCode;

    fn refused(status: StatusCode, body: &'static [u8]) -> Error {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|json| json.pointer("/error/message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or_default().to_owned());
        Error::Refused {
            what: "GET /".to_owned(),
            status,
            message,
            missing_scope: None,
            body: body.into(),
        }
    }

    #[test]
    fn error_messages_carry_the_server_message() {
        let body = br#"{"error":{"message":"device `x`"}}"#;
        assert_eq!(
            explain(refused(StatusCode::NOT_FOUND, body)).to_string(),
            "not found: device `x`"
        );
        let bad = refused(StatusCode::BAD_REQUEST, br#"{"error":{"message":"bad"}}"#);
        assert_eq!(explain(bad).to_string(), "refused: bad");
        assert_eq!(
            explain(refused(StatusCode::BAD_GATEWAY, b"")).to_string(),
            "the server answered 502 Bad Gateway: Bad Gateway"
        );
    }
}
