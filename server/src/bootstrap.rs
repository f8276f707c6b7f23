//! First start: the admin key, the demo template (the light bulb of the reference text) and a
//! demo device. Later starts find them in the store and reuse them; the admin key is stored
//! hashed, so only the start that makes it can show it.

use std::sync::Arc;

use blynk_proto::{DatastreamType, Pin};

use crate::engine::Engine;
use crate::keys::{ADMIN_NAME, KeyError, KeyRing, MIN_KEY_LEN};
use crate::model::{DatastreamDef, KindDef, OwnedScalar, OwnedValue, Template};

/// The setting that marks the demo as created (so deleting it does not bring it back).
const DEMO_CREATED: &str = "demo_created";
/// The setting that holds the demo device's token, for the start banner.
pub const DEMO_TOKEN: &str = "demo_token";

/// What a start found or created.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The admin key when this start knows it: made now (first start) or given by the operator.
    pub admin_key: Option<String>,
    /// Every API key, the admin key included.
    pub keys: Arc<KeyRing>,
    /// The demo device's token, when it still exists.
    pub demo_token: Option<String>,
    /// Whether this start created the admin key or the demo.
    pub first_start: bool,
}

/// The demo template: `V0` power switch, `V1` LED, an unsynced uptime, a default-valued mode
/// and a momentary "identify" command.
pub fn light_template() -> Template {
    let datastream = |pin: u8, name: &str, value_type, min, max, sync| DatastreamDef {
        pin: Pin::Virtual(pin),
        name: name.into(),
        value_type,
        min,
        max,
        default: None,
        sync,
        kind: KindDef::State,
        ttl: None,
    };
    Template {
        id: 0,
        name: "light".into(),
        datastreams: vec![
            datastream(
                0,
                "Power",
                DatastreamType::Integer,
                Some(0.0),
                Some(1.0),
                true,
            ),
            datastream(
                1,
                "LED",
                DatastreamType::Integer,
                Some(0.0),
                Some(255.0),
                true,
            ),
            datastream(2, "Uptime", DatastreamType::Integer, Some(0.0), None, false),
            DatastreamDef {
                default: Some(OwnedValue(vec![OwnedScalar::Text("auto".into())])),
                ..datastream(3, "Mode", DatastreamType::String, None, None, true)
            },
            DatastreamDef {
                kind: KindDef::Command,
                ttl: Some(60),
                ..datastream(
                    4,
                    "Identify",
                    DatastreamType::Integer,
                    Some(0.0),
                    Some(1.0),
                    false,
                )
            },
        ],
    }
}

/// Finds or creates the admin key and, on the very first start, the demo. With
/// `admin_key_override`, that becomes the admin key (stored hashed, replacing the one before).
pub async fn run(engine: &Engine, admin_key_override: Option<&str>) -> Result<Bootstrap, KeyError> {
    let settings = engine.settings();
    let keys = Arc::new(KeyRing::open(settings.clone()).await?);
    let mut first_start = false;
    let admin_key = match admin_key_override {
        Some(key) if key.len() < MIN_KEY_LEN => {
            return Err(KeyError::Invalid(format!(
                "the admin key must have at least {MIN_KEY_LEN} characters"
            )));
        }
        Some(key) => {
            keys.set_secret(ADMIN_NAME, key).await?;
            Some(key.to_owned())
        }
        None => {
            let made = keys.ensure_admin().await?;
            first_start |= made.is_some();
            made
        }
    };
    if settings.get(DEMO_CREATED).await?.is_none() {
        let template = match engine.find_template("light") {
            Some(template) => template,
            None => engine.create_template(light_template()).await?,
        };
        let device = engine.create_device("demo", &template).await?;
        settings.set(DEMO_TOKEN, &device.device.token).await?;
        settings.set(DEMO_CREATED, "1").await?;
        first_start = true;
    }
    let demo_token = settings
        .get(DEMO_TOKEN)
        .await?
        .filter(|token| engine.authenticate(token).is_some());
    Ok(Bootstrap {
        admin_key,
        keys,
        demo_token,
        first_start,
    })
}
