//! The `remotedict` binary: parse the command line, set up logging, dispatch.

use clap::{CommandFactory, FromArgMatches};
use remotedict::cli::{apply_config, mount_helper_args, Cli, Command};

fn main() {
    // `mount -t fuse.remotedict SOURCE DIR -o OPTS` (fstab) runs `remotedict SOURCE DIR -o OPTS`.
    let matches = Cli::command().get_matches_from(mount_helper_args(std::env::args_os().collect()));
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Err(e) = apply_config(&mut cli, &matches) {
        eprintln!("remotedict: {e:#}");
        std::process::exit(1);
    }
    // A daemon says what it does; one-shot commands only warn.
    let default = match cli.command {
        Command::Mount(_) => "remotedict=info,fuser=error,warn",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Mount(args) if args.print_config => {
            print!("{}", remotedict::cli::print_config(&args));
            Ok(())
        }
        Command::Mount(args) => remotedict::mount::run(*args),
        Command::Unmount { mountpoint } => remotedict::mount::unmount(&mountpoint),
        Command::Status { mountpoint } => remotedict::cli::status(mountpoint.as_deref()),
        c @ (Command::Completions { .. } | Command::Man) => remotedict::cli::generate(c),
        Command::Fsck { store, repair } => match remotedict::cli::fsck(&store, repair) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        c => remotedict::cli::dict_command(c),
    };
    if let Err(e) = result {
        eprintln!("remotedict: {e:#}");
        std::process::exit(1);
    }
}
