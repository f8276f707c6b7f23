//! A classic Blynk test client speaking raw byte frames, as the Blynk libraries do.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: u8,
    pub id: u16,
    /// The status for responses (command 0), else the body length.
    pub length: u16,
    pub body: Vec<u8>,
}

impl Frame {
    /// The body's `\0`-separated parts.
    pub fn parts(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .split('\0')
            .map(str::to_owned)
            .collect()
    }
}

/// Builds a frame: header and body.
pub fn frame(command: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![command];
    bytes.extend(id.to_be_bytes());
    bytes.extend((body.len() as u16).to_be_bytes());
    bytes.extend(body);
    bytes
}

/// A body from parts joined by `\0`.
pub fn body(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

/// A status answer to request `id` (command 0, the code in the length field, no body).
pub fn status(id: u16, code: u16) -> Frame {
    Frame {
        command: 0,
        id,
        length: code,
        body: vec![],
    }
}

/// The OK answer (200) to request `id`.
pub fn ok(id: u16) -> Frame {
    status(id, 200)
}

pub struct ClassicClient {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    next_id: u16,
}

impl ClassicClient {
    pub async fn connect(address: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        ClassicClient {
            stream,
            buffer: Vec::new(),
            next_id: 1,
        }
    }

    /// Connects, logs in with HW_LOGIN (29), sends the info frame; asserts both get 200.
    pub async fn login(address: std::net::SocketAddr, token: &str) -> Self {
        let mut client = Self::connect(address).await;
        let id = client.send(29, token.as_bytes()).await;
        assert_eq!(client.recv().await, Some(ok(id)), "login");
        let info = body(&[
            "ver", "1.4.0", "h-beat", "10", "buff-in", "1024", "dev", "test",
        ]);
        let id = client.send(17, &info).await;
        assert_eq!(client.recv().await, Some(ok(id)), "info");
        client
    }

    pub fn next_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Sends a frame; returns its id.
    pub async fn send(&mut self, command: u8, body: &[u8]) -> u16 {
        let id = self.next_id();
        self.stream
            .write_all(&frame(command, id, body))
            .await
            .unwrap();
        id
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// `virtualWrite(pin, parts...)`.
    pub async fn virtual_write(&mut self, pin: u8, parts: &[&str]) -> u16 {
        let pin = pin.to_string();
        let mut all = vec!["vw", pin.as_str()];
        all.extend_from_slice(parts);
        self.send(20, &body(&all)).await
    }

    /// `syncAll()` (empty body) or `syncVirtual(pins)`.
    pub async fn sync(&mut self, pins: Option<&[u8]>) -> u16 {
        match pins {
            None => self.send(16, &[]).await,
            Some(pins) => {
                let names: Vec<String> = pins.iter().map(u8::to_string).collect();
                let mut all = vec!["vr"];
                all.extend(names.iter().map(String::as_str));
                self.send(16, &body(&all)).await
            }
        }
    }

    pub async fn recv(&mut self) -> Option<Frame> {
        self.recv_within(PATIENCE)
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next frame within `wait`: `Err(())` on timeout, `Ok(None)` on close.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<Frame>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buffer.len() >= 5 {
                let command = self.buffer[0];
                let id = u16::from_be_bytes([self.buffer[1], self.buffer[2]]);
                let length = u16::from_be_bytes([self.buffer[3], self.buffer[4]]);
                let body_len = if command == 0 { 0 } else { usize::from(length) };
                if self.buffer.len() >= 5 + body_len {
                    let body = self.buffer[5..5 + body_len].to_vec();
                    self.buffer.drain(..5 + body_len);
                    return Ok(Some(Frame {
                        command,
                        id,
                        length,
                        body,
                    }));
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ())?
            {
                Ok(0) | Err(_) => return Ok(None),
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
            }
        }
    }

    /// Sync replies with `id` until `wait` passes without one (classic has no end marker).
    pub async fn collect_sync(&mut self, id: u16, wait: Duration) -> Vec<Vec<String>> {
        let mut values = Vec::new();
        while let Ok(Some(frame)) = self.recv_within(wait).await {
            if frame.command == 20 && frame.id == id {
                values.push(frame.parts());
            }
        }
        values
    }

    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(frame)) = self.recv_within(wait).await {
            panic!("expected nothing, got {frame:?}");
        }
    }

    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv_within(PATIENCE).await {
                Ok(None) => return,
                Ok(Some(_)) => continue,
                Err(()) => panic!("connection was not closed"),
            }
        }
    }
}
