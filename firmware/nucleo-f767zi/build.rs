//! Passes the server and the device token to the firmware (from the environment or
//! `config.local.toml`), and names the linker scripts: cortex-m-rt's `link.x` (with the
//! `memory.x` embassy-stm32 generates for the chip) and defmt's `defmt.x`.

#[path = "../build_settings.rs"]
mod build_settings;

fn main() {
    build_settings::pass_on(&["BLYNK_SERVER", "BLYNK_TOKEN"]);
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
