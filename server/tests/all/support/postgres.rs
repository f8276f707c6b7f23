//! A real PostgreSQL for tests, from Debian's `postgresql` package: one server per test binary
//! ([`shared`]) on a free loopback port in a temporary directory, a fresh database per test
//! ([`Postgres::fresh_database`]), and [`Postgres::stop`], [`Postgres::resume`] and
//! [`Postgres::restart`] for tests of an outage. A test that stops PostgreSQL starts one of its
//! own ([`Postgres::start`], about a second): the shared one must not go away under the others.
//!
//! PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user
//! (`runuser`). It is stopped on every exit path: [`Drop`] stops it, and since a `static` is
//! never dropped (and a test binary may be killed), each server also has a watchdog: a `sh`
//! in a session of its own (`setsid`, so a Ctrl-C of the tests does not reach it) that blocks
//! reading a pipe only this process holds. When the process ends, however it ends, the kernel
//! closes the pipe, the read returns, and the watchdog stops PostgreSQL (`-m immediate`) and
//! removes the directory.
//!
//! Durability is traded for speed (`fsync=off`): the tests stop and kill processes, never the
//! machine, so every committed transaction still survives them. Benchmarks use
//! [`Postgres::start_durable`] (PostgreSQL's defaults: every commit flushed).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where Debian's `postgresql` package puts `initdb` (one directory per major version).
const DEBIAN_INITDB: &str = "/usr/lib/postgresql/*/bin/initdb";

/// What to do when the programs are missing.
const HOW_TO_INSTALL: &str = "PostgreSQL's server programs (initdb, pg_ctl) were not found in \
    /usr/lib/postgresql/*/bin, in BLYNK_PG_BIN or on the PATH: install Debian's `postgresql` \
    package (`cargo xtask test` installs it when run as root: `apt-get install postgresql`)";

/// The server every test of this binary shares; started by the first call.
pub fn shared() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(|| Postgres::start().unwrap_or_else(|error| panic!("{error}")))
}

/// A PostgreSQL server of this process.
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    /// Run the programs as the `postgres` user (this process is root).
    as_postgres: bool,
    /// Whether commits are flushed to disk.
    fsync: bool,
    /// Holds the watchdog's pipe open; dropping it lets the watchdog stop the server.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    databases: AtomicU32,
    /// One stop or start at a time.
    lifecycle: Mutex<()>,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    pub fn start() -> Result<Postgres, String> {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start), with every commit flushed to disk (for figures).
    pub fn start_durable() -> Result<Postgres, String> {
        Self::start_with(true)
    }

    fn start_with(fsync: bool) -> Result<Postgres, String> {
        let bin = find_programs().ok_or_else(|| HOW_TO_INSTALL.to_owned())?;
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "blynk-pg-{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(root.join("socket"))
            .map_err(|error| format!("creating {}: {error}", root.display()))?;
        let watchdog = start_watchdog(&bin, &root, as_postgres)?;
        let mut server = Postgres {
            bin,
            root,
            port: 0,
            as_postgres,
            fsync,
            watchdog: Mutex::new(Some(watchdog)),
            databases: AtomicU32::new(0),
            lifecycle: Mutex::new(()),
        };
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
        // A port found free may be taken before PostgreSQL binds it: try a few.
        let mut last_error = String::new();
        for _ in 0..3 {
            server.port = free_port()?;
            match server.resume() {
                Ok(()) => return Ok(server),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database`, as `--store` takes it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("test_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let created = run(Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name));
        if let Err(error) = created {
            panic!("creating database {name}: {error}");
        }
        self.url(&name)
    }

    /// Stops the server (connections are closed; clients see it gone).
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
    pub fn resume(&self) -> Result<(), String> {
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
                format!("starting PostgreSQL on port {}: {error}\n{log}", self.port)
            })
    }

    /// Stops the server and starts it again.
    pub fn restart(&self) {
        self.stop();
        if let Err(error) = self.resume() {
            panic!("{error}");
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        run(self
            .program("pg_ctl")
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-w", "-t", "60"])
            .args(args))
    }

    fn program(&self, name: &str) -> Command {
        command(&self.bin.join(name), self.as_postgres)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some((mut child, pipe)) = watchdog {
            // Closing the pipe is the watchdog's signal; it stops the server and cleans up.
            drop(pipe);
            let _ = child.wait();
        }
    }
}

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// The watchdog (see the module's text): it waits for its standard input to close.
fn start_watchdog(
    bin: &Path,
    root: &Path,
    as_postgres: bool,
) -> Result<(Child, ChildStdin), String> {
    let stop = if as_postgres {
        r#"runuser -u postgres -- "$0" -D "$1/data" -m immediate -w stop"#
    } else {
        r#""$0" -D "$1/data" -m immediate -w stop"#
    };
    let script = format!(
        "read _ignored; if [ -d \"$1/data\" ]; then {stop}; fi >/dev/null 2>&1; rm -rf \"$1\""
    );
    let mut child = Command::new("setsid")
        .args(["sh", "-c", &script])
        .arg(bin.join("pg_ctl"))
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("starting the PostgreSQL watchdog (setsid, sh): {error}"))?;
    let mut pipe = child
        .stdin
        .take()
        .ok_or_else(|| "the watchdog has no standard input".to_owned())?;
    // Nothing is ever written but this check that the pipe is open.
    pipe.flush().map_err(|error| error.to_string())?;
    Ok((child, pipe))
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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("finding a free port: {error}"))
}

/// Runs a command to its end; its output becomes the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{command:?}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
