//! Networking: listeners with a connection cap, TLS, and the sniffing that tells classic Blynk
//! hardware from HTTP on the shared port.

pub mod address;
pub mod file_limit;
pub mod http_conn;
pub mod io;
pub mod listener;
pub mod tls;
