//! The light bulb on an STM32 Nucleo-F767ZI over wired Ethernet: the green user LED LD1
//! (PB0) is the light, the blue user button B1 (PC13) toggles it.
//!
//! The on-board LAN8742A PHY is driven by embassy-stm32's RMII Ethernet, the network stack is
//! embassy-net with DHCP; no blobs, no heap. The light itself is the shared `light` crate. The
//! server and the device token come from the environment or `config.local.toml` at build time.
#![no_std]
#![no_main]

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_stm32::eth::{self, Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::gpio::{Level, Output, Pull, Speed};
use embassy_stm32::mode::Async;
use embassy_stm32::peripherals::{ETH, ETH_SMA, RNG};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::time::Hertz;
use embassy_stm32::{Config, bind_interrupts, interrupt};
use panic_probe as _;
use static_cell::StaticCell;

const BLYNK_SERVER: &str = env!(
    "BLYNK_SERVER",
    "set BLYNK_SERVER to the server's address as the board sees it, e.g. 192.168.1.20:8441 \
     (or write firmware/nucleo-f767zi/config.local.toml, see config.local.toml.example)"
);
const BLYNK_TOKEN: &str = env!(
    "BLYNK_TOKEN",
    "set BLYNK_TOKEN to the device token from the dashboard (or the server's demo token)"
);

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<RNG>;
    EXTI15_10 => exti::InterruptHandler<interrupt::typelevel::EXTI15_10>;
});

struct Led(Output<'static>);

impl light::Led for Led {
    fn set(&mut self, on: bool) {
        self.0.set_level(Level::from(on));
    }
}

/// The user button B1: pulls PC13 high when pressed (the board has the pull-down).
struct UserButton(ExtiInput<'static, Async>);

impl light::Button for UserButton {
    fn is_pressed(&mut self) -> bool {
        self.0.is_high()
    }

    async fn wait_for_edge(&mut self) {
        self.0.wait_for_any_edge().await;
    }
}

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// Runs the network stack (DHCP, TCP, DNS).
#[embassy_executor::task]
async fn network(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}

/// 216 MHz from the ST-LINK's 8 MHz clock; Ethernet needs at least 25 MHz, the RNG 48 MHz.
fn clocks() -> Config {
    use embassy_stm32::rcc::{
        AHBPrescaler, APBPrescaler, Hse, HseMode, Pll, PllMul, PllPDiv, PllPreDiv, PllQDiv,
        PllSource, Sysclk,
    };
    let mut config = Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::Bypass,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL216,
        divp: Some(PllPDiv::DIV2),
        divq: Some(PllQDiv::DIV9),
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.sys = Sysclk::PLL1_P;
    config
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = embassy_stm32::init(clocks());
    defmt::info!("light on Nucleo-F767ZI");

    let led = Led(Output::new(p.PB0, Level::Low, Speed::Low));
    let button = UserButton(ExtiInput::new(p.PC13, p.EXTI13, Pull::None, Irqs));

    let mut rng = Rng::new(p.RNG, Irqs);
    // A locally administered MAC address, the same on every boot of this board.
    let id = embassy_stm32::uid::uid();
    let mac = [0x02, 0x00, id[0], id[1], id[2], id[3]];
    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::new()),
        p.ETH,
        Irqs,
        p.PA1,  // REF_CLK
        p.PA7,  // CRS_DV
        p.PC4,  // RXD0
        p.PC5,  // RXD1
        p.PG13, // TXD0
        p.PB13, // TXD1
        p.PG11, // TX_EN
        mac,
        p.ETH_SMA,
        p.PA2, // MDIO
        p.PC1, // MDC
    );
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        rng.next_u64(),
    );
    spawner.spawn(network(runner).expect("one network task"));

    defmt::info!("light on Nucleo-F767ZI (is the Ethernet cable in?)");
    let config = blynk_device::Config::new(BLYNK_TOKEN)
        .with_firmware(concat!("light-nucleo-f767zi-", env!("CARGO_PKG_VERSION")))
        .with_seed(rng.next_u32());
    light::run_on_stack(stack, BLYNK_SERVER, led, button, config).await
}
