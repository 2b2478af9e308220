//! The one-shot commands: apply, diff, export, migrate, config validate/schema.

use std::io::Write;

use anyhow::Context;
use tollgate_core::config::Config;
use tollgate_store::{ChangeSet, Op};

use crate::cli::{Command, ConfigCommand, Format};
use crate::open_store;

fn changes_text(changes: &ChangeSet, applied: bool) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let mut out = String::new();
    for c in &changes.changes {
        let sign = match c.op {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        };
        out.push_str(&format!("{sign} {} {}\n", c.kind, c.name));
    }
    let verb = if applied { "applied" } else { "to apply" };
    out.push_str(&format!(
        "{} created, {} updated, {} deleted ({verb})\n",
        changes.count(Op::Create),
        changes.count(Op::Update),
        changes.count(Op::Delete)
    ));
    out
}

/// Writes a command's output to stdout. A reader that went away (`tollgate
/// export | head`) is not an error: `println!` would panic there.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Runs a one-shot command. Returns the process exit code.
pub async fn run_command(cmd: Command) -> anyhow::Result<i32> {
    let (code, out) = match cmd {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Apply { file, store } => {
            let config = Config::from_file(&file)?;
            let store = open_store(&store).await?;
            let changes = store
                .apply(&config)
                .await
                .with_context(|| format!("cannot apply {}", file.display()))?;
            (0, changes_text(&changes, true))
        }
        Command::Diff { file, store } => {
            let config = Config::from_file(&file)?;
            let store = open_store(&store).await?;
            let changes = store.diff(&config).await?;
            // Like diff(1): 1 when there are differences.
            let code = if changes.is_empty() { 0 } else { 1 };
            (code, changes_text(&changes, false))
        }
        Command::Export { format, store } => {
            let store = open_store(&store).await?;
            let (_, config) = store.export().await?;
            let text = match format {
                Format::Yaml => config.to_yaml(),
                Format::Json => format!("{}\n", serde_json::to_string_pretty(&config)?),
            };
            (0, text)
        }
        Command::Migrate { store } => {
            let store = open_store(&store).await?;
            store.migrate().await?;
            (0, format!("store is up to date ({})\n", store.backend()))
        }
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => {
            let config = Config::from_file(&file)?;
            let routes: usize = config.services.iter().map(|s| s.routes.len()).sum();
            let text = format!(
                "{}: valid ({} services, {routes} routes)\n",
                file.display(),
                config.services.len()
            );
            (0, text)
        }
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            let schema = serde_json::to_string_pretty(&Config::json_schema())?;
            (0, format!("{schema}\n"))
        }
    };
    emit(&out)?;
    Ok(code)
}
