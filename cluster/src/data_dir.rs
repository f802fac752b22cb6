//! The data dir's permissions: it holds the replicated settings document (literal credentials
//! included, when the settings carry any instead of `${ENV}` references) and the key table, so
//! only the node's user may read it, whatever the process's umask.
//!
//! The dir is created (or tightened) to 0700 and every store file to 0600, created with that
//! mode before redb opens it, so there is no moment when it is readable by others.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) if needed and makes it 0700 on unix.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // An existing dir keeps its mode through `create`; tighten it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates `file` empty with mode 0600 if it does not exist (redb initialises an empty file),
/// and makes an existing one 0600, on unix.
pub fn create_private_file(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(file)?;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}
