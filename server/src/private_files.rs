//! Secrets at rest (SPEC 6): the data directory holds every device token, so it is made
//! readable by the server's user only (0700), and so are the database files in it (0600),
//! also when an older version created them with the usual 0755 and 0644.

use std::io;
use std::path::{Path, PathBuf};

/// The files SQLite keeps beside a database: the write-ahead log, its index, the journal.
const SQLITE_SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates the data directory, or tightens an existing one, to owner-only access.
pub fn prepare_data_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !path.exists() {
            // Parents the user did not ask for keep the usual mode; the directory itself not.
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::DirBuilder::new().mode(0o700).create(path)?;
        }
        restrict(path, 0o700, std::fs::Permissions::from_mode)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

/// Makes sure the database at `path` and its side files are readable by the owner only: an
/// existing file is tightened, a missing database is created empty with mode 0600. SQLite
/// gives the side files it creates later the database's own mode.
pub fn secure_database(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for file in std::iter::once(path.to_path_buf()).chain(side_files(path)) {
            match restrict(&file, 0o600, std::fs::Permissions::from_mode) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn side_files(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    SQLITE_SIDE_FILES.iter().map(move |suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Sets `mode` unless the file already has no more than it.
#[cfg(unix)]
fn restrict(
    path: &Path,
    mode: u32,
    permissions: impl Fn(u32) -> std::fs::Permissions,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, permissions(current & mode))?;
        tracing::info!(path = %path.display(), from = format_args!("{current:o}"), to = format_args!("{:o}", current & mode), "permissions tightened: only the server's user may read its data");
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn spec_6_a_new_data_dir_and_database_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested").join("data");
        prepare_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let database = data.join("db.sqlite3");
        secure_database(&database).unwrap();
        assert_eq!(mode(&database), 0o600);
    }

    #[test]
    fn spec_6_an_existing_open_data_dir_and_database_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let database = data.join("db.sqlite3");
        for file in [database.clone(), data.join("db.sqlite3-wal")] {
            std::fs::write(&file, b"").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_data_dir(&data).unwrap();
        secure_database(&database).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&database), 0o600);
        assert_eq!(mode(&data.join("db.sqlite3-wal")), 0o600);
    }
}
