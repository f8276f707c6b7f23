//! First start: the admin key, the demo template (the light bulb of the reference text) and a
//! demo device. Later starts find them in the store and reuse them.

use blynk_proto::{DatastreamType, Pin};

use crate::engine::Engine;
use crate::model::{DatastreamDef, KindDef, OwnedScalar, OwnedValue, Template};
use crate::store::{StoreError, settle};

/// The setting that holds the admin key.
const ADMIN_KEY: &str = "admin_key";
/// The setting that marks the demo as created (so deleting it does not bring it back).
const DEMO_CREATED: &str = "demo_created";
/// The setting that holds the demo device's token, for the start banner.
pub const DEMO_TOKEN: &str = "demo_token";

/// What a start found or created.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The key apps authenticate with.
    pub admin_key: String,
    /// The demo device's token, when it still exists.
    pub demo_token: Option<String>,
    /// Whether this start created them.
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

/// Finds or creates the admin key and, on the very first start, the demo.
pub async fn run(
    engine: &Engine,
    admin_key_override: Option<&str>,
) -> Result<Bootstrap, StoreError> {
    let store = engine.store();
    let mut first_start = false;
    let admin_key = match (admin_key_override, settle(store.setting(ADMIN_KEY)).await?) {
        (Some(key), _) => key.to_owned(),
        (None, Some(key)) => key,
        (None, None) => {
            first_start = true;
            let key = crate::token::random_string(40);
            settle(store.set_setting(ADMIN_KEY, &key)).await?;
            key
        }
    };
    if settle(store.setting(DEMO_CREATED)).await?.is_none() {
        let template = match engine.find_template("light") {
            Some(template) => template,
            None => engine.create_template(light_template()).await?,
        };
        let device = engine.create_device("demo", &template).await?;
        settle(store.set_setting(DEMO_TOKEN, &device.device.token)).await?;
        settle(store.set_setting(DEMO_CREATED, "1")).await?;
        first_start = true;
    }
    let demo_token = settle(store.setting(DEMO_TOKEN))
        .await?
        .filter(|token| engine.authenticate(token).is_some());
    Ok(Bootstrap {
        admin_key,
        demo_token,
        first_start,
    })
}
