//! Backups of the SQLite database while the server runs, through SQLite's online backup API,
//! and their restore into an empty data directory.
//!
//! The backup copies every page in one step, inside one read transaction on its own
//! connection: in WAL mode that is a consistent snapshot holding every commit made before it
//! began (so every write acknowledged before it), and the server's writer never waits for it.
//! A file copy of a live database is not a backup: the write-ahead log holds the newest
//! commits, and copying the two files apart can tear them.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::StepResult;
use rusqlite::{Connection, OpenFlags};

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database to back up does not exist.
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    /// The backup file exists already; a backup never overwrites one.
    #[error("{0} exists already; choose a new file")]
    TargetExists(PathBuf),
    /// A restore goes into an empty data directory only.
    #[error("{0} is not empty; restore into an empty or new data directory")]
    DataDirNotEmpty(PathBuf),
    /// The file is not a readable blynk-server database.
    #[error("{path} is not a blynk-server database: {reason}")]
    NotABackup {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database stayed locked.
    #[error("the database stayed locked for {} s", .0.as_secs())]
    Busy(Duration),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What a backup or restore copied.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    /// Bytes of the database file written.
    pub bytes: u64,
    /// How long the copy took.
    pub elapsed: Duration,
}

/// How long the backup waits before retrying when the database is busy.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
/// How long it keeps retrying.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// Backs up the database at `database` (which a server may have open) into the new file
/// `target`, readable by its owner only (it holds device tokens).
pub fn backup(database: &Path, target: &Path) -> Result<Copied, BackupError> {
    let started = Instant::now();
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.to_path_buf()));
    }
    // Without the create flag: a wrong path must not leave an empty database behind.
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.execute_batch("PRAGMA query_only = ON;")?;
    create_private_file(target)?;
    let copied = copy_database(&source, target).inspect_err(|_| {
        let _ = std::fs::remove_file(target);
    })?;
    Ok(Copied {
        bytes: copied,
        elapsed: started.elapsed(),
    })
}

/// Restores a backup into `data_dir`, which must be empty or absent, as its database
/// `database_file`. The backup is checked first; the database appears only once complete.
pub fn restore(
    backup_file: &Path,
    data_dir: &Path,
    database_file: &str,
) -> Result<Copied, BackupError> {
    let started = Instant::now();
    let not_a_backup = |reason: String| BackupError::NotABackup {
        path: backup_file.to_path_buf(),
        reason,
    };
    if !backup_file.is_file() {
        return Err(not_a_backup("no such file".into()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::DataDirNotEmpty(data_dir.to_path_buf()));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir(data_dir).map_err(io(data_dir))?;
        }
        Err(error) => return Err(io(data_dir)(error)),
    }
    let source = Connection::open_with_flags(backup_file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|error| not_a_backup(error.to_string()))?;
    let check: String = source
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|error| not_a_backup(error.to_string()))?;
    if check != "ok" {
        return Err(not_a_backup(format!("damaged ({check})")));
    }
    let has_settings: bool = source
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings')",
            [],
            |row| row.get(0),
        )
        .map_err(|error| not_a_backup(error.to_string()))?;
    if !has_settings {
        return Err(not_a_backup("it has no settings table".into()));
    }
    let restoring = data_dir.join(format!("{database_file}.restoring"));
    create_private_file(&restoring)?;
    let copied = copy_database(&source, &restoring).inspect_err(|_| {
        let _ = std::fs::remove_file(&restoring);
    })?;
    let database = data_dir.join(database_file);
    std::fs::rename(&restoring, &database).map_err(io(&database))?;
    Ok(Copied {
        bytes: copied,
        elapsed: started.elapsed(),
    })
}

/// Copies every page of `source` into the (empty) database file `target` in one step, then
/// makes `target` a self-contained file (rollback journal, no write-ahead log beside it).
fn copy_database(source: &Connection, target: &Path) -> Result<u64, BackupError> {
    let mut destination = Connection::open(target)?;
    {
        let backup = rusqlite::backup::Backup::new(source, &mut destination)?;
        let mut waited = Duration::ZERO;
        loop {
            // -1: all pages in one step, so the copy is one snapshot of the source.
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if waited < BUSY_PATIENCE => {
                    std::thread::sleep(BUSY_PAUSE);
                    waited += BUSY_PAUSE;
                }
                StepResult::Busy | StepResult::Locked => {
                    return Err(BackupError::Busy(BUSY_PATIENCE));
                }
                // A future step result: treat it as busy.
                _ => std::thread::sleep(BUSY_PAUSE),
            }
        }
    }
    destination.execute_batch("PRAGMA journal_mode = DELETE;")?;
    drop(destination);
    let bytes = std::fs::metadata(target)
        .map_err(|source| BackupError::Io {
            path: target.to_path_buf(),
            source,
        })?
        .len();
    Ok(bytes)
}

/// Creates a new file readable and writable by its owner only; fails if it exists.
fn create_private_file(path: &Path) -> Result<(), BackupError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::TargetExists(path.to_path_buf()))
        }
        Err(source) => Err(BackupError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates a directory (and its parents) open to its owner only.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}
