//! The app API over HTTP/1.1 (hyper's client connection): one request per connection, the admin
//! key as a bearer token, JSON both ways, and the server's errors turned into clear messages.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::config::Settings;
use crate::net::{Endpoint, encode_component};

/// The largest response body read (the biggest answers are device lists).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long a request may take beyond any wait it asks the server for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one server's app API.
pub struct Client {
    endpoint: Endpoint,
    key: String,
}

impl Client {
    /// A client for the resolved settings.
    pub fn new(settings: &Settings) -> Result<Self> {
        Ok(Client {
            endpoint: Endpoint::parse(&settings.server, settings.ca.clone())?,
            key: settings.key.clone(),
        })
    }

    /// The server's address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The admin key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.request(Method::GET, path, None, Duration::ZERO).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request(Method::POST, path, Some(body), Duration::ZERO)
            .await
    }

    /// `PUT path` with a JSON body; `extra` is added to the request timeout (a server-side wait).
    pub async fn put(&self, path: &str, body: &Value, extra: Duration) -> Result<Value> {
        self.request(Method::PUT, path, Some(body), extra).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.request(Method::DELETE, path, None, Duration::ZERO)
            .await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: Duration,
    ) -> Result<Value> {
        let what = format!("{method} {path}");
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT + extra, exchange)
            .await
            .map_err(|_| {
                anyhow!(
                    "{what}: the server at {} did not answer within {} s",
                    self.endpoint.url,
                    (REQUEST_TIMEOUT + extra).as_secs()
                )
            })??;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("{what}: the server's answer is not JSON"));
        }
        Err(api_error(status, &bytes))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let stream = self.endpoint.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint.prefix))
            .header(HOST, &self.endpoint.authority)
            .header(AUTHORIZATION, format!("Bearer {}", self.key))
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("blynk-cli/", env!("CARGO_PKG_VERSION")));
        let body = match body {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .context("the admin key or URL holds characters HTTP cannot carry")?;
        let response = sender.send_request(request).await.map_err(|error| {
            anyhow!(
                "the server at {} closed the connection: {error}",
                self.endpoint.url
            )
        })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|error| anyhow!("reading the server's answer: {error}"))?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}

/// The error for a failed request: the server's message (`{"error": {"message": ..}}`) with
/// what the status means.
pub fn api_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|json| {
            json.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let short: String = text.chars().take(200).collect();
            if short.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                short
            }
        });
    match status {
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
    }
}

/// The app API path of a device (by id or name).
pub fn device_path(device: &str) -> Result<String> {
    if device.trim().is_empty() {
        bail!("the device name is empty");
    }
    Ok(format!("/api/devices/{}", encode_component(device)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_carry_the_server_message() {
        let body = br#"{"error":{"message":"device `x`"}}"#;
        assert_eq!(
            api_error(StatusCode::NOT_FOUND, body).to_string(),
            "not found: device `x`"
        );
        let refused = api_error(StatusCode::BAD_REQUEST, br#"{"error":{"message":"bad"}}"#);
        assert_eq!(refused.to_string(), "refused: bad");
        let odd = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(
            odd.to_string(),
            "the server answered 502 Bad Gateway: Bad Gateway"
        );
    }
}
