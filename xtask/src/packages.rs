//! The system packages the test steps use, and installing the missing ones before anything builds.
//!
//! `cargo xtask test` calls [`ensure`] first: as root it installs every missing package with
//! apt-get (one line per package saying so); as another user it prints the one
//! `sudo apt-get install ...` line and stops, so nobody waits through a build that must fail.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

/// How to tell that a package is present.
#[derive(Debug, Clone, Copy)]
pub enum Proof {
    /// A program on the `PATH`.
    Program(&'static str),
    /// A file at a fixed path.
    File(&'static str),
    /// Python 3 imports these modules (`python3 -c "import ..."`).
    PythonModules(&'static str),
    /// A file at a path with one `*` (a version directory, as in
    /// `/usr/lib/postgresql/*/bin/initdb`).
    FileInAnyVersion(&'static str),
}

/// A Debian package a test step needs.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// The Debian package's name.
    pub name: &'static str,
    /// What shows it is installed.
    pub proof: Proof,
    /// Which tests need it (printed when it is installed).
    pub needed_by: &'static str,
}

/// Every system package `cargo xtask test` needs beyond Rust itself.
pub const PACKAGES: &[Package] = &[
    Package {
        name: "chromium",
        proof: Proof::File("/usr/bin/chromium"),
        needed_by: "the dashboard's browser tests",
    },
    Package {
        name: "nodejs",
        proof: Proof::Program("node"),
        needed_by: "the browser tests' runner",
    },
    Package {
        name: "npm",
        proof: Proof::Program("npm"),
        needed_by: "installing playwright-core for the browser tests",
    },
    Package {
        name: "python3-venv",
        proof: Proof::PythonModules("venv, ensurepip"),
        needed_by: "the tests with the public Python Blynk and MQTT clients",
    },
    Package {
        name: "mosquitto-clients",
        proof: Proof::Program("mosquitto_pub"),
        needed_by: "the MQTT tests with mosquitto_pub/mosquitto_sub",
    },
    Package {
        name: "postgresql",
        proof: Proof::FileInAnyVersion("/usr/lib/postgresql/*/bin/initdb"),
        needed_by: "the PostgreSQL store's tests (a server of their own on a loopback port)",
    },
    Package {
        name: "iproute2",
        proof: Proof::Program("ip"),
        needed_by: "the TAP devices of the simulated embassy-net device",
    },
    Package {
        name: "nats-server",
        proof: Proof::Program("nats-server"),
        needed_by: "the tests of several nodes linked by a bus",
    },
    Package {
        name: "haproxy",
        proof: Proof::Program("haproxy"),
        needed_by: "the test of two nodes behind a TCP load balancer",
    },
    Package {
        name: "nftables",
        proof: Proof::Program("nft"),
        needed_by: "the packet loss of the soak (cargo xtask soak and its smoke step)",
    },
];

impl Proof {
    fn holds(self) -> bool {
        match self {
            Proof::Program(program) => on_path(program),
            Proof::File(path) => std::path::Path::new(path).is_file(),
            Proof::PythonModules(modules) => Command::new("python3")
                .args(["-c", &format!("import {modules}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success()),
            Proof::FileInAnyVersion(pattern) => {
                let Some((parent, below)) = pattern.split_once("/*/") else {
                    return false;
                };
                std::fs::read_dir(parent).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|entry| entry.path().join(below).is_file())
                })
            }
        }
    }
}

/// Whether `program` is on the `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The packages of [`PACKAGES`] that are not installed.
pub fn missing() -> Vec<&'static Package> {
    PACKAGES
        .iter()
        .filter(|package| !package.proof.holds())
        .collect()
}

/// Installs what is missing (as root) or stops with the one command that would (otherwise).
pub fn ensure() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|package| package.name).collect();
    if !crate::workspace::is_root() {
        bail!(
            "system packages are missing; install them, then run this again:\n  sudo apt-get install -y --no-install-recommends {}",
            names.join(" ")
        );
    }
    for package in &missing {
        println!(
            "installing Debian's {} for {} (apt-get install)",
            package.name, package.needed_by
        );
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install()?.success() {
        // A fresh machine may not have package lists yet.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status()?;
        if !install()?.success() {
            bail!("`apt-get install {}` failed", names.join(" "));
        }
    }
    let still_missing: Vec<&str> = self::missing().iter().map(|package| package.name).collect();
    if !still_missing.is_empty() {
        bail!("installed, yet still missing: {}", still_missing.join(", "));
    }
    Ok(())
}

/// Adds rustfmt and clippy when the toolchain lacks them (a minimal rustup profile does).
pub fn ensure_rust_components() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for component in ["rustfmt", "clippy"] {
        if !installed.lines().any(|line| line.starts_with(component)) {
            println!("adding rustup component {component}");
            if !Command::new("rustup")
                .args(["component", "add", component])
                .status()?
                .success()
            {
                bail!("`rustup component add {component}` failed");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The package list against the programs the test code actually starts.

    use std::path::Path;

    use super::{PACKAGES, Proof};

    /// Programs every machine that builds Rust has (or that only non-test commands use).
    const BASE_PROGRAMS: &[&str] = &[
        "apt-get", "cargo", "rustc", "rustup", "id", "getconf", "kill", "sh", "probe-rs",
        // Debian's Essential packages (coreutils, util-linux): blynk-testbed's PostgreSQL.
        "chown", "runuser", "setsid",
    ];

    /// The Rust sources of everything `cargo xtask test` runs.
    fn test_sources() -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut sources = Vec::new();
        let mut dirs = vec![
            root.join("xtask/src"),
            root.join("server/tests"),
            root.join("crates/blynk-testbed/src"),
        ];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("node_modules") {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    sources.push(std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        sources
    }

    /// Every `"name"` that follows `marker` in `source`.
    fn literals_after<'a>(source: &'a str, marker: &str) -> Vec<&'a str> {
        source
            .match_indices(marker)
            .filter_map(|(at, _)| {
                let rest = &source[at + marker.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    /// The program a package provides (for a file, the file's name).
    fn proof_program(proof: Proof) -> &'static str {
        match proof {
            Proof::Program(program) => program,
            Proof::File(path) | Proof::FileInAnyVersion(path) => {
                path.rsplit('/').next().unwrap_or(path)
            }
            Proof::PythonModules(_) => "python3",
        }
    }

    /// How the test code names what a package provides.
    fn proof_literal(proof: Proof) -> String {
        match proof {
            Proof::File(path) | Proof::FileInAnyVersion(path) => format!("\"{path}\""),
            other => format!("\"{}\"", proof_program(other)),
        }
    }

    #[test]
    fn every_program_the_tests_start_is_a_listed_package_or_a_base_tool() {
        let sources = test_sources();
        assert!(!sources.is_empty(), "no sources found");
        let listed: Vec<&str> = PACKAGES
            .iter()
            .map(|package| proof_program(package.proof))
            .collect();
        for source in &sources {
            for program in literals_after(source, "Command::new(\"") {
                assert!(
                    BASE_PROGRAMS.contains(&program) || listed.contains(&program),
                    "the tests start `{program}`, which no entry of PACKAGES provides"
                );
            }
        }
    }

    #[test]
    fn every_listed_package_is_used_by_some_test() {
        let sources = test_sources().join("\n");
        for package in PACKAGES {
            let literal = proof_literal(package.proof);
            assert!(
                sources.contains(&literal),
                "{} is listed, but no test names {literal}",
                package.name
            );
        }
    }
}
