//! `cargo xtask build` and `cargo xtask flash`: cross-build the board firmware under
//! `firmware/` (each board its own Cargo project), report its flash and RAM use, and flash it
//! through the probe-rs CLI.
//!
//! The boards are a table, so adding one is one entry. Flashing fails fast: probe-rs, the
//! probe and the settings are checked, in that order, before a minute goes into a build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The settings file's one reader, shared with the boards' build scripts.
#[path = "../../firmware/build_settings.rs"]
mod build_settings;

use crate::steps::ensure_target;
use crate::workspace::workspace_root;

/// One board's firmware project.
struct Board {
    /// The name `--board` takes, also the directory under `firmware/`.
    name: &'static str,
    /// What it is, for messages.
    title: &'static str,
    /// The Rust target it is built for.
    target: &'static str,
    /// The binary's name (the board's package name).
    binary: &'static str,
    /// The chip's name for `probe-rs run --chip`.
    chip: &'static str,
    /// Build-time settings the firmware reads with `env!`, each with a placeholder that lets
    /// `cargo xtask build` compile it when none is configured.
    settings: &'static [(&'static str, &'static str)],
    /// Address ranges of the chip's RAM, to tell RAM sections from flash ones.
    ram: &'static [(u64, u64)],
    /// The chip's flash and RAM in KiB, to print the use against.
    capacity_kib: (u64, u64),
}

const SERVER: (&str, &str) = ("BLYNK_SERVER", "192.0.2.1:8441");
const TOKEN: (&str, &str) = ("BLYNK_TOKEN", "placeholder_token_0123456789abcd");

const BOARDS: &[Board] = &[
    Board {
        name: "esp32c3",
        title: "ESP32-C3 over Wi-Fi",
        target: "riscv32imc-unknown-none-elf",
        binary: "light-esp32c3",
        chip: "esp32c3",
        settings: &[
            ("WIFI_SSID", "placeholder-network"),
            ("WIFI_PASSWORD", "placeholder-password"),
            SERVER,
            TOKEN,
        ],
        // Data RAM and instruction RAM (the same SRAM, seen on two buses).
        ram: &[(0x3FC8_0000, 0x3FCE_0000), (0x4037_C000, 0x403E_0000)],
        capacity_kib: (4096, 400),
    },
    Board {
        name: "nucleo-f767zi",
        title: "STM32 Nucleo-F767ZI over Ethernet",
        target: "thumbv7em-none-eabihf",
        binary: "light-nucleo-f767zi",
        chip: "STM32F767ZITx",
        settings: &[SERVER, TOKEN],
        ram: &[(0x2000_0000, 0x2008_0000)],
        capacity_kib: (2048, 512),
    },
];

/// `cargo xtask build [--board B] [--polling] [--features F]`.
pub fn build(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let boards = options.boards();
    let started = Instant::now();
    let mut sizes = Vec::new();
    for (index, board) in boards.iter().enumerate() {
        println!(
            "\n==> [{}/{}] {} ({}, {})",
            index + 1,
            boards.len(),
            board.name,
            board.title,
            board.target
        );
        let elf = build_board(board, &options, Settings::PlaceholdersAllowed)?;
        let size = Size::of(&elf, board)?;
        println!("<== {}: {}", board.name, size.describe(board));
        sizes.push((board.name, size, board));
    }
    println!(
        "\nbuilt {} board(s) in {:.0} s:",
        sizes.len(),
        started.elapsed().as_secs_f64()
    );
    for (name, size, board) in &sizes {
        println!("  {name:<14} {}", size.describe(board));
    }
    println!(
        "(flash: code, read-only data and the initial values of data; RAM: data, bss, heap \
         and code run from RAM, the stack not counted)"
    );
    Ok(())
}

/// `cargo xtask flash --board B [--polling] [--features F]`.
pub fn flash(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let Some(board) = options.board else {
        bail!("which board? `cargo xtask flash --board {}`", board_names());
    };
    // Everything that can be checked in a second is checked before the build.
    probe_rs_installed()?;
    probe_attached(board)?;
    missing_settings(board)?;
    println!("\n==> building {} ({})", board.name, board.title);
    let elf = build_board(board, &options, Settings::Required)?;
    println!(
        "<== {}: {}",
        board.name,
        Size::of(&elf, board)?.describe(board)
    );
    println!(
        "\n==> probe-rs run --chip {} {} (Ctrl-C stops the log; the board keeps running)",
        board.chip,
        elf.display()
    );
    let status = Command::new("probe-rs")
        .args(["run", "--chip", board.chip])
        .arg(&elf)
        .status()
        .context("could not start probe-rs")?;
    if !status.success() {
        bail!(
            "probe-rs could not flash or run the {} ({status})",
            board.title
        );
    }
    Ok(())
}

