//! A small HTTP/1.1 client for the app API over one kept-alive connection: enough for JSON
//! requests with the admin key and `Content-Length` answers. A request that takes longer than
//! the timeout drops the connection with a reset (`SO_LINGER` 0), so the unsent rest of a
//! request can never reach the server later, after a newer write: an unanswered write is then
//! either stored before the newer one or not at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(20);

/// One app API connection.
pub struct Client {
    server: SocketAddr,
    key: String,
    source: Option<IpAddr>,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Client {
    pub fn new(server: SocketAddr, key: String, source: Option<IpAddr>) -> Client {
        Client {
            server,
            key,
            source,
            stream: None,
            buffer: Vec::new(),
        }
    }

    /// `method path` with an optional JSON body: the status and the body, or why it failed.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        match tokio::time::timeout(TIMEOUT, self.exchange(method, path, body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.reset();
                Err(error)
            }
            Err(_) => {
                self.reset();
                Err(format!("no answer within {} s", TIMEOUT.as_secs()))
            }
        }
    }

    /// Drops the connection with a reset.
    fn reset(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.set_zero_linger();
        }
        self.buffer.clear();
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(self.server).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        if self.stream.is_none() {
            self.stream = Some(self.connect().await.map_err(|e| e.to_string())?);
            self.buffer.clear();
        }
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.server,
            self.key,
            body.len()
        );
        let stream = self.stream.as_mut().ok_or("no connection")?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(answer) = parse(&mut self.buffer)? {
                return Ok(answer);
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("the server closed the connection".into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Takes one whole response off the front of `buffer`, if it holds one.
fn parse(buffer: &mut Vec<u8>) -> Result<Option<(u16, String)>, String> {
    let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("no status in `{head}`"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no Content-Length in `{head}`"))?;
    let total = end + 4 + length;
    if buffer.len() < total {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buffer[end + 4..total]).to_string();
    buffer.drain(..total);
    Ok(Some((status, body)))
}
