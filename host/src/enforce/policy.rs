//! What the operator wants done with hits.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::{Algorithm, Error};

/// What a hit in a category leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the object (HTTP 451). Its quarantine copy is kept (where `quarantine_dir`
    /// is set) unless some category is given `quarantine`: then only those are kept.
    Block,
    /// Refuse the object and keep its quarantine copy (needs `quarantine_dir`): for the
    /// categories whose copies the operator must keep as evidence, where keeping a copy
    /// of every blocked file is not wanted.
    Quarantine,
    /// Let it through, but audit and count it.
    Monitor,
}

impl Action {
    /// Whether the object is refused.
    pub fn blocks(self) -> bool {
        matches!(self, Action::Block | Action::Quarantine)
    }
}

/// What happens when no verdict can be had (guest trap, deadline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse the object (HTTP 503). The default: nothing unchecked gets through.
    #[default]
    FailClosed,
    /// Let it through, audited and counted.
    FailOpen,
}

/// The operator's policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Action for categories not named in `actions` (and for hits without a category).
    pub default_action: Action,
    /// Action per category.
    pub actions: HashMap<String, Action>,
    /// Digests never acted on: the operator's own known false positives.
    pub allow: AllowList,
    /// What to do without a verdict.
    pub on_failure: FailureMode,
    /// What an object the inspection pipeline could not look into does, per kind.
    pub uninspectable: crate::inspect::Uninspectable,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_action: Action::Block,
            actions: HashMap::new(),
            allow: AllowList::default(),
            on_failure: FailureMode::FailClosed,
            uninspectable: crate::inspect::Uninspectable::default(),
        }
    }
}

impl Policy {
    /// Whether any category is given `quarantine`.
    pub fn names_quarantine(&self) -> bool {
        self.default_action == Action::Quarantine
            || self.actions.values().any(|a| *a == Action::Quarantine)
    }

    /// The action for a hit in `category`.
    pub fn action_for(&self, category: Option<&str>) -> Action {
        category
            .and_then(|c| self.actions.get(c))
            .copied()
            .unwrap_or(self.default_action)
    }
}

/// What hits of one authority's filter lead to, by category: an `[[feed]]` table's
/// `actions`, where the authority's categories differ from the others'.
#[derive(Clone, Debug)]
pub struct Actions {
    /// Action for categories not named in `by_category`.
    pub default: Action,
    /// Action per category.
    pub by_category: HashMap<String, Action>,
}

impl Actions {
    /// Whether any category is given `quarantine`.
    pub fn names_quarantine(&self) -> bool {
        self.default == Action::Quarantine
            || self.by_category.values().any(|a| *a == Action::Quarantine)
    }

    /// The actions of a configuration table: category → action, `default` for the rest
    /// (block, when unnamed).
    pub fn from_table(mut table: HashMap<String, Action>) -> Actions {
        Actions {
            default: table.remove("default").unwrap_or(Action::Block),
            by_category: table,
        }
    }

    /// The action for a hit in `category`.
    pub fn action_for(&self, category: Option<&str>) -> Action {
        category
            .and_then(|c| self.by_category.get(c))
            .copied()
            .unwrap_or(self.default)
    }
}

/// Exact digests that override filter hits.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    digests: HashSet<(Algorithm, Vec<u8>)>,
    /// Listed PDQ hashes never acted on (`pdq:HEX` lines).
    pdq: HashSet<[u8; 32]>,
}

/// One allow-list entry: an exact digest, or a listed PDQ hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AllowEntry {
    /// A digest, `[algorithm:]hex` (the algorithm inferred from the length if unnamed).
    Digest(Algorithm, Vec<u8>),
    /// A listed PDQ hash, `pdq:HEX`.
    Pdq([u8; 32]),
}

impl std::str::FromStr for AllowEntry {
    type Err = String;

    /// Parses one allow-list line (trimmed, not a comment).
    fn from_str(line: &str) -> Result<AllowEntry, String> {
        let line = line.trim();
        if let Some(hex) = line.strip_prefix("pdq:") {
            let hash = crate::perceptual::PdqHash::from_hex(hex.trim())
                .ok_or_else(|| "a PDQ hash is 64 hex digits".to_string())?;
            return Ok(AllowEntry::Pdq(hash.0));
        }
        let (named, hex) = match line.split_once(':') {
            Some((name, hex)) => (Some(name.trim().parse::<Algorithm>()?), hex.trim()),
            None => (None, line),
        };
        let bytes = hex::decode(hex).map_err(|e| format!("bad hex digest: {e}"))?;
        let algorithm = match named {
            Some(a) => a,
            None => Algorithm::ALL
                .into_iter()
                .find(|a| a.digest_len() == bytes.len())
                .ok_or_else(|| format!("no algorithm has {}-byte digests", bytes.len()))?,
        };
        if bytes.len() != algorithm.digest_len() {
            return Err(format!(
                "a {algorithm} digest is {} bytes",
                algorithm.digest_len()
            ));
        }
        Ok(AllowEntry::Digest(algorithm, bytes))
    }
}

impl std::fmt::Display for AllowEntry {
    /// The entry as an allow-list line names it (`sha256:HEX`, `pdq:HEX`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowEntry::Digest(a, bytes) => write!(f, "{a}:{}", hex::encode(bytes)),
            AllowEntry::Pdq(hash) => write!(f, "pdq:{}", hex::encode(hash)),
        }
    }
}

impl AllowList {
    /// Reads an allow-list: one `[algorithm:]hex` per line, `#` comments and blank lines
    /// ignored (the digest-list syntax without categories); `pdq:HEX` names a listed PDQ
    /// hash whose matches are not acted on.
    pub fn read(path: &Path) -> Result<AllowList, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut list = AllowList::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = line.parse().map_err(|reason| {
                Error::Config(format!("{}:{}: {reason}", path.display(), n + 1))
            })?;
            list.insert(entry);
        }
        Ok(list)
    }

    /// Adds `entry`; whether it was new.
    pub fn insert(&mut self, entry: AllowEntry) -> bool {
        match entry {
            AllowEntry::Digest(a, bytes) => self.digests.insert((a, bytes)),
            AllowEntry::Pdq(hash) => self.pdq.insert(hash),
        }
    }

    /// Removes `entry`; whether it was there.
    pub fn remove(&mut self, entry: &AllowEntry) -> bool {
        match entry {
            AllowEntry::Digest(a, bytes) => self.digests.remove(&(*a, bytes.clone())),
            AllowEntry::Pdq(hash) => self.pdq.remove(hash),
        }
    }

    /// The entries, sorted by how they are written.
    pub fn entries(&self) -> Vec<AllowEntry> {
        let mut all: Vec<AllowEntry> = self
            .digests
            .iter()
            .map(|(a, b)| AllowEntry::Digest(*a, b.clone()))
            .chain(self.pdq.iter().map(|h| AllowEntry::Pdq(*h)))
            .collect();
        all.sort_by_cached_key(|e| e.to_string());
        all
    }

    /// Whether matches of the listed PDQ hash `listed` are allowed.
    pub fn contains_pdq(&self, listed: &crate::perceptual::PdqHash) -> bool {
        !self.pdq.is_empty() && self.pdq.contains(&listed.0)
    }

    /// Whether the digest is allowed.
    pub fn contains(&self, algorithm: Algorithm, digest: &[u8]) -> bool {
        !self.digests.is_empty() && self.digests.contains(&(algorithm, digest.to_vec()))
    }

    /// Number of digests and PDQ hashes.
    pub fn len(&self) -> usize {
        self.digests.len() + self.pdq.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty() && self.pdq.is_empty()
    }
}
