//! The runner: the future that owns the connection. It connects, logs in, applies what the
//! server sends through the handlers, sends what the firmware queued, pings when idle, notices a
//! silent server, and reconnects with backoff until a fatal error.
//!
//! Lifecycle of one connection:
//!
//! 1. `Connector::connect` (a DNS lookup, a TCP connect); on failure, back off and retry.
//! 2. `Login` with the token and [`DeviceInfo`](blynk_proto::native::DeviceInfo): firmware
//!    version, receive buffer size, heartbeat, `sync_on_connect = true`, and the highest value
//!    version seen if this runner kept its state since the last connection (delta resync).
//! 3. `LoginResult`: accepted → [`Firmware::connected`]; the automatic sync arrives (values
//!    through the handlers, then [`Firmware::sync_complete`]). Queued messages go out at once,
//!    offline writes with their age. Refused with `InvalidToken` or `UnsupportedVersion` → the
//!    runner stops and returns why; any other refusal → back off and retry.
//! 4. Online: app writes arrive as handler calls; queued messages are sent as they come; a
//!    `Ping` goes out after a heartbeat without sending; 2.3 heartbeats without a byte from the
//!    server end the connection ([`Error::HeartbeatTimeout`]).

use blynk_proto::native::LoginRejection;
use blynk_proto::text::Token;
use embassy_futures::select::{Either3, select3};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, Instant, Timer, with_timeout};
use embedded_io_async::{Error as _, Read, Write};

use crate::backoff::{Backoff, fnv1a};
use crate::connector::Connector;
use crate::error::Error;
use crate::handlers::{Firmware, Handlers, SyncDone, apply};
use crate::log::pin_letter;
use crate::session::{Event, Session};
use crate::shared::Link;

/// How the device connects and behaves; build it with [`Config::new`] and the `with_` methods.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// The device's auth token, 32 characters from `[A-Za-z0-9_-]`.
    pub token: &'a str,
    /// The firmware version shown to people (at most 64 bytes are sent).
    pub firmware: &'a str,
    /// Seconds between pings when idle; the server declares the device offline after 2.3
    /// times that of silence, and so does the device the server.
    pub heartbeat_seconds: u16,
    /// The shortest reconnect delay, in milliseconds.
    pub reconnect_min_ms: u32,
    /// The longest reconnect delay, in milliseconds.
    pub reconnect_max_ms: u32,
    /// Seed of the reconnect jitter, e.g. a value from the hardware RNG; it is mixed with a
    /// hash of the token, so even a constant seed spreads a fleet out.
    pub seed: u32,
}

impl<'a> Config<'a> {
    /// Defaults: firmware `"0.0.0"`, heartbeat 45 s (Blynk's), reconnect after 1 s doubling up
    /// to 60 s, seed 0 (the token's hash alone).
    pub const fn new(token: &'a str) -> Self {
        Config {
            token,
            firmware: "0.0.0",
            heartbeat_seconds: 45,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
            seed: 0,
        }
    }

    /// Sets the firmware version.
    pub const fn with_firmware(mut self, firmware: &'a str) -> Self {
        self.firmware = firmware;
        self
    }

    /// Sets the heartbeat, in seconds (at least 1).
    pub const fn with_heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat_seconds = if seconds == 0 { 1 } else { seconds };
        self
    }

    /// Sets the reconnect delays, in milliseconds.
    pub const fn with_reconnect(mut self, min_ms: u32, max_ms: u32) -> Self {
        self.reconnect_min_ms = min_ms;
        self.reconnect_max_ms = max_ms;
        self
    }

    /// Sets the jitter seed.
    pub const fn with_seed(mut self, seed: u32) -> Self {
        self.seed = seed;
        self
    }
}

/// Owns the connection of one [`Blynk`](crate::Blynk) device; run it with [`run`](Self::run) next to the
/// firmware's own tasks.
pub struct Runner<'a, M: RawMutex, const SLOTS: usize, const BYTES: usize> {
    link: &'a Link<M, SLOTS, BYTES>,
    config: Config<'a>,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    known_version: Option<u64>,
    backoff: Backoff,
}

impl<'a, M: RawMutex, const SLOTS: usize, const BYTES: usize> Runner<'a, M, SLOTS, BYTES> {
    /// A runner over caller-supplied receive and transmit buffers; see
    /// [`Blynk::runner`](crate::Blynk::runner).
    pub(crate) fn new(
        link: &'a Link<M, SLOTS, BYTES>,
        config: Config<'a>,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
    ) -> Self {
        let seed = config.seed ^ fnv1a(config.token.as_bytes());
        Runner {
            link,
            config,
            rx,
            tx,
            known_version: None,
            backoff: Backoff::new(config.reconnect_min_ms, config.reconnect_max_ms, seed),
        }
    }

