//! The one-shot commands: apply, diff, export, migrate, config validate/schema,
//! the identity commands (orgs, apps, keys, oauth-clients, signing-keys),
//! which write straight to the store through the same functions the admin
//! API uses ([`tollgate_admin::issue`]), and `audit list`/`export`, which
//! read the audit log from the store.

use std::io::Write;

use anyhow::Context;
use serde_json::json;
use tollgate_admin::ApiError;
use tollgate_admin::issue::{self, KeySpec, RotateSpec};
use tollgate_core::config::Config;
use tollgate_core::ids::{AppId, OrgId};
use tollgate_store::{AuditEntry, AuditFilter, ChangeSet, Listed, Op, Page, Store, StoreError};

use crate::cli::{
    AppsCommand, AuditCommand, AuditFilterArgs, Command, ConfigCommand, Format, KeysCommand,
    OauthClientsCommand, OrgsCommand, Output, SigningKeysCommand, StoreArgs,
};
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
    write_out(text).map(drop)
}

/// Like [`emit`]; false when the reader went away.
fn write_out(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
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
        Command::Orgs { command } => (0, orgs(command).await?),
        Command::Apps { command } => (0, apps(command).await?),
        Command::Keys { command } => (0, keys(command).await?),
        Command::OauthClients { command } => (0, oauth_clients(command).await?),
        Command::SigningKeys { command } => (0, signing_keys(command).await?),
        Command::Analytics(args) => (0, crate::analytics::command(args).await.map_err(cli_error)?),
        Command::Audit { command } => (0, audit(command).await?),
    };
    emit(&out)?;
    Ok(code)
}

// ------------------------------------------------------------- identity

/// A value as pretty JSON text with a final newline.
fn to_json(value: serde_json::Value) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(&value)?))
}

/// An admin-layer error as a CLI message: validation problems list every
/// field; other errors keep their own text (never a secret).
fn cli_error(e: ApiError) -> anyhow::Error {
    match &e {
        ApiError::Invalid(errors) | ApiError::Store(StoreError::Invalid(errors)) => {
            let list: Vec<String> = errors
                .iter()
                .map(|f| {
                    if f.path.is_empty() {
                        f.reason.clone()
                    } else {
                        format!("{}: {}", f.path, f.reason)
                    }
                })
                .collect();
            anyhow::anyhow!("invalid input: {}", list.join("; "))
        }
        _ => anyhow::Error::new(e),
    }
}

fn store_error(e: StoreError) -> anyhow::Error {
    cli_error(ApiError::Store(e))
}

/// The organization named by `org`: its id (`org_…`) or its name.
async fn resolve_org(store: &Store, org: &str) -> anyhow::Result<OrgId> {
    let found = match org.parse::<OrgId>() {
        Ok(id) => store.get_org(&id).await,
        Err(_) => store.get_org_by_name(org).await,
    };
    match found {
        Ok(o) => Ok(o.id),
        Err(StoreError::NotFound { .. }) => {
            anyhow::bail!("organization `{org}` not found (give its id or name)")
        }
        Err(e) => Err(store_error(e)),
    }
}

