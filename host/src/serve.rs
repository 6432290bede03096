//! Server assembly: from one resolved [`FileConfig`] (the file with the command line's
//! flags laid over it, [`FileConfig::overlay`]) to a running front-end. What the gateway
//! and the ICAP server share is done here once: the verdict core (a fixed filter or a
//! followed feed, the policy, the audit log, confirmation), the serving threads, the
//! admin listener, `SIGHUP` and `SIGTERM`, and the ready line.
//!
//! A server announces itself on stderr with a banner for people, then one line for
//! programs, last, once every listener is bound:
//!
//! ```text
//! ready {"server":"gateway","listen":"http://127.0.0.1:8080","admin":"http://127.0.0.1:9090","series":"nl-example","version":7}
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AuthorityFileConfig, FeedSetting, FileConfig};
use crate::enforce::{Actions, AllowList, AuditLog, AuthorityFilter, Enforcer, Metrics, Policy};
use crate::feed::{Feed, FeedConfig, Update};
use crate::gateway::{self, Gateway};
use crate::icap::{IcapConfig, IcapServer};
use crate::listener::Listener;
use crate::tls::CertStore;
use crate::trust::PublicKey;
use crate::{Error, FilterEngine, Limits, Runtime};

/// A front-end, its settings resolved.
#[derive(Clone, Debug)]
pub enum Front {
    /// The upload gateway (`hashgate gateway`).
    Gateway(Box<gateway::Config>),
    /// The ICAP server (`hashgate icap`).
    Icap(Box<IcapConfig>),
}

impl Front {
    /// The gateway `file` describes ([`gateway::Config::resolve`]).
    pub fn gateway(file: &FileConfig) -> Result<Front, Error> {
        Ok(Front::Gateway(Box::new(gateway::Config::resolve(file)?)))
    }

    /// The ICAP server `file` describes ([`IcapConfig::resolve`]).
    pub fn icap(file: &FileConfig) -> Result<Front, Error> {
        Ok(Front::Icap(Box::new(IcapConfig::resolve(file)?)))
    }

    /// The name in banners and the ready line.
    fn name(&self) -> &'static str {
        match self {
            Front::Gateway(_) => "gateway",
            Front::Icap(_) => "icap",
        }
    }

    /// The address clients connect to (defaults: 127.0.0.1:8080, 127.0.0.1:1344).
    fn listen(&self, file: &FileConfig) -> String {
        match self {
            Front::Gateway(_) => file.listen.clone(),
            Front::Icap(_) => file.icap.as_ref().and_then(|t| t.listen.clone()),
        }
        .unwrap_or_else(|| match self {
            Front::Gateway(_) => "127.0.0.1:8080".into(),
            Front::Icap(_) => "127.0.0.1:1344".into(),
        })
    }

    fn tls(&self) -> Option<Arc<CertStore>> {
        match self {
            Front::Gateway(c) => c.tls.clone(),
            Front::Icap(c) => c.tls.clone(),
        }
    }

    fn scheme(&self) -> &'static str {
        match (self, self.tls().is_some()) {
            (Front::Gateway(_), false) => "http",
            (Front::Gateway(_), true) => "https",
            (Front::Icap(_), false) => "icap",
            (Front::Icap(_), true) => "icaps",
        }
    }
}

/// What [`run`] does once everything is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve until `SIGTERM` or Ctrl-C.
    Serve,
    /// Check the configuration, the filter and the keys, say what would be served, and
    /// return (`--check-config`, like `nginx -t`).
    Check,
}

/// Runs `front` under `file`'s filter, policy and listeners, on a control-plane runtime
/// of its own (requests are served on threads of their own: [`crate::listener`]).
/// Returns when the server has shut down, or at once in [`Mode::Check`].
pub fn run(front: Front, file: &FileConfig, mode: Mode) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Serve(format!("starting the async runtime: {e}")))?;
    runtime.block_on(run_async(front, file, mode))
}

