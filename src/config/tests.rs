//! Layering order, unknown keys, redaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;

/// The environment is the process's: tests that set or read `REMOTEDICT_*` take turns.
static ENV: Mutex<()> = Mutex::new(());

#[derive(Parser, Debug)]
struct TestMount {
    mountpoint: PathBuf,
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    mount: MountSettings,
}

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(PathBuf::from("/etc/test.toml"), text.to_string()).unwrap()
}

/// `mount` with `argv`, environment `env` (set only while parsing) and file text `file_text`.
fn config(
    argv: &[&str],
    env: &[(&str, &str)],
    file_text: &str,
    sources: CredentialSources,
) -> anyhow::Result<MountConfig> {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let parsed = TestMount::command().try_get_matches_from(argv);
    for (k, _) in env {
        std::env::remove_var(k);
    }
    let matches = parsed?;
    let t = TestMount::from_arg_matches(&matches)?;
    let req = MountRequest {
        mountpoint: &t.mountpoint,
        foreground: false,
        rebuild_index: false,
        store: &t.store,
        mount: &t.mount,
    };
    Ok(mount_config_with(req, &matches, &file(file_text), sources)?)
}

const FILE: &str = "container = \"fromfile\"\nfolder = \"f\"\nindex_ttl = 3\nretries = 7\n\
                    options = \"ro,uid=5\"\n";

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let none = || CredentialSources {
        env_connection_string: Some(Secret::new("AccountName=a;AccountKey=k")),
        ..Default::default()
    };
    let c = config(&["t", "/mnt"], &[], FILE, none()).unwrap();
    assert_eq!(
        (c.store.container.as_str(), c.index_ttl, c.store.retries),
        ("fromfile", 3.0, 7),
        "the file beats the defaults"
    );
    assert_eq!(c.options, ["ro,uid=5"]);
    assert_eq!(c.cache_size, 4096, "a default");
    let env = [
        ("REMOTEDICT_CONTAINER", "fromenv"),
        ("REMOTEDICT_INDEX_TTL", "2.5"),
    ];
    let c = config(&["t", "/mnt"], &env, FILE, none()).unwrap();
    assert_eq!((c.store.container.as_str(), c.index_ttl), ("fromenv", 2.5));
    assert_eq!(c.store.folder, "f", "the file still fills the rest");
    let argv = [
        "t",
        "/mnt",
        "--container",
        "fromflag",
        "--retries",
        "1",
        "-o",
        "rw",
    ];
    let c = config(&argv, &env, FILE, none()).unwrap();
    assert_eq!(
        (c.store.container.as_str(), c.index_ttl, c.store.retries),
        ("fromflag", 2.5, 1)
    );
    assert_eq!(c.options, ["rw"]);
    // A flag equal to the default still wins over the file.
    let c = config(&["t", "/mnt", "--retries", "4"], &[], FILE, none()).unwrap();
    assert_eq!(c.store.retries, 4);
}

#[test]
fn other_remotedict_variables_are_ignored() {
    let env = [
        ("REMOTEDICT_TEST_AZURE", "AccountName=x;AccountKey=y"),
        ("REMOTEDICT_RETRIES", "9"),
    ];
    let c = config(
        &["t", "/mnt", "--local", "/srv"],
        &env,
        "",
        CredentialSources::default(),
    )
    .unwrap();
    assert_eq!(c.store.retries, 4);
}

#[test]
fn unknown_keys_are_refused_with_key_and_file() {
    let e = ConfigFile::parse(PathBuf::from("/etc/x.toml"), "contianer = \"c\"\n".into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`contianer`") && e.contains("/etc/x.toml"),
        "{e}"
    );
    let e = config(
        &["t", "/mnt"],
        &[],
        "retries = \"SECRET\"\n",
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`retries`") && e.contains("/etc/test.toml"),
        "{e}"
    );
    assert!(!e.contains("SECRET"), "a string found is not quoted: {e}");
    assert!(ConfigFile::parse(PathBuf::from("x"), "not toml [".into()).is_err());
}

