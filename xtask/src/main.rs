//! Project automation: every CI lane is a subcommand, so a newcomer runs what CI runs.
//!
//! `cargo xtask test` is the one command that checks everything; `.ci/run` calls it.

mod bench;
mod blynk_server;
mod boards;
mod browser;
mod conformance;
mod fuzz;
mod netns;
mod packages;
mod sim;
mod soak;
mod steps;
mod tidy;
mod workspace;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test    format check, clippy -D warnings, every test, a fuzz smoke run, no_std builds
          (what CI runs); first installs the missing system packages it needs (as root;
          otherwise prints the line)
  bench   every row of the performance table (blynk-load against the release server, and
          Mosquitto beside it), then writes docs/performance.md; `--only a,c` picks rows,
          `--seconds`, `--runs` set durations (`bench --help`); `bench load ARGS` runs one
          blynk-load scenario, `bench codecs [filter]` the codec benchmarks
  conformance [names] [--kind K] [--sim]  the state-sync scenarios of conformance/scenarios/
          against the real server, for every device kind, as a table (names filter the
          scenarios; --kind runs one kind: blynk-device, blynklib, blynk-library-python,
          embassy-net-sim, paho-mqtt; --sim, as root, adds the simulated embassy-net device
          on TAP devices in a network namespace of the run, removed at the end)
  soak [--devices N] [--minutes M] [--loss PCT]  (as root) the server and N devices of the
          native library (default 1000) in network namespaces made for the run, nftables
          dropping PCT% of packets each way (default 20), apps and devices writing for M
          minutes (default 5); then checks every device's state and every acknowledged write
          against the server and reports the server's RSS over the run
  fuzz [--seconds N] [--target T]  the cargo-fuzz targets of fuzz/ (nightly and cargo-fuzz
          installed when missing), each N seconds (default 60), or one; prints executions and
          crashes per target
  build [--board B]  cross-builds the board firmware under firmware/ (every board, or one:
          esp32c3 | nucleo-f767zi) and prints its flash and RAM use; `--polling` builds the
          polling button, `--features F` passes cargo features (e.g. led-active-low)
  flash --board B  builds, then flashes and runs it with probe-rs (same options)
  sim --token T [--server IP:PORT]  (as root) the simulated device, the light app over a
          real embassy-net stack, on a TAP device made for it (192.168.69.2 behind the host's
          192.168.69.100; the server default 192.168.69.100:8441), removed at the end
          `sim check`: it against a real server on a TAP device of its own (LED by app write,
          button reported back), every wait bounded, everything torn down
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => steps::test(),
        Some("build") => boards::build(&args[1..]),
        Some("flash") => boards::flash(&args[1..]),
        Some("sim") => sim::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("conformance") => conformance::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
