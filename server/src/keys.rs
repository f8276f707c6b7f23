//! API keys: the admin key and scoped keys (`admin`, `read`, `control`), kept in the store as
//! SHA-256 hashes, one setting each, so the database never holds a key an app could present.
//!
//! A key is 40 random characters (240 bits), so a plain SHA-256 is enough: there is nothing to
//! guess that a slow password hash would protect. A presented key is hashed once and compared
//! with every stored hash in constant time. The ring is cached in memory and reloaded from the
//! store every [`RELOAD_EVERY`] (and at once, at most that often, when an unknown key shows up),
//! so keys created or revoked by another process (`blynk-server key ...`, another node) apply
//! within seconds.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::engine::{DeviceSlot, Engine, constant_time_eq};
use crate::engine::{EngineError, Settings};
use crate::model::{DeviceId, TemplateId, now_ms};

/// The settings holding keys: `api_key.NAME`.
const SETTING_PREFIX: &str = "api_key.";
/// The value of a revoked key's setting (and of the plain admin key once hashed): settings are
/// only ever written, never deleted, which every store can do in one statement.
const REVOKED: &str = "";
/// Where servers before hashed keys kept the admin key, in plain text.
const LEGACY_ADMIN_KEY: &str = "admin_key";
/// The name of the key made at first start and renewed by `blynk-server key rotate`.
pub const ADMIN_NAME: &str = "admin";
/// Characters of a new key.
const KEY_LEN: usize = 40;
/// Shortest key accepted from an operator (`--admin-key`).
pub const MIN_KEY_LEN: usize = 16;
/// How often the cached ring is reloaded from the store.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often an unknown key may reload the ring: a key made elsewhere works at once, and a
/// flood of wrong keys costs the store at most this many reads.
const MISS_RELOAD_EVERY: Duration = Duration::from_millis(100);
/// Keys a store may hold: enough for any deployment, and a bound on what an admin can make.
const MAX_KEYS: usize = 1000;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything: templates, devices, keys, metrics, writes to any device.
    Admin,
    /// Values, history, events, properties and the live WebSocket of every device.
    Read,
    /// `read`, plus writes to the devices it lists and the devices of the templates it lists.
    Control,
}

impl Scope {
    /// The scope's name, as the API and the command line write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
            Scope::Control => "control",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        match text {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            "control" => Ok(Scope::Control),
            other => Err(KeyError::Invalid(format!(
                "scope `{other}`: expected admin, read or control"
            ))),
        }
    }
}

/// A stored key: its name, scope and targets, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Unique name, chosen by whoever made it.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// `control`: the templates whose devices it may write to.
    #[serde(default)]
    pub templates: Vec<TemplateId>,
    /// `control`: the devices it may write to.
    #[serde(default)]
    pub devices: Vec<DeviceId>,
    /// When it was made (Unix ms).
    pub created_at: i64,
    /// SHA-256 of the secret, in hex.
    hash: String,
}

impl ApiKey {
    /// Whether the key may manage templates, devices and keys.
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }

    /// Whether the key may write to this device.
    pub fn can_control(&self, slot: &DeviceSlot) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Read => false,
            Scope::Control => {
                self.devices.contains(&slot.device.id) || self.templates.contains(&slot.template.id)
            }
        }
    }
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A name, scope or target is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("a key named `{0}` exists already")]
    Exists(String),
    /// No key has the name.
    #[error("no key named `{0}`")]
    NotFound(String),
    /// Revoking it would leave no admin key.
    #[error("`{0}` is the last admin key; `blynk-server key rotate` replaces it instead")]
    LastAdmin(String),
    /// The store failed (or is down for now).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The keys of a server, cached in front of the store.
pub struct KeyRing {
    settings: Settings,
    keys: RwLock<Arc<Vec<ApiKey>>>,
    /// When the ring was last read from the store.
    loaded_at: Mutex<Instant>,
    /// Changes are made one at a time, so two of them never both pass a check.
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.list();
        f.debug_list()
            .entries(keys.iter().map(|key| (&key.name, key.scope)))
            .finish()
    }
}

