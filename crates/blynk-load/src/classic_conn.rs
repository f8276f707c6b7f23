//! The classic protocol client: frames built and read by `blynk-proto`'s classic codec, and the
//! login.

use std::num::NonZeroU16;

use blynk_proto::classic::frame::{self, ClassicFrame, Decoded};
use blynk_proto::classic::hardware::HardwareCommand;
use blynk_proto::classic::{Command, Status};

use super::*;

/// Room for one frame the generator sends (its bodies are a few dozen bytes).
const FRAME_ROOM: usize = 256;

/// Appends a frame of `command` whose body is `parts`, `\0`-separated.
pub(crate) fn classic_frame(
    out: &mut Vec<u8>,
    command: Command,
    id: u16,
    parts: &[&str],
) -> Result<()> {
    let mut room = [0u8; FRAME_ROOM];
    let id = NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN);
    let built = frame::encode_frame(&mut room, command, id, FRAME_ROOM, |body| {
        for part in parts {
            body.part(part)?;
        }
        Ok(())
    });
    let bytes =
        built.map_err(|error| anyhow!("building a classic {command:?} frame: {error:?}"))?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends a HARDWARE `vw` write of an integer.
pub(crate) fn classic_virtual_write(
    out: &mut Vec<u8>,
    id: u16,
    pin: u32,
    value: i64,
) -> Result<()> {
    classic_frame(
        out,
        Command::Hardware,
        id,
        &["vw", &pin.to_string(), &value.to_string()],
    )
}

/// The first whole frame in `buffer` and its length; `None` until one is whole, or when the
/// server sent something the decoder refuses (the run then stops at its timeout).
pub(crate) fn classic_next(buffer: &[u8]) -> Option<(ClassicFrame<'_>, usize)> {
    match frame::decode(buffer, frame::MAX_BODY) {
        Ok(Decoded::Frame { frame, consumed }) => Some((frame, consumed)),
        Ok(Decoded::NeedMore) | Err(_) => None,
    }
}

/// Whether a frame is a status reply saying OK.
pub(crate) fn is_ok_reply(frame: &ClassicFrame<'_>) -> bool {
    frame.command == Command::Response && frame.status == Some(Status::Ok)
}

/// `vw\0<pin>\0<integer>` of a classic HARDWARE frame: the pin and the value.
pub(crate) fn received_virtual_write(frame: &ClassicFrame<'_>) -> Option<(u32, i64)> {
    if frame.command != Command::Hardware {
        return None;
    }
    let (pin, value) = HardwareCommand::parse(frame.body).ok()?.as_write()?.ok()?;
    let blynk_proto::Pin::Virtual(number) = pin else {
        return None;
    };
    match value.first()? {
        Scalar::Int(int) => Some((u32::from(number), *int)),
        _ => None,
    }
}

/// Logs in `devices` over the classic protocol, `parallel` at a time; their sockets.
pub(crate) async fn classic_login_many(
    address: SocketAddr,
    devices: &[DeviceRef],
    parallel: usize,
) -> Result<Vec<TcpStream>> {
    login_all(
        devices,
        parallel,
        "classic logins",
        move |token| async move { classic_login(address, &token).await },
    )
    .await
}

pub(crate) async fn classic_login(address: SocketAddr, token: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    classic_frame(&mut out, Command::HwLogin, 1, &[token])?;
    classic_frame(
        &mut out,
        Command::Internal,
        2,
        &[
            "ver",
            "1.0.0",
            "h-beat",
            "600",
            "buff-in",
            "1024",
            "dev",
            "blynk-load",
        ],
    )?;
    stream.write_all(&out).await?;
    let mut buffer = Vec::new();
    let mut answered = 0;
    while answered < 2 {
        if let Some((frame, len)) = classic_next(&buffer) {
            if frame.command == Command::Response && (frame.id == 1 || frame.id == 2) {
                if !is_ok_reply(&frame) {
                    bail!("classic login: status {:?}", frame.status);
                }
                answered += 1;
            }
            buffer.drain(..len);
            continue;
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            bail!("classic login: connection closed");
        }
    }
    Ok(stream)
}
