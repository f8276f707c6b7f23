//! The first packet of an MQTT connection: a CONNECT read within the login deadline, then
//! checked (MQTT 3.1.1, a client id the server can keep, user `device` and a known token as
//! password; a wrong one counts as a failed login of the address).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::MAX_PACKET;
use crate::engine::DeviceSlot;
use crate::login_limiter::Verdict;
use crate::session::Context;

/// The username every device logs in with; the password is its token (as in Blynk IoT).
pub const USERNAME: &str = "device";
/// Longest client id accepted (MQTT 3.1.1 asks for at least 23 bytes).
const MAX_CLIENT_ID: usize = 128;

/// Reads the first packet, which must be a CONNECT; `None` when the connection is refused.
pub(super) async fn read_connect<S>(
    stream: &mut S,
    inbox: &mut BytesMut,
    peer: SocketAddr,
) -> Option<Connect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match Packet::read(inbox, MAX_PACKET) {
            Ok(Packet::Connect(connect)) => return Some(connect),
            Ok(other) => {
                tracing::info!(%peer, packet = ?other, "MQTT connection refused: first packet is not CONNECT");
                return None;
            }
            Err(CodecError::InsufficientBytes(_)) => {
                inbox.reserve(512);
                match stream.read_buf(inbox).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            Err(error @ (CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_))) => {
                tracing::info!(%peer, %error, "MQTT connection refused: only MQTT 3.1.1 is spoken");
                let mut out = BytesMut::new();
                let _ =
                    ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false).write(&mut out);
                let _ = stream.write_all(&out).await;
                return None;
            }
            Err(error) => {
                tracing::info!(%peer, %error, "MQTT connection refused: bad CONNECT");
                return None;
            }
        }
    }
}

/// Checks a CONNECT: MQTT 3.1.1, a client id the server can keep, user `device` and a known
/// token as password; a wrong one counts as a failed login of the address.
pub(super) fn admit(
    connect: &Connect,
    peer: SocketAddr,
    context: &Context,
) -> Result<Arc<DeviceSlot>, ConnectReturnCode> {
    if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
        tracing::info!(%peer, "MQTT login refused: only MQTT 3.1.1 is spoken");
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    if connect.client_id.len() > MAX_CLIENT_ID
        || (connect.client_id.is_empty() && !connect.clean_session)
    {
        // MQTT 3.1.1 section 3.1.3-8: a persistent session needs a client id to be found by.
        tracing::info!(%peer, "MQTT login refused: client id too long, or empty with a persistent session");
        return Err(ConnectReturnCode::BadClientId);
    }
    // The credential first: a right token is never refused for what others did (SPEC 6).
    let slot = connect
        .login
        .as_ref()
        .filter(|login| login.username == USERNAME)
        .and_then(|login| context.engine.authenticate(&login.password));
    if let Some(slot) = slot {
        context.engine.metrics().login();
        return Ok(slot);
    }
    context.engine.metrics().failed_login();
    let username = connect.login.as_ref().map(|login| login.username.as_str());
    match context.login_limiter.record_failure(peer.ip()) {
        Verdict::Counted => {
            tracing::info!(%peer, ?username, "MQTT login refused: user `device` with a valid token as password expected");
            Err(ConnectReturnCode::NotAuthorized)
        }
        Verdict::Limited { .. } => {
            tracing::warn!(%peer, ?username, "MQTT login refused: wrong credentials, too many failed logins from this address");
            Err(ConnectReturnCode::ServiceUnavailable)
        }
    }
}
