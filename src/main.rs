//! The `pixguard` binary.

use clap::Parser;
use pixguard::cli::{Cli, Command, run};

// Requests allocate on HTTP threads and free on the batcher thread; glibc malloc's arena locks
// showed up as the top contention in `perf` under load. mimalloc frees cross-thread without them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_) | Command::Stream(_));
    if !serving && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Candle re-reads /proc/cpuinfo on every CPU op when this is unset (~56 µs a call).
        // `serve` sets it from engine.threads_per_worker once its configuration is loaded.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pixguard: error: {}", pixguard::error_chain(e.as_ref()));
            // The registry or bucket could not be reached (sysexits EX_UNAVAILABLE): a caller or
            // an orchestrator can tell "try again later" from "this package is broken".
            let unreachable = e.chain().any(|c| {
                c.downcast_ref::<pixguard::registry::RegistryError>()
                    .is_some_and(pixguard::registry::RegistryError::is_unreachable)
            });
            std::process::ExitCode::from(if unreachable { 69 } else { 1 })
        }
    }
}
