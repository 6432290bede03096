//! `hashgate gateway` and `hashgate selftest`: the gateway's flags in, a running gateway
//! out (resolved and assembled by `hashgate_host::serve`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use hashgate_host::config::FileConfig;
use hashgate_host::serve::Front;

use std::path::PathBuf;

use crate::serve::{self, EnforceArgs};

#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Client listener address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Origin base URL, e.g. http://127.0.0.1:9000 or https://storage.example
    #[arg(long, conflicts_with = "store")]
    pub origin: Option<String>,
    /// Embedded store directory (the default backend when no origin is given).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Serve https with this PEM certificate chain (reloaded on SIGHUP).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A private CA (PEM) to trust for an https origin, besides the platform's roots.
    #[arg(long)]
    pub origin_ca: Option<PathBuf>,
    /// Inspect GET responses from the origin too (CDN cache fill, downloads).
    #[arg(long)]
    pub scan_responses: bool,
    /// S3 origin: spool multipart-upload parts here and check the whole object before
    /// forwarding CompleteMultipartUpload.
    #[arg(long)]
    pub s3_spool: Option<PathBuf>,
    /// tus origin: spool resumable-upload pieces here and check the whole upload before
    /// forwarding the request that completes it.
    #[arg(long)]
    pub tus_spool: Option<PathBuf>,
    /// Nextcloud/ownCloud origin: spool chunked-upload (v2) chunks here and check the
    /// whole file before forwarding the MOVE that assembles it.
    #[arg(long)]
    pub nextcloud_spool: Option<PathBuf>,
    /// Keep a copy of every blocked upload here (evidence; never served).
    #[arg(long)]
    pub quarantine: Option<PathBuf>,
    /// Record every object let through in this digest catalog (a SQLite file, or a
    /// `postgres://` URL that a fleet shares) and re-check them all on each filter the
    /// feed brings (`[catalog]` for the rest).
    #[arg(long)]
    pub catalog: Option<hashgate_host::catalog::Location>,
    /// Check the configuration, the filter and the keys, say what would be served, and
    /// exit (0: fine, 2: what is wrong), like `nginx -t`.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub enforce: EnforceArgs,
}

pub fn run(args: GatewayArgs) -> Result<()> {
    let flags = FileConfig {
        listen: args.listen,
        origin: args.origin,
        store: args.store,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        origin_ca: args.origin_ca,
        scan_responses: args.scan_responses.then_some(true),
        s3_spool_dir: args.s3_spool,
        tus_spool_dir: args.tus_spool,
        nextcloud_spool_dir: args.nextcloud_spool,
        quarantine_dir: args.quarantine,
        catalog: args
            .catalog
            .map(|path| hashgate_host::config::CatalogFileConfig {
                path: Some(path),
                ..Default::default()
            }),
        ..FileConfig::default()
    };
    let settings = serve::settings(&args.enforce, flags)?;
    serve::run(Front::gateway(&settings)?, &settings, args.check_config)
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
