//! The `cardbind` binary: see `cardbind --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match cardbind::cli::run(std::env::args_os()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain; no error here carries card data.
            eprintln!("cardbind: {e:#}");
            ExitCode::FAILURE
        }
    }
}
