//! `hashgate icap`: the ICAP server's flags in (the config file's `[icap]` table), a
//! running ICAP server out (resolved and assembled by `hashgate_host::serve`).

use anyhow::Result;
use hashgate_host::config::{FileConfig, IcapFileConfig};
use hashgate_host::serve::Front;

use std::path::PathBuf;

use crate::serve::{self, EnforceArgs};

#[derive(clap::Args, Debug)]
pub struct IcapArgs {
    /// ICAP listener address (default 127.0.0.1:1344; services /reqmod and /respmod).
    #[arg(long)]
    pub listen: Option<String>,
    /// HTTP status of the refusal sent for a listed body: 451 (default) or 403.
    #[arg(long)]
    pub block_status: Option<u16>,
    /// Serve ICAPS (ICAP over TLS; port 11344 by convention) with this PEM certificate
    /// chain (reloaded on SIGHUP).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Preview size advertised to clients, in bytes (default 32768; Squid stalls on a
    /// preview as large as its 64 KiB body buffer).
    #[arg(long)]
    pub preview: Option<usize>,
    /// Record every upload passed (REQMOD `PUT` and `POST`) in this digest catalog (a
    /// SQLite file, or a `postgres://` URL) and report those each new filter from the
    /// feed lists (`[catalog]` for the rest).
    #[arg(long)]
    pub catalog: Option<hashgate_host::catalog::Location>,
    /// Check the configuration, the filter and the keys, say what would be served, and
    /// exit (0: fine, 2: what is wrong), like `nginx -t`.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub enforce: EnforceArgs,
}

pub fn run(args: IcapArgs) -> Result<()> {
    let flags = FileConfig {
        icap: Some(IcapFileConfig {
            listen: args.listen,
            block_status: args.block_status,
            preview_bytes: args.preview,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            ..IcapFileConfig::default()
        }),
        catalog: args
            .catalog
            .map(|path| hashgate_host::config::CatalogFileConfig {
                path: Some(path),
                ..Default::default()
            }),
        ..FileConfig::default()
    };
    let settings = serve::settings(&args.enforce, flags)?;
    serve::run(Front::icap(&settings)?, &settings, args.check_config)
}
