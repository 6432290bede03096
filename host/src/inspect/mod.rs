//! The inspection pipeline: what an upload, a response or a file at rest *carries*, as a
//! tree of objects, every one of them hashed.
//!
//! A listed file stays listed when it is gzipped, zipped, put in a tar, base64'd in a
//! form or sent with `Content-Encoding: zstd`: whatever an ordinary tool unwraps, an
//! adversary can wrap. So every front-end (gateway, ICAP server, `scan`) hands the bytes
//! it sees to this pipeline, which
//!
//! 1. hashes the bytes as they are (the **root** node: a listed `.zip` stays listed),
//! 2. undoes the codings the message says were applied ([`Envelope`]: transfer and
//!    content codings, a MIME part's `Content-Transfer-Encoding`) and splits what its
//!    media type says is several objects (`multipart/*`),
//! 3. recognises containers by their **magic bytes** (never by a name or a media type):
//!    gzip, bzip2, xz and zstd streams, zip, tar and 7z archives, and recurses into what
//!    they hold,
//! 4. and hashes **every node** of that tree with the filter's algorithms.
//!
//! The result is a [`Report`]: the nodes, each with its member path
//! (`upload.zip!photos/a.jpg`, ClamAV style) and its chain of layers (`gzip>tar>file`),
//! and the [`Problem`]s: what could not be looked into (an encrypted member, a malformed
//! archive, a tripped [`Limits`] bound). What a problem does to the verdict is the
//! operator's choice ([`Uninspectable`]), decided with everything else in
//! [`crate::enforce`].
//!
//! Two ways in, one walk:
//! * [`inspect_reader`] pulls from anything that reads (a file at rest, spooled S3
//!   parts) on the caller's thread;
//! * [`Inspection`] is pushed frames as they stream through a front-end: a body that
//!   is not a container is hashed as before (inline, or on a blocking thread when large),
//!   one that is runs the same walk on a blocking thread fed through a bounded channel,
//!   so memory per upload stays bounded and decoding runs while the body streams.
//!
//! ```
//! use std::io::Write;
//! use hashgate_host::inspect::{inspect_reader, Envelope, Hashes, Limits};
//! use hashgate_host::Algorithm;
//!
//! // A gzip stream holding "hello".
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(b"hello").unwrap();
//! let gz = gz.finish().unwrap();
//!
//! let report = inspect_reader(&mut &gz[..], &Envelope::default(),
//!     Hashes::digests(&[Algorithm::Sha256]), &Limits::default(), Some(gz.len() as u64))
//!     .unwrap();
//! assert_eq!(report.nodes.len(), 2); // the gzip stream, and what it holds
//! assert_eq!(report.nodes[0].layers_label(), "gzip>file");
//! assert_eq!(report.nodes[0].size, 5);
//! assert!(report.problems.is_empty());
//! ```
//!
//! Nothing here knows HTTP or ICAP: front-ends turn their headers into an [`Envelope`].

mod archive;
mod aws_chunked;
pub mod cache;
mod decode;
mod digester;
mod envelope;
mod holdback;
mod multipart;
mod picture;
mod sniff;
mod stream;
mod walk;

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

pub use aws_chunked::{AwsChunkedDecoder, AwsChunkedError};
pub use digester::Digester;
pub use envelope::{Coding, Envelope, EnvelopeError};
pub use holdback::HoldBack;
pub(crate) use multipart::percent_decode;
pub use picture::{PictureBudget, PictureHash};
pub use stream::Inspection;

use crate::{Algorithm, Digest};

/// One layer a node's bytes went through, outermost first: a coding undone or a
/// container opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// A gzip stream (`Content-Encoding: gzip`, `.gz`, `.tgz`).
    Gzip,
    /// zlib or raw deflate (`Content-Encoding: deflate`).
    Deflate,
    /// Brotli (`Content-Encoding: br`; brotli has no magic bytes).
    Brotli,
    /// A zstd stream.
    Zstd,
    /// A bzip2 stream.
    Bzip2,
    /// An xz stream.
    Xz,
    /// `Content-Transfer-Encoding: base64`.
    Base64,
    /// `Content-Transfer-Encoding: quoted-printable`.
    QuotedPrintable,
    /// A part of a `multipart/*` body.
    Multipart,
    /// A member of a zip archive.
    Zip,
    /// A member of a tar archive.
    Tar,
    /// A member of a 7z archive.
    SevenZ,
}