/// The command line of `build` and `flash`.
struct Options {
    board: Option<&'static Board>,
    /// Cargo features of the board's firmware (`--polling` is `polling`).
    features: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            board: None,
            features: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--board" => {
                    let Some(name) = args.next() else {
                        bail!("--board needs a name: {}", board_names());
                    };
                    options.board = Some(find_board(name)?);
                }
                "--polling" => options.features.push("polling".into()),
                "--features" => match args.next() {
                    Some(features) => options.features.push(features.clone()),
                    None => bail!("--features needs a list, e.g. --features led-active-low"),
                },
                other => match other.strip_prefix("--board=") {
                    Some(name) => options.board = Some(find_board(name)?),
                    None => {
                        bail!("unknown argument `{other}` (--board B, --polling, --features F)")
                    }
                },
            }
        }
        Ok(options)
    }

    fn boards(&self) -> Vec<&'static Board> {
        match self.board {
            Some(board) => vec![board],
            None => BOARDS.iter().collect(),
        }
    }
}

fn find_board(name: &str) -> Result<&'static Board> {
    match BOARDS.iter().find(|board| board.name == name) {
        Some(board) => Ok(board),
        None => bail!("no board `{name}`; the boards are {}", board_names()),
    }
}

fn board_names() -> String {
    BOARDS
        .iter()
        .map(|board| board.name)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn board_dir(board: &Board) -> PathBuf {
    workspace_root().join("firmware").join(board.name)
}

/// Where the firmware builds go: `CARGO_TARGET_DIR` when set, else `target/firmware`, apart
/// from the host builds so neither invalidates the other.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target").join("firmware"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Settings {
    /// `build`: compile with placeholders for what is not configured, and say so.
    PlaceholdersAllowed,
    /// `flash`: a board with placeholders cannot reach the server; every setting is needed.
    Required,
}

/// The settings configured neither in the environment nor in `config.local.toml`.
fn unconfigured(board: &Board) -> Result<Vec<(&'static str, &'static str)>> {
    let file = build_settings::read(&board_dir(board).join(build_settings::FILE))
        .map_err(anyhow::Error::msg)?;
    let missing = board
        .settings
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_none() && !file.contains_key(*name))
        .copied()
        .collect();
    Ok(missing)
}

fn missing_settings(board: &Board) -> Result<()> {
    let missing = unconfigured(board)?;
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
    bail!(
        "the {} needs {} to reach your server: set {} in the environment, or write them into \
         firmware/{}/config.local.toml (see config.local.toml.example there; git ignores it)",
        board.title,
        names.join(", "),
        if names.len() == 1 { "it" } else { "them" },
        board.name
    );
}

/// Builds one board in release mode and returns its ELF file.
fn build_board(board: &Board, options: &Options, settings: Settings) -> Result<PathBuf> {
    ensure_target(board.target)?;
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The board's own `.cargo/config.toml` (target, linker scripts, runner) applies there.
    command
        .current_dir(board_dir(board))
        .args(["build", "--release"])
        .env("CARGO_TARGET_DIR", target_dir());
    let features = options.features.join(",");
    if !features.is_empty() {
        command.args(["--features", &features]);
    }
    let placeholders = unconfigured(board)?;
    if !placeholders.is_empty() {
        if settings == Settings::Required {
            missing_settings(board)?;
        }
        let names: Vec<&str> = placeholders.iter().map(|(name, _)| *name).collect();
        println!(
            "note: {} not configured: building with placeholders, so this build shows the \
             sizes but cannot reach a server (set them in the environment or in \
             firmware/{}/config.local.toml)",
            names.join(", "),
            board.name
        );
        for (name, placeholder) in &placeholders {
            command.env(name, placeholder);
        }
    }
    println!(
        "cargo build --release{} in firmware/{} (a clean build takes a minute or two)",
        if features.is_empty() {
            String::new()
        } else {
            format!(" --features {features}")
        },
        board.name
    );
    let started = Instant::now();
    let status = command
        .status()
        .context("could not start cargo for the firmware")?;
    if !status.success() {
        bail!("the {} firmware did not build ({status})", board.name);
    }
    println!("built in {:.0} s", started.elapsed().as_secs_f64().max(0.0));
    let elf = target_dir()
        .join(board.target)
        .join("release")
        .join(board.binary);
    if !elf.is_file() {
        bail!("the build left no ELF file at {}", elf.display());
    }
    Ok(elf)
}

