use std::process::ExitCode;

use clap::Parser;

/// Caps glibc's malloc arenas at one per core (at least two). By default
/// glibc gives up to eight per core, and every runtime and blocking thread
/// that frees a multi-MiB chunk buffer leaves it cached in its own arena: a
/// restore's peak RSS rose by a third (from about 80 to 110-130 MiB at
/// `--jobs 2`) with no more data in flight. Fewer arenas reuse the same
/// freed buffers; the threads rarely contend, as they hand whole chunks
/// around rather than many small objects.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return; // the operator's choice wins
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // SAFETY: mallopt only adjusts allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, cores.max(2) as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    pgtide::cli::exit::install_panic_hook();
    let cli = pgtide::cli::Cli::parse();
    if matches!(
        cli.command,
        pgtide::cli::Command::Wal(pgtide::cli::WalCommand::Fetch { .. })
    ) {
        pgtide::cli::exit::set_panic_code(pgtide::cli::exit::RECOVERY_ABORT);
    }
    pgtide::cli::init_tracing(cli.log_level(), &cli.log_format());
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
                    pgtide::cli::exit::panic_code(),
                    pgtide::cli::exit::internal_message(&e.to_string()),
                ))
            })
    });
    // A panic anywhere (a worker task, a blocking thread, a detached task)
    // is a bug, whatever error it became on its way up.
    let result = match pgtide::cli::exit::panicked() {
        Some(what) => Err(pgtide::cli::exit::CliError::new(
            pgtide::cli::exit::panic_code(),
            pgtide::cli::exit::internal_message(&what),
        )),
        None => result,
    };
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
