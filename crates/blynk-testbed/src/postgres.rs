//! A real PostgreSQL from Debian's `postgresql` package, on a free loopback port in a temporary
//! directory: one server per test binary ([`shared`]), a fresh database per test
//! ([`Postgres::fresh_database`]), and [`Postgres::stop`], [`Postgres::resume`] and
//! [`Postgres::restart`] for tests of an outage. A test that stops PostgreSQL starts one of its
//! own ([`Postgres::start`], about a second): the shared one must not go away under the others.
//!
//! PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user
//! (`runuser`). It is stopped on every exit path: dropping it stops it, and its watchdog
//! (`watchdog.rs`) stops it (`-m immediate`) and removes its directory when this process ends
//! without a drop.
//!
//! Durability is traded for speed (`fsync=off`): the tests stop and kill processes, never the
//! machine, so every committed transaction still survives them. Benchmarks use
//! [`Postgres::start_durable`] (PostgreSQL's defaults: every commit flushed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::process::{Error, is_root, on_a_free_port, run, temporary_directory};
use crate::watchdog::Watchdog;

/// Where Debian's `postgresql` package puts `initdb` (one directory per major version).
const DEBIAN_INITDB: &str = "/usr/lib/postgresql/*/bin/initdb";

/// What to do when the programs are missing.
const HOW_TO_INSTALL: &str = "PostgreSQL's server programs (initdb, pg_ctl) were not found in \
    /usr/lib/postgresql/*/bin, in BLYNK_PG_BIN or on the PATH: install Debian's `postgresql` \
    package (`cargo xtask test` installs it when run as root: `apt-get install postgresql`)";

/// The server every caller in this process shares; started by the first call.
///
/// # Panics
///
/// When PostgreSQL cannot be started (not installed, say): the message says why.
pub fn shared() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(|| Postgres::start().unwrap_or_else(|error| panic!("{error}")))
}

/// A PostgreSQL server of this process; stopped and its directory removed when dropped.
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    /// Run the programs as the `postgres` user (this process is root).
    as_postgres: bool,
    /// Whether commits are flushed to disk.
    fsync: bool,
    databases: AtomicU32,
    /// One stop or start at a time.
    lifecycle: Mutex<()>,
    /// Stops the server when dropped, or when this process ends without a drop.
    _watchdog: Watchdog,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    pub fn start() -> Result<Postgres, Error> {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start), with every commit flushed to disk (for figures).
    pub fn start_durable() -> Result<Postgres, Error> {
        Self::start_with(true)
    }

    fn start_with(fsync: bool) -> Result<Postgres, Error> {
        let bin = find_programs().ok_or_else(|| Error::new(HOW_TO_INSTALL))?;
        let as_postgres = is_root();
        let root = temporary_directory("pg")?;
        let pg_ctl = bin.join("pg_ctl");
        let stop = if as_postgres {
            r#"runuser -u postgres -- "$0" -D "$1/data" -m immediate -w stop"#
        } else {
            r#""$0" -D "$1/data" -m immediate -w stop"#
        };
        let watchdog = Watchdog::start(
            "PostgreSQL",
            &format!("if [ -d \"$1/data\" ]; then {stop}; fi >/dev/null 2>&1; rm -rf \"$1\""),
            &[pg_ctl.as_os_str(), root.as_os_str()],
        )?;
        let mut server = Postgres {
            bin,
            root,
            port: 0,
            as_postgres,
            fsync,
            databases: AtomicU32::new(0),
            lifecycle: Mutex::new(()),
            _watchdog: watchdog,
        };
        std::fs::create_dir_all(server.root.join("socket"))
            .map_err(|error| Error::new(format!("creating the socket directory: {error}")))?;
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&server.root))?;
        }
        run(server
            .program("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(server.root.join("data")))?;
        on_a_free_port(|port| {
            server.port = port;
            server.resume()
        })?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database`, as `--store` takes it (`postgres` always exists).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    ///
    /// # Panics
    ///
    /// When `createdb` fails (the server is stopped, say).
    pub fn fresh_database(&self) -> String {
        self.create_database()
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Creates an empty database and returns its URL, or why it could not.
    pub fn create_database(&self) -> Result<String, Error> {
        let name = format!("test_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        run(Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name))
        .map_err(|error| Error::new(format!("creating database {name}: {error}")))?;
        Ok(self.url(&name))
    }

    /// Stops the server (connections are closed; clients see it gone).
    ///
    /// # Panics
    ///
    /// When `pg_ctl stop` fails.
    pub fn stop(&self) {
        let _once = self
            .lifecycle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Err(error) = self.pg_ctl(&["-m", "fast", "stop"]) {
            panic!("stopping PostgreSQL: {error}");
        }
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and data.
    pub fn resume(&self) -> Result<(), Error> {
        let _once = self
            .lifecycle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut options = format!(
            "-k {} -p {} -h 127.0.0.1 -c max_connections=300",
            self.root.join("socket").display(),
            self.port
        );
        if !self.fsync {
            options.push_str(" -c fsync=off -c full_page_writes=off");
        }
        let log = self.root.join("postgres.log");
        self.pg_ctl(&["-o", &options, "-l", &log.display().to_string(), "start"])
            .map_err(|error| {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                Error::new(format!(
                    "starting PostgreSQL on port {}: {error}\n{log}",
                    self.port
                ))
            })
    }

    /// Stops the server and starts it again.
    ///
    /// # Panics
    ///
    /// When either fails.
    pub fn restart(&self) {
        self.stop();
        if let Err(error) = self.resume() {
            panic!("{error}");
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        run(self
            .program("pg_ctl")
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-w", "-t", "60"])
            .args(args))
    }

    fn program(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

/// The newest `/usr/lib/postgresql/N/bin` (Debian), `BLYNK_PG_BIN`, or the `PATH`.
fn find_programs() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("BLYNK_PG_BIN").map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    let (versions, _) = DEBIAN_INITDB.split_once("/*/")?;
    let debian = std::fs::read_dir(versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_initdb(bin))
        .max();
    match debian {
        Some((_, bin)) => Some(bin),
        None => std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_initdb(dir)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::accepts;

    #[test]
    fn creates_databases_stops_resumes_and_leaves_nothing_behind() {
        let server = Postgres::start().unwrap();
        let (port, root) = (server.port(), server.root.clone());
        let first = server.create_database().unwrap();
        let second = server.create_database().unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("postgres://postgres@127.0.0.1:{port}/")));
        server.stop();
        assert!(!accepts(port), "stopped, yet the port accepts");
        assert!(server.create_database().is_err());
        server.resume().unwrap();
        assert!(accepts(port));
        drop(server);
        assert!(!accepts(port), "dropped, yet the port accepts");
        assert!(!root.exists(), "{} is left behind", root.display());
    }
}
