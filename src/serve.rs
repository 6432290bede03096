//! What the serving commands (`gateway`, `icap`) share: reading the config file, putting
//! the verdict core together, the admin listener, the shutdown signal.

use std::sync::Arc;

use anyhow::{Context, Result};
use hashgate_host::config::FileConfig;
use std::time::Duration;

use hashgate_host::enforce::{
    Action, AllowList, AuditLog, ConfirmConfig, Enforcer, Metrics, Policy,
};
use hashgate_host::feed::{Feed, FeedConfig, Update};
use hashgate_host::{FilterEngine, Limits};

use crate::cli::EnforceArgs;

/// The config file named by `--config`, or an empty one.
pub fn file_config(args: &EnforceArgs) -> Result<FileConfig> {
    Ok(match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    })
}

/// The verified filter (a fixed snapshot, or the feed's accepted version), policy, audit
/// log and metrics, from flags over the file; and the feed to keep following, if any.
pub async fn enforcer(
    args: &EnforceArgs,
    file: &FileConfig,
) -> Result<(Arc<Enforcer>, Option<Feed>)> {
    let (engine, feed) = match args.feed.as_ref().or(file.feed.as_ref()) {
        Some(url) => {
            let (engine, feed) = follow(url, args, file).await?;
            (engine, Some(feed))
        }
        None => {
            let filter = args.filter.as_ref().or(file.filter.as_ref()).context(
                "--filter or --feed (or `filter` or `feed` in the config file) is required",
            )?;
            let public_key = args
                .public_key
                .as_ref()
                .or(file.public_key.as_ref())
                .context("--pub (or `pub` in the config file) is required")?;
            (crate::cli::open_filter(filter, public_key, None)?, None)
        }
    };
    let mut policy = Policy::default();
    if let Some(actions) = &file.actions {
        let mut actions = actions.clone();
        if let Some(default) = actions.remove("default") {
            policy.default_action = default;
        }
        policy.actions = actions;
    }
    if args.monitor {
        policy.default_action = Action::Monitor;
        policy.actions.clear();
    }
    policy.on_failure = file.on_guest_failure.unwrap_or_default();
    policy.uninspectable = file.uninspectable.unwrap_or_default();
    if let Some(path) = args.allow_list.as_ref().or(file.allow_list.as_ref()) {
        policy.allow = AllowList::read(path)?;
    }
    let audit = args
        .audit_log
        .as_ref()
        .or(file.audit_log.as_ref())
        .map(|p| AuditLog::open(p))
        .transpose()?;
    let mut enforcer = Enforcer::new(engine, policy, audit, Metrics::new());
    let mut confirm = file.confirm.clone();
    if let Some(url) = &args.confirm {
        let table = confirm.get_or_insert_with(|| ConfirmConfig::new(url));
        table.url = url.clone();
        if let Some(token) = &args.confirm_token_file {
            table.token_file = Some(token.clone());
        }
    }
    if let Some(rules) = confirm {
        enforcer = enforcer.with_confirmation(rules)?;
    }
    let enforcer = Arc::new(enforcer);
    if let Some(m) = feed.as_ref().and_then(Feed::accepted) {
        enforcer.metrics().set_fresh_until(m.expires);
    }
    Ok((enforcer, feed))
}

/// Opens the feed: resumes the version persisted in the state directory, or fetches the
/// first one (and fails if it cannot: a gateway without a filter cannot decide).
async fn follow(url: &str, args: &EnforceArgs, file: &FileConfig) -> Result<(FilterEngine, Feed)> {
    let root = args
        .root
        .clone()
        .or(file.root.clone())
        .context("--feed needs --root (or `root` in the config file)")?;
    let config = FeedConfig {
        url: url.to_string(),
        root,
        state_dir: args
            .state_dir
            .clone()
            .or(file.state_dir.clone())
            .unwrap_or_else(|| "hashgate-state".into()),
        poll: args
            .feed_poll
            .or(file.feed_poll_secs.map(Duration::from_secs))
            .unwrap_or(Duration::from_secs(300)),
        timeout: args
            .feed_timeout
            .or(file.feed_timeout_secs.map(Duration::from_secs))
            .unwrap_or(Duration::from_secs(60)),
        ca: args.feed_ca.clone().or(file.feed_ca.clone()),
    };
    let mut feed = Feed::new(config, Limits::default())?;
    if let Some(engine) = feed.resume()? {
        let info = engine.info();
        eprintln!(
            "feed: resumed {} version {} from the state directory",
            info.series, info.version
        );
        return Ok((engine, feed));
    }
    match feed.update().await {
        Ok(Update::Applied(applied)) => Ok((applied.engine, feed)),
        Ok(_) => anyhow::bail!("the feed gave no filter"),
        Err(e) => Err(e.error).context("fetching the first filter from the feed"),
    }
}

/// Starts the admin listener if one is configured, announcing its address on stderr.
pub async fn start_admin(
    args: &EnforceArgs,
    file: &FileConfig,
    enforcer: &Arc<Enforcer>,
) -> Result<()> {
    let Some(addr) = args.admin.as_ref().or(file.admin.as_ref()) else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin listener on {addr}"))?;
    eprintln!(
        "admin on http://{} (/metrics, /healthz, /readyz)",
        listener.local_addr()?
    );
    tokio::spawn(hashgate_host::admin::serve_admin(
        listener,
        enforcer.clone(),
    ));
    Ok(())
}

/// The reloadable certificate store for `cert` and `key`, if TLS is configured at all.
pub fn cert_store(
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
) -> Result<Option<Arc<hashgate_host::tls::CertStore>>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(hashgate_host::tls::CertStore::load(&cert, &key)?)),
        (None, None) => Ok(None),
        _ => anyhow::bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The control-plane runtime of a serving command: the feed, the admin listener, signals.
/// Requests are served on threads of their own (see `hashgate_host::listener`).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Binds the serving address for as many threads as `--workers` (or `workers` in the
/// file) says, one per core by default.
pub fn listener(
    listen: &str,
    args: &EnforceArgs,
    file: &FileConfig,
) -> Result<hashgate_host::listener::Listener> {
    let cores = match args.workers.or(file.workers) {
        Some(0) => anyhow::bail!("workers must be at least 1"),
        Some(n) => n,
        None => hashgate_host::listener::default_cores(),
    };
    Ok(hashgate_host::listener::Listener::bind(listen, cores)?)
}

/// What `--check-config` says when everything checked out.
pub fn config_ok(listen: &str, enforcer: &Enforcer, following: bool) {
    let filter = enforcer.filter();
    let info = filter.info();
    eprintln!(
        "configuration ok: would serve {listen} enforcing {} v{} ({} entries){}",
        info.series,
        info.version,
        info.entries,
        if following {
            ", following its feed"
        } else {
            ""
        }
    );
}

/// On every SIGHUP: reopens the audit and report logs (logrotate renamed them) and
/// rereads the TLS certificate, if one is served (a bad new one is logged and the old
/// one stays in use; connections already up keep the one they started with).
pub async fn on_hangup(
    enforcer: Arc<Enforcer>,
    tls: Option<std::sync::Arc<hashgate_host::tls::CertStore>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!(
            "cannot install the SIGHUP handler; log reopening and certificate reload are off"
        );
        return;
    };
    while hup.recv().await.is_some() {
        enforcer.reopen_logs();
        let Some(store) = &tls else { continue };
        match store.reload() {
            Ok(()) => eprintln!("TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one")
            }
        }
    }
}
