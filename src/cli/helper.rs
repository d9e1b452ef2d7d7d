//! Mount-helper argv rewriting: `mount -t fuse.remotedict SOURCE DIR -o OPTS` (through
//! mount.fuse, or fstab) runs `remotedict SOURCE DIR -o OPTS`; this turns that into a
//! `remotedict mount` command line.

use std::path::Path;

use super::args::Cli;

/// `remotedict mount` flags that are not `-o NAME[=VALUE]` options of a mount helper: the
/// source gives the container and folder, and these two make no sense in fstab.
const NOT_OPTIONS: &[&str] = &["container", "folder", "foreground", "print-config", "help"];

/// Whether `-o NAME[=VALUE]` of a mount helper invocation stands for the `remotedict mount` flag
/// `--NAME` (with `-` for `_`).
fn is_own_option(name: &str) -> bool {
    use clap::CommandFactory;
    let flag = name.replace('_', "-");
    if NOT_OPTIONS.contains(&flag.as_str()) {
        return false;
    }
    Cli::command().find_subcommand("mount").is_some_and(|m| {
        m.get_arguments()
            .any(|a| a.get_long() == Some(flag.as_str()))
    })
}

/// Turns a mount-helper invocation — `remotedict CONTAINER[/FOLDER] DIR -o OPTS`, as `mount -t
/// fuse.remotedict` (through mount.fuse) and fstab run it, or the same under the name
/// `mount.fuse.remotedict` — into `remotedict mount DIR --container … --folder … [flags] -o …`.
/// Any other command line is returned unchanged.
pub fn mount_helper_args(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().to_string());
    let first = argv
        .get(1)
        .map(|a| a.to_string_lossy().to_string())
        .unwrap_or_default();
    let known = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    let helper = name.as_deref().is_some_and(|n| n.starts_with("mount."))
        || (!known && !first.starts_with('-') && argv.len() >= 3);
    if !helper || argv.len() < 3 {
        return argv;
    }
    let source = first;
    let mountpoint = argv[2].clone();
    let (container, folder) = source
        .split_once('/')
        .map_or((source.as_str(), ""), |(c, f)| (c, f));
    let mut out: Vec<std::ffi::OsString> = vec![argv[0].clone(), "mount".into(), mountpoint];
    if !container.is_empty() {
        out.extend(["--container".into(), container.into()]);
    }
    out.extend(["--folder".into(), folder.into()]);
    let mut rest = argv[3..]
        .iter()
        .map(|a| a.to_string_lossy().to_string())
        .peekable();
    let mut passed = Vec::new();
    while let Some(arg) = rest.next() {
        if arg == "-o" {
            for opt in rest
                .next()
                .unwrap_or_default()
                .split(',')
                .filter(|o| !o.is_empty())
            {
                let (k, v) = opt
                    .split_once('=')
                    .map_or((opt, None), |(k, v)| (k, Some(v)));
                if is_own_option(k) {
                    out.push(format!("--{}", k.replace('_', "-")).into());
                    if let Some(v) = v {
                        out.push(v.into());
                    }
                } else {
                    passed.push(opt.to_string());
                }
            }
        } else if arg.starts_with("--") {
            out.push(arg.into());
        } else {
            // mount.fuse may pass `-n` (no mtab) and the like.
            log::debug!("mount helper: ignoring argument {arg:?}");
        }
    }
    if !passed.is_empty() {
        out.extend(["-o".into(), passed.join(",").into()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<std::ffi::OsString> {
        v.iter().map(Into::into).collect()
    }

    #[test]
    fn mount_helper_invocations_become_mount_commands() {
        let got = mount_helper_args(args(&[
            "remotedict",
            "box/data/set",
            "/mnt/x",
            "-o",
            "rw,_netdev,local=/srv/rd,index_ttl=2,create_container,allow_other",
        ]));
        assert_eq!(
            got,
            args(&[
                "remotedict",
                "mount",
                "/mnt/x",
                "--container",
                "box",
                "--folder",
                "data/set",
                "--local",
                "/srv/rd",
                "--index-ttl",
                "2",
                "--create-container",
                "-o",
                "rw,_netdev,allow_other"
            ])
        );
        let got = mount_helper_args(args(&["/sbin/mount.fuse.remotedict", "box", "/mnt/x"]));
        assert_eq!(
            got,
            args(&[
                "/sbin/mount.fuse.remotedict",
                "mount",
                "/mnt/x",
                "--container",
                "box",
                "--folder",
                ""
            ])
        );
        let plain = args(&["remotedict", "ls", "--folder", "f"]);
        assert_eq!(mount_helper_args(plain.clone()), plain);
        let plain = args(&["remotedict", "mount", "/mnt", "-o", "ro"]);
        assert_eq!(mount_helper_args(plain.clone()), plain);
    }

    #[test]
    fn own_options_are_the_mount_flags() {
        let mut own: Vec<String> = {
            use clap::CommandFactory;
            Cli::command()
                .find_subcommand("mount")
                .unwrap()
                .get_arguments()
                .filter_map(|a| a.get_long())
                .map(|l| l.replace('-', "_"))
                .filter(|k| is_own_option(k))
                .collect()
        };
        own.sort();
        assert_eq!(
            own,
            [
                "account",
                "auth",
                "ca_file",
                "cache_dir",
                "cache_size",
                "config",
                "connection_string_file",
                "create_container",
                "endpoint",
                "index_compact_kib",
                "index_ttl",
                "lease_duration",
                "local",
                "log_file",
                "log_max_mib",
                "metrics",
                "msi_client_id",
                "msi_object_id",
                "msi_resource_id",
                "rebuild_index",
                "request_timeout",
                "retries"
            ]
        );
        assert!(!is_own_option("allow_other") && !is_own_option("ro"));
    }
}
