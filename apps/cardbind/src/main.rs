//! The `cardbind` binary: see `cardbind --help`.

use std::process::ExitCode;

/// mimalloc rather than the system allocator: a request allocates and frees
/// many small buffers across the runtime's threads, where glibc's malloc
/// spent a quarter of the workers' time (measured with `perf`; figures in
/// the README, "How fast, as the store grows").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match cardbind::cli::run(std::env::args_os()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            // `{:#}` prints the cause chain; no error here carries card data.
            // Not `eprintln!`: it panics when stderr's reader has gone.
            let _ = writeln!(std::io::stderr(), "cardbind: {e:#}");
            ExitCode::FAILURE
        }
    }
}
