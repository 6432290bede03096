//! `hashgate gateway` and `hashgate selftest`: flags and config file in, a running
//! gateway out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hashgate_host::gateway::{AbortCredentials, Backend, Config, Gateway};

use crate::cli::GatewayArgs;
use crate::serve;

pub fn run(args: GatewayArgs) -> Result<()> {
    let file = serve::file_config(&args.enforce)?;
    let listen = args
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let backend = match (
        args.origin.or(file.origin.clone()),
        args.store.or(file.store.clone()),
    ) {
        (Some(origin), _) => {
            let uri: hyper::Uri = origin
                .parse()
                .with_context(|| format!("origin {origin:?}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                bail!("origin must be an http:// or https:// URL with a host");
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
    if let Some(table) = &file.inspect {
        config.inspect = std::sync::Arc::new(table.limits());
    }
    if let Some(m) = &file.inspect_methods {
        config.inspect_methods = m.clone();
    }
    let secs = Duration::from_secs;
    config.max_body = file.max_body_bytes.unwrap_or(config.max_body);
    config.header_timeout = file.header_timeout_secs.map_or(config.header_timeout, secs);
    config.body_timeout = file.body_timeout_secs.map_or(config.body_timeout, secs);
    config.origin_timeout = file.origin_timeout_secs.map_or(config.origin_timeout, secs);
    config.max_connections = file.max_connections.unwrap_or(config.max_connections);
    config.shutdown_grace = file.shutdown_grace_secs.map_or(config.shutdown_grace, secs);
    config.scan_responses = args.scan_responses || file.scan_responses.unwrap_or(false);
    config.response_buffer_bytes = file
        .response_buffer_bytes
        .unwrap_or(config.response_buffer_bytes);
    config.response_cache_entries = file
        .response_cache_entries
        .unwrap_or(config.response_cache_entries);
    config.response_cache_ttl = file
        .response_cache_secs
        .map_or(config.response_cache_ttl, secs);
    config.s3_spool = args.s3_spool.or(file.s3_spool_dir.clone());
    if let Some(dir) = &config.s3_spool {
        if !matches!(config.backend, Backend::Origin(_)) {
            bail!("--s3-spool needs an S3 origin (--origin)");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    config.s3_abort = file.s3_abort.as_ref().map(|a| AbortCredentials {
        access_key: a.access_key.clone(),
        secret_key: a.secret_key.clone(),
        region: a.region.clone().unwrap_or_else(|| "us-east-1".into()),
    });
    if config.s3_abort.is_some() && config.s3_spool.is_none() {
        bail!("[s3_abort] needs s3_spool_dir (S3 mode)");
    }
    config.quarantine = args.quarantine.or(file.quarantine_dir.clone());
    if let Some(dir) = &config.quarantine {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Backend::Store(store) = &config.backend {
            let (q, s) = (dir.canonicalize()?, store.canonicalize()?);
            if q.starts_with(&s) {
                bail!("the quarantine directory must not be inside the store (it would be served)");
            }
        }
    }
    config.origin_ca = args.origin_ca.or(file.origin_ca.clone());
    config.tls = serve::cert_store(
        args.tls_cert.or(file.tls_cert.clone()),
        args.tls_key.or(file.tls_key.clone()),
    )?;
    let check_only = args.check_config;
    serve::runtime()?.block_on(async move {
        let (enforcer, feed) = serve::enforcer(&args.enforce, &file).await?;
        if check_only {
            let gateway = Gateway::new(config, enforcer)?;
            serve::config_ok(&listen, gateway.enforcer(), feed.is_some());
            return Ok(());
        }
        if let Some(feed) = feed {
            tokio::spawn(feed.run(enforcer.clone()));
        }
        let listener = serve::listener(&listen, &args.enforce, &file)?;
        serve::start_admin(&args.enforce, &file, &enforcer).await?;
        tokio::spawn(serve::on_hangup(enforcer.clone(), config.tls.clone()));
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let gateway = Gateway::new(config, enforcer)?;
        let filter = gateway.enforcer().filter();
        let info = filter.info();
        eprintln!(
            "hashgate gateway on {scheme}://{} enforcing {} v{} ({} entries)",
            listener.local_addr()?,
            info.series,
            info.version,
            info.entries
        );
        gateway.serve(listener, serve::shutdown_signal()).await?;
        Ok(())
    })
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
