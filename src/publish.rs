//! `hashgate publish` and `hashgate root`: the authority's feed and its root of trust.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hashgate_authority::publish::{publish, Publish};
use hashgate_host::feed::protocol::{Envelope, Root, TrustedRoot, ROOT_TYPE};
use hashgate_host::trust::{PublicKey, SecretKey};

/// `hashgate publish`.
#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// Manifest signing key(s) (NAME.key); as many as the root's manifest threshold.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// The feed directory (served as static files).
    #[arg(long)]
    pub feed: PathBuf,
    /// Series name.
    #[arg(long)]
    pub series: String,
    /// The root in force (from `hashgate root`); copied into the feed.
    #[arg(long)]
    pub root: PathBuf,
    /// How long the manifest vouches for freshness; re-publish before it runs out.
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// Validity of the snapshot file on its own (used with --filter, without a feed).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub snapshot_expires: Duration,
    /// The least time gateways wait between polls.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub min_poll: Duration,
    /// How many earlier versions get a delta to the new one.
    #[arg(long, default_value_t = 5)]
    pub keep: u64,
    /// Room reserved when a section is sized anew (0.25 = 25% more entries fit before
    /// its size, and the deltas' base, must change).
    #[arg(long, default_value_t = 0.25)]
    pub headroom: f64,
    /// Target false-positive rate per digest.
    #[arg(long, default_value_t = 1e-9)]
    pub fp_rate: f64,
    /// Category for entries whose line names none.
    #[arg(long)]
    pub category: Option<String>,
    /// Ship this filter guest component with the version (gateways hot-load it).
    #[arg(long)]
    pub guest: Option<PathBuf>,
    /// Digest lists: [algorithm:]hex[,category] per line, or ClamAV .hdb/.hsb files.
    #[arg(required = true)]
    pub lists: Vec<PathBuf>,
}

/// `hashgate root ...`.
#[derive(clap::Subcommand, Debug)]
pub enum RootCommand {
    /// Write a new, unsigned version-1 root (then sign it with `root sign`).
    Init {
        #[command(flatten)]
        roles: RoleArgs,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the next root after --from, unsigned: it needs signatures by the threshold
    /// of the old root's root keys and of its own.
    Rotate {
        /// The root in force.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        roles: RoleArgs,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a signature to a root file (in place).
    Sign {
        /// The secret key (NAME.key).
        #[arg(long)]
        key: PathBuf,
        /// The root file.
        file: PathBuf,
    },
    /// Check a root: on its own (a first root) or as the successor of --trusted.
    Verify {
        /// The root it must follow.
        #[arg(long)]
        trusted: Option<PathBuf>,
        /// The root file.
        file: PathBuf,
    },
}

/// The keys of a root's two roles.
#[derive(clap::Args, Debug)]
pub struct RoleArgs {
    /// Public keys that sign roots (NAME.pub).
    #[arg(long = "root-key", required = true)]
    pub root_keys: Vec<PathBuf>,
    /// Signatures a root needs.
    #[arg(long, default_value_t = 1)]
    pub root_threshold: u32,
    /// Public keys that sign manifests.
    #[arg(long = "manifest-key", required = true)]
    pub manifest_keys: Vec<PathBuf>,
    /// Signatures a manifest needs.
    #[arg(long, default_value_t = 1)]
    pub manifest_threshold: u32,
}

fn read_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| PublicKey::read(p).map_err(Into::into))
        .collect()
}

fn new_root(roles: &RoleArgs, version: u64) -> Result<Envelope> {
    let mut root = Root::new(
        (&read_keys(&roles.root_keys)?, roles.root_threshold),
        (&read_keys(&roles.manifest_keys)?, roles.manifest_threshold),
    )?;
    root.version = version;
    Ok(root.envelope())
}