impl KeyRing {
    /// Reads the keys from the store, through the engine's settings.
    pub async fn open(settings: Settings) -> Result<Self, EngineError> {
        let ring = KeyRing {
            settings,
            keys: RwLock::default(),
            loaded_at: Mutex::new(Instant::now()),
            changes: tokio::sync::Mutex::new(()),
        };
        ring.reload().await?;
        Ok(ring)
    }

    /// Reads the keys from the store again.
    pub async fn reload(&self) -> Result<(), EngineError> {
        let rows = self.settings.with_prefix(SETTING_PREFIX).await?;
        let keys: Vec<ApiKey> = rows
            .iter()
            .filter(|(_, text)| text != REVOKED)
            .filter_map(|(setting, text)| match serde_json::from_str(text) {
                Ok(key) => Some(key),
                Err(error) => {
                    tracing::error!(%setting, %error, "an API key in the store is unreadable; it is ignored");
                    None
                }
            })
            .collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    /// Every key, by name.
    pub fn list(&self) -> Arc<Vec<ApiKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a key authenticated earlier still stands (neither revoked nor rotated since).
    pub fn is_current(&self, key: &ApiKey) -> bool {
        self.list().iter().any(|current| current == key)
    }

    /// The key whose secret this is, among those cached.
    fn find_cached(&self, secret: &str) -> Option<ApiKey> {
        let hash = hash(secret);
        let keys = self.list();
        // Every hash is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for key in keys.iter() {
            if constant_time_eq(key.hash.as_bytes(), hash.as_bytes()) && found.is_none() {
                found = Some(key.clone());
            }
        }
        found
    }

