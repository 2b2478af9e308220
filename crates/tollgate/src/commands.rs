//! The one-shot commands: apply, diff, export, migrate, config validate/schema.

use anyhow::Context;
use tollgate_core::config::Config;
use tollgate_store::{ChangeSet, Op};

use crate::cli::{Command, ConfigCommand, Format};
use crate::open_store;

fn print_changes(changes: &ChangeSet, applied: bool) {
    if changes.is_empty() {
        println!("no changes");
        return;
    }
    for c in &changes.changes {
        let sign = match c.op {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        };
        println!("{sign} {} {}", c.kind, c.name);
    }
    let verb = if applied { "applied" } else { "to apply" };
    println!(
        "{} created, {} updated, {} deleted ({verb})",
        changes.count(Op::Create),
        changes.count(Op::Update),
        changes.count(Op::Delete)
    );
}

/// Runs a one-shot command. Returns the process exit code.
pub async fn run_command(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Apply { file, store } => {
            let config = Config::from_file(&file)?;
            let store = open_store(&store).await?;
            let changes = store
                .apply(&config)
                .await
                .with_context(|| format!("cannot apply {}", file.display()))?;
            print_changes(&changes, true);
            Ok(0)
        }
        Command::Diff { file, store } => {
            let config = Config::from_file(&file)?;
            let store = open_store(&store).await?;
            let changes = store.diff(&config).await?;
            print_changes(&changes, false);
            // Like diff(1): 1 when there are differences.
            Ok(if changes.is_empty() { 0 } else { 1 })
        }
        Command::Export { format, store } => {
            let store = open_store(&store).await?;
            let (_, config) = store.export().await?;
            match format {
                Format::Yaml => print!("{}", config.to_yaml()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&config)?),
            }
            Ok(0)
        }
        Command::Migrate { store } => {
            let store = open_store(&store).await?;
            store.migrate().await?;
            println!("store is up to date ({})", store.backend());
            Ok(0)
        }
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => {
            let config = Config::from_file(&file)?;
            let routes: usize = config.services.iter().map(|s| s.routes.len()).sum();
            println!(
                "{}: valid ({} services, {routes} routes)",
                file.display(),
                config.services.len()
            );
            Ok(0)
        }
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            println!("{}", serde_json::to_string_pretty(&Config::json_schema())?);
            Ok(0)
        }
    }
}
