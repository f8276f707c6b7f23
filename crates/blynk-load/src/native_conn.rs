//! The native protocol client: frames from `blynk-proto`, pipelined writes, what comes back.

use super::*;

/// What the load generator looks at in a server message.
#[derive(Debug)]
pub(crate) enum Incoming {
    LoginAccepted,
    LoginRejected(String),
    Ack,
    Update(Option<i64>),
    Synced,
    SyncComplete(u16),
    Error(String),
    Other,
}

pub(crate) struct NativeConn {
    pub(crate) stream: TcpStream,
    pub(crate) buffer: Vec<u8>,
    pub(crate) start: usize,
}

/// Appends one encoded frame to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, message: &Message<'_>) -> Result<()> {
    let at = out.len();
    out.resize(at + HEADER_LEN + MAX_FRAME, 0);
    let written = native::encode(message, &mut out[at..])
        .map_err(|error| anyhow!("encoding: {error}"))?
        .len();
    out.truncate(at + written);
    Ok(())
}

impl NativeConn {
    /// Logs in `devices` (no sync, `heartbeat` seconds), `parallel` at a time.
    pub(crate) async fn login_many(
        address: SocketAddr,
        devices: &[DeviceRef],
        parallel: usize,
        heartbeat: u16,
    ) -> Result<Vec<NativeConn>> {
        login_all(
            devices,
            parallel,
            "native logins",
            move |token| async move { NativeConn::login(address, &token, false, heartbeat).await },
        )
        .await
    }

    pub(crate) async fn connect(address: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(NativeConn {
            stream,
            buffer: Vec::with_capacity(1024),
            start: 0,
        })
    }

    /// Connects and logs in; with `sync` the server's automatic sync follows.
    pub(crate) async fn login(
        address: SocketAddr,
        token: &str,
        sync: bool,
        heartbeat: u16,
    ) -> Result<Self> {
        let mut conn = Self::connect(address).await?;
        let mut out = Vec::new();
        push_frame(
            &mut out,
            &Message::Login(Login {
                protocol: PROTOCOL_VERSION,
                token: Token::new(token).map_err(|error| anyhow!("token: {error}"))?,
                info: DeviceInfo {
                    firmware: BoundedStr::new("blynk-load").map_err(|e| anyhow!("{e}"))?,
                    rx_buffer: 2048,
                    heartbeat_seconds: heartbeat,
                    sync_on_connect: sync,
                    known_version: None,
                },
            }),
        )?;
        conn.stream.write_all(&out).await?;
        match conn.recv().await? {
            Some(Incoming::LoginAccepted) => Ok(conn),
            Some(Incoming::LoginRejected(reason)) => bail!("login rejected: {reason}"),
            other => bail!("expected a login result, got {other:?}"),
        }
    }

    /// Reads more bytes; 0 when the server closed the connection.
    pub(crate) async fn fill(&mut self) -> Result<usize> {
        read_more(
            &mut self.stream,
            &mut self.buffer,
            &mut self.start,
            8 * 1024,
        )
        .await
    }

    /// The next whole message already buffered.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>> {
        let (incoming, consumed) = match native::decode(&self.buffer[self.start..]) {
            Ok(Decoded::NeedMore) => return Ok(None),
            Ok(Decoded::Frame { message, consumed }) => (summarize(&message), consumed),
            Err(error) => bail!("bad frame from the server: {error}"),
        };
        self.start += consumed;
        Ok(Some(incoming))
    }

    /// The next message; `None` when the server closed the connection.
    pub(crate) async fn recv(&mut self) -> Result<Option<Incoming>> {
        loop {
            if let Some(incoming) = self.next()? {
                return Ok(Some(incoming));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }
}

pub(crate) fn summarize(message: &Message<'_>) -> Incoming {
    match message {
        Message::LoginResult(LoginResult::Accepted { .. }) => Incoming::LoginAccepted,
        Message::LoginResult(LoginResult::Rejected(reason)) => {
            Incoming::LoginRejected(reason.to_string())
        }
        Message::Ack(_) => Incoming::Ack,
        Message::Update(update) => Incoming::Update(match update.value.first() {
            Some(Scalar::Int(int)) => Some(*int),
            _ => None,
        }),
        Message::SyncedValue(_) => Incoming::Synced,
        Message::SyncComplete(complete) => Incoming::SyncComplete(complete.count),
        Message::Error(error) => Incoming::Error(format!("{:?}: {}", error.code, error.detail)),
        _ => Incoming::Other,
    }
}
