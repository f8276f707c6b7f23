//! The HTTP device API's query parsing, through the real routes in-process: the first byte
//! picks a route, the rest is its query string, in which `TOKEN` stands for the demo device's
//! token (so that inputs get past authentication). A handler's panic is a crash.

#![no_main]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use blynk_fuzz::{Harness, PEER};
use blynk_server::http::PeerAddr;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The device API's GET routes (the classic forms with a token in the path use `TOKEN` too).
const ROUTES: [&str; 8] = [
    "/external/api/update",
    "/external/api/batch/update",
    "/external/api/get",
    "/external/api/isHardwareConnected",
    "/external/api/update/property",
    "/TOKEN/update/V1",
    "/TOKEN/get/V1",
    "/TOKEN/isHardwareConnected",
];

fuzz_target!(|data: &[u8]| {
    let Some((&route, query)) = data.split_first() else {
        return;
    };
    let harness = Harness::get();
    let path = ROUTES[usize::from(route) % ROUTES.len()].replace("TOKEN", &harness.token);
    let query = escape(query).replace("TOKEN", &harness.token);
    let Ok(request) = Request::get(format!("{path}?{query}"))
        .extension(ConnectInfo(PeerAddr(PEER)))
        .body(Body::empty())
    else {
        return;
    };
    let response = harness
        .runtime
        .block_on(harness.router.clone().oneshot(request))
        .expect("the router is infallible");
    assert_ne!(
        response.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "a query is the client's error, never the server's"
    );
});

/// Percent-encodes the bytes a URI's query may not hold as they are, so that every input
/// reaches the handlers (what a client's library would send for the same bytes).
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
