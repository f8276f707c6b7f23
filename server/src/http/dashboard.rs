//! The web dashboard: a single page embedded in the binary, so running the server needs no
//! Node.js and no build step. It is a client of the app API like any other.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const INDEX: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/app.js");
const STYLE: &str = include_str!("../../assets/app.css");
const HISTORY_SCRIPT: &str = include_str!("../../assets/history.js");
/// uPlot, the chart library, as its package ships it (MIT, `assets/vendor/uplot/LICENSE`).
const UPLOT_SCRIPT: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_STYLE: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");

/// `GET /`: the page.
pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// A script of the page.
fn javascript(text: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
}

/// A style sheet of the page.
fn css(text: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
}

/// `GET /assets/app.js`.
pub async fn script() -> impl IntoResponse {
    javascript(SCRIPT)
}

/// `GET /assets/history.js`: the history charts and downloads.
pub async fn history_script() -> impl IntoResponse {
    javascript(HISTORY_SCRIPT)
}

/// `GET /assets/vendor/uPlot.iife.min.js`.
pub async fn uplot_script() -> impl IntoResponse {
    javascript(UPLOT_SCRIPT)
}

/// `GET /assets/app.css`.
pub async fn style() -> impl IntoResponse {
    css(STYLE)
}

/// `GET /assets/vendor/uPlot.min.css`.
pub async fn uplot_style() -> impl IntoResponse {
    css(UPLOT_STYLE)
}
