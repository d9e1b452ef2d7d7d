//! The `remotedict` binary: tune the allocator, then hand the command line to `cli`.

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
    std::process::exit(remotedict::cli::main(std::env::args_os().collect()));
}