/// Every item of a paged list, in order.
async fn all_pages<T, F, Fut>(mut fetch: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = Result<Listed<T>, StoreError>>,
{
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = fetch(Page {
            limit: Page::MAX_LIMIT,
            after: after.take(),
        })
        .await
        .map_err(store_error)?;
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Tells the person at the terminal that a secret is on stdout, once.
fn secret_notice(what: &str) {
    eprintln!("tollgate: the {what} above is shown only this once; store it now");
}

async fn orgs(cmd: OrgsCommand) -> anyhow::Result<String> {
    match cmd {
        OrgsCommand::Create {
            name,
            display_name,
            store,
        } => {
            let store = open_store(&store).await?;
            let display = display_name.as_deref().unwrap_or(&name);
            let org = store
                .create_org(&name, display)
                .await
                .map_err(store_error)?;
            to_json(serde_json::to_value(&org)?)
        }
        OrgsCommand::List { store } => {
            let store = open_store(&store).await?;
            to_json(serde_json::to_value(
                all_pages(|p| store.list_orgs(p)).await?,
            )?)
        }
    }
}

async fn apps(cmd: AppsCommand) -> anyhow::Result<String> {
    match cmd {
        AppsCommand::Create {
            org,
            name,
            description,
            store,
        } => {
            let store = open_store(&store).await?;
            let org = resolve_org(&store, &org).await?;
            let app = store
                .tenant(&org)
                .create_app(&name, &description, Default::default())
                .await
                .map_err(store_error)?;
            to_json(serde_json::to_value(&app)?)
        }
        AppsCommand::List { org, store } => {
            let store = open_store(&store).await?;
            let org = resolve_org(&store, &org).await?;
            let tenant = store.tenant(&org);
            to_json(serde_json::to_value(
                all_pages(|p| tenant.list_apps(p)).await?,
            )?)
        }
    }
}

/// The store and the organization of an app-scoped command.
async fn app_scope(args: &StoreArgs, org: &str, app: &AppId) -> anyhow::Result<(Store, OrgId)> {
    let store = open_store(args).await?;
    let org = resolve_org(&store, org).await?;
    store.tenant(&org).get_app(app).await.map_err(|e| match e {
        StoreError::NotFound { .. } => {
            anyhow::anyhow!("app `{app}` not found in organization `{org}`")
        }
        other => store_error(other),
    })?;
    Ok((store, org))
}

async fn keys(cmd: KeysCommand) -> anyhow::Result<String> {
    match cmd {
        KeysCommand::Create {
            org,
            app,
            environment,
            scopes,
            name,
            store: args,
        } => {
            let (store, org) = app_scope(&args, &org, &app).await?;
            let pepper = crate::identity::pepper(&args, &store).await?;
            let spec = KeySpec {
                name,
                environment,
                scopes,
                ..KeySpec::default()
            };
            let issued = issue::create_key(&store.tenant(&org), &pepper, &app, spec)
                .await
                .map_err(cli_error)?;
            let out = to_json(json!({"key": issued.key, "secret": issued.secret}))?;
            secret_notice("secret");
            Ok(out)
        }
        KeysCommand::List {
            org,
            app,
            store: args,
        } => {
            let (store, org) = app_scope(&args, &org, &app).await?;
            let tenant = store.tenant(&org);
            to_json(serde_json::to_value(
                all_pages(|p| tenant.list_keys(&app, p)).await?,
            )?)
        }
        KeysCommand::Revoke {
            org,
            app,
            key,
            store: args,
        } => {
            let (store, org) = app_scope(&args, &org, &app).await?;
            let tenant = store.tenant(&org);
            key_of_app(&tenant, &app, &key).await?;
            to_json(serde_json::to_value(
                tenant.revoke_key(&key).await.map_err(store_error)?,
            )?)
        }
        KeysCommand::Rotate {
            org,
            app,
            key,
            overlap,
            store: args,
        } => {
            issue::check_overlap(overlap.get()).map_err(cli_error)?;
            let (store, org) = app_scope(&args, &org, &app).await?;
            let pepper = crate::identity::pepper(&args, &store).await?;
            let tenant = store.tenant(&org);
            let old = key_of_app(&tenant, &app, &key).await?;
            let spec = RotateSpec {
                overlap: overlap.get(),
                name: None,
                scopes: None,
                metadata: None,
                expires_at: None,
            };
            let (issued, previous) = issue::rotate_key(&tenant, &pepper, &old, spec)
                .await
                .map_err(cli_error)?;
            let out = to_json(json!({
                "key": issued.key,
                "secret": issued.secret,
                "previous": previous,
            }))?;
            secret_notice("secret");
            Ok(out)
        }
    }
}

/// The key, when it belongs to `app` (as the admin API checks).
async fn key_of_app(
    tenant: &tollgate_store::Tenant<'_>,
    app: &AppId,
    key: &tollgate_core::ids::KeyId,
) -> anyhow::Result<tollgate_store::ApiKey> {
    match tenant.get_key(key).await {
        Ok(k) if &k.app_id == app => Ok(k),
        Ok(_) | Err(StoreError::NotFound { .. }) => {
            anyhow::bail!("API key `{key}` not found in app `{app}`")
        }
        Err(e) => Err(store_error(e)),
    }
}

async fn oauth_clients(cmd: OauthClientsCommand) -> anyhow::Result<String> {
    match cmd {
        OauthClientsCommand::Create {
            org,
            app,
            name,
            scopes,
            store: args,
        } => {
            let (store, org) = app_scope(&args, &org, &app).await?;
            let issued = issue::create_client(&store.tenant(&org), &app, &name, scopes)
                .await
                .map_err(cli_error)?;
            let out = to_json(json!({
                "client_id": issued.client.id,
                "client_secret": issued.secret,
                "client": issued.client,
            }))?;
            secret_notice("client_secret");
            Ok(out)
        }
    }
}

async fn signing_keys(cmd: SigningKeysCommand) -> anyhow::Result<String> {
    match cmd {
        SigningKeysCommand::Rotate {
            oauth_token_ttl_secs,
            store,
        } => {
            let store = open_store(&store).await?;
            let ttl = std::time::Duration::from_secs(oauth_token_ttl_secs);
            let rotation = issue::rotate_signing_keys(&store, ttl)
                .await
                .map_err(cli_error)?;
            to_json(serde_json::to_value(&rotation)?)
        }
    }
}

// ------------------------------------------------------------- audit

async fn audit_filter(store: &Store, args: AuditFilterArgs) -> anyhow::Result<AuditFilter> {
    let org = match args.org {
        // An id is taken as is: the log outlives the organizations it names.
        Some(org) => Some(match org.parse::<OrgId>() {
            Ok(id) => id,
            Err(_) => resolve_org(store, &org).await?,
        }),
        None => None,
    };
    Ok(AuditFilter {
        actor: args.actor,
        action: args.action,
        resource_type: args.resource_type,
        resource_id: args.resource_id,
        org,
        from: args.since,
        to: args.until,
        status: args.status,
    })
}

async fn audit(cmd: AuditCommand) -> anyhow::Result<String> {
    match cmd {
        AuditCommand::List {
            filter,
            limit,
            after,
            format,
            store,
        } => {
            let store = open_store(&store).await?;
            let filter = audit_filter(&store, filter).await?;
            let page = store
                .list_audit(&filter, Page { limit, after })
                .await
                .map_err(store_error)?;
            if let Some(next) = &page.next {
                eprintln!("tollgate: more entries follow; continue with --after {next}");
            }
            match format {
                Output::Json => to_json(serde_json::to_value(&page)?),
                Output::Table => Ok(audit_table(&page.items)),
            }
        }
        AuditCommand::Export {
            filter,
            after,
            store,
        } => {
            let store = open_store(&store).await?;
            let filter = audit_filter(&store, filter).await?;
            let mut after = after;
            loop {
                let page = store
                    .list_audit(
                        &filter,
                        Page {
                            limit: tollgate_admin::audit::EXPORT_PAGE,
                            after: after.take(),
                        },
                    )
                    .await
                    .map_err(store_error)?;
                let mut lines = String::new();
                for entry in &page.items {
                    lines.push_str(&serde_json::to_string(entry)?);
                    lines.push('\n');
                }
                // Each page is written as it is read, so an export of any
                // size runs in the memory of one page.
                if !write_out(&lines)? {
                    return Ok(String::new());
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => return Ok(String::new()),
                }
            }
        }
    }
}

/// Entries as a table, one line each.
fn audit_table(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no matching audit entries\n".to_owned();
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let mut rows = vec![[
        "TIME".to_owned(),
        "STATUS".to_owned(),
        "ACTOR".to_owned(),
        "ACTION".to_owned(),
        "RESOURCE".to_owned(),
        "ORG".to_owned(),
        "IP".to_owned(),
        "REQUEST ID".to_owned(),
    ]];
    for e in entries {
        rows.push([
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.status.to_string(),
            e.actor.clone(),
            e.action.clone(),
            dash(e.resource_id.as_deref()),
            dash(e.org_id.as_ref().map(OrgId::as_str)),
            dash(e.ip.as_deref()),
            e.request_id.clone(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