fn write_new(path: &Path, envelope: &Envelope) -> Result<()> {
    if path.exists() {
        bail!("{} exists; not overwriting a root", path.display());
    }
    std::fs::write(path, envelope.to_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Runs `hashgate root ...`.
pub fn root(cmd: RootCommand) -> Result<()> {
    match cmd {
        RootCommand::Init { roles, out } => {
            write_new(&out, &new_root(&roles, 1)?)?;
            eprintln!(
                "wrote root version 1 to {} (unsigned: sign it with `hashgate root sign`)",
                out.display()
            );
        }
        RootCommand::Rotate { from, roles, out } => {
            let old = TrustedRoot::bootstrap(&read(&from)?)
                .with_context(|| format!("{} is not a valid signed root", from.display()))?;
            let version = old.root.version + 1;
            write_new(&out, &new_root(&roles, version)?)?;
            eprintln!(
                "wrote root version {version} to {}: it needs {} signature(s) by the old root keys and {} by its own",
                out.display(),
                old.root.root.threshold,
                roles.root_threshold
            );
        }
        RootCommand::Sign { key, file } => {
            let key = SecretKey::read(&key)?;
            let mut envelope = Envelope::parse(&read(&file)?)?;
            if envelope.payload_type != ROOT_TYPE {
                bail!("{} is not a root", file.display());
            }
            envelope.sign(&key)?;
            hashgate_authority::build::write_atomically(&file, &[&envelope.to_bytes()])?;
            eprintln!(
                "signed {} with key {}",
                file.display(),
                hex::encode(key.public_key().id())
            );
        }
        RootCommand::Verify { trusted, file } => {
            let bytes = read(&file)?;
            let root = match trusted {
                Some(t) => TrustedRoot::bootstrap(&read(&t)?)?.rotate(&bytes)?,
                None => TrustedRoot::bootstrap(&bytes)?,
            };
            println!(
                "valid: root version {}, {} key(s), roots need {}, manifests need {}",
                root.root.version,
                root.keys.len(),
                root.root.root.threshold,
                root.root.manifest.threshold
            );
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Runs `hashgate publish`.
pub fn run(args: PublishArgs) -> Result<()> {
    let keys = args
        .keys
        .iter()
        .map(|p| SecretKey::read(p).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    let request = Publish {
        feed: args.feed.clone(),
        series: args.series,
        lists: args.lists,
        default_category: args.category,
        fp_rate: args.fp_rate,
        root: args.root,
        keys,
        now: hashgate_authority::creation_time()?,
        manifest_lifetime: args.expires.as_secs(),
        snapshot_lifetime: args.snapshot_expires.as_secs(),
        min_poll_seconds: args.min_poll.as_secs(),
        keep: args.keep,
        headroom: args.headroom,
        guest: args.guest,
    };
    let published = publish(&request)?;
    if published.resigned {
        eprintln!(
            "{}: version {} unchanged; manifest re-signed with a new expiry",
            args.feed.display(),
            published.version
        );
    } else {
        let deltas: Vec<String> = published
            .deltas
            .iter()
            .map(|(from, len)| format!("from v{from}: {len} bytes"))
            .collect();
        eprintln!(
            "{}: published version {} (snapshot {} bytes; deltas: {})",
            args.feed.display(),
            published.version,
            published.snapshot_len,
            if deltas.is_empty() {
                "none".to_string()
            } else {
                deltas.join(", ")
            }
        );
    }
    Ok(())
}

/// `hashgate authority ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AuthorityCommand {
    /// Serve the confirmation range API: GET /v1/range/{algorithm}/{hex prefix} answers
    /// every listed digest with that prefix (padded), to holders of a bearer token.
    Serve(AuthorityServeArgs),
    /// Print per-entry totals over the feedback reports kept in a directory: hits from
    /// all operators, how many operators reported and allow-list each entry, most hits
    /// first (a wrongly listed entry shows up here).
    Feedback {
        /// The directory `serve --feedback-dir` keeps reports in.
        #[arg(long)]
        feedback_dir: PathBuf,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Print at most this many entries.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// Instead, print the audit checkpoints this operator's reports carried, one per
        /// line: the witness for `hashgate audit verify --witness`.
        #[arg(long, value_name = "OPERATOR")]
        checkpoints: Option<String>,
    },
}

/// `hashgate authority serve`.
#[derive(clap::Args, Debug)]
pub struct AuthorityServeArgs {
    /// The digest lists (as for `publish`).
    #[arg(long = "list", required = true)]
    lists: Vec<PathBuf>,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// File of bearer tokens, one per line.
    #[arg(long)]
    tokens: PathBuf,
    /// Serve https with this PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The only prefix length answered, in hex digits (gateways' `prefix_hex`).
    #[arg(long, default_value_t = hashgate_authority::confirm::DEFAULT_PREFIX)]
    prefix_hex: usize,
    /// Requests per minute each token may make, sustained (then 429).
    #[arg(long, default_value_t = 120)]
    rate: u32,
    /// Requests a token may make at once before --rate applies.
    #[arg(long, default_value_t = 120)]
    burst: u32,
    /// The secret that derives the padding (32 bytes, made if missing; keep it).
    /// Default: pad.key beside the --tokens file.
    #[arg(long)]
    pad_key: Option<PathBuf>,
    /// Append one JSON line per request here (default: standard error).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Take operators' feedback reports at POST /v1/feedback, from the operators
    /// whose public keys are in this directory (NAME.pub each).
    #[arg(long, requires = "feedback_dir")]
    operators: Option<PathBuf>,
    /// Where accepted feedback reports are kept.
    #[arg(long, requires = "operators")]
    feedback_dir: Option<PathBuf>,
}

/// Runs `hashgate authority ...`.
pub fn authority(cmd: AuthorityCommand) -> Result<()> {
    match cmd {
        AuthorityCommand::Serve(args) => serve_authority(args),
        AuthorityCommand::Feedback {
            feedback_dir,
            checkpoints: Some(operator),
            ..
        } => {
            for line in hashgate_authority::feedback::checkpoints(&feedback_dir, &operator)? {
                println!("{line}");
            }
            Ok(())
        }
        AuthorityCommand::Feedback {
            feedback_dir,
            json,
            top,
            checkpoints: None,
        } => feedback_totals(&feedback_dir, json, top),
    }
}

/// `hashgate authority serve`: the range API, and the feedback inbox when operators are
/// registered.
fn serve_authority(args: AuthorityServeArgs) -> Result<()> {
    use hashgate_authority::confirm::{serve, PadKey, Policy, RangeIndex, Server, Tokens};
    let AuthorityServeArgs {
        lists,
        listen,
        tokens,
        tls_cert,
        tls_key,
        prefix_hex,
        rate,
        burst,
        pad_key,
        audit_log,
        operators,
        feedback_dir,
    } = args;
    let feedback = operators.zip(feedback_dir);
    let pad_key = pad_key.unwrap_or_else(|| tokens.with_file_name("pad.key"));
    let audit: Box<dyn std::io::Write + Send> = match &audit_log {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let policy = Policy {
        prefix_hex,
        per_minute: rate,
        burst,
        pad_key: PadKey::open_or_create(&pad_key)?,
        audit,
    };
    let mut server = Server::new(RangeIndex::load(&lists)?, Tokens::read(&tokens)?, policy)?;
    if let Some((operators, dir)) = &feedback {
        let inbox = hashgate_authority::feedback::Inbox::open(operators, dir)?;
        eprintln!(
            "taking feedback at /v1/feedback from {} operators",
            inbox.operators()
        );
        server = server.with_feedback(inbox);
    }
    let server = std::sync::Arc::new(server);
    let tls = hashgate_host::tls::CertStore::configured(tls_cert.as_deref(), tls_key.as_deref())?
        .map(|store| tokio_rustls::TlsAcceptor::from(store.server_config(&[b"h2", b"http/1.1"])));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let address = listener.local_addr()?;
        eprintln!(
            "hashgate authority on {scheme}://{address} (/v1/range/{{algorithm}}/{{prefix of {prefix_hex}}}), {} digests",
            server.len()
        );
        // The line for programs, as the gateway and the ICAP server print it.
        let ready = serde_json::json!({
            "server": "authority",
            "listen": format!("{scheme}://{address}"),
        });
        eprintln!("ready {ready}");
        tokio::select! {
            () = serve(listener, server, tls) => {}
            () = hashgate_host::serve::shutdown_signal() => {}
        }
        Ok(())
    })
}

/// `hashgate authority feedback`.
fn feedback_totals(dir: &std::path::Path, json: bool, top: usize) -> Result<()> {
    let totals = hashgate_authority::feedback::totals(dir)?;
    if !json {
        println!(
            "{:>10} {:>9} {:>10}  entry",
            "hits", "operators", "allowed by"
        );
    }
    for t in totals.iter().take(top) {
        if json {
            println!("{}", serde_json::to_string(t)?);
        } else {
            println!(
                "{:>10} {:>9} {:>10}  {}",
                t.hits, t.operators, t.allowed_by, t.entry
            );
        }
    }
    Ok(())
}
