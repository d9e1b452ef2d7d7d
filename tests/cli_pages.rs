//! The man pages: one for remotedict and one per command, the mount page carrying the `-o`
//! list and the signals; `scripts/install` installs a page for every command.

use std::process::Command;

fn remotedict(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remotedict"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_mount_page_lists_the_fstab_options_and_signals() {
    let out = remotedict(&["man", "mount"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH remotedict-mount"), "{page}");
    // Every setting flag is named as an option (the list is written by hand: it must not drift).
    let help = String::from_utf8(remotedict(&["mount", "--help"]).stdout).unwrap();
    let flags: Vec<String> = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|f| f.trim_start_matches("--").replace('-', "_"))
        .filter(|f| {
            !["help", "foreground", "print_config", "container", "folder"].contains(&f.as_str())
        })
        .collect();
    assert!(flags.len() > 10, "{help}");
    let text = page.replace("\\-", "-");
    for f in &flags {
        assert!(
            text.contains(&format!("{f}="))
                || text.contains(&format!("{f},"))
                || text.contains(&format!("{f}.")),
            "the -o list lacks {f}:\n{page}"
        );
    }
    for needle in [
        "metrics",
        "lease",
        "connection_string_file=FILE",
        "allow_other",
        "x\\-systemd",
        "SIGUSR2",
    ] {
        assert!(
            page.contains(needle),
            "no {needle:?} in the mount page:\n{page}"
        );
    }
}

#[test]
fn every_command_has_a_page_and_the_installer_writes_each() {
    let install = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install"),
    )
    .unwrap();
    let line = install
        .lines()
        .find(|l| l.starts_with("for c in "))
        .expect("the installer's loop over the commands");
    let listed: Vec<&str> = line
        .trim_start_matches("for c in ")
        .trim_end_matches("; do")
        .split_whitespace()
        .collect();
    let help = String::from_utf8(remotedict(&["--help"]).stdout).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| !["completions", "man", "help"].contains(c))
        .collect();
    assert_eq!(
        listed, commands,
        "scripts/install writes a page per command"
    );
    for c in commands {
        let out = remotedict(&["man", c]);
        assert!(out.status.success(), "man {c}: {out:?}");
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(page.contains(&format!(".TH remotedict-{c}")), "{page}");
    }
}

#[test]
fn a_page_for_an_unknown_command_is_refused_naming_the_commands() {
    let out = remotedict(&["man", "mnt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no command \"mnt\"") && err.contains("mount, fsck"),
        "{err}"
    );
}
