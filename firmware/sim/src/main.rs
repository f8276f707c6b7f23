//! The light bulb on the host: the same `light` app as the boards, over a real embassy-net stack
//! (smoltcp's TCP, ARP, retransmissions) on a TAP interface, run by embassy-executor on std.
//!
//! ```text
//! light-sim --tap tap0 --token TOKEN --server 192.168.69.100:8441 [--ip 192.168.69.2/24]
//!           [--gateway 192.168.69.100] [--control /tmp/light-sim.sock]
//! ```
//!
//! The TAP device must exist and be up (`cargo xtask sim` makes it, as root:
//! `ip tuntap add name tap0 mode tap; ip link set tap0 up; ip addr add 192.168.69.100/24 dev
//! tap0`). The process opens the TAP of its own network namespace, so it runs unchanged inside
//! one (`ip netns exec NS light-sim ...`) where tests cut or drop its link.
//!
//! It prints one line per thing a person would see, as `blynk-device`'s `host_light` example
//! does: `connected`, `disconnected: ...`, `sync complete (N values)`, `LED on`, `LED off`.
//! Library log lines go to standard error. The button is the line `press` on standard input or
//! on the Unix control socket given with `--control` (one command per line, any number of
//! connections); `loss PERCENT` there (or `--loss`) drops that share of the Ethernet frames each
//! way, real packet loss under the device's TCP stack. Cutting the link (`ip link set TAP down`)
//! loses every frame until it is up again; the device keeps running.

mod tap;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use blynk_device::net::{Host, TcpConnector};
use embassy_executor::{Executor, Spawner};
use embassy_net::{Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use static_cell::StaticCell;
use tap::TapDevice;

const USAGE: &str = "usage: light-sim --tap NAME --token TOKEN --server IP:PORT \
[--ip 192.168.69.2/24] [--gateway IP] [--control SOCKET-PATH] [--loss PERCENT]";

/// How long a `press` holds the button down.
const PRESS_LENGTH: StdDuration = StdDuration::from_millis(100);

/// What the command line says.
struct Args {
    tap: String,
    token: String,
    server: Ipv4Addr,
    port: u16,
    ip: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    control: Option<String>,
    loss: u8,
    heartbeat: u16,
}

fn argument(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|arg| arg == name)?;
    args.get(at + 1).cloned()
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        return Err(String::new());
    }
    let tap = argument(&args, "--tap").ok_or("--tap NAME is needed")?;
    let token = argument(&args, "--token").ok_or("--token TOKEN is needed")?;
    let server = argument(&args, "--server").ok_or("--server IP:PORT is needed")?;
    let (host, port) = light::split_server(&server);
    let server = host
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("--server must be an IPv4 address and port, not `{server}`"))?;
    let ip = argument(&args, "--ip").unwrap_or_else(|| "192.168.69.2/24".into());
    let (address, prefix) = ip.split_once('/').unwrap_or((&ip, "24"));
    let (Ok(address), Ok(prefix)) = (address.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
        return Err(format!("--ip must look like 192.168.69.2/24, not `{ip}`"));
    };
    if prefix > 32 {
        return Err(format!("--ip: the prefix length of `{ip}` is over 32"));
    }
    let gateway = match argument(&args, "--gateway") {
        Some(gateway) => Some(
            gateway
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("--gateway must be an IPv4 address, not `{gateway}`"))?,
        ),
        None => None,
    };
    Ok(Args {
        tap,
        token,
        server,
        port,
        ip: Ipv4Cidr::new(address, prefix),
        gateway,
        control: argument(&args, "--control"),
        heartbeat: match argument(&args, "--heartbeat") {
            Some(seconds) => seconds
                .parse::<u16>()
                .map_err(|_| format!("--heartbeat must be a number of seconds, not `{seconds}`"))?,
            None => 0,
        },
        loss: match argument(&args, "--loss") {
            Some(loss) => match loss.parse::<u8>() {
                Ok(percent) if percent <= 100 => percent,
                _ => return Err(format!("--loss must be a percentage, not `{loss}`")),
            },
            None => 0,
        },
    })
}

/// The LED: a line on standard output.
struct ConsoleLed;

impl light::Led for ConsoleLed {
    fn set(&mut self, on: bool) {
        println!("LED {}", if on { "on" } else { "off" });
    }
}

/// Whether the button is held down now; written by the console threads.
static PRESSED: AtomicBool = AtomicBool::new(false);
/// The button's "interrupt": signalled on every edge.
static EDGE: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// The button, pressed from the console or the control socket.
struct ConsoleButton;

impl light::Button for ConsoleButton {
    fn is_pressed(&mut self) -> bool {
        PRESSED.load(Ordering::SeqCst)
    }