#[test]
fn a_missing_given_file_is_an_error() {
    let e = ConfigFile::read(Some(Path::new("/nonexistent/remotedict.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("reading the configuration file"), "{e}");
}

#[test]
fn credential_precedence() {
    let local = |c: &MountConfig| match &c.store.backend {
        Backend::Local { root } => Some(root.clone()),
        Backend::Azure { .. } => None,
    };
    let file_local = "local = \"/srv/file\"\n";
    let c = config(&["t", "/mnt"], &[], file_local, Default::default()).unwrap();
    assert_eq!(local(&c), Some(PathBuf::from("/srv/file")));
    let env_conn = || CredentialSources {
        env_connection_string: Some(Secret::new("AccountName=a;AccountKey=k")),
        ..Default::default()
    };
    let c = config(&["t", "/mnt"], &[], file_local, env_conn()).unwrap();
    assert!(
        matches!(
            c.store.backend,
            Backend::Azure {
                credential: Credential::EnvConnectionString(_),
                ..
            }
        ),
        "the environment's credential beats the file's local: {c:?}"
    );
    let argv = ["t", "/mnt", "--local", "/srv/flag"];
    let c = config(&argv, &[], "", env_conn()).unwrap();
    assert_eq!(local(&c), Some(PathBuf::from("/srv/flag")));
    let c = config(&["t", "/mnt", "--local"], &[], "", Default::default()).unwrap();
    assert_eq!(
        local(&c),
        Some(default_local_root()),
        "--local alone: the default directory"
    );
    // Nothing at all: an error naming what was looked at, not a local store.
    let e = config(&["t", "/mnt"], &[], "", Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no credential was found")
            && e.contains("AZURE_STORAGE_CONNECTION_STRING")
            && e.contains("--local DIR"),
        "{e}"
    );
}

#[test]
fn print_config_redacts_secrets() {
    let text = "connection_string = \"AccountName=a;AccountKey=SECRETKEY\"\ncontainer = \"c\"\n";
    let c = config(&["t", "/mnt"], &[], text, Default::default()).unwrap();
    let shown = c.to_toml().unwrap();
    assert!(
        !shown.contains("SECRETKEY") && !shown.contains("AccountKey"),
        "{shown}"
    );
    assert!(
        shown.contains("connection_string from the configuration file (redacted)"),
        "{shown}"
    );
    assert!(shown.contains("container = \"c\""), "{shown}");
    assert!(!format!("{c:?}").contains("SECRETKEY"), "Debug redacts too");
    let sas = CredentialSources {
        env_account: Some("acct".into()),
        env_sas_token: Some(Secret::new("sig=TOPSECRET")),
        ..Default::default()
    };
    let shown = config(&["t", "/mnt"], &[], "", sas)
        .unwrap()
        .to_toml()
        .unwrap();
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    assert!(shown.contains("account = \"acct\""), "{shown}");
    assert!(
        shown.contains("AZURE_STORAGE_SAS_TOKEN (redacted)"),
        "{shown}"
    );
}

#[test]
fn the_example_file_is_accepted() {
    let example = include_str!("../../contrib/config.toml");
    let c = config(&["t", "/mnt"], &[], example, Default::default()).unwrap();
    assert_eq!(c.store.container, "mycontainer");
    assert_eq!(c.options, ["allow_other,uid=1000,gid=1000"]);
    let mut keys = known_keys();
    keys.sort();
    let mut readme: Vec<&str> = vec![
        "account",
        "auth",
        "ca_file",
        "endpoint",
        "msi_client_id",
        "msi_object_id",
        "msi_resource_id",
        "cache_dir",
        "cache_size",
        "connection_string",
        "connection_string_file",
        "container",
        "create_container",
        "folder",
        "index_compact_kib",
        "index_ttl",
        "lease_duration",
        "local",
        "log_file",
        "log_max_mib",
        "metrics",
        "options",
        "request_timeout",
        "retries",
    ];
    readme.sort();
    assert_eq!(keys, readme, "the README lists the file's keys");
}
