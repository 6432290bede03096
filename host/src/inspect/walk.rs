//! The walk: one pass over an input, recursing into what it holds, hashing every node.
//!
//! Each object is read through a [`Hashed`] reader, so whatever a decoder or splitter
//! pulls from it is hashed on the way; when the decoder or splitter is done (or fails),
//! the rest is drained through it too, so the object's digest always covers all of its
//! bytes. Decoders' output passes a [`Budgeted`] reader that enforces [`Limits`]; a
//! tripped limit unwinds to the root, which is still hashed to its end.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::archive;
use super::decode::{self, Base64Reader, QuotedPrintableReader};
use super::envelope::{Coding, Envelope};
use super::multipart::Splitter;
use super::picture::{self, Keeper, Kept, PictureBudget, PictureHash};
use super::sniff::{sniff, Format, SNIFF_LEN};
use super::{Hashes, InspectError, Layer, Limits, Node, Problem, ProblemKind, Report};
use crate::hashing::ObjectHasher;
use crate::Algorithm;

/// Read size when draining an object.
const DRAIN: usize = 256 * 1024;
/// Decoders in one chain (gzip in gzip in ...), whatever the depth.
const MAX_LAYERS: usize = 16;

/// Why a walk stops short of the end of an object.
pub(super) enum Stop {
    /// The input itself failed: there is no report.
    Source(io::Error),
    /// A limit was reached: unwind to the root.
    Tripped,
    /// A spool file could not be written (disk full): there is no report.
    Spool(io::Error),
}

/// What every reader of one walk shares: the decoded-bytes budget, the clock, and
/// whether the input failed or a limit tripped (decoders and the tar crate wrap or
/// replace the errors they pass on, so the flags are the truth).
pub(super) struct Budget {
    decoded_left: Cell<u64>,
    started: Instant,
    waited: Cell<Duration>,
    max_time: Duration,
    tripped: Cell<bool>,
    trip_detail: RefCell<Option<String>>,
    source_error: RefCell<Option<io::Error>>,
}

impl Budget {
    fn trip(&self, detail: String) -> io::Error {
        if !self.tripped.replace(true) {
            *self.trip_detail.borrow_mut() = Some(detail);
        }
        io::Error::other("inspection limit reached")
    }

    fn check_time(&self) -> io::Result<()> {
        let busy = self.started.elapsed().saturating_sub(self.waited.get());
        if busy > self.max_time {
            return Err(self.trip(format!(
                "inspection took longer than {} s",
                self.max_time.as_secs()
            )));
        }
        Ok(())
    }

    fn stop(&self) -> Option<Stop> {
        if let Some(e) = self.source_error.borrow_mut().take() {
            return Some(Stop::Source(e));
        }
        self.tripped.get().then_some(Stop::Tripped)
    }
}

/// The input: its reads are timed (waiting for bytes is not inspecting) and its
/// failure remembered.
struct Source<'r> {
    inner: &'r mut dyn Read,
    budget: Rc<Budget>,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        let result = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let b = &self.budget;
        b.waited.set(b.waited.get() + started.elapsed());
        result.map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            b.source_error.borrow_mut().get_or_insert(e);
            copy
        })
    }
}

/// Hashes what is read through it (and keeps it, if it is a picture to PDQ-hash).
struct Hashed<'a> {
    inner: &'a mut dyn Read,
    hasher: ObjectHasher,
    keeper: Option<Keeper>,
}

impl Read for Hashed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(keeper) = &mut self.keeper {
            keeper.push(&buf[..n]);
        }
        Ok(n)
    }
}

/// A decoder's output, counted against the decoded-bytes budget and the clock, its
/// panics contained.
pub(super) struct Budgeted<R> {
    inner: R,
    budget: Rc<Budget>,
    /// The decoder panicked: its state is not to be trusted again.
    poisoned: bool,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.budget.check_time()?;
        if self.poisoned {
            return Err(io::Error::other("the decoder failed earlier"));
        }
        // A decoder is someone else's parser of hostile bytes: one that panics (fuzzing
        // found libbz2-rs-sys 0.2.6 indexing out of bounds on a crafted stream) fails
        // this object as malformed instead of taking the walk, or a scan, down with it.
        let inner = &mut self.inner;
        let n = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.read(buf))) {
            Ok(result) => result?,
            Err(_) => {
                self.poisoned = true;
                return Err(io::Error::other("the decoder panicked on these bytes"));
            }
        };
        let left = self.budget.decoded_left.get();
        if n as u64 > left {
            return Err(self.budget.trip("decoded more bytes than allowed".into()));
        }
        self.budget.decoded_left.set(left - n as u64);
        Ok(n)
    }
}

