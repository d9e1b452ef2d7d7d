//! The command line: parse it (rewriting mount-helper invocations first), load the one typed
//! configuration, set up logging and run the command. Credentials come from the environment or
//! a file, never from argv.

pub mod args;
pub mod commands;
pub mod helper;
pub mod status;

use std::ffi::OsString;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};

pub use args::{Cli, Command, MountArgs, StoreArgs};
pub use helper::mount_helper_args;

use crate::config::{self, ConfigFile, MountRequest};

/// Runs the command line `argv` (program name first); returns the process exit code.
pub fn main(argv: Vec<OsString>) -> i32 {
    // `mount -t fuse.remotedict SOURCE DIR -o OPTS` (fstab) runs `remotedict SOURCE DIR -o OPTS`.
    let argv = mount_helper_args(argv);
    let matches = Cli::command().get_matches_from(argv.clone());
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // A daemon says what it does; one-shot commands only warn.
    let default = match cli.command {
        Command::Mount(_) => "remotedict=info,fuser=error,warn",
        _ => "warn",
    };
    crate::logging::init(default);
    let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
    match run(cli.command, sub, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("remotedict: {e:#}");
            1
        }
    }
}

/// Runs one command; `sub` are its matches (they tell where each value came from), `argv` the
/// whole command line (a daemonizing mount runs it again in the foreground).
fn run(command: Command, sub: &clap::ArgMatches, argv: Vec<OsString>) -> Result<i32> {
    let store_of = |store: &StoreArgs| -> Result<config::StoreConfig> {
        let file = ConfigFile::read(store.config.as_deref())?;
        Ok(config::store_config(&store.settings, sub, &file)?)
    };
    match command {
        Command::Mount(args) => {
            let print_config = args.print_config;
            // The configuration, read now and again on SIGHUP (the file and a credential file;
            // the flags and environment are the ones the mount started with).
            let sub = sub.clone();
            let read_config = move || -> Result<config::MountConfig> {
                let file = ConfigFile::read(args.store.config.as_deref())?;
                let req = MountRequest {
                    mountpoint: &args.mountpoint,
                    foreground: args.foreground,
                    rebuild_index: args.rebuild_index,
                    store: &args.store.settings,
                    mount: &args.settings,
                };
                Ok(config::mount_config(req, &sub, &file)?)
            };
            let cfg = read_config()?;
            if print_config {
                print!("{}", cfg.to_toml()?);
            } else {
                crate::mount::run(cfg, argv, Box::new(read_config))?;
            }
        }
        Command::Unmount { mountpoint } => crate::mount::unmount(&mountpoint)?,
        Command::Status { mountpoint, json } => status::status(mountpoint.as_deref(), json)?,
        c @ (Command::Completions { .. } | Command::Man { .. }) => commands::generate(c)?,
        Command::Fsck {
            store,
            repair,
            upgrade,
        } => {
            let clean = commands::fsck(&store_of(&store)?, repair, upgrade)?;
            return Ok(if clean { 0 } else { 1 });
        }
        c => {
            let store = store_args(&c).context("not a store command")?;
            let cfg = store_of(store)?;
            commands::dict_command(c, &cfg)?;
        }
    }
    Ok(0)
}

/// The store flags of a dictionary command.
fn store_args(c: &Command) -> Option<&StoreArgs> {
    match c {
        Command::Ls { store, .. }
        | Command::Get { store, .. }
        | Command::Put { store, .. }
        | Command::Rm { store, .. }
        | Command::Stat { store, .. }
        | Command::Lock { store, .. }
        | Command::Unlock { store, .. } => Some(store),
        _ => None,
    }
}
