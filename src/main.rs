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
    match runtime.block_on(pgtide::cli::run(cli)) {
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
