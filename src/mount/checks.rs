//! Checks of the mount point and of /dev/fuse before anything else, with messages that say what
//! to fix.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::mountinfo;

/// Checks the mount point (exists, is a directory, is not a mount point yet) and /dev/fuse;
/// returns the mount point's absolute path.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "mount point {} does not exist or cannot be reached (create it with mkdir -p)",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", path.display());
    }
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    if let Some(m) = mountinfo::read().into_iter().find(|m| m.mount_point == abs) {
        if m.is_remotedict() {
            bail!(
                "{} is already a remotedict mount (unmount it with: remotedict unmount {})",
                abs.display(),
                abs.display()
            );
        }
        bail!("{} is already a mount point", abs.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse");
    }
    Ok(abs)
}
