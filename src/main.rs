//! The `remotedict` binary: parse the command line, set up logging, dispatch.

use clap::{CommandFactory, FromArgMatches};
use remotedict::cli::{apply_config, mount_helper_args, Cli, Command};

fn main() {
    // Large transfer buffers (GET bodies, decoded blocks) are allocated on one thread and freed
    // on another all the time. Measured on a cold 1 GiB streamed read: with glibc's default of
    // several heaps, the daemon used about 1.5 CPU-s and peaked at 260–320 MiB resident; with one
    // shared heap, 0.6 CPU-s and under 190 MiB (docs/BENCHMARKS.md).
    // SAFETY: called first thing, before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
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
