//! The web dashboard: a single page embedded in the binary, so running the server needs no
//! Node.js and no build step. It is a client of the app API like any other.
//!
//! Every dashboard response forbids framing (clickjacking: another site showing the dashboard
//! in a frame and tricking the user into clicks) and carries a content security policy that
//! lets the page run only its own script and style and talk only to its own server.

use axum::http::{HeaderName, header};
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/app.js");
const STYLE: &str = include_str!("../../assets/app.css");

/// The policy: nothing from elsewhere, no inline script or style, no framing. `connect-src
/// 'self'` covers the app API and its WebSocket on the same host and port.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The headers every dashboard response carries, with its content type.
fn headers(content_type: &'static str) -> [(HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

/// `GET /`: the page.
pub async fn index() -> impl IntoResponse {
    (headers("text/html; charset=utf-8"), INDEX)
}

/// `GET /assets/app.js`.
pub async fn script() -> impl IntoResponse {
    (headers("text/javascript; charset=utf-8"), SCRIPT)
}

/// `GET /assets/app.css`.
pub async fn style() -> impl IntoResponse {
    (headers("text/css; charset=utf-8"), STYLE)
}
