//! What the serving commands (`gateway`, `icap`) share on the command line: the flags
//! every front-end takes, turned into settings laid over the config file's. Everything
//! after that (resolution, checks, assembly) is `hashgate_host::serve`.

use std::time::Duration;

use anyhow::Result;
use hashgate_host::config::FileConfig;
use hashgate_host::enforce::{Action, ConfirmConfig};
use hashgate_host::serve::{self, Front, Mode};

use crate::cli::EnforceArgs;

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
        feed: args.feed.clone(),
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
