//! The classic session's answers, shared by `classic.rs` and the newer commands of
//! `classic_extras/`, which both send them.

use std::num::NonZeroU16;

use blynk_proto::classic::{self, HEADER_LEN, Status};

use super::connection::Outgoing;

/// Queues a response frame (none for id 0, which classic clients never wait on).
pub(crate) fn response(out: &mut Outgoing, id: u16, status: Status) {
    if let Some(id) = NonZeroU16::new(id) {
        let _ = out.frame(HEADER_LEN, |buf| {
            classic::encode_response(buf, id, status).map(|_| HEADER_LEN)
        });
    }
}

/// A finished request: the response to send, if any.
pub(crate) type Done = Option<(u16, Status)>;
