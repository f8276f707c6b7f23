//! The Python virtualenv the server's Python client tests and xtask's Python device kinds run
//! in: `<target>/python-venv`, made from a requirements file (exact versions and hashes) when
//! missing or when the requirements changed since it was made.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `<target>/python-venv/bin/python`, the virtualenv made first from `requirements` if it is
/// missing or was made from other requirements. A file lock in `target` keeps concurrent
/// processes from building it twice; pip's downloads are cached in `<target>/pip-cache`. The
/// interpreter that makes it is `$PYTHON3`, else `python3`. The error says what failed and what
/// to install.
pub fn ensure_venv(requirements: &Path, target: &Path) -> Result<PathBuf, String> {
    let wanted = std::fs::read_to_string(requirements)
        .map_err(|error| format!("cannot read {}: {error}", requirements.display()))?;
    let venv = target.join("python-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed-requirements.txt");
    std::fs::create_dir_all(target)
        .map_err(|error| format!("cannot create {}: {error}", target.display()))?;
    let lock_path = target.join("python-venv.lock");
    let lock = File::create(&lock_path)
        .map_err(|error| format!("cannot create {}: {error}", lock_path.display()))?;
    lock.lock()
        .map_err(|error| format!("cannot lock {}: {error}", lock_path.display()))?;
    if python.exists() && std::fs::read_to_string(&stamp).ok() == Some(wanted.clone()) {
        return Ok(python);
    }
    eprintln!("making the Python virtualenv {}", venv.display());
    let python3 = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".to_owned());
    match Command::new(&python3).arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            return Err(format!(
                "`{python3} --version` failed ({}): Python 3 is required",
                output.status
            ));
        }
        Err(error) => {
            return Err(format!(
                "`{python3}` not found ({error}): Python 3 with venv and pip is required \
                 (Debian: apt-get install python3 python3-venv), or PYTHON3=/path/to/python3"
            ));
        }
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .map_err(|error| format!("cannot remove {}: {error}", venv.display()))?;
    }
    run(Command::new(&python3).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--require-hashes",
            "-r",
        ])
        .arg(requirements)
        .env("PIP_CACHE_DIR", target.join("pip-cache")))?;
    std::fs::write(&stamp, wanted)
        .map_err(|error| format!("cannot write {}: {error}", stamp.display()))?;
    Ok(python)
}

/// Runs `command` to its end; an error with its output when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|error| format!("{shown} did not start: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