    async fn wait_for_edge(&mut self) {
        EDGE.wait().await;
    }
}

/// One press: down, held for [`PRESS_LENGTH`], up (blocks the calling thread meanwhile).
fn press() {
    PRESSED.store(true, Ordering::SeqCst);
    EDGE.signal(());
    std::thread::sleep(PRESS_LENGTH);
    PRESSED.store(false, Ordering::SeqCst);
    EDGE.signal(());
}

/// Reads commands, one a line, until the end of `input`.
fn console(input: impl BufRead) {
    for line in input.lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "press" => press(),
            "" => {}
            other if other.starts_with("write ") => write(other),
            other => match other.strip_prefix("loss ").map(|p| p.trim().parse::<u8>()) {
                Some(Ok(percent)) if percent <= 100 => {
                    tap::LOSS.store(percent, Ordering::SeqCst);
                    eprintln!("light-sim: dropping {percent}% of the frames each way");
                }
                _ => eprintln!(
                    "unknown command `{other}`; commands: press | write Vn value | loss PERCENT"
                ),
            },
        }
    }
}

/// `write V2 42`: a `virtual_write` through the light's device object.
fn write(line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, pin, value] = words.as_slice() else {
        eprintln!("usage: write V2 42");
        return;
    };
    let Ok(pin) = pin.trim_start_matches(['V', 'v']).parse::<u8>() else {
        eprintln!("usage: write V2 42");
        return;
    };
    let queued = match value.parse::<i64>() {
        Ok(number) => light::device().virtual_write(pin, number),
        Err(_) => light::device().virtual_write(pin, *value),
    };
    if let Err(error) = queued {
        eprintln!("light-sim: write refused: {error}");
    }
}

/// Serves the control socket: every connection is a console.
fn control_socket(path: String) {
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("light-sim: cannot listen on the control socket {path}: {error}");
            std::process::exit(2);
        }
    };
    eprintln!("light-sim: control socket {path}");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || console(BufReader::new(stream)));
        }
    });
}

/// Prints the light's own lines as a person sees them (on standard output, in the same words
/// as `host_light`), and everything else, the libraries' logs, on standard error.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if record.target().starts_with("light") {
            if message == "connected" || message.starts_with("disconnected") {
                println!("{message}");
                return;
            }
            if let Some(count) = message.strip_prefix("restored by state sync ") {
                println!("sync complete {count}");
                return;
            }
            if message.starts_with("light ") {
                return; // The LED prints it.
            }
        }
        eprintln!("{:5} {}: {message}", record.level(), record.target());
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Runs the network stack (ARP, IPv4, TCP) over the TAP device.
#[embassy_executor::task]
async fn network(mut runner: Runner<'static, TapDevice>) -> ! {
    runner.run().await
}

/// Brings the stack up and runs the light.
#[embassy_executor::task]
async fn light_task(spawner: Spawner, args: Args, device: TapDevice) {
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|time| time.as_nanos() as u64)
            .unwrap_or(0);
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: args.ip,
        gateway: args.gateway,
        dns_servers: Default::default(),
    });
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let (stack, runner) =
        embassy_net::new(device, config, RESOURCES.init(StackResources::new()), seed);
    spawner.spawn(network(runner).expect("one network task"));
    stack.wait_config_up().await;
    eprintln!(
        "light-sim: {} on {}, connecting to {}:{}",
        args.ip, args.tap, args.server, args.port
    );

    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let connector = TcpConnector::new(
        stack,
        Host::Address(args.server.into()),
        args.port,
        &mut rx,
        &mut tx,
    );
    let mut config = blynk_device::Config::new(&args.token)
        .with_firmware(concat!("light-sim-", env!("CARGO_PKG_VERSION")))
        .with_seed(seed as u32);
    if args.heartbeat > 0 {
        config = config.with_heartbeat(args.heartbeat);
    }
    let error = light::run(ConsoleLed, ConsoleButton, connector, config).await;
    println!("stopped: {error}");
    std::process::exit(1);
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("light-sim: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info));
    let device = match TapDevice::new(&args.tap, std::process::id()) {
        Ok(device) => device,
        Err(error) => {
            eprintln!(
                "light-sim: cannot open the TAP device `{}`: {error} (it must exist and this \
                 process needs the right to open it: `cargo xtask sim` makes it, as root)",
                args.tap
            );
            std::process::exit(2);
        }
    };
    tap::LOSS.store(args.loss, Ordering::SeqCst);
    std::thread::spawn(|| console(std::io::stdin().lock()));
    if let Some(path) = args.control.clone() {
        control_socket(path);
    }
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR.init(Executor::new()).run(move |spawner| {
        spawner.spawn(light_task(spawner, args, device).expect("one light task"));
    });
}