impl Layer {
    /// Its short name, as in a layer chain (`gzip>tar>file`).
    pub fn name(self) -> &'static str {
        match self {
            Layer::Gzip => "gzip",
            Layer::Deflate => "deflate",
            Layer::Brotli => "br",
            Layer::Zstd => "zstd",
            Layer::Bzip2 => "bzip2",
            Layer::Xz => "xz",
            Layer::Base64 => "base64",
            Layer::QuotedPrintable => "quoted-printable",
            Layer::Multipart => "multipart",
            Layer::Zip => "zip",
            Layer::Tar => "tar",
            Layer::SevenZ => "7z",
        }
    }

    /// The layer named `name` (see [`Layer::name`]).
    pub fn from_name(name: &str) -> Option<Layer> {
        [
            Layer::Gzip,
            Layer::Deflate,
            Layer::Brotli,
            Layer::Zstd,
            Layer::Bzip2,
            Layer::Xz,
            Layer::Base64,
            Layer::QuotedPrintable,
            Layer::Multipart,
            Layer::Zip,
            Layer::Tar,
            Layer::SevenZ,
        ]
        .into_iter()
        .find(|l| l.name() == name)
    }

    /// Whether the layer splits its input into members (an archive or a multipart body)
    /// rather than decoding it into one stream. Only these count towards
    /// [`Limits::max_depth`].
    pub fn splits(self) -> bool {
        matches!(
            self,
            Layer::Multipart | Layer::Zip | Layer::Tar | Layer::SevenZ
        )
    }
}

/// One object of the tree: the root (the bytes as sent) or something found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Member names from the root down (a form part's file name, an archive member's
    /// path); empty for the root and for what a coding of the root decodes to.
    pub member: Vec<String>,
    /// The layers its bytes went through, outermost first; empty for the root.
    pub layers: Vec<Layer>,
    /// Its size in bytes, decoded.
    pub size: u64,
    /// Its digests, with the algorithms asked for.
    pub digests: Vec<Digest>,
    /// Its PDQ, if it is a picture and pictures were hashed ([`Limits::pictures`]).
    pub picture: Option<PictureHash>,
}

impl Node {
    /// Whether this is the root: the bytes exactly as sent.
    pub fn is_root(&self) -> bool {
        self.layers.is_empty()
    }

    /// The member path, ClamAV style: names joined with `!` (`a.zip!photos/b.jpg`);
    /// `None` for the root and its decodings. Names are kept as found (JSON carries
    /// them escaped); use [`escape_name`] to print one on a terminal.
    pub fn member_label(&self) -> Option<String> {
        member_label(&self.member)
    }

    /// The layer chain, ending in `file` (`gzip>tar>file`); `file` for the root.
    pub fn layers_label(&self) -> String {
        layers_label(&self.layers)
    }
}

fn member_label(member: &[String]) -> Option<String> {
    (!member.is_empty()).then(|| member.join("!"))
}

pub(crate) fn layers_label(layers: &[Layer]) -> String {
    let mut label = String::new();
    for layer in layers {
        label.push_str(layer.name());
        label.push('>');
    }
    label.push_str("file");
    label
}

/// Escapes a name for one line of human output: control characters, backslashes and
/// non-UTF-8 bytes become `\n`, `\\`, `\xNN`, so no name can forge a line or pass for
/// another.
pub fn escape_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// What kind of thing kept the pipeline from looking into an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// An encrypted archive member: its bytes are hashed as stored, but what it holds
    /// cannot be known without the password.
    Encrypted,
    /// A container or coding whose bytes do not decode (truncated, corrupt, local
    /// headers that disagree with the central directory, overlapping zip entries).
    Malformed,
    /// A bound of [`Limits`] was reached: nesting depth, decoded bytes, entries, time,
    /// decoder memory.
    Limit,
    /// A container recognised but not opened (RAR, PAX sparse tar members), or a
    /// member compressed with a method no decoder here knows.
    Unsupported,
    /// A part of an object (a `206` response to a range request) whose whole was not
    /// seen: its pieces, each clean, may join into a listed file.
    Partial,
    /// A picture not PDQ-hashed because it is over [`PictureBudget`]'s bytes or
    /// [`crate::perceptual::PictureLimits`]' pixels: its digests are still checked, but
    /// a re-encoded copy of a listed picture would not be found in it.
    Picture,
}

impl ProblemKind {
    /// The kind named `name` (see [`ProblemKind::name`]).
    pub fn from_name(name: &str) -> Option<ProblemKind> {
        [
            ProblemKind::Encrypted,
            ProblemKind::Malformed,
            ProblemKind::Limit,
            ProblemKind::Unsupported,
            ProblemKind::Partial,
            ProblemKind::Picture,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Its name in config, audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Encrypted => "encrypted",
            ProblemKind::Malformed => "malformed",
            ProblemKind::Limit => "limit",
            ProblemKind::Unsupported => "unsupported",
            ProblemKind::Partial => "partial",
            ProblemKind::Picture => "picture",
        }
    }
}

