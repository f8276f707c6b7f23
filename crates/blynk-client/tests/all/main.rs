//! The client against a real server on 127.0.0.1 (blynk-server's `test-util` support): REST
//! calls, refusals, the WebSocket.

mod rest;
mod socket;

use blynk_client::{Client, Endpoint};
use blynk_server::test_util::{ADMIN_KEY, TestServer};

/// A client of `server` with `key`.
pub fn client_with(server: &TestServer, key: &str) -> Client {
    let url = format!("http://{}", server.server().http_address);
    Client::new(Endpoint::parse(&url).unwrap(), key).unwrap()
}

/// A client of `server` with the admin key.
pub fn client(server: &TestServer) -> Client {
    client_with(server, ADMIN_KEY)
}
