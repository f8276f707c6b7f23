//! Backups: `blynk-server backup PATH` copies the database of a running server under write load
//! (SQLite's online backup API), and `blynk-server restore PATH` into an empty data directory
//! gives a server holding every write acknowledged before the backup began.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use blynk_proto::Pin;

use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::{PATIENCE, TestServer, http, server_command, test_config};

/// Writers, each a native device writing 0, 1, 2, ... to its `V2` one write at a time.
const WRITERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_write_load_restores_every_write_acknowledged_before_it() {
    let server = TestServer::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut acknowledged = Vec::new();
    let mut writers = Vec::new();
    for index in 0..WRITERS {
        let token = server.add_device(&format!("writer{index}"), "light").await;
        let last_acked = Arc::new(AtomicI64::new(-1));
        acknowledged.push(last_acked.clone());
        let (stop, address) = (stop.clone(), server.native());
        writers.push(tokio::spawn(async move {
            let options = LoginOptions {
                sync_on_connect: false,
                ..LoginOptions::default()
            };
            let (mut device, _) = NativeClient::login(address, &token, options).await;
            let mut value = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = device.write_int(Pin::Virtual(2), value).await;
                device
                    .expect("ack", |m| {
                        matches!(m, Received::Ack { id: got, .. } if *got == id).then_some(())
                    })
                    .await;
                last_acked.store(value, Ordering::SeqCst);
                value += 1;
            }
        }));
    }
    // Under load: every writer has had writes acknowledged.
    let deadline = Instant::now() + PATIENCE;
    while acknowledged
        .iter()
        .any(|acked| acked.load(Ordering::SeqCst) < 20)
    {
        assert!(Instant::now() < deadline, "the writers made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let scratch = tempfile::tempdir().unwrap();
    let backup_file = scratch.path().join("blynk.backup");
    let before: Vec<i64> = acknowledged
        .iter()
        .map(|acked| acked.load(Ordering::SeqCst))
        .collect();
    let backup = server_command(&server.data, &["backup", backup_file.to_str().unwrap()]).await;
    let after: Vec<i64> = acknowledged
        .iter()
        .map(|acked| acked.load(Ordering::SeqCst))
        .collect();
    assert!(backup.status.success(), "{backup:?}");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the backup holds device tokens");
    }
    // A backup never overwrites a file.
    let again = server_command(&server.data, &["backup", backup_file.to_str().unwrap()]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let restored_dir = scratch.path().join("restored");
    let restore = server_command(&restored_dir, &["restore", backup_file.to_str().unwrap()]).await;
    assert!(restore.status.success(), "{restore:?}");
    let restored = TestServer::start_in(&restored_dir, test_config(&restored_dir)).await;
    for (index, (before, after)) in before.iter().zip(&after).enumerate() {
        let values = http::app(
            restored.http(),
            "GET",
            &format!("/api/devices/writer{index}/values"),
            None,
        )
        .await
        .json();
        let value = values["V2"]["value"].as_i64().unwrap();
        assert!(
            value >= *before,
            "writer {index}: the backup holds {value}, but {before} was acknowledged before it began"
        );
        assert!(
            value <= after + 1,
            "writer {index}: {value} was never written"
        );
    }

    // A restore goes into an empty directory only, and only from a database.
    let into_used = server_command(&server.data, &["restore", backup_file.to_str().unwrap()]).await;
    assert!(!into_used.status.success());
    assert!(String::from_utf8_lossy(&into_used.stderr).contains("not empty"));
    let junk = scratch.path().join("junk");
    std::fs::write(&junk, b"not a database at all, just some bytes").unwrap();
    let from_junk = server_command(
        &scratch.path().join("other"),
        &["restore", junk.to_str().unwrap()],
    )
    .await;
    assert!(!from_junk.status.success());
    assert!(String::from_utf8_lossy(&from_junk.stderr).contains("not a blynk-server database"));
}
