//! How an engine error is told to a device, written once per protocol: the native error code
//! (with the error's message as its detail), the classic status, and the MQTT `downlink/error`
//! text. Each maps the engine's kinds ([`ErrorKind`]) the same way the HTTP API does with
//! statuses: input the device got wrong is its own to fix; a store that is down or a server
//! that failed is the server's, and the device may send the message again.

use blynk_proto::Pin;
use blynk_proto::classic::Status;
use blynk_proto::native::ErrorCode;

use crate::engine::{EngineError, ErrorKind};
use crate::properties::PropertyRefusal;

/// The native protocol's code for a refused or failed request.
pub(crate) fn native_code(error: &EngineError) -> ErrorCode {
    match error {
        EngineError::UnknownPin(_) => ErrorCode::UnknownPin,
        EngineError::Property(PropertyRefusal::NoDatastream { .. }) => ErrorCode::UnknownPin,
        EngineError::Property(PropertyRefusal::UnknownName { .. }) => ErrorCode::IllegalCommand,
        EngineError::InvalidValue(_)
        | EngineError::Property(
            PropertyRefusal::BadValue { .. } | PropertyRefusal::PinFull { .. },
        )
        | EngineError::Invalid(_) => ErrorCode::WrongType,
        EngineError::NotFound(_)
        | EngineError::Conflict(_)
        | EngineError::Unavailable(_)
        | EngineError::Internal(_) => ErrorCode::Internal,
    }
}

/// The classic protocol's status for a refused or failed request. The classic protocol has no
/// "try again" status: a store that is down is a server exception, as any failure of the server.
pub(crate) fn classic_status(error: &EngineError) -> Status {
    match error.kind() {
        ErrorKind::Invalid => Status::IllegalCommandBody,
        // A device (the writer, or a bridge's target) deleted meanwhile: its token is no more.
        ErrorKind::NotFound => Status::InvalidToken,
        ErrorKind::Conflict => Status::NotAllowed,
        ErrorKind::Unavailable | ErrorKind::Internal => Status::ServerException,
    }
}

/// The `downlink/error` text for a refused or failed publish to `topic` (a write of `pin`).
pub(crate) fn mqtt_error(topic: &str, pin: Pin, error: &dyn std::fmt::Display) -> String {
    format!("`{topic}` ({pin}): {error}")
}

/// Whether the rest of an MQTT publish's writes are dropped after this error: the writes after
/// a bad value are still tried, but not after a failure of the server (the publish is not
/// acknowledged, so the client sends it again whole).
pub(crate) fn ends_mqtt_publish(error: &EngineError) -> bool {
    error.kind() != ErrorKind::Invalid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn every_kind() -> Vec<EngineError> {
        let pin = "V9".parse().unwrap();
        vec![
            EngineError::UnknownPin(pin),
            EngineError::Property(PropertyRefusal::UnknownName {
                pin,
                name: "colour".into(),
            }),
            EngineError::Invalid("`name`: empty".into()),
            EngineError::NotFound("device 3".into()),
            EngineError::Conflict("device `a` already exists".into()),
            EngineError::from(StoreError::Unavailable("restarting".into())),
            EngineError::from(StoreError::Database("disk full".into())),
        ]
    }

    #[test]
    fn native_devices_are_told_which_pin_or_value_was_wrong_and_retry_the_rest() {
        let codes: Vec<_> = every_kind().iter().map(native_code).collect();
        assert_eq!(
            codes,
            [
                ErrorCode::UnknownPin,
                ErrorCode::IllegalCommand,
                ErrorCode::WrongType,
                ErrorCode::Internal,
                ErrorCode::Internal,
                ErrorCode::Internal,
                ErrorCode::Internal,
            ]
        );
    }

    #[test]
    fn classic_devices_get_a_server_exception_when_the_store_is_down() {
        let statuses: Vec<_> = every_kind().iter().map(classic_status).collect();
        assert_eq!(
            statuses,
            [
                Status::IllegalCommandBody,
                Status::IllegalCommandBody,
                Status::IllegalCommandBody,
                Status::InvalidToken,
                Status::NotAllowed,
                Status::ServerException,
                Status::ServerException,
            ]
        );
    }

    #[test]
    fn mqtt_publishes_go_on_after_bad_input_only() {
        let ends: Vec<_> = every_kind().iter().map(ends_mqtt_publish).collect();
        assert_eq!(ends, [false, false, false, true, true, true, true]);
        let pin: Pin = "V1".parse().unwrap();
        assert_eq!(
            mqtt_error("ds/Temp", pin, &EngineError::UnknownPin(pin)),
            "`ds/Temp` (V1): no datastream is bound to V1"
        );
    }
}