/// Something the pipeline could not look into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Where: member names from the root down.
    pub member: Vec<String>,
    /// Where: the layers down to it.
    pub layers: Vec<Layer>,
    /// Why, for the log and the audit record.
    pub detail: String,
}

impl Problem {
    /// A malformed problem of the whole body (not of a member), for a front-end whose
    /// inspection could not finish or whose message could not be read as declared.
    pub fn malformed(detail: String) -> Problem {
        Problem {
            kind: ProblemKind::Malformed,
            member: Vec::new(),
            layers: Vec::new(),
            detail,
        }
    }

    /// See [`Node::member_label`].
    pub fn member_label(&self) -> Option<String> {
        member_label(&self.member)
    }

    /// See [`Node::layers_label`].
    pub fn layers_label(&self) -> String {
        layers_label(&self.layers)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.kind.name(), self.layers_label())?;
        if let Some(member) = self.member_label() {
            write!(f, " {}", escape_name(member.as_bytes()))?;
        }
        write!(f, "): {}", self.detail)
    }
}

/// Everything one inspection found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every node hashed, deepest first within each container, the root last.
    pub nodes: Vec<Node>,
    /// What could not be looked into.
    pub problems: Vec<Problem>,
}

impl Report {
    /// The report of an object that is not a container (see [`is_plain`]): one node,
    /// the root, of `size` bytes.
    pub fn plain(size: u64, digests: Vec<Digest>) -> Report {
        Report {
            nodes: vec![Node {
                member: Vec::new(),
                layers: Vec::new(),
                size,
                digests,
                picture: None,
            }],
            problems: Vec::new(),
        }
    }

    /// The root: the bytes as sent.
    pub fn root(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.is_root())
    }
}

/// What an uninspectable object does to the verdict, per [`ProblemKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UninspectableAction {
    /// Refuse the object (as a listed one, with its own audit action).
    Block,
    /// Let it through (audited and counted all the same).
    Pass,
}

/// The operator's choice for each kind of problem. Defaults (`docs/ARCHITECTURE.md`
/// says why): encrypted and unsupported containers pass, as they are common in ordinary
/// storage and a block would refuse every password-protected zip; malformed containers
/// and tripped limits block, since a bomb or a crafted archive is not what ordinary
/// users upload, and passing them would be a way around every check. A picture too
/// large to PDQ-hash passes: large photos are ordinary, and their digests are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Uninspectable {
    /// An encrypted archive member.
    pub encrypted: UninspectableAction,
    /// A malformed container or coding.
    pub malformed: UninspectableAction,
    /// A tripped limit.
    pub limit: UninspectableAction,
    /// A recognised but unsupported container.
    pub unsupported: UninspectableAction,
    /// A partial response (`206`) of an object not seen whole.
    pub partial: UninspectableAction,
    /// A picture too large to be PDQ-hashed.
    pub picture: UninspectableAction,
}

impl Default for Uninspectable {
    fn default() -> Self {
        Uninspectable {
            encrypted: UninspectableAction::Pass,
            malformed: UninspectableAction::Block,
            limit: UninspectableAction::Block,
            unsupported: UninspectableAction::Pass,
            partial: UninspectableAction::Block,
            picture: UninspectableAction::Pass,
        }
    }
}

impl Uninspectable {
    /// The action for `kind`.
    pub fn action(&self, kind: ProblemKind) -> UninspectableAction {
        match kind {
            ProblemKind::Encrypted => self.encrypted,
            ProblemKind::Malformed => self.malformed,
            ProblemKind::Limit => self.limit,
            ProblemKind::Unsupported => self.unsupported,
            ProblemKind::Partial => self.partial,
            ProblemKind::Picture => self.picture,
        }
    }
}

/// Bounds on one inspection, so that a bomb is stopped fast, in bounded memory and
/// time. Reaching one is a [`ProblemKind::Limit`] problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whether to look into containers at all (`scan --no-archives`, `archives =
    /// false`). Codings the message declares are undone either way.
    pub archives: bool,
    /// Nesting depth of containers (zip, tar, multipart) below the root. A member
    /// deeper than this is hashed but not opened.
    pub max_depth: u32,
    /// Decoded bytes (what decompressors put out, summed over the tree) per inspection:
    /// this many times the input's length...
    pub decoded_ratio: u64,
    /// ...but at least this many bytes (small bodies compress well)...
    pub decoded_floor: u64,
    /// ...and at most this many.
    pub decoded_cap: u64,
    /// Members of one archive or multipart body.
    pub max_entries: u64,
    /// Time spent inspecting (waiting for the body's bytes not counted).
    pub max_time: Duration,
    /// Memory a decompressor may ask for (a zstd window, an xz dictionary).
    pub decoder_memory: u64,
    /// Where zip archives are spooled (their central directory is at the end); the
    /// system's temporary directory if `None`. Spool files are unlinked at once.
    pub spool_dir: Option<PathBuf>,
    /// How pictures are PDQ-hashed when the filter holds PDQ hashes; `None`: never.
    pub pictures: Option<PictureBudget>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            archives: true,
            max_depth: 4,
            decoded_ratio: 16,
            decoded_floor: 64 << 20,
            decoded_cap: 8 << 30,
            max_entries: 10_000,
            max_time: Duration::from_secs(60),
            decoder_memory: 64 << 20,
            spool_dir: None,
            pictures: Some(PictureBudget::default()),
        }
    }
}