async fn run_async(front: Front, file: &FileConfig, mode: Mode) -> Result<(), Error> {
    let listen = front.listen(file);
    let (enforcer, feeds) = enforcer(file).await?;
    let tls = front.tls();
    let (scheme, name) = (front.scheme(), front.name());
    let server = match front {
        Front::Gateway(config) => Server::Gateway(Gateway::new(*config, enforcer.clone())?),
        Front::Icap(config) => Server::Icap(IcapServer::new(*config, enforcer.clone())?),
    };
    let filter = enforcer.filter();
    let (series, version) = filter.label();
    let entries = filter.entries();
    if mode == Mode::Check {
        eprintln!(
            "configuration ok: would serve {listen} enforcing {series} v{version} ({entries} entries){}",
            match feeds.len() {
                0 => String::new(),
                1 => ", following its feed".into(),
                n => format!(", following {n} feeds"),
            }
        );
        return Ok(());
    }
    for (index, feed) in feeds {
        tokio::spawn(feed.run(enforcer.clone(), index));
    }
    for (index, config) in feedback_configs(file) {
        tokio::spawn(crate::enforce::feedback::report(
            enforcer.clone(),
            config,
            index,
        ));
    }
    let listener = Listener::bind(&listen, workers(file)?)?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Serve(format!("listening on {listen}: {e}")))?;
    let admin = start_admin(file, &enforcer).await?;
    tokio::spawn(on_hangup(enforcer.clone(), tls));
    let services = if name == "icap" {
        " (/reqmod, /respmod)"
    } else {
        ""
    };
    eprintln!(
        "hashgate {name} on {scheme}://{address}{services} enforcing {series} v{version} ({entries} entries)"
    );
    let mut ready = serde_json::json!({
        "server": name,
        "listen": format!("{scheme}://{address}"),
        "admin": admin.map(|a| format!("http://{a}")),
        "series": series,
        "version": version,
    });
    if filter.members().iter().any(|m| m.authority.is_some()) {
        ready["feeds"] = filter
            .members()
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.label(),
                    "series": m.engine.info().series,
                    "version": m.engine.info().version,
                })
            })
            .collect();
    }
    eprintln!("ready {ready}");
    drop(filter);
    let served = match server {
        Server::Gateway(g) => g.serve(listener, shutdown_signal()).await,
        Server::Icap(i) => i.serve(listener, shutdown_signal()).await,
    };
    // Serving threads past the grace period may still hold the enforcer: the logs are
    // signed and closed now, not when the last of them lets go.
    enforcer.close_logs();
    served
}

enum Server {
    Gateway(Arc<Gateway>),
    Icap(Arc<IcapServer>),
}

