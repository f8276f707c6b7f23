//! The server's settings (the API keys, the demo device's token, ...), read and written through
//! the engine like everything else in the store.

use std::sync::Arc;

use super::{Engine, EngineError};
use crate::store::{Store, settle};

/// A handle on the settings, for the key ring and the first-start bootstrap; cheap to clone.
#[derive(Clone)]
pub struct Settings {
    store: Arc<dyn Store>,
}

impl Settings {
    /// A setting's value, if it is set.
    pub async fn get(&self, key: &str) -> Result<Option<String>, EngineError> {
        Ok(settle(self.store.setting(key)).await?)
    }

    /// Sets a setting; returns once it is durable.
    pub async fn set(&self, key: &str, value: &str) -> Result<(), EngineError> {
        Ok(settle(self.store.set_setting(key, value)).await?)
    }

    /// Every setting whose key starts with `prefix`, ordered by key.
    pub async fn with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, EngineError> {
        Ok(settle(self.store.settings_with_prefix(prefix)).await?)
    }
}

impl Engine {
    /// The server's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            store: self.store.clone(),
        }
    }
}
