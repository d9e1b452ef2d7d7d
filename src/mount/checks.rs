//! Checks of the mount point and of /dev/fuse before anything else, with messages that say what
//! to fix.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::mountinfo;

/// Why an existing mount on `abs` keeps us from mounting there, if it does. An autofs mount is
/// where systemd waits for this mount (`x-systemd.automount` in fstab): we mount on top of it.
fn refusal(m: &mountinfo::MountEntry, abs: &Path) -> Option<String> {
    if m.fs_type == "autofs" {
        return None;
    }
    Some(if m.is_remotedict() {
        format!(
            "{} is already a remotedict mount (unmount it with: remotedict unmount {})",
            abs.display(),
            abs.display()
        )
    } else {
        format!("{} is already a mount point", abs.display())
    })
}

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
    // The mount on top is the one that counts (mounts stack).
    let top = mountinfo::read()
        .into_iter()
        .rfind(|m| m.mount_point == abs);
    if let Some(why) = top.and_then(|m| refusal(&m, &abs)) {
        bail!(why);
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse");
    }
    Ok(abs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fs_type: &str, source: &str) -> mountinfo::MountEntry {
        mountinfo::parse_line(&format!(
            "36 35 0:40 / /mnt/data rw,relatime shared:1 - {fs_type} {source} rw"
        ))
        .unwrap()
    }

    #[test]
    fn an_autofs_mount_point_is_mounted_over_and_others_are_refused() {
        let at = Path::new("/mnt/data");
        assert_eq!(refusal(&entry("autofs", "systemd-1"), at), None);
        let remotedict =
            refusal(&entry("fuse.remotedict", "remotedict:local:/srv/c/f"), at).unwrap();
        assert!(
            remotedict.contains("already a remotedict mount"),
            "{remotedict}"
        );
        let other = refusal(&entry("ext4", "/dev/vda1"), at).unwrap();
        assert!(other.contains("already a mount point"), "{other}");
    }
}
