//! The `-o a,b=c` mount options (from the command line, fstab or the file's `options`): the ones
//! honoured, the ones accepted and ignored, and clear refusals of the rest.

use anyhow::{bail, Context, Result};

/// Parsed `-o` options.
#[derive(Debug, Default, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub default_permissions: bool,
    pub auto_unmount: bool,
}

impl MountOptions {
    pub fn parse(opts: &[String]) -> Result<Self> {
        let mut m = MountOptions {
            default_permissions: true,
            ..Default::default()
        };
        for opt in opts
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let (name, value) = opt
                .split_once('=')
                .map_or((opt, None), |(n, v)| (n, Some(v)));
            let number = |v: Option<&str>| -> Result<u32> {
                v.and_then(|v| v.parse().ok()).with_context(|| {
                    format!("mount option {opt:?} needs a number, like {name}=1000")
                })
            };
            match name {
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                "allow_other" => m.allow_other = true,
                "allow_root" => m.allow_root = true,
                "uid" => m.uid = Some(number(value)?),
                "gid" => m.gid = Some(number(value)?),
                "default_permissions" => m.default_permissions = true,
                "auto_unmount" => m.auto_unmount = true,
                "_netdev" | "nofail" | "noauto" | "auto" | "user" | "users" | "nouser" | "dev"
                | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
                | "relatime" | "async" => {}
                n if n.starts_with("x-") || n.starts_with("comment=") => {}
                _ => bail!("unknown mount option {opt:?} (see `remotedict mount --help`)"),
            }
        }
        if m.allow_other && m.allow_root {
            bail!("mount options allow_other and allow_root exclude each other");
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_are_checked() {
        let o =
            MountOptions::parse(&["ro,allow_other,uid=5,gid=6,_netdev,x-systemd.automount".into()])
                .unwrap();
        assert!(o.read_only && o.allow_other && o.uid == Some(5) && o.gid == Some(6));
        assert!(MountOptions::parse(&["uid=abc".into()])
            .unwrap_err()
            .to_string()
            .contains("needs a number"));
        assert!(MountOptions::parse(&["frobnicate".into()]).is_err());
        assert!(MountOptions::parse(&["allow_other,allow_root".into()]).is_err());
    }
}