    /// The highest value version this runner has seen (sent at the next login).
    pub fn known_version(&self) -> Option<u64> {
        self.known_version
    }

    /// Connects, serves, and reconnects with backoff, for as long as the errors are
    /// recoverable; returns the first one that is not (a rejected token, say), which is also
    /// kept in [`Status::stopped`](crate::Status::stopped).
    pub async fn run<K: Connector, C: Firmware, const N: usize>(
        &mut self,
        connector: &mut K,
        firmware: &mut C,
        handlers: &Handlers<C, N>,
    ) -> Error {
        let Ok(token) = Token::new(self.config.token) else {
            return self.stop(Error::BadToken);
        };
        loop {
            let error = match connector.connect().await {
                Ok(mut connection) => self.serve(&mut connection, token, firmware, handlers).await,
                Err(error) => Error::Connect(error),
            };
            self.link
                .with(|shared| shared.status.last_error = Some(error));
            if !error.is_recoverable() {
                return self.stop(error);
            }
            let mut delay = self.backoff.next_delay();
            if let Error::LoginRejected(LoginRejection::TooManyAttempts {
                retry_after_seconds,
            }) = error
            {
                delay = delay.max(Duration::from_secs(u64::from(retry_after_seconds)));
            }
            log!(info, "reconnecting in {} ms ({})", delay.as_millis(), error);
            Timer::after(delay).await;
        }
    }

    fn stop(&mut self, error: Error) -> Error {
        log!(warn, "stopped: {}", error);
        self.link.with(|shared| {
            shared.status.stopped = Some(error);
            shared.status.last_error = Some(error);
        });
        error
    }

    /// Serves one connection until it ends; returns why.
    async fn serve<S: Read + Write, C: Firmware, const N: usize>(
        &mut self,
        connection: &mut S,
        token: Token<'_>,
        firmware: &mut C,
        handlers: &Handlers<C, N>,
    ) -> Error {
        let Runner {
            link,
            config,
            rx,
            tx,
            known_version,
            backoff,
        } = self;
        let link: &Link<M, SLOTS, BYTES> = link;
        let connected_at = Instant::now();
        let mut session = Session::new(rx, *known_version);
        let mut heartbeat = Duration::from_secs(u64::from(config.heartbeat_seconds.max(1)));
        let mut silence = silence_after(config.heartbeat_seconds);
        let mut logged_in = false;
        let mut last_received = connected_at;
        let mut last_sent = connected_at;

        let error = 'connection: {
            let Some(login) = session.login(token, config.firmware, config.heartbeat_seconds, tx)
            else {
                break 'connection Error::BufferTooSmall;
            };
            if let Err(error) = send(connection, tx.get(..login).unwrap_or_default(), silence).await
            {
                break 'connection error;
            }
            loop {
                // Everything the server sent so far.
                let known = session.known_version();
                let mut accepted = None;
                let processed = session.process(&mut |event| {
                    on_event(link, firmware, handlers, known, &mut accepted, event)
                });
                if let Some(seconds) = accepted {
                    logged_in = true;
                    backoff.reset();
                    heartbeat = Duration::from_secs(u64::from(u16::max(seconds, 1)));
                    silence = silence_after(seconds);
                }
                if let Err(error) = processed {
                    break 'connection error;
                }

                // Everything there is to send: a pong, then what the firmware queued (in a
                // write of its own, so that a message the whole buffer can hold is never
                // refused for the room a pong took).
                if let Some(id) = session.take_pong()
                    && let Some(pong) = Session::pong(id, tx)
                {
                    if let Err(error) =
                        send(connection, tx.get(..pong).unwrap_or_default(), silence).await
                    {
                        break 'connection error;
                    }
                    last_sent = Instant::now();
                }
                let now = Instant::now();
                let mut len = 0;
                if logged_in {
                    len = link.with(|shared| {
                        shared.outbox.retry_unacked(now, silence);
                        shared.outbox.fill(tx, connected_at, now)
                    });
                }
                if len > 0 {
                    if let Err(error) =
                        send(connection, tx.get(..len).unwrap_or_default(), silence).await
                    {
                        break 'connection error;
                    }
                    last_sent = Instant::now();
                    if logged_in && link.with(|shared| shared.outbox.has_unsent()) {
                        // More than one transmit buffer waits: come back after a look at the
                        // socket.
                        link.wake().signal(());
                    }
                }

                // Wait for bytes, a queued message, or the next ping or timeout.
                let dead_at = last_received + silence;
                let ping_at = if logged_in {
                    last_sent + heartbeat
                } else {
                    dead_at
                };
                let spare = session.spare();
                if spare.is_empty() {
                    break 'connection Error::BufferTooSmall;
                }
                match select3(
                    connection.read(spare),
                    link.wake().wait(),
                    Timer::at(dead_at.min(ping_at)),
                )
                .await
                {
                    Either3::First(Ok(0)) => break 'connection Error::Closed,
                    Either3::First(Ok(count)) => {
                        session.commit(count);
                        last_received = Instant::now();
                    }
                    Either3::First(Err(error)) => break 'connection Error::Io(error.kind()),
                    Either3::Second(()) => {}
                    Either3::Third(()) => {
                        let now = Instant::now();
                        if now >= dead_at {
                            break 'connection Error::HeartbeatTimeout;
                        }
                        let id = link.with(|shared| shared.outbox.take_id());
                        if let Some(len) = Session::ping(id, tx) {
                            if let Err(error) =
                                send(connection, tx.get(..len).unwrap_or_default(), silence).await
                            {
                                break 'connection error;
                            }
                            last_sent = Instant::now();
                        }
                    }
                }
            }
        };