/// Serving threads: `workers`, or one per core.
fn workers(file: &FileConfig) -> Result<usize, Error> {
    match file.workers {
        Some(0) => Err(Error::Config("workers must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(crate::listener::default_cores()),
    }
}

/// The verified filters (each a fixed snapshot, or a feed's accepted version), policy,
/// audit log, confirmation and metrics `file` describes; and the feeds to keep
/// following, each with the index of the authority whose filter it replaces.
pub async fn enforcer(file: &FileConfig) -> Result<(Arc<Enforcer>, Vec<(usize, Feed)>), Error> {
    let mut policy = Policy::default();
    if let Some(actions) = &file.actions {
        let actions = Actions::from_table(actions.clone());
        policy.default_action = actions.default;
        policy.actions = actions.by_category;
    }
    policy.on_failure = file.on_guest_failure.unwrap_or_default();
    policy.uninspectable = file.uninspectable.unwrap_or_default();
    if let Some(path) = &file.allow_list {
        policy.allow = AllowList::read(path)?;
    }
    let checkpoints = file.audit_checkpoints()?;
    let audit = file
        .audit_log
        .as_deref()
        .map(|path| AuditLog::open_signed(path, checkpoints))
        .transpose()?;
    let mut feeds = Vec::new();
    let mut enforcer = match &file.feed {
        Some(FeedSetting::Authorities(tables)) => {
            only_in_feed_tables(file)?;
            let mut authorities = Vec::new();
            for (index, table) in tables.iter().enumerate() {
                table.check()?;
                let (engine, feed) = authority_filter(table, file).await?;
                if let Some(feed) = feed {
                    feeds.push((index, feed));
                }
                authorities.push(AuthorityFilter {
                    name: table.name.clone(),
                    engine,
                    actions: table.actions.clone().map(Actions::from_table),
                });
            }
            let mut enforcer =
                Enforcer::with_authorities(authorities, policy, audit, Metrics::new())?;
            for (index, table) in tables.iter().enumerate() {
                if let Some(rules) = table.confirm.clone() {
                    enforcer =
                        enforcer.with_confirmation_for(index, rules, file.audit_checkpoints()?)?;
                }
            }
            enforcer
        }
        Some(FeedSetting::Url(url)) => {
            let (engine, feed) = follow(feed_config(url, file)?).await?;
            feeds.push((0, feed));
            Enforcer::new(engine, policy, audit, Metrics::new())
        }
        None => {
            let filter = file.filter.as_ref().ok_or_else(|| {
                Error::Config(
                    "--filter or --feed (or `filter`, `feed` or [[feed]] in the config file) is required"
                        .into(),
                )
            })?;
            let public_key = file.public_key.as_ref().ok_or_else(|| {
                Error::Config("--pub (or `pub` in the config file) is required".into())
            })?;
            let engine = fixed_filter(filter, public_key)?;
            Enforcer::new(engine, policy, audit, Metrics::new())
        }
    };
    enforcer = enforcer.with_storms(file.storm.clone().unwrap_or_default());
    for (index, feedback) in feedback_configs(file) {
        // A key that cannot be read is a start-up error, not a silent lack of reports.
        crate::trust::SecretKey::read(&feedback.key)?;
        enforcer = enforcer.with_feedback_tally_for(index);
    }
    if let Some(path) = &file.allow_list_local {
        enforcer = enforcer.with_local_allow_list(path.clone())?;
    }
    if let Some(rules) = file.confirm.clone() {
        // The report log is evidence too: signed with the audit log's key.
        enforcer = enforcer.with_confirmation(rules, file.audit_checkpoints()?)?;
    }
    let enforcer = Arc::new(enforcer);
    for (index, feed) in &feeds {
        if let Some(m) = feed.accepted() {
            let label = enforcer.authority_label(*index);
            enforcer.metrics().set_fresh_until(&label, m.expires);
        }
    }
    Ok((enforcer, feeds))
}

/// Where feedback reports go, by the index of the authority they are for: the
/// top-level `[feedback]` for the one filter, or each `[[feed]]` table's.
fn feedback_configs(file: &FileConfig) -> Vec<(usize, crate::enforce::feedback::FeedbackConfig)> {
    match &file.feed {
        Some(FeedSetting::Authorities(tables)) => tables
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.feedback.clone()?)))
            .collect(),
        _ => file.feedback.clone().map(|f| (0, f)).into_iter().collect(),
    }
}

/// With `[[feed]]` tables, what each authority has its own of is set in its table: the
/// top-level settings for one filter would be ambiguous, and are refused.
fn only_in_feed_tables(file: &FileConfig) -> Result<(), Error> {
    let top = [
        ("filter", file.filter.is_some()),
        ("pub", file.public_key.is_some()),
        ("root", file.root.is_some()),
        ("feed_poll_secs", file.feed_poll_secs.is_some()),
        ("feed_timeout_secs", file.feed_timeout_secs.is_some()),
        ("feed_ca", file.feed_ca.is_some()),
        ("actions` (or `--monitor", file.actions.is_some()),
        ("confirm", file.confirm.is_some()),
        ("feedback", file.feedback.is_some()),
    ];
    match top.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(Error::Config(format!(
            "`{key}` is set at the top level beside [[feed]] tables: set it in each [[feed]] table"
        ))),
        None => Ok(()),
    }
}

/// Reads and verifies a fixed filter snapshot, on the embedded guest.
fn fixed_filter(
    filter: &std::path::Path,
    public_key: &std::path::Path,
) -> Result<FilterEngine, Error> {
    let key = PublicKey::read(public_key)?;
    let runtime = Arc::new(Runtime::new(Limits::default())?);
    let engine =
        FilterEngine::open(runtime, filter, &key).map_err(|e| Error::loading(filter, e))?;
    if let Some(warning) = engine.info().expiry_warning() {
        eprintln!("{warning}");
    }
    Ok(engine)
}