fn probe_rs_installed() -> Result<()> {
    match Command::new("probe-rs").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!(
            "probe-rs is not installed (flashing goes through its command line).\n\
             Install it with `cargo install probe-rs-tools --locked` (about 10 minutes), \
             then run this again.\n\
             On Linux, also install its udev rules so a normal user can open the probe: \
             https://probe.rs/docs/getting-started/probe-setup/"
        ),
    }
}

/// `probe-rs list` names every attached debug probe; none is a clear, early error.
fn probe_attached(board: &Board) -> Result<()> {
    let output = Command::new("probe-rs")
        .arg("list")
        .output()
        .context("could not run `probe-rs list`")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let found = text.lines().any(|line| line.trim_start().starts_with('['));
    if output.status.success() && found {
        return Ok(());
    }
    let how = match board.name {
        "esp32c3" => {
            "plug the ESP32-C3 in through its USB port (the built-in USB-JTAG; on boards with \
             two USB ports, the one marked USB, not UART)"
        }
        _ => "plug the Nucleo in through its ST-LINK USB port (CN1, at the top of the board)",
    };
    bail!(
        "no debug probe found: probe-rs sees no board attached.\n\
         To fix it: {how}, with a data cable, not a charge-only one. On Linux, if it is plugged \
         in, install probe-rs's udev rules (or run as root) so it can be opened; in a VM or a \
         container, pass the USB device through. `probe-rs list` shows what it finds."
    );
}

/// Flash and RAM use of a firmware, from its ELF section headers.
struct Size {
    /// Bytes written to flash: code, read-only data and the initial values of data.
    flash: u64,
    /// Bytes of RAM taken statically: data, bss and code run from RAM (the stack not counted).
    ram: u64,
}

impl Size {
    fn of(elf: &Path, board: &Board) -> Result<Size> {
        let bytes =
            std::fs::read(elf).with_context(|| format!("could not read {}", elf.display()))?;
        let sections =
            sections(&bytes).with_context(|| format!("{} is not an ELF file", elf.display()))?;
        let mut size = Size { flash: 0, ram: 0 };
        for section in sections {
            const SHF_ALLOC: u64 = 0x2;
            const SHT_PROGBITS: u32 = 1;
            // Placeholders that only reserve address space, and the stack, are not used memory.
            let reserved = section.name.contains("dummy") || section.name == ".stack";
            if section.flags & SHF_ALLOC == 0 || reserved {
                continue;
            }
            if section.kind == SHT_PROGBITS {
                size.flash += section.size;
            }
            let in_ram = board
                .ram
                .iter()
                .any(|(start, end)| (*start..*end).contains(&section.address));
            if in_ram {
                size.ram += section.size;
            }
        }
        Ok(size)
    }

    fn describe(&self, board: &Board) -> String {
        let (flash, ram) = board.capacity_kib;
        format!(
            "flash {:.1} KiB of {flash} KiB, RAM {:.1} KiB of {ram} KiB",
            self.flash as f64 / 1024.0,
            self.ram as f64 / 1024.0
        )
    }
}

/// One ELF section header, as far as sizes need it.
struct Section {
    name: String,
    kind: u32,
    flags: u64,
    address: u64,
    size: u64,
}