        *known_version = session.known_version();
        link.with(|shared| {
            shared.outbox.connection_lost();
            shared.status.connected = false;
            shared.status.synced = false;
        });
        if logged_in {
            log!(info, "disconnected: {}", error);
            firmware.disconnected(error);
        } else {
            log!(info, "connection failed: {}", error);
        }
        error
    }
}

/// How long the server may stay silent: 2.3 heartbeats (SPEC 3.9).
fn silence_after(heartbeat_seconds: u16) -> Duration {
    Duration::from_millis(u64::from(heartbeat_seconds.max(1)) * 2300)
}

/// Writes `bytes` and flushes, within `limit`.
async fn send<S: Write>(connection: &mut S, bytes: &[u8], limit: Duration) -> Result<(), Error> {
    let write = async {
        connection.write_all(bytes).await?;
        connection.flush().await
    };
    match with_timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Error::Io(error.kind())),
        Err(_) => Err(Error::WriteTimeout),
    }
}

/// Acts on one event from the server.
fn on_event<M: RawMutex, const SLOTS: usize, const BYTES: usize, C: Firmware, const N: usize>(
    link: &Link<M, SLOTS, BYTES>,
    firmware: &mut C,
    handlers: &Handlers<C, N>,
    known: Option<u64>,
    accepted: &mut Option<u16>,
    event: Event<'_>,
) {
    match event {
        Event::LoginAccepted {
            heartbeat_seconds,
            version,
            sync_follows,
        } => {
            *accepted = Some(heartbeat_seconds);
            link.with(|shared| {
                let status = &mut shared.status;
                status.connected = true;
                status.synced = !sync_follows;
                status.logins = status.logins.saturating_add(1);
                status.last_error = None;
                if known.is_some_and(|known| known > version) {
                    // The server holds less than this device has seen (its data was reset): a
                    // delta sync would bring nothing, so ask for everything.
                    shared.outbox.request_all();
                }
            });
            log!(info, "logged in (server version {})", version);
            firmware.connected();
        }
        Event::Value {
            pin,
            value,
            version,
            ..
        } => {
            if link.with(|shared| shared.outbox.should_apply(pin, version)) {
                apply(handlers, firmware, pin, &value);
            } else {
                log!(
                    debug,
                    "{}{}: held back, a write of the device waits for its ack",
                    pin_letter(pin),
                    pin.number()
                );
            }
        }
        Event::SyncComplete { id, count } => {
            link.with(|shared| {
                shared.outbox.sync_complete(id);
                if id == 0 {
                    shared.status.synced = true;
                }
            });
            firmware.sync_complete(SyncDone {
                automatic: id == 0,
                count,
            });
        }
        Event::Ack { id, version } => link.with(|shared| shared.outbox.acked(id, version)),
        Event::Refused { id, code } => {
            if code == blynk_proto::native::ErrorCode::RateLimited {
                log!(
                    warn,
                    "message {} dropped by the server's rate limit: sent again later",
                    id
                );
                link.with(|shared| shared.outbox.retry(id));
            } else {
                log!(warn, "message {} refused by the server", id);
                link.with(|shared| shared.outbox.refused(id));
            }
        }
    }
}
