//! Minimal WebSocket and HTTP/1.1 clients for the app API (the server crate has no client
//! libraries).

use super::*;

/// A WebSocket client: masked text frames out, unmasked frames in.
pub(crate) struct WsReader {
    pub(crate) read: OwnedReadHalf,
    pub(crate) buffer: Vec<u8>,
    pub(crate) start: usize,
}

pub(crate) async fn ws_connect(
    http: SocketAddr,
    admin_key: &str,
) -> Result<(WsReader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(http).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let request = format!(
        "GET /api/ws?key={admin_key} HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    write.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if read.read_buf(&mut buffer).await? == 0 {
            bail!("WebSocket upgrade: connection closed");
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        bail!(
            "WebSocket upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok((
        WsReader {
            read,
            buffer,
            start: head_end,
        },
        write,
    ))
}

/// Appends a masked text frame.
pub(crate) fn ws_text(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x3c, 0x96, 0x0f];
    out.extend_from_slice(&mask);
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4]),
    );
}

/// One received WebSocket frame.
pub(crate) enum WsFrame<'a> {
    Text(&'a [u8]),
    Close,
    Other,
}

impl WsReader {
    /// Calls `each` for every whole frame buffered; `false` from it stops early.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(WsFrame<'_>) -> bool) -> Result<()> {
        loop {
            let pending = &self.buffer[self.start..];
            let Some((opcode, payload, consumed)) = ws_parse(pending)? else {
                return Ok(());
            };
            let frame = match opcode {
                1 => WsFrame::Text(payload),
                8 => WsFrame::Close,
                _ => WsFrame::Other,
            };
            let more = each(frame);
            self.start += consumed;
            if !more {
                return Ok(());
            }
        }
    }

    pub(crate) async fn fill(&mut self) -> Result<usize> {
        read_more(&mut self.read, &mut self.buffer, &mut self.start, 64 * 1024).await
    }
}

/// (opcode, payload, frame length) of the first whole frame.
pub(crate) fn ws_parse(buffer: &[u8]) -> Result<Option<(u8, &[u8], usize)>> {
    let (Some(&first), Some(&second)) = (buffer.first(), buffer.get(1)) else {
        return Ok(None);
    };
    let opcode = first & 0x0f;
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7f {
        126 => match buffer.get(2..4) {
            Some(bytes) => (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match buffer.get(2..10) {
            Some(bytes) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                (usize::try_from(u64::from_be_bytes(word))?, 10)
            }
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    // A snapshot of 19,000 devices is about 40 MiB.
    if len > 256 * 1024 * 1024 {
        bail!("WebSocket frame of {len} bytes");
    }
    if masked {
        at += 4; // Servers do not mask; tolerate it without unmasking (the counts do not read it).
    }
    match buffer.get(at..at + len) {
        Some(payload) => Ok(Some((opcode, payload, at + len))),
        None => Ok(None),
    }
}

/// The values an app WebSocket message accounts for, whether it is one event or a batch: each
/// value event, plus the older values of its pin it replaced (`"coalesced":N`).
pub(crate) fn count_values(text: &[u8]) -> u64 {
    let (value, coalesced) = (b"\"type\":\"value\"", b"\"coalesced\":");
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = find(rest, value) {
        count += 1;
        rest = &rest[at + value.len()..];
    }
    let mut rest = text;
    while let Some(at) = find(rest, coalesced) {
        rest = &rest[at + coalesced.len()..];
        let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        count += std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|number| number.parse::<u64>().ok())
            .unwrap_or(0);
    }
    count
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A keep-alive HTTP/1.1 client for the app API.
pub(crate) struct HttpClient {
    pub(crate) stream: TcpStream,
    pub(crate) buffer: Vec<u8>,
    pub(crate) host: SocketAddr,
    pub(crate) auth: String,
}

impl HttpClient {
    pub(crate) async fn connect(host: SocketAddr, admin_key: &str) -> Result<Self> {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream,
            buffer: Vec::with_capacity(4096),
            host,
            auth: format!("Bearer {admin_key}"),
        })
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("HTTP: connection closed");
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("HTTP status line")?;
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if head.contains("transfer-encoding: chunked") {
            bail!("HTTP: chunked responses are not supported by this client");
        }
        while self.buffer.len() < head_end + length {
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("HTTP: connection closed in a body");
            }
        }
        let body = String::from_utf8_lossy(&self.buffer[head_end..head_end + length]).into_owned();
        self.buffer.drain(..head_end + length);
        Ok((status, body))
    }
}

/// Waits for `tasks` with a deadline; each must succeed.
pub(crate) async fn join_all_ok<T: 'static>(
    tasks: &mut JoinSet<Result<T>>,
    what: &str,
) -> Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => results.push(done.map_err(|error| anyhow!("{what}: {error}"))??),
            Ok(None) => break,
            Err(_) => bail!("{what}: not done within {SETUP_TIMEOUT:?}"),
        }
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