/// One `[[feed]]` table's filter: its fixed snapshot, or its feed's accepted version
/// (and the feed to keep following). Its state directory is its own.
async fn authority_filter(
    table: &AuthorityFileConfig,
    file: &FileConfig,
) -> Result<(FilterEngine, Option<Feed>), Error> {
    let named = |e: Error| Error::Config(format!("[[feed]] {:?}: {e}", table.name));
    if let (Some(filter), Some(key)) = (&table.filter, &table.public_key) {
        return Ok((fixed_filter(filter, key).map_err(named)?, None));
    }
    let (Some(url), Some(root)) = (&table.url, &table.root) else {
        return Err(named(Error::Config(
            "needs url and root, or filter and pub".into(),
        )));
    };
    let config = FeedConfig {
        url: url.clone(),
        root: root.clone(),
        state_dir: table.state_dir.clone().unwrap_or_else(|| {
            file.state_dir
                .clone()
                .unwrap_or_else(|| "hashgate-state".into())
                .join(&table.name)
        }),
        poll: Duration::from_secs(table.poll_secs.unwrap_or(300)),
        timeout: Duration::from_secs(table.timeout_secs.unwrap_or(60)),
        ca: table.ca.clone(),
    };
    let (engine, feed) = follow(config).await.map_err(named)?;
    Ok((engine, Some(feed)))
}

/// The one feed of a configuration with a top-level `feed` URL.
fn feed_config(url: &str, file: &FileConfig) -> Result<FeedConfig, Error> {
    let root = file.root.clone().ok_or_else(|| {
        Error::Config("--feed needs --root (or `root` in the config file)".into())
    })?;
    Ok(FeedConfig {
        url: url.to_string(),
        root,
        state_dir: file
            .state_dir
            .clone()
            .unwrap_or_else(|| "hashgate-state".into()),
        poll: Duration::from_secs(file.feed_poll_secs.unwrap_or(300)),
        timeout: Duration::from_secs(file.feed_timeout_secs.unwrap_or(60)),
        ca: file.feed_ca.clone(),
    })
}

/// Opens the feed: resumes the version persisted in the state directory, or fetches the
/// first one (and fails if it cannot: a server without a filter cannot decide).
async fn follow(config: FeedConfig) -> Result<(FilterEngine, Feed), Error> {
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
        Ok(_) => Err(Error::Feed("the feed gave no filter".into())),
        Err(e) => Err(Error::Feed(format!(
            "fetching the first filter from the feed: {}",
            e.error
        ))),
    }
}

/// Starts the admin listener if one is configured, announcing its address on stderr.
async fn start_admin(
    file: &FileConfig,
    enforcer: &Arc<Enforcer>,
) -> Result<Option<std::net::SocketAddr>, Error> {
    let Some(addr) = &file.admin else {
        return Ok(None);
    };
    let failed = |e: std::io::Error| Error::Serve(format!("admin listener on {addr}: {e}"));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    let token = file
        .admin_token_file
        .as_deref()
        .map(crate::admin::read_token)
        .transpose()?;
    eprintln!("admin on http://{local} (/metrics, /healthz, /readyz, /storms, /allow-list)");
    tokio::spawn(crate::admin::serve_admin(listener, enforcer.clone(), token));
    Ok(Some(local))
}

/// On every SIGHUP: reopens the audit and report logs (logrotate renamed them) and
/// rereads the TLS certificate, if one is served (a bad new one is logged and the old
/// one stays in use; connections already up keep the one they started with).
async fn on_hangup(enforcer: Arc<Enforcer>, tls: Option<Arc<CertStore>>) {
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
            Ok(()) => {
                enforcer.metrics().count_tls_reload("done");
                eprintln!("TLS certificate reloaded");
            }
            Err(e) => {
                enforcer.metrics().count_tls_reload("failed");
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one")
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (or never, if neither can be listened for: logged).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
