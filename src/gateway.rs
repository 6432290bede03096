//! `hashgate gateway` and `hashgate selftest`: flags and config file in, a running
//! gateway out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hashgate_host::enforce::{Action, AllowList, AuditLog, Enforcer, Metrics, Policy};
use hashgate_host::gateway::{Backend, Config, FileConfig, Gateway};

use crate::cli::GatewayArgs;

pub fn run(args: GatewayArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let filter = args
        .filter
        .or(file.filter)
        .context("--filter (or `filter` in the config file) is required")?;
    let public_key = args
        .public_key
        .or(file.public_key)
        .context("--pub (or `pub` in the config file) is required")?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let backend = match (args.origin.or(file.origin), args.store.or(file.store)) {
        (Some(origin), _) => {
            let uri: hyper::Uri = origin
                .parse()
                .with_context(|| format!("origin {origin:?}"))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                bail!("origin must be an http://host:port URL (https comes with TLS support)");
            }
            Backend::Origin(uri)
        }
        (None, Some(dir)) => Backend::Store(dir),
        (None, None) => Backend::Store(PathBuf::from("hashgate-store")),
    };
    if let Backend::Store(dir) = &backend {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut config = Config::new(backend);
    if let Some(m) = file.inspect_methods {
        config.inspect_methods = m;
    }
    let secs = Duration::from_secs;
    config.max_body = file.max_body_bytes.unwrap_or(config.max_body);
    config.header_timeout = file.header_timeout_secs.map_or(config.header_timeout, secs);
    config.body_timeout = file.body_timeout_secs.map_or(config.body_timeout, secs);
    config.origin_timeout = file.origin_timeout_secs.map_or(config.origin_timeout, secs);
    config.max_connections = file.max_connections.unwrap_or(config.max_connections);
    config.shutdown_grace = file.shutdown_grace_secs.map_or(config.shutdown_grace, secs);

    let mut policy = Policy::default();
    if let Some(mut actions) = file.actions {
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
    if let Some(path) = args.allow_list.or(file.allow_list) {
        policy.allow = AllowList::read(&path)?;
    }
    let audit = args
        .audit_log
        .or(file.audit_log)
        .map(|p| AuditLog::open(&p))
        .transpose()?;
    let engine = crate::cli::open_filter(&filter, &public_key, None)?;
    let enforcer = Enforcer::new(engine, policy, audit, Metrics::new());
    let admin = args.admin.or(file.admin);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let gateway = Gateway::new(config, enforcer);
        if let Some(admin) = admin {
            let admin_listener = tokio::net::TcpListener::bind(&admin)
                .await
                .with_context(|| format!("admin listener on {admin}"))?;
            eprintln!(
                "admin on http://{} (/metrics, /healthz, /readyz)",
                admin_listener.local_addr()?
            );
            tokio::spawn(hashgate_host::gateway::serve_admin(
                admin_listener,
                gateway.clone(),
            ));
        }
        let info = gateway.enforcer().engine().info();
        eprintln!(
            "hashgate gateway on http://{} enforcing {} v{} ({} entries)",
            listener.local_addr()?,
            info.series,
            info.version,
            info.entries
        );
        gateway.serve(listener, shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// PUTs the canary to `url` and reports whether the gateway blocked it.
pub fn selftest(url: &str) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let uri: hyper::Uri = url.parse().with_context(|| format!("url {url:?}"))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let request = hyper::Request::put(uri).body(http_body_util::Full::new(
            bytes::Bytes::from_static(hashgate_authority::canary_content()),
        ))?;
        let response = client
            .request(request)
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = response.status();
        if status == hyper::StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
            println!("PASS: the gateway blocked the canary file (451)");
            Ok(ExitCode::SUCCESS)
        } else {
            println!("FAIL: the canary file was not blocked: HTTP {status}");
            Ok(ExitCode::from(1))
        }
    })
}
