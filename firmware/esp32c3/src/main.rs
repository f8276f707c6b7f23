//! The light bulb on an ESP32-C3 over Wi-Fi: the LED on GPIO8, the BOOT button on GPIO9.
//!
//! Wi-Fi (esp-radio) and the network stack (embassy-net, DHCP) run as embassy tasks on
//! esp-rtos; the light itself is the shared `light` crate. The Wi-Fi network, the server and
//! the device token come from the environment or `config.local.toml` at build time.
#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_time::{Duration, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, Interface, WifiController};
use static_cell::StaticCell;

esp_bootloader_esp_idf::esp_app_desc!();

/// A build-time setting, read with `env!`; when it is missing, the build stops and says what
/// to set it to, and where.
macro_rules! setting {
    ($name:literal, $what:literal) => {
        env!(
            $name,
            concat!(
                "set ",
                $name,
                " to ",
                $what,
                " (in the environment or in ",
                "firmware/esp32c3/config.local.toml, see config.local.toml.example)"
            )
        )
    };
}

const WIFI_SSID: &str = setting!("WIFI_SSID", "the Wi-Fi network's name");
const WIFI_PASSWORD: &str = setting!("WIFI_PASSWORD", "its password, empty for an open network");
const BLYNK_SERVER: &str = setting!("BLYNK_SERVER", "the server's address, e.g. 10.0.0.2:8441");
const BLYNK_TOKEN: &str = setting!("BLYNK_TOKEN", "the device token (dashboard or demo token)");

/// Whether the LED on GPIO8 lights when the pin is low, as the blue LED of SuperMini boards
/// does (`--features led-active-low`); an LED from GPIO8 to ground lights when it is high.
const LED_ACTIVE_LOW: bool = cfg!(feature = "led-active-low");

struct Led(Output<'static>);

impl light::Led for Led {
    fn set(&mut self, on: bool) {
        self.0.set_level(Level::from(on != LED_ACTIVE_LOW));
    }
}

/// The BOOT button: pulls GPIO9 low when pressed.
struct BootButton(Input<'static>);

impl light::Button for BootButton {
    fn is_pressed(&mut self) -> bool {
        self.0.is_low()
    }

    async fn wait_for_edge(&mut self) {
        self.0.wait_for_any_edge().await;
    }
}

/// Keeps the station connected to the access point, reconnecting after every drop.
#[embassy_executor::task]
async fn wifi(mut controller: WifiController<'static>) {
    let station = StationConfig::default()
        .with_ssid(WIFI_SSID.try_into().expect("WIFI_SSID is at most 32 bytes"))
        .with_authentication(if WIFI_PASSWORD.is_empty() {
            AuthenticationMethodConfig::Open
        } else {
            AuthenticationMethodConfig::Wpa2Personal(
                WIFI_PASSWORD
                    .try_into()
                    .expect("WIFI_PASSWORD is at most 64 bytes"),
            )
        });
    if let Err(error) = controller.set_config(&Config::Station(station)) {
        log::error!("Wi-Fi configuration refused: {error:?}");
        return;
    }
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                log::info!("Wi-Fi connected to {WIFI_SSID}");
                let _ = controller.wait_for_disconnect_async().await;
                log::warn!("Wi-Fi disconnected");
            }
            Err(error) => log::warn!("Wi-Fi connect failed: {error:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

/// Runs the network stack (DHCP, TCP, DNS).
#[embassy_executor::task]
async fn network(mut runner: Runner<'static, Interface>) -> ! {
    runner.run().await
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    // The log goes over RTT: `probe-rs run` prints it.
    rtt_target::rtt_init_log!(log::LevelFilter::Info);
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The Wi-Fi driver allocates; part of the heap is RAM the bootloader no longer needs.
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: 36 * 1024);

    let timers = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timers.timer0, peripherals.FROM_CPU_INTR0);

    let led = Led(Output::new(
        peripherals.GPIO8,
        Level::from(LED_ACTIVE_LOW),
        OutputConfig::default(),
    ));
    let button = BootButton(Input::new(
        peripherals.GPIO9,
        InputConfig::default().with_pull(Pull::Up),
    ));

    let controller =
        WifiController::new(peripherals.WIFI, Default::default()).expect("the Wi-Fi driver starts");
    let rng = Rng::new();
    let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(wifi(controller).expect("one Wi-Fi task"));
    spawner.spawn(network(runner).expect("one network task"));

    log::info!("light on ESP32-C3");
    let config = blynk_device::Config::new(BLYNK_TOKEN)
        .with_firmware(concat!("light-esp32c3-", env!("CARGO_PKG_VERSION")))
        .with_seed(rng.random());
    light::run_on_stack(stack, BLYNK_SERVER, led, button, config).await
}
