//! The connection cap against the process's open-file limit: every connection holds a file
//! descriptor, and a cap above the limit would turn "refused with a log line" into accept
//! errors and failures to open the database.

/// Descriptors kept for what is not a connection: listeners, the database and its journal,
/// the standard streams, the runtime.
const RESERVED_DESCRIPTORS: u64 = 100;

/// `max_connections`, lowered (with a log line) to what the open-file limit allows once the
/// soft limit is raised as far as the hard one permits.
pub fn clamp_connections(max_connections: usize) -> usize {
    let Some(files) = open_file_limit() else {
        return max_connections;
    };
    let allowed = usize::try_from(files.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    clamp(max_connections, allowed, files)
}

fn clamp(max_connections: usize, allowed: usize, files: u64) -> usize {
    if max_connections <= allowed {
        return max_connections;
    }
    tracing::warn!(
        configured = max_connections,
        used = allowed,
        open_file_limit = files,
        "max_connections lowered to fit the open-file limit (ulimit -n) less {RESERVED_DESCRIPTORS} \
         descriptors for the server itself"
    );
    allowed
}

/// The soft open-file limit, first raised to the hard limit; `None` when unlimited or unknown.
#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_6_max_connections_is_clamped_to_the_open_file_limit() {
        assert_eq!(clamp(19_000, 924, 1024), 924);
        assert_eq!(clamp(500, 924, 1024), 500);
        // The process's own limit: whatever it is, the cap ends up below it.
        if let Some(files) = open_file_limit() {
            assert!((clamp_connections(usize::MAX) as u64) < files);
        }
    }
}
