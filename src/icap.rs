//! `hashgate icap`: flags and the config file's `[icap]` table in, a running ICAP server
//! out.

use std::time::Duration;

use anyhow::Result;
use hashgate_host::icap::{IcapConfig, IcapServer};

use crate::cli::IcapArgs;
use crate::serve;

pub fn run(args: IcapArgs) -> Result<()> {
    let file = serve::file_config(&args.enforce)?;
    let table = file.icap.clone().unwrap_or_default();
    let listen = args
        .listen
        .or(table.listen)
        .unwrap_or_else(|| "127.0.0.1:1344".into());
    let secs = Duration::from_secs;
    let mut config = IcapConfig::default();
    if let Some(table) = &file.inspect {
        config.inspect = std::sync::Arc::new(table.limits());
    }
    config.preview = args
        .preview
        .or(table.preview_bytes)
        .unwrap_or(config.preview);
    config.block_status = args
        .block_status
        .or(table.block_status)
        .unwrap_or(config.block_status);
    config.options_ttl = table.options_ttl_secs.map_or(config.options_ttl, secs);
    config.max_connections = table.max_connections.unwrap_or(config.max_connections);
    config.max_header_bytes = table.max_header_bytes.unwrap_or(config.max_header_bytes);
    config.reqmod_hold_back = table
        .reqmod_hold_back_bytes
        .unwrap_or(config.reqmod_hold_back);
    config.respmod_hold_back = table
        .respmod_hold_back_bytes
        .unwrap_or(config.respmod_hold_back);
    config.header_timeout = table
        .header_timeout_secs
        .map_or(config.header_timeout, secs);
    config.body_timeout = table.body_timeout_secs.map_or(config.body_timeout, secs);
    config.shutdown_grace = table
        .shutdown_grace_secs
        .map_or(config.shutdown_grace, secs);
    config.response_cache_entries = file
        .response_cache_entries
        .unwrap_or(config.response_cache_entries);
    config.response_cache_ttl = file
        .response_cache_secs
        .map_or(config.response_cache_ttl, secs);
    config.tls = serve::cert_store(
        args.tls_cert.or(table.tls_cert),
        args.tls_key.or(table.tls_key),
    )?;
    let scheme = if config.tls.is_some() {
        "icaps"
    } else {
        "icap"
    };
    serve::runtime()?.block_on(async move {
        let (enforcer, feed) = serve::enforcer(&args.enforce, &file).await?;
        if args.check_config {
            let server = IcapServer::new(config.clone(), enforcer)?;
            serve::config_ok(&listen, server.enforcer(), feed.is_some());
            return Ok(());
        }
        if let Some(feed) = feed {
            tokio::spawn(feed.run(enforcer.clone()));
        }
        let server = IcapServer::new(config.clone(), enforcer)?;
        let listener = serve::listener(&listen, &args.enforce, &file)?;
        serve::start_admin(&args.enforce, &file, server.enforcer()).await?;
        tokio::spawn(serve::on_hangup(
            server.enforcer().clone(),
            config.tls.clone(),
        ));
        let filter = server.enforcer().filter();
        let info = filter.info();
        eprintln!(
            "hashgate icap on {scheme}://{} (/reqmod, /respmod) enforcing {} v{} ({} entries)",
            listener.local_addr()?,
            info.series,
            info.version,
            info.entries
        );
        server.serve(listener, serve::shutdown_signal()).await?;
        Ok(())
    })
}