/// The first bytes of a reader, read ahead to be looked at, then handed out again.
pub(super) struct Peeked<R> {
    prefix: Vec<u8>,
    at: usize,
    inner: R,
}

impl<R: Read> Peeked<R> {
    /// Reads up to `len` bytes ahead (fewer only at the end of `inner`).
    pub(super) fn new(mut inner: R, len: usize) -> io::Result<Self> {
        let mut prefix = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match inner.read(&mut prefix[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        prefix.truncate(filled);
        Ok(Peeked {
            prefix,
            at: 0,
            inner,
        })
    }

    pub(super) fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

impl<R: Read> Read for Peeked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.at);
            buf[..n].copy_from_slice(&self.prefix[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// Where an object is: member names and layers from the root down.
#[derive(Clone, Debug, Default)]
pub(super) struct At {
    pub member: Vec<String>,
    pub layers: Vec<Layer>,
    /// Containers (splitting layers) above.
    pub depth: u32,
}

impl At {
    fn layer(&self, layer: Layer) -> At {
        let mut at = self.clone();
        at.layers.push(layer);
        at
    }

    pub(super) fn member(&self, name: String, layer: Layer) -> At {
        let mut at = self.layer(layer);
        at.member.push(name);
        at.depth += 1;
        at
    }
}

/// One walk over one input.
pub(crate) struct Walk<'a> {
    algorithms: &'a [Algorithm],
    /// How pictures are PDQ-hashed, if they are.
    pictures: Option<&'a PictureBudget>,
    pub(super) limits: &'a Limits,
    budget: Rc<Budget>,
    pub(super) report: Report,
    drain: Vec<u8>,
}

impl<'a> Walk<'a> {
    /// A walk hashing with `hashes` within `limits`, over an input of `len` bytes if
    /// known.
    pub(crate) fn new(hashes: Hashes<'a>, limits: &'a Limits, len: Option<u64>) -> Self {
        Walk {
            algorithms: hashes.algorithms,
            pictures: limits.pictures.as_ref().filter(|_| hashes.pictures),
            limits,
            budget: Rc::new(Budget {
                decoded_left: Cell::new(limits.decoded_budget(len)),
                started: Instant::now(),
                waited: Cell::new(Duration::ZERO),
                max_time: limits.max_time,
                tripped: Cell::new(false),
                trip_detail: RefCell::new(None),
                source_error: RefCell::new(None),
            }),
            report: Report::default(),
            drain: vec![0u8; DRAIN],
        }
    }

    /// Walks `input`, undoing `envelope` first.
    pub(crate) fn run(
        mut self,
        input: &mut dyn Read,
        envelope: &Envelope,
    ) -> Result<Report, InspectError> {
        let mut source = Source {
            inner: input,
            budget: self.budget.clone(),
        };
        let at = At::default();
        match self.object(
            &mut source,
            &at,
            &envelope.codings,
            envelope.boundary.as_deref(),
        ) {
            Ok(()) | Err(Stop::Tripped) => Ok(self.report),
            Err(Stop::Source(e)) => Err(InspectError::Read(e)),
            Err(Stop::Spool(e)) => Err(InspectError::Spool(e)),
        }
    }

    /// Hashes one object read from `src`, looking into it first: undoing `codings`
    /// (last applied first), splitting it at `boundary`, or opening what its magic
    /// bytes announce.
    pub(super) fn object(
        &mut self,
        src: &mut dyn Read,
        at: &At,
        codings: &[Coding],
        boundary: Option<&str>,
    ) -> Result<(), Stop> {
        let mut hashed = Hashed {
            inner: src,
            hasher: ObjectHasher::new(self.algorithms),
            keeper: self.pictures.map(|p| Keeper::new(p.max_bytes)),
        };
        let problems = self.report.problems.len();
        match self.open(&mut hashed, at, codings, boundary) {
            Ok(()) => {}
            Err(Stop::Tripped) if at.layers.is_empty() => {}
            Err(stop) => return Err(stop),
        }
        // The rest, so that the digest covers every byte of the object.
        loop {
            match hashed.read(&mut self.drain) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => match self.budget.stop() {
                    Some(Stop::Tripped) if at.layers.is_empty() => {
                        // Only the input's own bytes are left to read; a tripped limit
                        // only stops what is below.
                        continue;
                    }
                    Some(stop) => return self.note_trip(stop, at),
                    None => {
                        if self.report.problems.len() == problems {
                            self.problem(ProblemKind::Malformed, at, e.to_string());
                        }
                        break;
                    }
                },
            }
        }
        let size = hashed.hasher.len();
        let picture = hashed
            .keeper
            .take()
            .and_then(|k| self.picture(k.finish(), at));
        if size > 0 || at.layers.is_empty() {
            self.report.nodes.push(Node {
                member: at.member.clone(),
                layers: at.layers.clone(),
                size,
                digests: hashed.hasher.finish(),
                picture,
            });
        }
        Ok(())
    }

    /// The PDQ of what a [`Keeper`] kept, if it is a picture that can be hashed; else the
    /// problem is recorded.
    fn picture(&mut self, kept: Kept, at: &At) -> Option<PictureHash> {
        let budget = self.pictures?;
        let failed = match kept {
            Kept::Not => return None,
            Kept::Over(p, len) => (ProblemKind::Picture, picture::over_budget(p, len, budget)),
            Kept::Picture(p, bytes) => {
                let decoded = self.limits.decoded_budget(Some(bytes.len() as u64));
                match picture::hash(p, &bytes, budget, decoded) {
                    Ok(hash) => return Some(hash),
                    Err(failed) => failed,
                }
            }
        };
        self.problem(failed.0, at, failed.1);
        None
    }

    /// Records the limit that tripped (once, where it was first seen) and passes the
    /// stop on.
    fn note_trip(&mut self, stop: Stop, at: &At) -> Result<(), Stop> {
        if let Stop::Tripped = stop {
            let detail = self.budget.trip_detail.borrow_mut().take();
            if let Some(detail) = detail {
                self.problem(ProblemKind::Limit, at, detail);
            }
        }
        Err(stop)
    }

    /// An error `e` while looking into the object at `at`: the input's failure or a
    /// tripped limit stops the walk; anything else is a malformed container.
    pub(super) fn failed(&mut self, e: impl std::fmt::Display, at: &At) -> Result<(), Stop> {
        match self.budget.stop() {
            Some(stop) => self.note_trip(stop, at),
            None => {
                // A broken stream fails every reader above it: the deepest one that
                // noticed has said so already.
                let explained = self.report.problems.last().is_some_and(|p| {
                    p.kind == ProblemKind::Malformed
                        && p.layers.starts_with(&at.layers)
                        && p.member.starts_with(&at.member)
                });
                if !explained {
                    self.problem(ProblemKind::Malformed, at, e.to_string());
                }
                Ok(())
            }
        }
    }

    pub(super) fn problem(&mut self, kind: ProblemKind, at: &At, detail: String) {
        self.report.problems.push(Problem {
            kind,
            member: at.member.clone(),
            layers: at.layers.clone(),
            detail,
        });
    }

    /// Wraps a decoder's output in the budget (also archive members, whose reading can
    /// produce more bytes than they take: zip's compressed members, tar's sparse files).
    pub(super) fn budgeted<R: Read>(&self, inner: R) -> Budgeted<R> {
        Budgeted {
            inner,
            budget: self.budget.clone(),
            poisoned: false,
        }
    }

    /// Whether one more container level may be opened below `at`; records the problem
    /// if not.
    pub(super) fn may_split(&mut self, at: &At, what: &str) -> bool {
        if at.depth >= self.limits.max_depth {
            let detail = format!(
                "{what} nested deeper than {} containers",
                self.limits.max_depth
            );
            self.problem(ProblemKind::Limit, at, detail);
            return false;
        }
        true
    }

    fn open(
        &mut self,
        r: &mut Hashed<'_>,
        at: &At,
        codings: &[Coding],
        boundary: Option<&str>,
    ) -> Result<(), Stop> {
        if at.layers.len() >= MAX_LAYERS {
            self.problem(ProblemKind::Limit, at, "too many layers".into());
            return Ok(());
        }
        if let Some((&coding, rest)) = codings.split_last() {
            return self.decode(r, at, coding, rest, boundary);
        }
        if let Some(boundary) = boundary {
            if !self.may_split(at, "multipart body") {
                return Ok(());
            }
            return self.multipart(r, at, boundary);
        }
        if !self.limits.archives {
            return Ok(());
        }
        let mut peeked = match Peeked::new(&mut *r, SNIFF_LEN) {
            Ok(p) => p,
            Err(e) => return self.failed(e, at),
        };
        let Some(format) = sniff(peeked.prefix()) else {
            return Ok(());
        };
        let stream = |layer| (layer, at.layer(layer));
        let (layer, child) = match format {
            Format::Gzip => stream(Layer::Gzip),
            Format::Zstd => stream(Layer::Zstd),
            Format::Bzip2 => stream(Layer::Bzip2),
            Format::Xz => stream(Layer::Xz),
            Format::Zip => {
                if !self.may_split(at, "zip archive") {
                    return Ok(());
                }
                return archive::zip(self, &mut peeked, at);
            }
            Format::Tar => {
                if !self.may_split(at, "tar archive") {
                    return Ok(());
                }
                return archive::tar(self, &mut peeked, at);
            }
            Format::SevenZ => {
                if !self.may_split(at, "7z archive") {
                    return Ok(());
                }
                return archive::seven_z(self, &mut peeked, at);
            }
            Format::Rar => {
                let detail = format!("{} archives are not opened", format.name());
                self.problem(ProblemKind::Unsupported, at, detail);
                return Ok(());
            }
        };
        self.stream(&mut peeked, layer, &child)
    }

    /// Undoes `coding`, then what is left of the envelope below it.
    fn decode(
        &mut self,
        r: &mut Hashed<'_>,
        at: &At,
        coding: Coding,
        rest: &[Coding],
        boundary: Option<&str>,
    ) -> Result<(), Stop> {
        let child = at.layer(coding.layer());
        match coding {
            Coding::Gzip => {
                let mut d = self.budgeted(flate2::read::MultiGzDecoder::new(r));
                self.object(&mut d, &child, rest, boundary)
            }
            Coding::Deflate => {
                let mut peeked = match Peeked::new(r, 2) {
                    Ok(p) => p,
                    Err(e) => return self.failed(e, at),
                };
                if decode::is_zlib(peeked.prefix()) {
                    let mut d = self.budgeted(flate2::read::ZlibDecoder::new(&mut peeked));
                    self.object(&mut d, &child, rest, boundary)
                } else {
                    let mut d = self.budgeted(flate2::read::DeflateDecoder::new(&mut peeked));
                    self.object(&mut d, &child, rest, boundary)
                }
            }
            Coding::Brotli => {
                let mut d = self.budgeted(brotli_decompressor::Decompressor::new(r, 64 * 1024));
                self.object(&mut d, &child, rest, boundary)
            }
            Coding::Zstd => match self.zstd(r) {
                Ok(d) => {
                    let mut d = self.budgeted(d);
                    self.object(&mut d, &child, rest, boundary)
                }
                Err(e) => self.failed(e, at),
            },
            Coding::Base64 => {
                let mut d = self.budgeted(Base64Reader::new(r));
                self.object(&mut d, &child, rest, boundary)
            }
            Coding::QuotedPrintable => {
                let mut d = self.budgeted(QuotedPrintableReader::new(r));
                self.object(&mut d, &child, rest, boundary)
            }
        }
    }

    fn zstd<'r>(
        &self,
        r: &'r mut dyn Read,
    ) -> io::Result<zstd::stream::read::Decoder<'static, io::BufReader<&'r mut dyn Read>>> {
        let mut d = zstd::stream::read::Decoder::new(r)?;
        d.window_log_max(decode::zstd_window_log(self.limits.decoder_memory))?;
        Ok(d)
    }

    /// A single-stream compressor's output (sniffed: gzip, zstd, bzip2, xz).
    fn stream(&mut self, r: &mut dyn Read, layer: Layer, child: &At) -> Result<(), Stop> {
        match layer {
            Layer::Gzip => {
                let mut d = self.budgeted(flate2::read::MultiGzDecoder::new(r));
                self.object(&mut d, child, &[], None)
            }
            Layer::Zstd => match self.zstd(r) {
                Ok(d) => {
                    let mut d = self.budgeted(d);
                    self.object(&mut d, child, &[], None)
                }
                Err(e) => self.failed(e, child),
            },
            Layer::Bzip2 => {
                let mut d = self.budgeted(bzip2::read::MultiBzDecoder::new(r));
                self.object(&mut d, child, &[], None)
            }
            _ => {
                let flags = liblzma::stream::CONCATENATED;
                let memory = self.limits.decoder_memory;
                match liblzma::stream::Stream::new_stream_decoder(memory, flags) {
                    Ok(stream) => {
                        let d = liblzma::read::XzDecoder::new_stream(r, stream);
                        let mut d = self.budgeted(d);
                        self.object(&mut d, child, &[], None)
                    }
                    Err(e) => self.failed(format!("xz: {e}"), child),
                }
            }
        }
    }

    /// A multipart body: the preamble, each part (with its own envelope), the epilogue.
    fn multipart(&mut self, r: &mut dyn Read, at: &At, boundary: &str) -> Result<(), Stop> {
        let mut splitter = Splitter::new(r, boundary);
        let preamble = at.member("(preamble)".into(), Layer::Multipart);
        self.object(&mut splitter.body(), &preamble, &[], None)?;
        let mut count = 0u64;
        loop {
            let head = match splitter.next_part() {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    if self
                        .report
                        .problems
                        .last()
                        .is_some_and(|p| p.detail == e.to_string())
                    {
                        return Ok(()); // already recorded by the part that ran into it
                    }
                    return self.failed(e, at);
                }
            };
            count += 1;
            if count > self.limits.max_entries {
                let detail = format!("more than {} parts", self.limits.max_entries);
                self.problem(ProblemKind::Limit, at, detail);
                return Ok(());
            }
            let name = head.name().unwrap_or_else(|| format!("part {count}"));
            let part = at.member(name, Layer::Multipart);
            let envelope = Envelope::mime_part(
                head.transfer_encoding.as_deref(),
                head.content_encoding.as_deref(),
                head.content_type.as_deref(),
            );
            let envelope = match envelope {
                Ok(e) => e,
                Err(e) => {
                    self.problem(ProblemKind::Unsupported, &part, e.to_string());
                    Envelope::default()
                }
            };
            self.object(
                &mut splitter.body(),
                &part,
                &envelope.codings,
                envelope.boundary.as_deref(),
            )?;
        }
        let epilogue = at.member("(epilogue)".into(), Layer::Multipart);
        self.object(&mut splitter.epilogue(), &epilogue, &[], None)
    }

    /// Copies `r` into a new spool file (unlinked already), for formats that need to
    /// seek. `Ok(None)` when reading `r` failed in a way already recorded.
    pub(super) fn spool(
        &mut self,
        r: &mut dyn Read,
        at: &At,
    ) -> Result<Option<std::fs::File>, Stop> {
        let dir = self
            .limits
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let mut file = tempfile::tempfile_in(&dir).map_err(Stop::Spool)?;
        loop {
            let n = match r.read(&mut self.drain) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    self.failed(e, at)?;
                    return Ok(None);
                }
            };
            io::Write::write_all(&mut file, &self.drain[..n]).map_err(Stop::Spool)?;
        }
        file.seek(SeekFrom::Start(0)).map_err(Stop::Spool)?;
        Ok(Some(file))
    }
}
