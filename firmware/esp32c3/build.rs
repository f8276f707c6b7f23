//! Passes the Wi-Fi network, the server and the device token to the firmware (from the
//! environment or `config.local.toml`), and names the linker scripts esp-hal needs.

#[path = "../build_settings.rs"]
mod build_settings;

fn main() {
    build_settings::pass_on(&["WIFI_SSID", "WIFI_PASSWORD", "BLYNK_SERVER", "BLYNK_TOKEN"]);
}
