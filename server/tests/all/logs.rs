//! `--log-format json`: every line the server logs (on standard error) is one JSON object a log
//! shipper can read.

use std::process::Stdio;

use blynk_proto::native::LoginResult;
use blynk_testbed::server::ServerCommand;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::PATIENCE;
use crate::support::native::{LoginOptions, NativeClient};

#[tokio::test]
async fn json_log_format_prints_one_object_per_line_with_level_message_and_fields() {
    let data = tempfile::tempdir().unwrap();
    let mut command = ServerCommand::new(env!("CARGO_BIN_EXE_blynk-server"), data.path())
        .log("info")
        .command();
    command
        .args(["--log-format", "json"])
        .stderr(Stdio::piped());
    // No ready file: the test reads what the logs say, as it comes.
    let mut child = Command::from(command).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Reads lines, each of which must be a JSON log event, up to the one with `message`.
    let mut next_event = async |message: &str| -> Value {
        loop {
            let line = tokio::time::timeout(PATIENCE, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no log line `{message}`"))
                .unwrap()
                .expect("the server ended");
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
            assert!(event["timestamp"].is_string(), "{line}");
            assert!(event["level"].is_string(), "{line}");
            if event["fields"]["message"]
                .as_str()
                .is_some_and(|text| text.starts_with(message))
            {
                return event;
            }
        }
    };
    let listening = next_event("server listening").await;
    let native: std::net::SocketAddr = listening["fields"]["native_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let running = next_event("blynk-server is running").await;
    assert!(
        running["fields"]["dashboard"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    // The admin key stays out of shipped logs: the line holds only these fields.
    let mut fields: Vec<&str> = running["fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["dashboard", "first_start", "message", "store"]);

    let (_, refused) = NativeClient::login(
        native,
        "nosuchtoken000000000000000000000",
        LoginOptions::default(),
    )
    .await;
    assert!(matches!(refused, LoginResult::Rejected(_)));
    let refusal = next_event("native login refused").await;
    assert_eq!(refusal["level"], "INFO");
    assert!(
        refusal["fields"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}
