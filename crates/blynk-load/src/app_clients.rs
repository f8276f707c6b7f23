//! The app API of the server under test, through `blynk-client`: its REST client and app
//! WebSocket, addressed by the server's HTTP address and admin key.

use blynk_client::{AppSocket, Client, Endpoint};

use super::*;

/// A client of the app API at `http` with `key`.
pub(crate) fn app_client(http: SocketAddr, key: &str) -> Result<Client> {
    Ok(
        Client::new(Endpoint::parse(&format!("http://{http}"))?, key)?
            .with_user_agent(concat!("blynk-load/", env!("CARGO_PKG_VERSION"))),
    )
}

/// The app WebSocket at `http` with `key`.
pub(crate) async fn app_socket(http: SocketAddr, key: &str) -> Result<AppSocket> {
    Ok(app_client(http, key)?.websocket().await?)
}

/// The number of a virtual pin (`V3` is 3), as the load template names its datastreams.
pub(crate) fn virtual_pin_number(pin: &str) -> Option<u32> {
    pin.strip_prefix('V')?.parse().ok()
}

/// Logs in `devices` by `login(token)`, `parallel` at a time; each must succeed (`what` names
/// them in the error).
pub(crate) async fn login_all<T, F>(
    devices: &[DeviceRef],
    parallel: usize,
    what: &str,
    login: impl Fn(String) -> F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let mut done = Vec::with_capacity(devices.len());
    for chunk in devices.chunks(parallel.max(1)) {
        let mut logins = JoinSet::new();
        for device in chunk {
            logins.spawn(login(device.token.clone()));
        }
        done.extend(join_all_ok(&mut logins, what).await?);
    }
    Ok(done)
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
