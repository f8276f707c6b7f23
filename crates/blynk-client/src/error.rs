//! What can go wrong talking to the server: the address, the connection, the time, or the
//! server refusing the call (with its status, message and body).

use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::Value;

/// An error of the app API client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL cannot be used.
    #[error("server URL `{url}` {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request cannot be written (a key or path HTTP cannot carry, an empty name).
    #[error("{0}")]
    InvalidRequest(String),
    /// No connection to the server.
    #[error("cannot reach the server at {url}: {source}")]
    Connect {
        /// The server URL.
        url: String,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took too long.
    #[error("cannot reach the server at {url}: no answer within {seconds} s")]
    ConnectTimeout {
        /// The server URL.
        url: String,
        /// The limit.
        seconds: u64,
    },
    /// TLS could not be set up (a CA file, a server name).
    #[error("{0}")]
    Tls(String),
    /// The TLS handshake failed (an untrusted certificate, most often).
    #[error("TLS handshake with {url} failed: {source}")]
    TlsHandshake {
        /// The server URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The URL needs TLS and the crate was built without its `tls` feature.
    #[error("{url} needs TLS, but this client was built without the `tls` feature")]
    TlsDisabled {
        /// The server URL.
        url: String,
    },
    /// The server did not answer in time.
    #[error("{what}: the server at {url} did not answer within {seconds} s")]
    Timeout {
        /// The call, e.g. `GET /api/devices`.
        what: String,
        /// The server URL.
        url: String,
        /// The limit.
        seconds: u64,
    },
    /// The HTTP exchange broke (the connection closed, a malformed answer, a body cut short).
    #[error("{what}: the connection to {url} broke: {source}")]
    Http {
        /// The call.
        what: String,
        /// The server URL.
        url: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The server refused the call: any status but 2xx (or a refused WebSocket upgrade).
    #[error("{what}: the server answered {status}: {message}")]
    Refused {
        /// The call.
        what: String,
        /// The HTTP status.
        status: StatusCode,
        /// The server's message (`{"error": {"message": ..}}`), else the start of the body,
        /// else the status's reason.
        message: String,
        /// The scope the key lacks, on a 403 (`missing_scope`).
        missing_scope: Option<String>,
        /// The whole body of the answer.
        body: Bytes,
    },
    /// An answer that should be JSON is not.
    #[error("{what}: the server's answer is not JSON: {source}")]
    Json {
        /// The call.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An answer larger than the client reads.
    #[error("{what}: the server's answer is over {limit} bytes")]
    TooLarge {
        /// The call.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// The WebSocket broke (or its handshake failed other than by a refusal).
    #[error("the WebSocket to {url} broke: {source}")]
    WebSocket {
        /// The server URL.
        url: String,
        /// Why.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The server closed the WebSocket (1006 when it closed without a close frame).
    #[error("the server closed the connection (code {code}: {reason})")]
    Closed {
        /// The close code (1008: a slow or misbehaving client, see the API document).
        code: u16,
        /// The reason the server gave.
        reason: String,
    },
}

impl Error {
    /// A refusal from the body and status of an answer that is not a success.
    pub(crate) fn refused(what: String, status: StatusCode, body: Bytes) -> Self {
        let json = serde_json::from_slice::<Value>(&body).ok();
        let field = |pointer: &str| {
            json.as_ref()
                .and_then(|json| json.pointer(pointer))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let message = field("/error/message").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let short: String = text.trim().chars().take(200).collect();
            if short.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                short
            }
        });
        Error::Refused {
            what,
            status,
            message,
            missing_scope: field("/error/missing_scope"),
            body,
        }
    }

    /// The HTTP status of a refused call.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_servers_message_status_and_scope() {
        let body = Bytes::from_static(
            br#"{"error":{"message":"missing scope `control`","missing_scope":"control"}}"#,
        );
        let error = Error::refused("PUT /x".into(), StatusCode::FORBIDDEN, body.clone());
        assert_eq!(error.status(), Some(StatusCode::FORBIDDEN));
        let Error::Refused {
            message,
            missing_scope,
            body: kept,
            ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(message, "missing scope `control`");
        assert_eq!(missing_scope.as_deref(), Some("control"));
        assert_eq!(kept, &body);
        let plain = Error::refused("GET /".into(), StatusCode::BAD_GATEWAY, Bytes::new());
        assert_eq!(
            plain.to_string(),
            "GET /: the server answered 502 Bad Gateway: Bad Gateway"
        );
    }
}
