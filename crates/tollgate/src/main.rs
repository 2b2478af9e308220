//! `tollgate`: see `tollgate --help`.

use clap::Parser;

/// mimalloc: the proxy allocates small, short-lived buffers per request, and
/// glibc's allocator costs measurably more there (bench/RESULTS.md). Built
/// with `no_thp`: mimalloc would otherwise ask for transparent huge pages
/// for its arenas, and each 2 MiB page counts whole in the resident set
/// although the heap uses a fraction of it (about 15 MiB more RSS at start,
/// for no measured speed; bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tollgate::cli::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: piped or redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() {
    let cli = Cli::parse();
    // Every runtime is current-thread: the proxy runs one per worker thread
    // (see `tollgate::start`), which measured faster than a work-stealing
    // pool (bench/RESULTS.md). This one also serves the admin API.
    let mut rt = tokio::runtime::Builder::new_current_thread();
    rt.enable_all();
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                init_logging(args.log_format);
                serve(*args).await
            }
            other => {
                init_logging(LogFormat::Text);
                tollgate::run_command(other).await
            }
        }
    });
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tollgate: error: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn serve(args: tollgate::ServeArgs) -> anyhow::Result<i32> {
    let running = tollgate::start(args).await?;
    if let Some(addr) = running.proxy_addr {
        eprintln!("tollgate: proxy listening on http://{addr}");
    }
    if let Some(addr) = running.admin_addr {
        eprintln!("tollgate: admin API listening on http://{addr}");
        if let Some(token) = &running.new_admin_token {
            eprintln!();
            eprintln!(
                "tollgate: created an admin token. It is shown only this once; store it now:"
            );
            eprintln!();
            eprintln!("    {token}");
            eprintln!();
            eprintln!("    curl -H 'Authorization: Bearer {token}' http://{addr}/services");
            eprintln!();
        }
    }
    let stop = running.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        stop.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(0)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