/// The section headers of a little-endian ELF file, 32- or 64-bit.
fn sections(bytes: &[u8]) -> Option<Vec<Section>> {
    let read = |offset: usize, width: usize| -> Option<u64> {
        let field = bytes.get(offset..offset.checked_add(width)?)?;
        Some(
            field
                .iter()
                .rev()
                .fold(0u64, |value, byte| (value << 8) | u64::from(*byte)),
        )
    };
    if bytes.get(0..4)? != b"\x7fELF" || *bytes.get(5)? != 1 {
        return None;
    }
    let wide = match bytes.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let word = if wide { 8 } else { 4 };
    let (table, entry_size, count, names_index) = if wide {
        (
            read(0x28, 8)?,
            read(0x3A, 2)?,
            read(0x3C, 2)?,
            read(0x3E, 2)?,
        )
    } else {
        (
            read(0x20, 4)?,
            read(0x2E, 2)?,
            read(0x30, 2)?,
            read(0x32, 2)?,
        )
    };
    let header = |index: u64| -> Option<(u64, u32, u64, u64, u64, u64)> {
        let at = usize::try_from(table.checked_add(index.checked_mul(entry_size)?)?).ok()?;
        let name = read(at, 4)?;
        let kind = u32::try_from(read(at + 4, 4)?).ok()?;
        let flags = read(at + 8, word)?;
        let address = read(at + 8 + word, word)?;
        let offset = read(at + 8 + 2 * word, word)?;
        let size = read(at + 8 + 3 * word, word)?;
        Some((name, kind, flags, address, offset, size))
    };
    let (_, _, _, _, names_offset, _) = header(names_index)?;
    let name_at = |offset: u64| -> String {
        let start = usize::try_from(names_offset.saturating_add(offset)).unwrap_or(usize::MAX);
        let text = bytes.get(start..).unwrap_or_default();
        let end = text.iter().position(|byte| *byte == 0).unwrap_or(0);
        String::from_utf8_lossy(text.get(..end).unwrap_or_default()).into_owned()
    };
    (0..count)
        .map(|index| {
            let (name, kind, flags, address, _, size) = header(index)?;
            Some(Section {
                name: name_at(name),
                kind,
                flags,
                address,
                size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_settings_are_read_as_toml() {
        let dir = std::env::temp_dir().join(format!("xtask-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(build_settings::FILE);
        assert!(
            build_settings::read(&file).unwrap().is_empty(),
            "no file, no settings"
        );
        std::fs::write(
            &file,
            "# a comment\nWIFI_SSID = \"home = 2.4 GHz\" # the network\nBLYNK_TOKEN = 'abc'\n",
        )
        .unwrap();
        let settings = build_settings::read(&file).unwrap();
        assert_eq!(settings["WIFI_SSID"], "home = 2.4 GHz");
        assert_eq!(settings["BLYNK_TOKEN"], "abc");
        std::fs::write(&file, "BLYNK_TOKEN = \"unterminated\n").unwrap();
        assert!(build_settings::read(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A 32-bit ELF with a null section, `.text` (flash) and `.bss` (RAM), and its names.
    fn tiny_elf() -> Vec<u8> {
        let names = b"\0.text\0.bss\0.shstrtab\0";
        let mut elf = vec![0u8; 0x34];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 1; // 32-bit
        elf[5] = 1; // little-endian
        let names_at = elf.len() as u32;
        elf.extend_from_slice(names);
        let table = elf.len() as u32;
        elf[0x20..0x24].copy_from_slice(&table.to_le_bytes());
        elf[0x2E..0x30].copy_from_slice(&40u16.to_le_bytes());
        elf[0x30..0x32].copy_from_slice(&4u16.to_le_bytes());
        elf[0x32..0x34].copy_from_slice(&3u16.to_le_bytes());
        // name, type, flags, address, offset, size, then four unused words.
        let headers: [[u32; 6]; 4] = [
            [0, 0, 0, 0, 0, 0],
            [1, 1, 0x6, 0x0800_0000, 0, 1000],
            [7, 8, 0x3, 0x2000_0000, 0, 300],
            [12, 3, 0, 0, names_at, names.len() as u32],
        ];
        for header in headers {
            for field in header {
                elf.extend_from_slice(&field.to_le_bytes());
            }
            elf.extend_from_slice(&[0; 16]);
        }
        elf
    }

    #[test]
    fn sizes_come_from_the_section_headers() {
        let path = std::env::temp_dir().join(format!("xtask-size-{}.elf", std::process::id()));
        std::fs::write(&path, tiny_elf()).unwrap();
        let board = find_board("nucleo-f767zi").unwrap();
        let size = Size::of(&path, board).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((size.flash, size.ram), (1000, 300));
    }

    #[test]
    fn placeholder_token_is_a_valid_token() {
        assert_eq!(TOKEN.1.len(), 32);
    }
}