    /// The key whose secret this is. An unknown secret reloads the ring first, unless it was
    /// reloaded since this call began; reloads are at least [`MISS_RELOAD_EVERY`] apart (a
    /// wrong key waits for that), so a key made by another process works at once.
    pub async fn authenticate(&self, secret: &str) -> Option<ApiKey> {
        if let Some(key) = self.find_cached(secret) {
            return Some(key);
        }
        let arrived = Instant::now();
        let loaded_at = *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner());
        tokio::time::sleep(MISS_RELOAD_EVERY.saturating_sub(loaded_at.elapsed())).await;
        let reloaded_since = *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()) > arrived;
        if !reloaded_since && let Err(error) = self.reload().await {
            tracing::warn!(%error, "reading the API keys failed");
        }
        self.find_cached(secret)
    }

    /// Reloads the ring every [`RELOAD_EVERY`] on the server's clock until shutdown, so a key
    /// revoked elsewhere stops working here too (a test moves the clock instead of waiting).
    pub async fn run_reload(
        self: Arc<Self>,
        clock: Clock,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut due = clock.now() + RELOAD_EVERY;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(clock.timer_deadline(due)) => {}
                _ = shutdown.changed() => return,
            }
            if clock.now() >= due {
                if let Err(error) = self.reload().await {
                    tracing::warn!(%error, "reading the API keys failed");
                }
                due = clock.now() + RELOAD_EVERY;
            }
        }
    }

    /// Makes a key and returns it with its secret, which is shown this once and kept nowhere.
    pub async fn create(
        &self,
        name: &str,
        scope: Scope,
        templates: Vec<TemplateId>,
        devices: Vec<DeviceId>,
    ) -> Result<(ApiKey, String), KeyError> {
        check_name(name)?;
        match scope {
            Scope::Control if templates.is_empty() && devices.is_empty() => {
                return Err(KeyError::Invalid(
                    "a `control` key needs at least one template or device".into(),
                ));
            }
            Scope::Admin | Scope::Read if !(templates.is_empty() && devices.is_empty()) => {
                return Err(KeyError::Invalid(format!(
                    "templates and devices apply to `control` keys only, not `{}`",
                    scope.as_str()
                )));
            }
            _ => {}
        }
        let _change = self.changes.lock().await;
        self.reload().await?;
        let keys = self.list();
        if keys.iter().any(|key| key.name == name) {
            return Err(KeyError::Exists(name.to_owned()));
        }
        if keys.len() >= MAX_KEYS {
            return Err(KeyError::Invalid(format!(
                "{MAX_KEYS} keys exist; revoke one first"
            )));
        }
        let secret = crate::token::random_string(KEY_LEN);
        let key = ApiKey {
            name: name.to_owned(),
            scope,
            templates,
            devices,
            created_at: now_ms(),
            hash: hash(&secret),
        };
        self.put(&key).await?;
        Ok((key, secret))
    }

    /// Revokes a key. The last admin key cannot be revoked (rotate it instead).
    pub async fn revoke(&self, name: &str) -> Result<(), KeyError> {
        let _change = self.changes.lock().await;
        self.reload().await?;
        let keys = self.list();
        let Some(key) = keys.iter().find(|key| key.name == name) else {
            return Err(KeyError::NotFound(name.to_owned()));
        };
        let admins = keys.iter().filter(|key| key.is_admin()).count();
        if key.is_admin() && admins == 1 {
            return Err(KeyError::LastAdmin(name.to_owned()));
        }
        self.settings.set(&setting(name), REVOKED).await?;
        self.reload().await?;
        Ok(())
    }

    /// Gives a key a new secret and returns it; the old secret stops working. The admin key
    /// ([`ADMIN_NAME`]) is made if it is missing.
    pub async fn rotate(&self, name: &str) -> Result<String, KeyError> {
        let secret = crate::token::random_string(KEY_LEN);
        self.set_secret(name, &secret).await?;
        Ok(secret)
    }

    /// Sets a key's secret (the admin key may be made this way; any other must exist).
    pub async fn set_secret(&self, name: &str, secret: &str) -> Result<(), KeyError> {
        let _change = self.changes.lock().await;
        self.reload().await?;
        let existing = self.list().iter().find(|key| key.name == name).cloned();
        let mut key = match existing {
            Some(key) => key,
            None if name == ADMIN_NAME => ApiKey {
                name: name.to_owned(),
                scope: Scope::Admin,
                templates: Vec::new(),
                devices: Vec::new(),
                created_at: now_ms(),
                hash: String::new(),
            },
            None => return Err(KeyError::NotFound(name.to_owned())),
        };
        let hashed = hash(secret);
        if key.hash != hashed {
            key.hash = hashed;
            self.put(&key).await?;
        }
        Ok(())
    }

    /// Makes sure an admin key exists: turns the plain admin key of an older data directory into
    /// a hashed one, or makes a new one. Returns the secret when one was made.
    pub async fn ensure_admin(&self) -> Result<Option<String>, KeyError> {
        if let Some(plain) = self.settings.get(LEGACY_ADMIN_KEY).await?
            && !plain.is_empty()
        {
            self.set_secret(ADMIN_NAME, &plain).await?;
            self.settings.set(LEGACY_ADMIN_KEY, REVOKED).await?;
            // SQLite may keep the deleted text in free pages until they are reused.
            tracing::warn!(
                "the admin key is now stored hashed (the key itself is unchanged); its old plain \
                 copy may linger in the database file's free space: `blynk-server key rotate` \
                 replaces the key"
            );
            return Ok(None);
        }
        if self.list().iter().any(ApiKey::is_admin) {
            return Ok(None);
        }
        self.rotate(ADMIN_NAME).await.map(Some)
    }

    async fn put(&self, key: &ApiKey) -> Result<(), KeyError> {
        let text = serde_json::to_string(key).map_err(|e| KeyError::Invalid(e.to_string()))?;
        self.settings.set(&setting(&key.name), &text).await?;
        self.reload().await?;
        Ok(())
    }
}

/// The ids of the templates and devices a `control` key names (by name or id).
pub fn resolve_targets(
    engine: &Engine,
    templates: &[String],
    devices: &[String],
) -> Result<(Vec<TemplateId>, Vec<DeviceId>), KeyError> {
    let template_ids = templates
        .iter()
        .map(|name| {
            engine
                .find_template(name)
                .map(|template| template.id)
                .ok_or_else(|| KeyError::Invalid(format!("no template `{name}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let device_ids = devices
        .iter()
        .map(|name| {
            engine
                .find_device(name)
                .map(|slot| slot.device.id)
                .ok_or_else(|| KeyError::Invalid(format!("no device `{name}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((template_ids, device_ids))
}

fn setting(name: &str) -> String {
    format!("{SETTING_PREFIX}{name}")
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!(
            "key name `{name}`: 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// SHA-256 of a secret, in hex.
fn hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_in_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("grafana-reader_1.x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
