//! The `remotedict` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use remotedict::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("remotedict=info,fuser=error,warn"),
    )
    .format_timestamp_millis()
    .init();
    let result = match cli.command {
        Command::Mount(args) => remotedict::mount::run(*args),
        Command::Unmount { mountpoint } => remotedict::mount::unmount(&mountpoint),
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
