//! What the serving commands (`gateway`, `icap`) share on the command line: the flags
//! every front-end takes, turned into settings laid over the config file's. Everything
//! after that (resolution, checks, assembly) is `hashgate_host::serve`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use hashgate_host::config::FileConfig;
use hashgate_host::enforce::{Action, ConfirmConfig};
use hashgate_host::serve::{self, Front, Mode};

/// The config file named by `--config` (or none) with `front` (the command's own flags)
/// and the shared flags laid over it.
pub fn settings(args: &EnforceArgs, front: FileConfig) -> Result<FileConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    // The file counts in whole seconds; a flag's fraction rounds up (never to zero).
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
    let flags = FileConfig {
        filter: args.filter.clone(),
        public_key: args.public_key.clone(),
        feed: args
            .feed
            .clone()
            .map(hashgate_host::config::FeedSetting::Url),
        root: args.root.clone(),
        state_dir: args.state_dir.clone(),
        feed_poll_secs: secs(args.feed_poll),
        feed_timeout_secs: secs(args.feed_timeout),
        feed_ca: args.feed_ca.clone(),
        confirm: args.confirm.as_ref().map(|url| ConfirmConfig {
            token_file: args.confirm_token_file.clone(),
            ..ConfirmConfig::new(url)
        }),
        admin: args.admin.clone(),
        workers: args.workers,
        audit_log: args.audit_log.clone(),
        audit_key: args.audit_key.clone(),
        allow_list: args.allow_list.clone(),
        actions: args
            .monitor
            .then(|| [("default".to_string(), Action::Monitor)].into()),
        ..front
    };
    Ok(file.overlay(flags))
}

/// Runs `front` under `settings`, or only checks them.
pub fn run(front: Front, settings: &FileConfig, check_only: bool) -> Result<()> {
    let mode = if check_only { Mode::Check } else { Mode::Serve };
    Ok(serve::run(front, settings, mode)?)
}

/// What every serving front-end (gateway, ICAP server) needs to enforce: the filter, the
/// policy, the audit log, the admin listener.
#[derive(clap::Args, Debug, Default)]
pub struct EnforceArgs {
    /// TOML configuration file (see README.md); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The signed filter snapshot.
    #[arg(long)]
    pub filter: Option<PathBuf>,
    /// The authority's public key.
    #[arg(long = "pub")]
    pub public_key: Option<PathBuf>,
    /// Follow the authority's feed at this manifest URL instead of a fixed --filter
    /// (needs --root; see docs/PROTOCOL.md).
    #[arg(long, conflicts_with_all = ["filter", "public_key"])]
    pub feed: Option<String>,
    /// The authority's root of trust for --feed (a root file from `hashgate root`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Where the feed's accepted version is kept across restarts.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How often to poll the feed (the manifest's minimum interval wins if longer).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub feed_poll: Option<Duration>,
    /// A private CA (PEM) to trust for an https feed.
    #[arg(long)]
    pub feed_ca: Option<PathBuf>,
    /// Deadline of one feed download.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub feed_timeout: Option<Duration>,
    /// Confirm filter hits with the authority's range API at this URL (blocking still
    /// acts on the filter hit; quarantine and reports wait for confirmation; the
    /// `[confirm]` table of the config file sets each).
    #[arg(long)]
    pub confirm: Option<String>,
    /// File holding the bearer token for --confirm.
    #[arg(long, requires = "confirm")]
    pub confirm_token_file: Option<PathBuf>,
    /// Admin listener address (/metrics, /healthz, /readyz).
    #[arg(long)]
    pub admin: Option<String>,
    /// Serving threads, each with its own event loop (default: one per core, or
    /// HASHGATE_WORKER_THREADS).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Audit log (JSON lines, fsynced per record).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Sign the audit log's hash chain with this operator key (`hashgate keygen`);
    /// `hashgate audit verify --pub` checks it.
    #[arg(long, requires = "audit_log")]
    pub audit_key: Option<PathBuf>,
    /// Allow-list of exact digests that override hits.
    #[arg(long)]
    pub allow_list: Option<PathBuf>,
    /// Only audit and count hits, never block (same as `actions.default = "monitor"`).
    #[arg(long)]
    pub monitor: bool,
}
