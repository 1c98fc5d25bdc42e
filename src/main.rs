use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pgtide::cli::Cli::parse();
    pgtide::cli::init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(pgtide::cli::exit::FAILURE);
        }
    };
    // The job runs as a task of the runtime, not on this thread: its socket
    // reads are then polled on the worker thread that drives the I/O,
    // instead of every readiness waking this thread (a context switch per
    // message of a base backup or WAL stream).
    let result = runtime.block_on(async {
        tokio::spawn(pgtide::cli::run(cli))
            .await
            .unwrap_or_else(|e| {
                Err(pgtide::cli::exit::CliError::new(
                    pgtide::cli::exit::FAILURE,
                    format!("internal error: {e}"),
                ))
            })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An empty message is a quiet failure (`wal fetch` of a missing file).
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message.replace('\n', " "));
            }
            ExitCode::from(e.code)
        }
    }
}
