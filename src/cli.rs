//! Argument parsing and the subcommands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hashgate_authority::{build, inspect};
use hashgate_host::scan::{self, Event};
use hashgate_host::trust::{PublicKey, SecretKey};
use hashgate_host::{Limits, Runtime};

/// hashgate: keep known illegal files off your machines, inline and at line rate.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an Ed25519 key pair: NAME.key (secret, mode 0600) and NAME.pub. An
    /// authority signs filters and feeds with one; an operator signs its audit log's
    /// checkpoints with another (`audit_key`).
    Keygen {
        /// Path and base name of the key files, e.g. keys/authority.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Build a signed filter snapshot from digest lists.
    Build(BuildArgs),
    /// Publish the next version of a series into a feed directory: snapshot, deltas from
    /// recent versions, signed manifest (an unchanged list only re-signs the manifest).
    Publish(Box<crate::publish::PublishArgs>),
    /// The authority's confirmation server (range API for gateways).
    #[command(subcommand)]
    Authority(crate::publish::AuthorityCommand),
    /// Create, rotate, sign and verify a feed's root of trust (keys and thresholds).
    #[command(subcommand)]
    Root(crate::publish::RootCommand),
    /// Show a snapshot's header, measured fill and expected false-positive rate, and
    /// whether its signature is valid for a key.
    Inspect {
        /// Public key to check the signature with.
        #[arg(long = "pub")]
        public_key: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The snapshot file.
        file: PathBuf,
    },
    /// Scan files and directories against a filter. Exit 0: no hits; 1: hits; 2: error.
    Scan(ScanArgs),
    /// Check every object a catalog records (by the gateway or `scan --catalog`)
    /// against a filter, without reading a byte of them. Exit 0: no hits; 1: hits;
    /// 2: error.
    Recheck(RecheckArgs),
    /// Print the PDQ hash of each picture as a list line (`pdq:HEX[,category]`), for an
    /// authority making a list from its reference pictures. Pictures of quality below
    /// `--min-quality` are left out (Meta discards hashes of quality 49 or less). Exit 0:
    /// every file hashed or left out; 2: some file is not a picture or does not decode.
    Pdq {
        /// Category for the lines.
        #[arg(long)]
        category: Option<String>,
        /// Leave out pictures whose PDQ quality is below this (0 to 100; the default is
        /// the quality below which the gateway and scan do not match a picture).
        #[arg(long, default_value_t = hashgate_host::perceptual::pdq::MIN_QUALITY)]
        min_quality: u8,
        /// The pictures (JPEG, PNG, WebP, GIF, BMP, TIFF, recognised by their bytes).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check an audit log's hash chain and signed checkpoints: that no record was
    /// removed, edited, reordered or inserted. Exit 0: intact; 1: broken (the first bad
    /// line is named); 2: error.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write the canary file: harmless, listed in every filter, for end-to-end tests.
    Canary {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the inline upload gateway: a streaming reverse proxy (or embedded store) that
    /// refuses listed uploads with 451 before they are stored complete.
    Gateway(Box<crate::gateway::GatewayArgs>),
    /// Run an ICAP server (RFC 3507) for an existing proxy such as Squid: REQMOD at
    /// icap://ADDR/reqmod, RESPMOD at icap://ADDR/respmod; listed bodies are refused with
    /// an encapsulated 451.
    Icap(Box<crate::icap::IcapArgs>),
    /// Upload the canary file through a running gateway: exit 0 if it was blocked, 1 if
    /// it was let through, 2 on error.
    Selftest {
        /// Where to PUT the canary, e.g. http://127.0.0.1:8080/selftest/canary.txt
        url: String,
    },
    /// Run a self-contained demonstration: a demo authority, sample files, a filter, a
    /// scan, then an upload gateway with the embedded store to try with curl.
    Demo {
        /// Directory to create the demo in (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where the demo gateway listens (its admin listener takes the next port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop after the scan instead of starting the gateway.
        #[arg(long)]
        scan_only: bool,
    },
}

/// `hashgate audit`.
#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify the chain through one log's files, oldest first (e.g. `audit.jsonl.2
    /// audit.jsonl.1 audit.jsonl`): rotated files and the current one are one chain.
    Verify {
        /// The operator's public key the checkpoints are signed with; without it only
        /// the chain is checked, and nothing is proven against someone who rewrites it.
        #[arg(long = "pub")]
        public_key: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Checkpoint lines kept elsewhere, one per line (`hashgate authority feedback
        /// --checkpoints NAME` prints those an operator's reports carried): each must be
        /// in the files as it was, so a log cut after one was witnessed does not verify.
        #[arg(long)]
        witness: Option<PathBuf>,
        /// The log's files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// The authority's secret key (NAME.key).
    #[arg(long)]
    key: PathBuf,
    /// Series name: 1 to 64 of A-Z a-z 0-9 . _ -
    #[arg(long)]
    series: String,
    /// Version within the series.
    #[arg(long)]
    version: u64,
    /// Validity from creation, e.g. 7d, 12h, 30m.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    expires: Duration,
    /// Target false-positive rate per digest.
    #[arg(long, default_value_t = 1e-9)]
    fp_rate: f64,
    /// Category for entries whose line names none.
    #[arg(long)]
    category: Option<String>,
    /// Bit-index salt, 32 hex digits (default: derived from the series).
    #[arg(long)]
    salt: Option<String>,
    /// Where to write the snapshot.
    #[arg(long)]
    out: PathBuf,
    /// Digest lists: [algorithm:]hex[,category] per line, or ClamAV .hdb/.hsb files.
    #[arg(required = true)]
    lists: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ScanArgs {
    /// The signed filter snapshot; repeat it to check against several authorities'
    /// filters at once (each file is hashed once).
    #[arg(long, required = true)]
    filter: Vec<PathBuf>,
    /// The authority's public key: once for all filters, or once per --filter, in order.
    #[arg(long = "pub", required = true)]
    public_key: Vec<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// Hashing threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Run this guest component instead of the embedded one.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Allow-list of exact digests ([algorithm:]hex per line) never reported.
    #[arg(long)]
    allow_list: Option<PathBuf>,
    /// Also append one JSON line per hit to this audit log (fsynced).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Sign the audit log's hash chain with this operator key (`hashgate keygen`).
    #[arg(long, requires = "audit_log")]
    audit_key: Option<PathBuf>,
    /// Hash files only as they are: do not look into archives (zip, tar, gzip, ...).
    #[arg(long)]
    no_archives: bool,
    /// A config file whose `[inspect]` and `[uninspectable]` tables apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Incremental scan with this catalog (a SQLite file, created if missing, or a
    /// `postgres://` URL): files whose inode, size and times are as recorded are not
    /// read again, every file read is recorded, rows of files gone are dropped.
    #[arg(long)]
    catalog: Option<hashgate_host::catalog::Location>,
    /// Digests the catalog records, comma-separated (a later list may hold any).
    #[arg(long, value_delimiter = ',', default_value = "md5,sha1,sha256")]
    catalog_algorithms: Vec<String>,
    /// Files and directories to scan.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// `hashgate recheck`.
#[derive(clap::Args, Debug)]
pub struct RecheckArgs {
    /// The catalog: a SQLite file, or a `postgres://` URL.
    #[arg(long)]
    catalog: hashgate_host::catalog::Location,
    /// The signed filter snapshot.
    #[arg(long)]
    filter: PathBuf,
    /// The authority's public key.
    #[arg(long = "pub")]
    public_key: PathBuf,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// `hashgate pdq`: one list line per picture on stdout, what was left out or failed on
/// stderr.
fn pdq_cmd(category: Option<&str>, min_quality: u8, files: &[PathBuf]) -> Result<ExitCode> {
    use hashgate_host::perceptual::{hash_picture, Picture, PictureLimits};
    if let Some(c) = category {
        hashgate_authority::list::check_category(c).map_err(anyhow::Error::msg)?;
    }
    let suffix = category.map(|c| format!(",{c}")).unwrap_or_default();
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for path in files {
        let hashed = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                let picture = Picture::sniff(&bytes).context("not a picture this build decodes")?;
                Ok(hash_picture(
                    &bytes,
                    picture,
                    &PictureLimits::default(),
                    false,
                )?)
            });
        match hashed {
            Ok(pdq) if pdq.quality < min_quality => eprintln!(
                "{}: left out, quality {} is below {min_quality}",
                path.display(),
                pdq.quality
            ),
            Ok(pdq) => writeln!(out, "pdq:{}{suffix}", pdq.original().to_hex())?,
            Err(e) => {
                eprintln!("{}: {e:#}", path.display());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keygen { out, force } => keygen(&out, force).map(|_| ExitCode::SUCCESS),
        Command::Build(args) => build_cmd(args).map(|_| ExitCode::SUCCESS),
        Command::Publish(args) => crate::publish::run(*args).map(|_| ExitCode::SUCCESS),
        Command::Root(cmd) => crate::publish::root(cmd).map(|_| ExitCode::SUCCESS),
        Command::Authority(cmd) => crate::publish::authority(cmd).map(|_| ExitCode::SUCCESS),
        Command::Inspect {
            public_key,
            json,
            file,
        } => inspect_cmd(public_key.as_deref(), json, &file),
        Command::Scan(args) => scan_cmd(args),
        Command::Recheck(args) => recheck_cmd(args),
        Command::Pdq {
            category,
            min_quality,
            files,
        } => pdq_cmd(category.as_deref(), min_quality, &files),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    public_key,
                    json,
                    witness,
                    files,
                },
        } => audit_verify_cmd(public_key.as_deref(), json, witness.as_deref(), &files),
        Command::Canary { out } => {
            std::fs::write(&out, hashgate_guest_canary())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote the canary file to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            dir,
            listen,
            scan_only,
        } => crate::demo::run(dir, &listen, scan_only),
        Command::Gateway(args) => crate::gateway::run(*args).map(|_| ExitCode::SUCCESS),
        Command::Icap(args) => crate::icap::run(*args).map(|_| ExitCode::SUCCESS),
        Command::Selftest { url } => crate::gateway::selftest(&url),
    }
}

/// The canary file's bytes, as specified in docs/FORMAT.md.
pub fn hashgate_guest_canary() -> &'static [u8] {
    hashgate_authority::canary_content()
}

/// Writes NAME.key (0600) and NAME.pub; returns their paths.
pub fn keygen(out: &Path, force: bool) -> Result<(PathBuf, PathBuf)> {
    let keys = hashgate_authority::keys::generate(out, force)?;
    eprintln!(
        "wrote {} (secret, keep it offline) and {} (key id {})",
        keys.secret.display(),
        keys.public.display(),
        hex::encode(keys.id)
    );
    Ok((keys.secret, keys.public))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The latest time written or shown as a date: 9999-12-31T23:59:59Z (RFC 3339 has four
/// digits for the year).
const LAST_TIME: u64 = 253_402_300_799;

/// `t` (Unix seconds) as RFC 3339, or as a number when no RFC 3339 date can hold it: a
/// filter from elsewhere may carry any u64.
fn time_text(t: u64) -> String {
    if t <= LAST_TIME {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
    } else {
        format!("{t} (Unix time, after the year 9999)")
    }
}

fn build_cmd(args: BuildArgs) -> Result<()> {
    let key = SecretKey::read(&args.key)?;
    let created = hashgate_authority::creation_time()?;
    // Checked before anything is written: a validity no date can express is a mistake.
    let expires = created
        .checked_add(args.expires.as_secs().max(1))
        .filter(|&t| t <= LAST_TIME)
        .with_context(|| {
            format!(
                "--expires {}: the filter would expire after the year 9999",
                humantime::format_duration(args.expires)
            )
        })?;
    let mut params = hashgate_authority::BuildParams::new(
        &args.series,
        args.version,
        created,
        expires,
        args.fp_rate,
    );
    if let Some(salt) = &args.salt {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(salt, &mut bytes).context("--salt must be 32 hex digits")?;
        params.salt = bytes;
    }
    let request = build::Request {
        lists: args.lists,
        default_category: args.category,
        params,
    };
    let size = build::build_signed(&request, &key, &args.out)?;
    let report = inspect::inspect(&args.out, Some(&key.public_key()))?;
    eprintln!(
        "wrote {} ({} bytes): series {} version {}, {} entries, k={}, expires {}",
        args.out.display(),
        size,
        report.series,
        report.version,
        report.entries,
        report.hashes,
        time_text(report.expires),
    );
    Ok(())
}

fn inspect_cmd(public_key: Option<&Path>, json: bool, file: &Path) -> Result<ExitCode> {
    let key = public_key.map(PublicKey::read).transpose()?;
    let report = inspect::inspect(file, key.as_ref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let time = time_text;
        println!(
            "file:           {} ({} bytes)",
            file.display(),
            report.file_len
        );
        println!("format:         hashgate filter v{}", report.format_version);
        println!("series:         {}", report.series);
        println!("version:        {}", report.version);
        println!("created:        {}", time(report.created));
        let state = if now() >= report.expires {
            "  EXPIRED"
        } else {
            ""
        };
        println!("expires:        {}{state}", time(report.expires));
        println!("entries:        {}", report.entries);
        println!("hashes (k):     {}", report.hashes);
        println!("salt:           {}", report.salt);
        println!(
            "payload:        {} bytes, sha256 {}",
            report.payload_len, report.payload_sha256
        );
        println!("sections:");
        for s in &report.sections {
            println!(
                "  {:<7} {:<24} {:>12} entries {:>14} bits  fill {:.4}  expected FP rate {:.2e}",
                s.algorithm,
                s.category.as_deref().unwrap_or("-"),
                s.entries,
                s.bits,
                s.fill,
                s.expected_fp_rate
            );
        }
        match &report.signature {
            inspect::SignatureStatus::Valid { key_id } => {
                println!("signature:      valid, key {key_id}")
            }
            inspect::SignatureStatus::Invalid { reason } => {
                println!("signature:      INVALID: {reason}")
            }
            inspect::SignatureStatus::Unchecked { key_id } => println!(
                "signature:      not checked (no --pub); signer key id {}",
                key_id.as_deref().unwrap_or("none: unsigned")
            ),
        }
    }
    Ok(match report.signature {
        inspect::SignatureStatus::Invalid { .. } => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn audit_verify_cmd(
    key: Option<&Path>,
    json: bool,
    witness: Option<&Path>,
    files: &[PathBuf],
) -> Result<ExitCode> {
    use hashgate_host::enforce::audit::verify::{verify_witnessed, VerifyError};
    let key = key.map(PublicKey::read).transpose()?;
    let witnessed: Vec<String> = match witness {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    match verify_witnessed(files, key.as_ref(), &witnessed) {
        Ok(proof) => {
            let recovered: Vec<String> = proof.recovered.iter().map(|l| l.to_string()).collect();
            if json {
                let out = serde_json::json!({
                    "intact": true,
                    "records": proof.records,
                    "first": proof.first,
                    "last": proof.last,
                    "checkpoints": proof.checkpoints,
                    "keyed": proof.keyed,
                    "signed_through": proof.signed_through,
                    "unsigned_tail": proof.unsigned_tail(),
                    "recovered": recovered,
                    "replayed": proof.replayed,
                });
                println!("{out}");
            } else {
                let checked = if proof.keyed {
                    "verified"
                } else {
                    "NOT checked (no --pub)"
                };
                println!(
                    "intact: {} records ({} to {}) in {} files; {} checkpoints {checked}",
                    proof.records,
                    proof.first,
                    proof.last,
                    files.len(),
                    proof.checkpoints
                );
                if let Some(through) = proof.signed_through {
                    println!("signed through record {through}");
                }
                if proof.unsigned_tail() > 0 {
                    println!(
                        "note: {} records after the last checkpoint are not signed yet",
                        proof.unsigned_tail()
                    );
                }
                if proof.first > 1 {
                    println!(
                        "note: the first record given is {}: earlier ones are in files not given",
                        proof.first
                    );
                }
                for at in &recovered {
                    println!("note: {at}: bytes no record holds, named by the `recovered` record after them (a crash mid-write, or bytes written by someone else)");
                }
                if proof.replayed > 0 {
                    println!(
                        "note: {} records written again after a truncation (copytruncate), identical",
                        proof.replayed
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Io(e)) => Err(e.into()),
        Err(e) => {
            if json {
                let out = match &e {
                    VerifyError::Broken { at, why } => serde_json::json!({
                        "intact": false,
                        "file": at.file,
                        "line": at.number,
                        "error": why.to_string(),
                    }),
                    e => serde_json::json!({ "intact": false, "error": e.to_string() }),
                };
                println!("{out}");
            } else {
                println!("broken: {e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The runtime of `component`, or of the embedded reference guest.
fn guest_runtime(component: Option<&Path>) -> Result<Runtime> {
    Ok(match component {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Runtime::with_component(&bytes, Limits::default())?
        }
        None => Runtime::new(Limits::default())?,
    })
}

fn scan_cmd(args: ScanArgs) -> Result<ExitCode> {
    if args.public_key.len() != 1 && args.public_key.len() != args.filter.len() {
        anyhow::bail!(
            "give --pub once for every --filter, or once per --filter ({} filters, {} keys)",
            args.filter.len(),
            args.public_key.len()
        );
    }
    let keys = args
        .public_key
        .iter()
        .map(|p| PublicKey::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let file_config = args
        .config
        .as_deref()
        .map(hashgate_host::config::FileConfig::read)
        .transpose()?;
    let mut limits = file_config
        .as_ref()
        .and_then(|c| c.inspect.as_ref())
        .map(|t| t.limits())
        .unwrap_or_default();
    if args.no_archives {
        limits.archives = false;
    }
    let job = scan::job::Job {
        paths: &args.paths,
        filters: &args.filter,
        keys: &keys,
        runtime: Arc::new(guest_runtime(args.component.as_deref())?),
        limits,
        uninspectable: file_config
            .as_ref()
            .and_then(|c| c.uninspectable)
            .unwrap_or_default(),
        allow_list: args.allow_list.as_deref(),
        audit_log: args.audit_log.as_deref(),
        audit_key: args.audit_key.as_deref(),
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        catalog: args.catalog.as_ref(),
        catalog_algorithms: algorithms(&args.catalog_algorithms)?,
    };
    let json = args.json;
    let out = Mutex::new(std::io::stdout());
    let emit = |line: String| {
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
    };
    let progress: OnceLock<indicatif::ProgressBar> = OnceLock::new();
    let started = std::time::Instant::now();
    let on_event = |event: Event<'_>| {
        let line = match event {
            Event::Listed { bytes, .. } => {
                if !json && std::io::stderr().is_terminal() {
                    let bar = indicatif::ProgressBar::new(bytes);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .expect("valid template"),
                    );
                    let _ = progress.set(bar);
                }
                return;
            }
            Event::Scanned { bytes } => {
                if let Some(bar) = progress.get() {
                    bar.inc(bytes);
                }
                return;
            }
            event => event_line(json, &event),
        };
        for line in line {
            match progress.get() {
                Some(bar) => bar.suspend(|| emit(line)),
                None => emit(line),
            }
        }
    };
    let finished = scan::job::run(&job, &on_event);
    if let Some(bar) = progress.get() {
        bar.finish_and_clear();
    }
    let scan::job::Finished {
        mut summary,
        filters,
        catalog,
    } = finished?;
    if let Some(Err(e)) = &catalog {
        summary.errors += 1;
        let location = args
            .catalog
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        emit(error_line(json, Path::new(&location), &e.to_string()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        emit(
            serde_json::json!({"type": "summary", "files": summary.files, "bytes": summary.bytes,
                "hits": summary.hits, "canaries": summary.canaries, "errors": summary.errors,
                "uninspectable": summary.uninspectable, "from_catalog": summary.from_catalog,
                "seconds": elapsed, "filter": {"series": filters[0].series, "version": filters[0].version},
                "filters": filters.iter().map(|f| serde_json::json!({"series": f.series, "version": f.version})).collect::<Vec<_>>()})
            .to_string(),
        );
    } else {
        let reused = if args.catalog.is_some() {
            format!(" ({} from the catalog)", summary.from_catalog)
        } else {
            String::new()
        };
        emit(format!(
            "scanned {} files{reused}, {} bytes in {elapsed:.2}s with filter {}: {} hit, {} canary, {} error, {} uninspectable",
            summary.files, summary.bytes, filters.iter().map(|f| format!("{} v{}", f.series, f.version)).collect::<Vec<_>>().join(", "),
            summary.hits, summary.canaries, summary.errors, summary.uninspectable
        ));
    }
    Ok(if summary.hits > 0 {
        ExitCode::from(1)
    } else if summary.errors > 0 || summary.uninspectable > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Algorithm names (`md5`, `sha1`, `sha256`) as algorithms.
fn algorithms(names: &[String]) -> Result<Vec<hashgate_host::Algorithm>> {
    names
        .iter()
        .map(|name| {
            hashgate_host::Algorithm::ALL
                .into_iter()
                .find(|a| a.name() == name.trim())
                .ok_or_else(|| {
                    anyhow::anyhow!("unknown digest algorithm {name:?} (md5, sha1, sha256)")
                })
        })
        .collect()
}

fn recheck_cmd(args: RecheckArgs) -> Result<ExitCode> {
    use hashgate_host::catalog::{self, Catalog};
    let key = PublicKey::read(&args.public_key)?;
    let runtime = Arc::new(guest_runtime(None)?);
    let engine = hashgate_host::FilterEngine::open(runtime, &args.filter, &key)
        .map_err(|e| hashgate_host::Error::loading(&args.filter, e))?;
    if let catalog::Location::File(path) = &args.catalog {
        if !path.exists() {
            anyhow::bail!("{}: no such catalog", path.display());
        }
    }
    let mut db = Catalog::at(&args.catalog)?;
    let json = args.json;
    let mut hits = 0u64;
    let mut on_hit = |hit: catalog::RetroHit| {
        use std::os::unix::ffi::OsStrExt as _;
        let real: Vec<&hashgate_host::Hit> = hit.hits.iter().filter(|h| !h.is_canary()).collect();
        if real.is_empty() {
            return;
        }
        hits += 1;
        // An object's key is its host and path (`retro::object_key`): in JSON, apart.
        let whole = Path::new(std::ffi::OsStr::from_bytes(&hit.key));
        let path = Path::new(std::ffi::OsStr::from_bytes(
            hashgate_host::enforce::retro::key_path(hit.kind, &hit.key),
        ));
        for h in real {
            let digest = hex::encode(&h.bytes);
            let line = if json {
                json_line(
                    path,
                    serde_json::json!({"type": "hit", "kind": hit.kind.name(),
                    "member": hit.member, "layers": hit.layers, "size": hit.size,
                    "algorithm": h.algorithm.name(), "digest": digest, "category": h.category,
                    "host": hit.host, "stored": hit.stored, "etag": hit.etag,
                    "passed_by": hit.passed_by.as_ref().map(|(s, v)| serde_json::json!({"series": s, "version": v}))}),
                )
            } else {
                format!(
                    "HIT     {} {}  {}:{digest}  category {}  recorded {}{}",
                    hit.kind.name(),
                    object_name(whole, hit.member.as_deref()),
                    h.algorithm,
                    h.category.as_deref().unwrap_or("-"),
                    hit.stored,
                    hit.passed_by
                        .as_ref()
                        .map_or(String::new(), |(s, v)| format!("  passed by {s} v{v}")),
                )
            };
            println!("{line}");
        }
    };
    let started = std::time::Instant::now();
    let done = catalog::recheck(&mut db, &engine, &mut on_hit, &|| true)?;
    let info = engine.info();
    let unchecked: Vec<String> = done
        .unchecked
        .iter()
        .map(|(a, n)| format!("{n} without {}", a.name()))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"type": "summary", "objects": done.objects, "members": done.members,
                "digests": done.digests, "hits": hits, "seconds": elapsed,
                "unchecked": done.unchecked.iter().map(|(a, n)| (a.name(), n)).collect::<std::collections::BTreeMap<_, _>>(),
                "filter": {"series": info.series, "version": info.version}})
        );
    } else {
        println!(
            "rechecked {} objects and {} members ({} digests) in {elapsed:.2}s with filter {} v{}: {hits} hit{}",
            done.objects,
            done.members,
            done.digests,
            info.series,
            info.version,
            if unchecked.is_empty() {
                String::new()
            } else {
                format!("; not checked: {}", unchecked.join(", "))
            }
        );
    }
    // Rows that could not be checked for an algorithm the filter holds: not clean.
    Ok(if hits > 0 {
        ExitCode::from(1)
    } else if !done.unchecked.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The lines (text or JSON) that report `event`: one per digest that hit, else one.
fn event_line(json: bool, event: &Event<'_>) -> Vec<String> {
    match *event {
        Event::Hit {
            path,
            member,
            layers,
            size,
            authority,
            hits,
            pdq,
        } => hits
            .iter()
            .map(|hit| {
                let category = hit.category.as_deref().unwrap_or("-");
                let digest = hex::encode(&hit.bytes);
                if json {
                    json_line(
                        path,
                        serde_json::json!({"type": "hit", "member": member,
                        "layers": layers, "size": size,
                        "algorithm": hit.algorithm.name(), "digest": digest,
                        "category": hit.category, "authority": authority}),
                    )
                } else {
                    format!(
                        "HIT     {}  {}:{digest}  category {category}{}{}",
                        object_name(path, member),
                        hit.algorithm,
                        authority.map_or(String::new(), |a| format!("  authority {a}")),
                        layers.map_or(String::new(), |l| format!("  ({l}, {size} bytes)")),
                    )
                }
            })
            .chain(pdq.iter().map(|m| {
                let listed = m.hit.listed.to_hex();
                if json {
                    json_line(
                        path,
                        serde_json::json!({"type": "hit", "member": member,
                        "layers": layers, "size": size,
                        "algorithm": "pdq", "digest": listed, "category": m.hit.category,
                        "pdq": {"hash": m.hash.to_hex(), "transform": m.transform.name(),
                            "quality": m.quality, "distance": m.hit.distance,
                            "threshold": m.hit.threshold}}),
                    )
                } else {
                    format!(
                        "HIT     {}  pdq:{listed}  category {}  distance {} quality {}{}{}",
                        object_name(path, member),
                        m.hit.category.as_deref().unwrap_or("-"),
                        m.hit.distance,
                        m.quality,
                        match m.transform {
                            hashgate_host::perceptual::Dihedral::Original => String::new(),
                            t => format!(" ({})", t.name()),
                        },
                        layers.map_or(String::new(), |l| format!("  ({l}, {size} bytes)")),
                    )
                }
            }))
            .collect(),
        Event::Uninspectable {
            path,
            problem,
            blocked,
        } => {
            let action = if blocked { "block" } else { "pass" };
            let member = problem.member_label();
            vec![if json {
                json_line(
                    path,
                    serde_json::json!({"type": "uninspectable",
                    "member": member, "layers": problem.layers_label(),
                    "kind": problem.kind.name(), "detail": problem.detail,
                    "action": action}),
                )
            } else {
                format!(
                    "{}{}  {} ({}): {}",
                    if blocked { "UNINSP  " } else { "NOTE    " },
                    object_name(path, member.as_deref()),
                    problem.kind.name(),
                    problem.layers_label(),
                    hashgate_host::inspect::escape_name(problem.detail.as_bytes())
                )
            }]
        }
        Event::Canary { path } => vec![if json {
            json_line(path, serde_json::json!({"type": "canary"}))
        } else {
            format!(
                "CANARY  {}  (the hashgate test file: enforcement works; not listed material)",
                object_name(path, None)
            )
        }],
        Event::Error { path, error } => vec![error_line(json, path, &error.to_string())],
        Event::Listed { .. } | Event::Scanned { .. } => Vec::new(),
    }
}

/// One JSON line about `path`: `fields` with the path added. A path that is not UTF-8
/// cannot be a JSON string as it is: `path` then holds it with invalid bytes replaced
/// (U+FFFD) and `path_bytes` the exact bytes, base64, so every name round-trips.
fn json_line(path: &Path, mut fields: serde_json::Value) -> String {
    use base64::Engine as _;
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let object = fields.as_object_mut().expect("an object");
    object.insert("path".into(), String::from_utf8_lossy(bytes).into());
    if std::str::from_utf8(bytes).is_err() {
        let exact = base64::engine::general_purpose::STANDARD.encode(bytes);
        object.insert("path_bytes".into(), exact.into());
    }
    fields.to_string()
}

/// A file, or a member of it, for one line of human output: escaped, so that no name
/// can forge a line or pass for another.
fn object_name(path: &Path, member: Option<&str>) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let escape = hashgate_host::inspect::escape_name;
    let path = escape(path.as_os_str().as_bytes());
    match member {
        Some(member) => format!("{path}!{}", escape(member.as_bytes())),
        None => path,
    }
}

fn error_line(json: bool, path: &Path, error: &str) -> String {
    if json {
        json_line(path, serde_json::json!({"type": "error", "error": error}))
    } else {
        format!("ERROR   {}: {error}", object_name(path, None))
    }
}