impl Limits {
    /// The decoded-bytes budget for an input of `len` bytes (unknown: the cap).
    pub fn decoded_budget(&self, len: Option<u64>) -> u64 {
        match len {
            Some(len) => len
                .saturating_mul(self.decoded_ratio)
                .max(self.decoded_floor)
                .min(self.decoded_cap),
            None => self.decoded_cap,
        }
    }
}

/// Occurs when an inspection could not read its input to the end (the file or the
/// channel failed) or its worker died: the report would be incomplete, so there is none.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the input failed.
    #[error("reading the input failed: {0}")]
    Read(#[source] std::io::Error),
    /// A spool file (for an archive that needs to be read twice) could not be written.
    #[error("spooling for inspection failed: {0}")]
    Spool(#[source] std::io::Error),
    /// The inspection's worker thread failed.
    #[error("the inspection worker failed: {0}")]
    Worker(String),
}

/// Bytes of an object's start that [`is_plain`] needs (fewer if the object is shorter).
pub const PREFIX_LEN: usize = sniff::SNIFF_LEN;

/// Whether an object that starts with `prefix` (its first [`PREFIX_LEN`] bytes, or all
/// of it if shorter) and comes with no envelope is plain: its magic bytes announce no
/// container (nor a picture, when `pictures` are PDQ-hashed), so the pipeline would hash
/// it as one object and look no further. A front-end may then hash it its own way (side
/// by side with others, or over several cores) and build its [`Report::plain`].
pub fn is_plain(prefix: &[u8], pictures: bool) -> bool {
    let prefix = &prefix[..prefix.len().min(PREFIX_LEN)];
    sniff::sniff(prefix).is_none()
        && !(pictures && crate::perceptual::Picture::sniff(prefix).is_some())
}

/// What every node of an inspection is hashed with: the filter's digest algorithms, and
/// whether its pictures get a PDQ (the filter holds PDQ hashes; see [`Limits::pictures`]).
#[derive(Clone, Copy, Debug)]
pub struct Hashes<'a> {
    /// The digest algorithms.
    pub algorithms: &'a [Algorithm],
    /// Whether pictures are PDQ-hashed.
    pub pictures: bool,
}

impl<'a> Hashes<'a> {
    /// What `filter` needs: its algorithms, and PDQ if it has PDQ sections.
    pub fn of(filter: &'a crate::enforce::FilterSet) -> Hashes<'a> {
        Hashes::with(filter.algorithms(), filter)
    }

    /// `algorithms` (the filter's, and those a catalog records), and PDQ if `filter` has
    /// PDQ sections.
    pub fn with(algorithms: &'a [Algorithm], filter: &crate::enforce::FilterSet) -> Hashes<'a> {
        Hashes {
            algorithms,
            pictures: filter.holds_pdq(),
        }
    }

    /// Digests with `algorithms` only, no PDQ.
    pub fn digests(algorithms: &'a [Algorithm]) -> Hashes<'a> {
        Hashes {
            algorithms,
            pictures: false,
        }
    }
}

/// Inspects everything `reader` yields, on the caller's thread: the root is hashed with
/// `hashes`, the [`Envelope`]'s codings undone, containers opened within `limits`.
/// `len` is the input's length if known (it sets the decoded-bytes budget).
pub fn inspect_reader(
    reader: &mut dyn Read,
    envelope: &Envelope,
    hashes: Hashes<'_>,
    limits: &Limits,
    len: Option<u64>,
) -> Result<Report, InspectError> {
    // Decoders' panics are contained where they read (see `walk::Budgeted`); this is
    // the last line, for an archive crate that panics outside a read: the object gets
    // no report, which every front-end treats as a failure (503, a scan error), never as
    // clean.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        walk::Walk::new(hashes, limits, len).run(reader, envelope)
    }))
    .unwrap_or_else(|_| Err(InspectError::Worker("the inspection panicked".into())))
}

#[cfg(test)]
mod tests;
