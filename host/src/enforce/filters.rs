//! The filters in force: one per authority the operator follows, each in its own guest
//! instance (each authority may ship its own guest, sandboxed from the others).
//!
//! A front-end takes the whole set once per object ([`super::Enforcer::filter`]), hashes
//! with the union of the members' algorithms, and the enforcer checks every member and
//! keeps the strictest outcome. Each feed replaces only its own member, so one
//! authority's update, failure or stale feed leaves the others' filters as they are.

use std::sync::Arc;

use crate::{Algorithm, FilterEngine};

/// One authority's filter in a [`FilterSet`].
#[derive(Clone)]
pub struct Member {
    /// The authority's name (its `[[feed]]` table's `name`); `None` when the
    /// configuration follows a single unnamed filter, as before several were possible.
    pub authority: Option<Arc<str>>,
    /// Its filter.
    pub engine: Arc<FilterEngine>,
    /// Its position in the set, which indexes the enforcer's per-authority rules.
    pub(super) index: usize,
}

impl Member {
    /// The name metrics and `/readyz` use: the authority's, or `default`.
    pub fn label(&self) -> &str {
        self.authority.as_deref().unwrap_or(DEFAULT)
    }
}

/// The name of the single unnamed authority in metrics and `/readyz`.
pub const DEFAULT: &str = "default";

/// The filters in force, one per authority, in configuration order.
#[derive(Clone)]
pub struct FilterSet {
    members: Vec<Member>,
    /// The union of the members' digest algorithms, in [`Algorithm::ALL`] order.
    algorithms: Vec<Algorithm>,
    /// [`FilterSet::label`], made once: every decision names it.
    label: (String, u64),
}

impl FilterSet {
    /// A set of one unnamed filter.
    pub fn single(engine: FilterEngine) -> FilterSet {
        FilterSet::new(vec![(None, Arc::new(engine))])
    }

    /// A set of `(authority, filter)` members, in order.
    pub fn new(members: Vec<(Option<Arc<str>>, Arc<FilterEngine>)>) -> FilterSet {
        let members: Vec<Member> = members
            .into_iter()
            .enumerate()
            .map(|(index, (authority, engine))| Member {
                authority,
                engine,
                index,
            })
            .collect();
        let algorithms = Algorithm::ALL
            .into_iter()
            .filter(|a| {
                members
                    .iter()
                    .any(|m| m.engine.info().algorithms.contains(a))
            })
            .collect();
        let label = match members.as_slice() {
            [only] => (
                only.engine.info().series.clone(),
                only.engine.info().version,
            ),
            _ => {
                let joined: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}@{}", m.engine.info().series, m.engine.info().version))
                    .collect();
                (joined.join("+"), 0)
            }
        };
        FilterSet {
            members,
            algorithms,
            label,
        }
    }

    /// The same set with member `index` holding `engine` (a feed's update).
    pub(super) fn replacing(&self, index: usize, engine: Arc<FilterEngine>) -> FilterSet {
        FilterSet::new(
            self.members
                .iter()
                .map(|m| {
                    let engine = if m.index == index {
                        engine.clone()
                    } else {
                        m.engine.clone()
                    };
                    (m.authority.clone(), engine)
                })
                .collect(),
        )
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The first member: the filter of a configuration that follows one.
    pub fn first(&self) -> &FilterEngine {
        &self.members[0].engine
    }

    /// The digest algorithms to hash an object with: every member's (each member is
    /// given all of them and looks only at its own).
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Whether any member holds PDQ hashes (pictures are then PDQ-hashed).
    pub fn holds_pdq(&self) -> bool {
        self.members.iter().any(|m| m.engine.holds_pdq())
    }

    /// Entries over all members.
    pub fn entries(&self) -> u64 {
        self.members.iter().map(|m| m.engine.info().entries).sum()
    }

    /// The series and version that name the set where one filter is named (refusals
    /// without a hit, catalog rows' `passed_by`, re-check claims): a single member's
    /// own; for several, `series@version` of each joined with `+`, and version 0.
    pub fn label(&self) -> (String, u64) {
        self.label.clone()
    }
}
