//! The shared verdict core behind every front-end (gateway, ICAP server, scan): turns the
//! guest's verdict into a decision under the operator's policy, writes the audit record
//! and counts the metrics. Front-ends hash and call [`Enforcer::decide`]; they never
//! interpret hits themselves.

pub mod audit;
pub mod confirm;
pub mod feedback;
pub mod filters;
pub mod metrics;
pub mod policy;
pub mod retro;
pub mod storm;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::inspect::{PictureHash, Problem, Report, UninspectableAction};
use crate::perceptual::{Dihedral, PdqHash};
use crate::runtime::types::PdqHit;
use crate::{Digest, Error, FilterEngine, Hit, Verdict};

pub use filters::{FilterSet, Member};

pub use audit::{AuditLog, AuditRecord, Ticket};
pub use confirm::{ConfirmConfig, Confirmer, Evidence};
pub use metrics::Metrics;
pub use policy::{Action, Actions, AllowEntry, AllowList, FailureMode, Policy};
pub use storm::{OnStorm, StormConfig, Storms};

/// What the front-end must do with an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing listed: let it through.
    Pass,
    /// Listed, in categories the policy only monitors: let it through (audited).
    Monitor,
    /// Listed (or the canary): refuse it.
    Block,
    /// No verdict could be had (guest trap or deadline) and the policy fails closed.
    Unavailable,
}

impl Outcome {
    /// The stricter of two outcomes (for a body holding several objects): block, then
    /// unavailable, then monitor, then pass.
    pub fn stricter(self, other: Outcome) -> Outcome {
        let rank = |o: &Outcome| match o {
            Outcome::Pass => 0,
            Outcome::Monitor => 1,
            Outcome::Unavailable => 2,
            Outcome::Block => 3,
        };
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

/// A decision and the hits behind it (allow-listed hits removed).
#[derive(Clone, Debug)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// The hits that led to it.
    pub hits: Vec<Hit>,
    /// The PDQ matches that led to it (a picture near a listed one).
    pub pdq: Vec<PdqMatch>,
    /// Whether a blocked object's quarantine copy is to be kept (a block whose evidence
    /// meets what quarantine needs).
    pub quarantine: bool,
}

impl Decision {
    fn pass() -> Decision {
        Decision {
            outcome: Outcome::Pass,
            hits: Vec::new(),
            pdq: Vec::new(),
            quarantine: false,
        }
    }

    /// Adds another filter's decision on the same object: the stricter outcome, every hit.
    fn merge(&mut self, other: Decision) {
        self.outcome = self.outcome.clone().stricter(other.outcome);
        self.hits.extend(other.hits);
        self.pdq.extend(other.pdq);
        self.quarantine |= other.quarantine;
    }
}

/// A picture near a listed PDQ hash: the guest's match, and what the picture was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdqMatch {
    /// The guest's match: the listed hash, the distance, the section's category.
    pub hit: PdqHit,
    /// The picture's hash that was near.
    pub hash: PdqHash,
    /// Which of the picture's transforms it is the hash of.
    pub transform: Dihedral,
    /// The picture's PDQ quality.
    pub quality: u8,
}

/// The decision on a whole inspection report.
#[derive(Clone, Debug)]
pub struct ReportDecision {
    /// What to do with the body: the strictest outcome of its nodes and problems.
    pub outcome: Outcome,
    /// Whether a blocked body's quarantine copy is to be kept.
    pub quarantine: bool,
    /// The nodes that hit, with their hits (allow-listed ones removed).
    pub hits: Vec<ReportHit>,
    /// The report's problems, with what the policy did about each.
    pub problems: Vec<(Problem, UninspectableAction)>,
    /// Whether a hit (not only a problem) blocks.
    blocks_on_hits: bool,
    /// The series and version of the filters that decided ([`FilterSet::label`]; named
    /// in the refusal, even if another filter is in force by the time it is sent).
    pub filter: (String, u64),
}

impl ReportDecision {
    /// Whether the body is refused only because part of it could not be inspected (no
    /// hit blocks): front-ends answer that differently from a listed file (the gateway
    /// with 422, not 451), so a user can tell "listed" from "cannot be checked".
    pub fn uninspectable_only(&self) -> bool {
        self.outcome == Outcome::Block && !self.blocks_on_hits
    }

    /// What every front-end answers for this decision: `None` to let the body through,
    /// else the HTTP status and the refusal's reason. A listed object gets
    /// `block_status` (451, or the ICAP server's configured 403), a body blocked only by
    /// what could not be inspected 422, one without a verdict 503.
    pub fn refusal(&self, block_status: u16) -> Option<(u16, &'static str)> {
        match self.outcome {
            Outcome::Pass | Outcome::Monitor => None,
            Outcome::Block if self.uninspectable_only() => Some((422, "could not be inspected")),
            Outcome::Block => Some((block_status, "listed")),
            Outcome::Unavailable => Some((503, "no verdict could be reached")),
        }
    }
}

impl Default for ReportDecision {
    fn default() -> Self {
        ReportDecision {
            outcome: Outcome::Pass,
            quarantine: false,
            hits: Vec::new(),
            problems: Vec::new(),
            blocks_on_hits: false,
            filter: (String::new(), 0),
        }
    }
}

impl ReportDecision {
    fn deciding(filter: &FilterSet) -> ReportDecision {
        ReportDecision {
            filter: filter.label(),
            ..ReportDecision::default()
        }
    }

    fn add(&mut self, member: &Member, ctx: &Context, size: u64, decision: Decision) {
        self.blocks_on_hits |= decision.outcome == Outcome::Block;
        self.outcome = self.outcome.clone().stricter(decision.outcome);
        self.quarantine |= decision.quarantine;
        if !decision.hits.is_empty() || !decision.pdq.is_empty() {
            let info = member.engine.info();
            self.hits.push(ReportHit {
                authority: member.authority.as_deref().map(str::to_string),
                filter: (info.series.clone(), info.version),
                member: ctx.part.clone(),
                layers: ctx.layers.clone(),
                size,
                hits: decision.hits,
                pdq: decision.pdq,
            });
        }
    }
}

/// The audit context of `node`: its member path below the body's, its layers. The
/// root (the body as sent, the only node of most uploads) is decided under `ctx` as it
/// is, without a copy.
fn node_context<'c>(ctx: &'c Context, node: &crate::inspect::Node) -> Cow<'c, Context> {
    if node.is_root() {
        return Cow::Borrowed(ctx);
    }
    Cow::Owned(Context {
        part: node
            .member_label()
            .map(|m| join_member(ctx.part.as_deref(), &m))
            .or_else(|| ctx.part.clone()),
        layers: Some(node.layers_label()),
        ..ctx.clone()
    })
}

/// A node of a report that hit.
#[derive(Clone, Debug)]
pub struct ReportHit {
    /// The authority whose filter it hit, when the operator follows named ones.
    pub authority: Option<String>,
    /// The series and version of that filter.
    pub filter: (String, u64),
    /// Its member path (see [`AuditRecord::part`]), if not the whole body.
    pub member: Option<String>,
    /// Its layers, if not the body as sent.
    pub layers: Option<String>,
    /// Its decoded size.
    pub size: u64,
    /// The hits.
    pub hits: Vec<Hit>,
    /// The PDQ matches, if it is a picture near a listed one.
    pub pdq: Vec<PdqMatch>,
}

fn refusal_value(
    status: u16,
    reason: &str,
    request_id: &str,
    filter: (&str, u64),
) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "reason": reason,
        "request_id": request_id,
        "filter": {"series": filter.0, "version": filter.1},
    })
}

/// A member path below `outer` (a multipart part's name, when the context is one).
fn join_member(outer: Option<&str>, member: &str) -> String {
    match outer {
        Some(outer) => format!("{outer}!{member}"),
        None => member.to_string(),
    }
}

/// Who sent an object and where it was going: the audit record's context.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Request id, also returned to the client.
    pub request_id: String,
    /// Client address.
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Host header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// The member of the body the object was (see [`AuditRecord::part`]), if not the
    /// whole.
    pub part: Option<String>,
    /// The layers down to the object (`gzip>tar>file`), if not the body as sent.
    pub layers: Option<String>,
    /// Where a copy of the body is kept if it is blocked (quarantine), if anywhere.
    pub quarantine: Option<String>,
}

/// The verdict core: the filters in force, one per authority (each replaceable while
/// serving), one policy, one audit log, one set of metrics.
pub struct Enforcer {
    filter: ArcSwap<FilterSet>,
    /// Per authority, in the set's order: its own actions and confirmation.
    authorities: Vec<Authority>,
    /// Whether any category (the policy's or an authority's) is given `quarantine`:
    /// then only those keep their copies ([`Enforcer::keeps_copy`]).
    quarantine_by_category: bool,
    /// Counts filter swaps, for whoever re-checks stored objects on each.
    swaps: tokio::sync::watch::Sender<u64>,
    policy: Policy,
    audit: Option<AuditLog>,
    metrics: Metrics,
    storms: Storms,
    /// Allow-list entries added through the admin listener, and the file they are kept in.
    local: std::sync::RwLock<AllowList>,
    local_path: Option<std::path::PathBuf>,
    /// Hits per entry for each authority's feedback report, where one is sent.
    tallies: Vec<Option<feedback::Tally>>,
}

/// One authority the operator follows, as [`Enforcer::with_authorities`] takes it.
pub struct AuthorityFilter {
    /// Its name (its `[[feed]]` table's), in audit records, metrics and refusals.
    pub name: String,
    /// Its filter.
    pub engine: FilterEngine,
    /// Its own category actions, if it has any (else the policy's).
    pub actions: Option<Actions>,
}

/// What is the enforcer's own for one authority.
#[derive(Default)]
struct Authority {
    actions: Option<Actions>,
    confirm: Option<Confirmation>,
}

/// Confirmation of hits: the rules, the client, where reports go.
struct Confirmation {
    rules: ConfirmConfig,
    confirmer: Confirmer,
    reports: Option<AuditLog>,
}

impl Enforcer {
    /// Puts the parts together, for one unnamed filter.
    pub fn new(
        engine: FilterEngine,
        policy: Policy,
        audit: Option<AuditLog>,
        metrics: Metrics,
    ) -> Self {
        Enforcer::of_set(
            FilterSet::single(engine),
            vec![Authority::default()],
            policy,
            audit,
            metrics,
        )
    }

    /// Puts the parts together, for several named authorities: an object is checked
    /// against each one's filter, and the strictest outcome wins.
    ///
    /// Fails when `authorities` is empty or two share a name.
    pub fn with_authorities(
        authorities: Vec<AuthorityFilter>,
        policy: Policy,
        audit: Option<AuditLog>,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        if authorities.is_empty() {
            return Err(Error::Config("no authority to follow".into()));
        }
        let mut names = std::collections::HashSet::new();
        let mut members = Vec::new();
        let mut own = Vec::new();
        for a in authorities {
            if !names.insert(a.name.clone()) {
                return Err(Error::Config(format!("two feeds are named {:?}", a.name)));
            }
            members.push((Some(Arc::from(a.name.as_str())), Arc::new(a.engine)));
            own.push(Authority {
                actions: a.actions,
                confirm: None,
            });
        }
        Ok(Enforcer::of_set(
            FilterSet::new(members),
            own,
            policy,
            audit,
            metrics,
        ))
    }

    fn of_set(
        set: FilterSet,
        authorities: Vec<Authority>,
        policy: Policy,
        audit: Option<AuditLog>,
        metrics: Metrics,
    ) -> Self {
        for m in set.members() {
            metrics.set_filter(m.label(), m.index == 0, m.engine.info());
        }
        let quarantine_by_category = policy.names_quarantine()
            || authorities
                .iter()
                .any(|a| a.actions.as_ref().is_some_and(Actions::names_quarantine));
        Enforcer {
            filter: ArcSwap::from_pointee(set),
            authorities,
            quarantine_by_category,
            swaps: tokio::sync::watch::Sender::new(0),
            policy,
            audit,
            metrics,
            storms: Storms::new(StormConfig::default()),
            local: Default::default(),
            local_path: None,
            tallies: Vec::new(),
        }
    }

    /// Counts hits per listed entry for feedback reports ([`feedback::report`]).
    /// For the first (or only) authority; see [`Enforcer::with_feedback_tally_for`].
    pub fn with_feedback_tally(self) -> Self {
        self.with_feedback_tally_for(0)
    }

    /// Counts the hits of the authority at `index`'s filter for its feedback reports.
    pub fn with_feedback_tally_for(mut self, index: usize) -> Self {
        if self.tallies.len() <= index {
            self.tallies.resize_with(index + 1, || None);
        }
        self.tallies[index] = Some(feedback::Tally::default());
        self
    }

    /// The audit log's last checkpoint line, if it signs them (see
    /// [`AuditLog::last_checkpoint`]).
    pub fn last_checkpoint(&self) -> Option<String> {
        self.audit.as_ref()?.last_checkpoint()
    }

    /// The feedback tally of the authority at `index`, if its hits are counted for
    /// reports.
    pub fn tally(&self, index: usize) -> Option<&feedback::Tally> {
        self.tallies.get(index)?.as_ref()
    }

    /// The allow-list entries in force (the file's and the admin listener's) that the
    /// feedback report to the authority at `index` names: all of them when the operator
    /// follows that one authority; of several, only those its filter lists (its false
    /// positives: another authority's are not its business).
    pub fn allowed_entries_of(&self, index: usize) -> Vec<String> {
        let set = self.filter.load();
        let Some(member) = set.members().get(index) else {
            return Vec::new();
        };
        let mut all: Vec<AllowEntry> = self.policy.allow.entries();
        all.extend(self.local_allow_list());
        let one = member.authority.is_none();
        let mut listed: Vec<String> = all
            .into_iter()
            .filter(|e| {
                one || match e {
                    AllowEntry::Digest(algorithm, bytes) => {
                        let digest = Digest {
                            algorithm: *algorithm,
                            bytes: bytes.clone(),
                        };
                        matches!(member.engine.check(&[digest], 0), Ok(Verdict::Hit(_)))
                    }
                    AllowEntry::Pdq(hash) => member
                        .engine
                        .check_pdq(&[PdqHash(*hash)])
                        .is_ok_and(|hits| hits.iter().any(|h| h.listed.0 == *hash)),
                }
            })
            .map(|e| e.to_string())
            .collect();
        listed.sort();
        listed.dedup();
        listed
    }

    /// Counts hit storms as `config` says (see [`storm`]).
    pub fn with_storms(mut self, config: StormConfig) -> Self {
        self.storms = Storms::new(config);
        self
    }

    /// Keeps the allow-list entries added through the admin listener in `path` (loaded
    /// now if it exists, rewritten atomically on every change), so they outlive a
    /// restart.
    ///
    /// Fails when the file exists and cannot be read or holds a bad line.
    pub fn with_local_allow_list(mut self, path: std::path::PathBuf) -> Result<Self, Error> {
        if path.exists() {
            self.local = std::sync::RwLock::new(AllowList::read(&path)?);
        }
        self.local_path = Some(path);
        Ok(self)
    }

    /// The hit-storm counts.
    pub fn storms(&self) -> &Storms {
        &self.storms
    }

    /// The allow-list entries added through the admin listener.
    pub fn local_allow_list(&self) -> Vec<AllowEntry> {
        self.local
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries()
    }

    /// Adds (`add`) or removes an entry of the local allow-list, in force for the
    /// next object; kept in the local allow-list file if one is configured (the change
    /// is undone if it cannot be written). Returns whether anything changed and
    /// whether it persists.
    pub fn change_local_allow_list(
        &self,
        entry: AllowEntry,
        add: bool,
    ) -> Result<(bool, bool), Error> {
        let mut list = self.local.write().unwrap_or_else(|p| p.into_inner());
        let changed = if add {
            list.insert(entry.clone())
        } else {
            list.remove(&entry)
        };
        let Some(path) = &self.local_path else {
            return Ok((changed, false));
        };
        if changed {
            let mut text = String::from(
                "# Allow-list entries added through hashgate's admin listener. Rewritten on each change.\n",
            );
            for e in list.entries() {
                text.push_str(&format!("{e}\n"));
            }
            if let Err(e) = crate::durable::write_atomically(path, text.as_bytes()) {
                if add {
                    list.remove(&entry);
                } else {
                    list.insert(entry);
                }
                return Err(e.into());
            }
        }
        tracing::warn!(entry = %entry, add, "local allow-list changed through the admin listener");
        Ok((changed, true))
    }

    fn allows(&self, algorithm: crate::Algorithm, digest: &[u8]) -> bool {
        self.policy.allow.contains(algorithm, digest)
            || self
                .local
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(algorithm, digest)
    }

    fn allows_pdq(&self, listed: &PdqHash) -> bool {
        self.policy.allow.contains_pdq(listed)
            || self
                .local
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_pdq(listed)
    }

    /// Counts a hit of `entry` by the request's client (for storms, and for feedback
    /// when it is sent); `Some(on_storm)` when the entry is in a storm. The storm's
    /// start is logged and counted once.
    fn storm(&self, member: &Member, ctx: &Context, entry: &str) -> Option<OnStorm> {
        let now = Instant::now();
        if let Some(tally) = self.tally(member.index) {
            tally.count(entry);
        }
        let seen = self.storms.observe(entry, &ctx.client, now);
        if seen.started {
            let c = self.storms.config();
            self.metrics.count_storm();
            tracing::warn!(entry, clients = seen.clients, window_secs = c.window_secs,
                on_storm = ?c.on_storm, "hit storm: one listed entry hit by many distinct clients");
        }
        if seen.started || seen.storming {
            self.metrics.set_storms_active(self.storms.active(now));
        }
        seen.storming.then_some(self.storms.config().on_storm)
    }

    /// Brings the gauges computed from state (storms in force) up to date, before the
    /// metrics are read.
    pub fn refresh_gauges(&self) {
        self.metrics
            .set_storms_active(self.storms.active(Instant::now()));
    }

    /// Confirms hits with the authority's range API under `rules` (see
    /// [`Enforcer::decide_confirmed`]); reports go to `rules.report_log`, its chain
    /// signed as `checkpoints` says (the audit log's key, when one is configured).
    /// For the first (or only) authority; see [`Enforcer::with_confirmation_for`].
    pub fn with_confirmation(
        self,
        rules: ConfirmConfig,
        checkpoints: Option<audit::Checkpoints>,
    ) -> Result<Self, Error> {
        self.with_confirmation_for(0, rules, checkpoints)
    }

    /// [`Enforcer::with_confirmation`] for the authority at `index` (its hits are
    /// confirmed with its own range API).
    pub fn with_confirmation_for(
        mut self,
        index: usize,
        rules: ConfirmConfig,
        checkpoints: Option<audit::Checkpoints>,
    ) -> Result<Self, Error> {
        if index >= self.authorities.len() {
            return Err(Error::Config(format!(
                "no authority {index} to confirm with"
            )));
        }
        let confirmer = Confirmer::new(&rules)?;
        let reports = rules
            .report_log
            .as_deref()
            .map(|path| AuditLog::open_signed(path, checkpoints))
            .transpose()?;
        self.authorities[index].confirm = Some(Confirmation {
            rules,
            confirmer,
            reports,
        });
        Ok(self)
    }

    /// What confirmation says of `hit` before a re-check acts on a stored object: its
    /// evidence (`None` when confirmation is not configured or asks about nothing),
    /// and whether an action that `needs` what the `[confirm]` rules say is taken on it
    /// (a `delete` needs what blocking does, a `quarantine` what quarantine does).
    pub async fn confirm_stored(
        &self,
        member: &Member,
        hit: &Hit,
        needs: fn(&ConfirmConfig) -> confirm::Needs,
    ) -> (Option<Evidence>, bool) {
        let Some(c) = self.confirmation(member).filter(|c| c.rules.asks()) else {
            return (None, true);
        };
        let evidence = c.confirmer.confirm(hit.algorithm, &hit.bytes).await;
        self.metrics.count_confirmation(evidence.label());
        (Some(evidence), c.rules.takes(needs(&c.rules), evidence))
    }

    /// The filters in force now. A front-end takes them when an object's first byte
    /// arrives, hashes for their algorithms, and decides with them: an object is judged
    /// by the filters it started under even if a new one is swapped in meanwhile.
    pub fn filter(&self) -> Arc<FilterSet> {
        self.filter.load_full()
    }

    /// Puts `engine` in force as the first (or only) authority's filter; see
    /// [`Enforcer::swap_member`].
    pub fn swap_filter(&self, engine: FilterEngine) -> Arc<FilterEngine> {
        self.swap_member(0, engine)
    }

    /// Puts `engine` in force as the filter of the authority at `index`, for every
    /// object that starts from now on, atomically, and returns the one it replaces
    /// (objects already under way keep it until they end). The other authorities'
    /// filters stay as they are.
    ///
    /// # Panics
    /// When there is no authority at `index` (a feed is only ever started for one).
    pub fn swap_member(&self, index: usize, engine: FilterEngine) -> Arc<FilterEngine> {
        let engine = Arc::new(engine);
        let label = self.authority_label(index);
        self.metrics.set_filter(&label, index == 0, engine.info());
        let old = self.filter.rcu(|set| set.replacing(index, engine.clone()));
        self.swaps.send_modify(|n| *n += 1);
        old.members()[index].engine.clone()
    }

    /// The name of the authority at `index` in metrics and `/readyz`.
    pub fn authority_label(&self, index: usize) -> String {
        self.filter.load().members()[index].label().to_string()
    }

    fn confirmation(&self, member: &Member) -> Option<&Confirmation> {
        self.authorities.get(member.index)?.confirm.as_ref()
    }

    /// Whether a blocked object whose hit takes `action` keeps its quarantine copy:
    /// every blocked one, unless some category (of any authority) is given
    /// `quarantine`; then only those.
    fn keeps_copy(&self, action: Action) -> bool {
        action == Action::Quarantine || (action == Action::Block && !self.quarantine_by_category)
    }

    fn action_for(&self, member: &Member, category: Option<&str>) -> Action {
        match self
            .authorities
            .get(member.index)
            .and_then(|a| a.actions.as_ref())
        {
            Some(actions) => actions.action_for(category),
            None => self.policy.action_for(category),
        }
    }

    /// Changes each time [`Enforcer::swap_filter`] puts a new filter in force (the
    /// catalog's background re-check waits on it).
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }

    /// Whether the allow-list exempts `hit`'s digest.
    pub fn allowed(&self, hit: &Hit) -> bool {
        self.allows(hit.algorithm, &hit.bytes)
    }

    /// Appends `record` (a stored object found listed by a re-check) to the audit log
    /// and waits until it is durable.
    pub async fn audit_record(&self, record: &AuditRecord) {
        let mut pending = Pending::default();
        self.write(self.audit.as_ref(), record, &mut pending);
        self.wait(pending).await;
    }

    /// Makes the audit log and the confirmation report log reopen their paths (after
    /// logrotate renamed them; see [`AuditLog::reopen`]).
    pub fn reopen_logs(&self) {
        if let Some(audit) = &self.audit {
            audit.reopen();
        }
        for a in &self.authorities {
            if let Some(reports) = a.confirm.as_ref().and_then(|c| c.reports.as_ref()) {
                reports.reopen();
            }
        }
    }

    /// Closes the audit log and the confirmation report logs ([`AuditLog::close`]):
    /// what is queued is written and the chains signed. For a server that has stopped.
    pub fn close_logs(&self) {
        if let Some(audit) = &self.audit {
            audit.close();
        }
        for a in &self.authorities {
            if let Some(reports) = a.confirm.as_ref().and_then(|c| c.reports.as_ref()) {
                reports.close();
            }
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The short JSON body every front-end sends with a refusal (451, 503, 408, ...),
    /// naming the request and the filter version that decided.
    pub fn refusal_body(&self, status: u16, reason: &str, request_id: &str) -> String {
        let (series, version) = self.filter.load().label();
        let body = refusal_value(status, reason, request_id, (&series, version));
        format!("{body}\n")
    }

    /// [`Enforcer::refusal_body`] for a decided body: it names the filter that decided
    /// (`decision.filter`), not the one in force now.
    /// The body also names the member that hit (`upload.zip!photos/a.jpg`) and its
    /// layers, when the object refused was not the body as sent.
    pub fn decided_refusal_body(
        &self,
        decision: &ReportDecision,
        status: u16,
        reason: &str,
        request_id: &str,
    ) -> String {
        let hit = decision
            .hits
            .iter()
            .find(|h| h.member.is_some() || h.layers.is_some());
        // A named authority's hit names it and its filter (the list that hit).
        let named = decision.hits.iter().find(|h| h.authority.is_some());
        let (series, version) = named.map_or(&decision.filter, |h| &h.filter);
        let mut body = refusal_value(status, reason, request_id, (series, *version));
        if let Some(named) = named {
            body["authority"] = named.authority.clone().into();
        }
        if let Some(hit) = hit {
            body["member"] = hit.member.clone().into();
            body["layers"] = hit.layers.clone().into();
        }
        format!("{body}\n")
    }

    /// Decides on one object with `filter` (from [`Enforcer::filter`] when the object
    /// started): asks the guest, applies the allow-list and the per-category actions,
    /// audits every remaining hit, and counts. Never asks the confirmer: every hit is a
    /// filter hit (the scanner's path). Runs on the caller's thread (a verdict takes
    /// about a microsecond).
    pub fn decide(
        &self,
        filter: &FilterSet,
        ctx: &Context,
        digests: &[Digest],
        size: u64,
    ) -> Decision {
        let mut pending = Pending::default();
        let mut decision = Decision::pass();
        for member in filter.members() {
            decision.merge(self.decide_queued(member, ctx, digests, size, &mut pending));
        }
        self.wait_blocking(pending);
        decision
    }

    /// [`Enforcer::decide`] with its audit records queued in `pending`, not yet waited for.
    fn decide_queued<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        digests: &[Digest],
        size: u64,
        pending: &mut Pending<'a>,
    ) -> Decision {
        match self.hits(filter, ctx, digests, size, pending) {
            Ok(hits) => {
                let evidence = vec![Evidence::FilterHit; hits.len()];
                self.settle(filter, ctx, size, hits, &evidence, pending)
            }
            Err(decision) => decision,
        }
    }

    /// Like [`Enforcer::decide`], and when confirmation is configured and an action
    /// waits for it, first asks the authority about each (non-canary) hit. What each
    /// action then does follows `[confirm]`: e.g. block on the filter hit, but keep the
    /// quarantine copy and write the report only for a confirmed match.
    pub async fn decide_confirmed(
        &self,
        filter: &FilterSet,
        ctx: &Context,
        digests: &[Digest],
        size: u64,
    ) -> Decision {
        let mut pending = Pending::default();
        let mut decision = Decision::pass();
        for member in filter.members() {
            decision.merge(
                self.decide_confirmed_queued(member, ctx, digests, size, &mut pending)
                    .await,
            );
        }
        self.wait(pending).await;
        decision
    }

    /// [`Enforcer::decide_confirmed`] with its audit records queued in `pending`.
    async fn decide_confirmed_queued<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        digests: &[Digest],
        size: u64,
        pending: &mut Pending<'a>,
    ) -> Decision {
        let hits = match self.hits(filter, ctx, digests, size, pending) {
            Ok(hits) => hits,
            Err(decision) => return decision,
        };
        let mut evidence = vec![Evidence::FilterHit; hits.len()];
        if let Some(c) = self.confirmation(filter).filter(|c| c.rules.asks()) {
            for (hit, e) in hits.iter().zip(&mut evidence) {
                if !hit.is_canary() {
                    *e = c.confirmer.confirm(hit.algorithm, &hit.bytes).await;
                    self.metrics.count_confirmation(e.label());
                }
            }
        }
        self.settle(filter, ctx, size, hits, &evidence, pending)
    }

    /// Decides on every node of an inspection's report and on each of its problems:
    /// the strictest outcome wins, and every hit is audited with the member it was in
    /// (`ctx.part`, from the body down) and its layers. A problem is the operator's
    /// `uninspectable` choice for its kind, audited either way. Never asks the
    /// confirmer (the scanner's path; see [`Enforcer::decide_report_confirmed`]).
    pub fn decide_report(
        &self,
        filter: &FilterSet,
        ctx: &Context,
        report: &Report,
    ) -> ReportDecision {
        let mut verdict = ReportDecision::deciding(filter);
        let mut pending = Pending::default();
        for node in &report.nodes {
            let node_ctx = node_context(ctx, node);
            for m in filter.members() {
                let decision =
                    self.decide_queued(m, &node_ctx, &node.digests, node.size, &mut pending);
                verdict.add(m, &node_ctx, node.size, decision);
                if let Some(picture) = node.picture.as_ref().filter(|_| m.engine.holds_pdq()) {
                    let decision =
                        self.decide_picture(m, &node_ctx, node.size, picture, &mut pending);
                    verdict.add(m, &node_ctx, node.size, decision);
                }
            }
        }
        self.decide_problems(filter, ctx, report, &mut verdict, &mut pending);
        self.wait_blocking(pending);
        verdict
    }

    /// [`Enforcer::decide_report`], asking the confirmer about hits as
    /// [`Enforcer::decide_confirmed`] does.
    pub async fn decide_report_confirmed(
        &self,
        filter: &FilterSet,
        ctx: &Context,
        report: &Report,
    ) -> ReportDecision {
        let mut verdict = ReportDecision::deciding(filter);
        let mut pending = Pending::default();
        for node in &report.nodes {
            let node_ctx = node_context(ctx, node);
            for m in filter.members() {
                let decision = self
                    .decide_confirmed_queued(m, &node_ctx, &node.digests, node.size, &mut pending)
                    .await;
                verdict.add(m, &node_ctx, node.size, decision);
                if let Some(picture) = node.picture.as_ref().filter(|_| m.engine.holds_pdq()) {
                    let decision = self
                        .decide_picture_confirmed(m, &node_ctx, node.size, picture, &mut pending)
                        .await;
                    verdict.add(m, &node_ctx, node.size, decision);
                }
            }
        }
        self.decide_problems(filter, ctx, report, &mut verdict, &mut pending);
        self.wait(pending).await;
        verdict
    }

    /// Decides on a picture's PDQ without asking the confirmer (the scanner's path): see
    /// [`Enforcer::settle_pdq`].
    fn decide_picture<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        size: u64,
        picture: &PictureHash,
        pending: &mut Pending<'a>,
    ) -> Decision {
        match self.pdq_matches(filter, picture) {
            Ok(matches) => {
                let evidence = vec![Evidence::FilterHit; matches.len()];
                self.settle_pdq(filter, ctx, size, matches, &evidence, pending)
            }
            Err(e) => self.unavailable(filter, ctx, size, &e, pending),
        }
    }

    /// [`Enforcer::decide_picture`], first asking the confirmer whether the authority
    /// still lists each matched hash, when confirmation is configured and an action
    /// waits for it.
    async fn decide_picture_confirmed<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        size: u64,
        picture: &PictureHash,
        pending: &mut Pending<'a>,
    ) -> Decision {
        let matches = match self.pdq_matches(filter, picture) {
            Ok(matches) => matches,
            Err(e) => return self.unavailable(filter, ctx, size, &e, pending),
        };
        let mut evidence = vec![Evidence::FilterHit; matches.len()];
        if let Some(c) = self.confirmation(filter).filter(|c| c.rules.asks()) {
            for (m, e) in matches.iter().zip(&mut evidence) {
                *e = c.confirmer.confirm_pdq(&m.hit.listed).await;
                self.metrics.count_confirmation(e.label());
            }
        }
        self.settle_pdq(filter, ctx, size, matches, &evidence, pending)
    }

    /// The listed PDQ hashes near `picture`, allow-listed ones removed, one match per
    /// listed hash (the nearest of the picture's transforms). A picture of quality below
    /// [`MIN_QUALITY`](crate::perceptual::pdq::MIN_QUALITY) matches nothing, as Meta
    /// advises.
    fn pdq_matches(&self, filter: &Member, picture: &PictureHash) -> Result<Vec<PdqMatch>, Error> {
        let pdq = &picture.pdq;
        if pdq.quality < crate::perceptual::pdq::MIN_QUALITY {
            return Ok(Vec::new());
        }
        let hashes: Vec<PdqHash> = pdq.hashes.iter().map(|(_, h)| *h).collect();
        let mut matches: Vec<PdqMatch> = Vec::new();
        for hit in filter.engine.check_pdq(&hashes)? {
            if self.allows_pdq(&hit.listed) {
                continue;
            }
            let (transform, hash) = pdq.hashes[hit.query];
            let m = PdqMatch {
                hit,
                hash,
                transform,
                quality: pdq.quality,
            };
            match matches.iter_mut().find(|o| o.hit.listed == m.hit.listed) {
                Some(o) if o.hit.distance > m.hit.distance => *o = m,
                Some(_) => {}
                None => matches.push(m),
            }
        }
        Ok(matches)
    }

    /// Turns PDQ matches and their evidence into the decision: each takes its category's
    /// action (blocking as `[confirm] block` says, like a digest), audited with the
    /// distance, the picture's quality and the transform that matched. A perceptual
    /// match is weaker evidence than a digest, so its quarantine copy and its report to
    /// the authority always need a confirmed match, whatever `[confirm]` says for
    /// digests; without a confirmer it keeps neither.
    fn settle_pdq<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        size: u64,
        matches: Vec<PdqMatch>,
        evidence: &[Evidence],
        pending: &mut Pending<'a>,
    ) -> Decision {
        let rules = self.confirmation(filter).map(|c| &c.rules);
        let mut outcome = Outcome::Pass;
        let mut quarantine = false;
        let storms: Vec<Option<OnStorm>> = matches
            .iter()
            .map(|m| self.storm(filter, ctx, &format!("pdq:{}", m.hit.listed.to_hex())))
            .collect();
        for ((m, &e), storm) in matches.iter().zip(evidence).zip(&storms) {
            let chosen = self.action_for(filter, m.hit.category.as_deref());
            let blocks = chosen.blocks()
                && rules.is_none_or(|r| r.takes(r.block, e))
                && *storm != Some(OnStorm::Monitor);
            outcome = outcome.stricter(if blocks {
                Outcome::Block
            } else {
                Outcome::Monitor
            });
            // Only a confirmer answers `Confirmed`, and a confirmed match meets any need.
            quarantine |= blocks && self.keeps_copy(chosen) && e == Evidence::Confirmed;
        }
        let action = match outcome {
            Outcome::Block => "block",
            _ => "monitor",
        };
        for ((m, &e), storm) in matches.iter().zip(evidence).zip(&storms) {
            self.metrics.count_hit(filter.label(), action, false);
            tracing::info!(request_id = %ctx.request_id, listed = %m.hit.listed.to_hex(),
                distance = m.hit.distance, quality = m.quality, action, "PDQ match");
            let mut record = self.record(filter, ctx, size, None, action);
            record.algorithm = Some("pdq".into());
            record.digest = Some(m.hit.listed.to_hex());
            record.category = m.hit.category.clone();
            record.storm = storm.map(OnStorm::name);
            record.evidence = Some(match e {
                Evidence::FilterHit => "perceptual",
                e => e.label(),
            });
            if !quarantine {
                record.quarantine = None;
            }
            record.pdq = Some(serde_json::json!({
                "hash": m.hash.to_hex(),
                "transform": m.transform.name(),
                "quality": m.quality,
                "distance": m.hit.distance,
                "threshold": m.hit.threshold,
            }));
            self.write(self.audit.as_ref(), &record, pending);
            if let Some(c) = self
                .confirmation(filter)
                .filter(|_| e == Evidence::Confirmed)
            {
                self.write(c.reports.as_ref(), &record, pending);
            }
        }
        Decision {
            outcome,
            hits: Vec::new(),
            pdq: matches,
            quarantine,
        }
    }

    fn decide_problems<'a>(
        &'a self,
        filter: &FilterSet,
        ctx: &Context,
        report: &Report,
        verdict: &mut ReportDecision,
        pending: &mut Pending<'a>,
    ) {
        for problem in &report.problems {
            let action = self.uninspectable(filter, ctx, problem, pending);
            if action == UninspectableAction::Block {
                verdict.outcome = verdict.outcome.clone().stricter(Outcome::Block);
            }
            verdict.problems.push((problem.clone(), action));
        }
    }

    /// Applies the `uninspectable` policy to `problem`: audited and counted, then
    /// `Block` or `Pass`.
    fn uninspectable<'a>(
        &'a self,
        filter: &FilterSet,
        ctx: &Context,
        problem: &Problem,
        pending: &mut Pending<'a>,
    ) -> UninspectableAction {
        let outcome = self.policy.uninspectable.action(problem.kind);
        let action = match outcome {
            UninspectableAction::Block => "uninspectable-block",
            UninspectableAction::Pass => "uninspectable-pass",
        };
        self.metrics
            .count_uninspectable(problem.kind.name(), action);
        tracing::info!(request_id = %ctx.request_id, %problem, action, "object not inspectable");
        let problem_ctx = Context {
            part: problem
                .member_label()
                .map(|m| join_member(ctx.part.as_deref(), &m))
                .or_else(|| ctx.part.clone()),
            layers: Some(problem.layers_label()),
            ..ctx.clone()
        };
        let (series, version) = filter.label();
        let mut record = AuditRecord::new(&problem_ctx, 0, None, action, &series, version);
        record.problem = Some(format!("{}: {}", problem.kind.name(), problem.detail));
        self.write(self.audit.as_ref(), &record, pending);
        outcome
    }

    /// The guest's hits, allow-listed ones removed; or the decision when there is no
    /// verdict.
    fn hits<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        digests: &[Digest],
        size: u64,
        pending: &mut Pending<'a>,
    ) -> Result<Vec<Hit>, Decision> {
        let started = Instant::now();
        let verdict = filter.engine.check(digests, size);
        // An object is counted once, however many filters check it.
        let counted = (filter.index == 0).then_some(size);
        self.metrics.observe_verdict(started.elapsed(), counted);
        let hits = match verdict {
            Ok(Verdict::Clean) => Vec::new(),
            Ok(Verdict::Hit(hits)) => hits,
            Err(e) => return Err(self.unavailable(filter, ctx, size, &e, pending)),
        };
        Ok(hits
            .into_iter()
            .filter(|h| !self.allows(h.algorithm, &h.bytes))
            .collect())
    }

    /// Turns hits and their evidence into the decision, audits and reports them.
    fn settle<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        size: u64,
        hits: Vec<Hit>,
        evidence: &[Evidence],
        pending: &mut Pending<'a>,
    ) -> Decision {
        let rules = self.confirmation(filter).map(|c| &c.rules);
        let takes = |needs: fn(&ConfirmConfig) -> confirm::Needs, e: Evidence| {
            rules.is_none_or(|r| r.takes(needs(r), e))
        };
        let mut outcome = Outcome::Pass;
        let mut quarantine = false;
        let mut blocked = vec![false; hits.len()];
        let storms: Vec<Option<OnStorm>> = hits
            .iter()
            .map(|h| {
                let entry = format!("{}:{}", h.algorithm.name(), hex::encode(&h.bytes));
                (!h.is_canary())
                    .then(|| self.storm(filter, ctx, &entry))
                    .flatten()
            })
            .collect();
        for (((hit, &e), blocks), storm) in hits.iter().zip(evidence).zip(&mut blocked).zip(&storms)
        {
            let chosen = match hit.is_canary() {
                true => Action::Block,
                false => self.action_for(filter, hit.category.as_deref()),
            };
            *blocks = hit.is_canary()
                || (chosen.blocks() && takes(|r| r.block, e) && *storm != Some(OnStorm::Monitor));
            outcome = outcome.stricter(if *blocks {
                Outcome::Block
            } else {
                Outcome::Monitor
            });
            quarantine |= *blocks && self.keeps_copy(chosen) && takes(|r| r.quarantine, e);
        }
        let action = match outcome {
            Outcome::Block => "block",
            _ => "monitor",
        };
        for ((hit, &e), storm) in hits.iter().zip(evidence).zip(&storms) {
            self.metrics
                .count_hit(filter.label(), action, hit.is_canary());
            let mut record = self.record(filter, ctx, size, Some(hit), action);
            record.evidence = Some(e.label());
            record.storm = storm.map(OnStorm::name);
            if !quarantine {
                record.quarantine = None;
            }
            self.write(self.audit.as_ref(), &record, pending);
            if let Some(c) = self.confirmation(filter) {
                // A report names someone to an authority: unlike blocking and
                // quarantine, it never goes ahead on an unanswered confirmation.
                let reported = match c.rules.report {
                    confirm::Needs::FilterHit => true,
                    confirm::Needs::Confirmed => e == Evidence::Confirmed,
                };
                if !hit.is_canary() && reported {
                    self.write(c.reports.as_ref(), &record, pending);
                }
            }
        }
        Decision {
            outcome,
            hits,
            pdq: Vec::new(),
            quarantine,
        }
    }

    fn unavailable<'a>(
        &'a self,
        filter: &Member,
        ctx: &Context,
        size: u64,
        error: &Error,
        pending: &mut Pending<'a>,
    ) -> Decision {
        tracing::error!(request_id = %ctx.request_id, %error, "no verdict");
        if matches!(error, Error::GuestTrap(_)) {
            self.metrics.count_guest_trap();
        }
        let (outcome, action) = match self.policy.on_failure {
            FailureMode::FailClosed => (Outcome::Unavailable, "fail-closed"),
            FailureMode::FailOpen => (Outcome::Pass, "fail-open"),
        };
        self.metrics.count_failure(action);
        let record = self.record(filter, ctx, size, None, action);
        self.write(self.audit.as_ref(), &record, pending);
        Decision {
            outcome,
            hits: Vec::new(),
            pdq: Vec::new(),
            quarantine: false,
        }
    }

    fn record(
        &self,
        filter: &Member,
        ctx: &Context,
        size: u64,
        hit: Option<&Hit>,
        action: &str,
    ) -> AuditRecord {
        let info = filter.engine.info();
        let mut record = AuditRecord::new(ctx, size, hit, action, &info.series, info.version);
        record.authority = filter.authority.as_deref().map(str::to_string);
        record
    }

    /// Queues `record` in `log` (if there is one); `pending` waits for it.
    fn write<'a>(
        &self,
        log: Option<&'a AuditLog>,
        record: &AuditRecord,
        pending: &mut Pending<'a>,
    ) {
        if let Some(log) = log {
            pending.0.push((log, log.append(record)));
        }
    }

    /// Waits until every record `pending` holds is fsynced: a decision is answered only
    /// after its records are durable. Records of one log commit in order, so waiting
    /// for each is waiting for the batch.
    async fn wait(&self, pending: Pending<'_>) {
        for (log, ticket) in pending.0 {
            let written = log.committed(ticket).await;
            self.audited(written);
        }
    }

    /// [`Enforcer::wait`] on a thread that may block.
    fn wait_blocking(&self, pending: Pending<'_>) {
        for (log, ticket) in pending.0 {
            let written = log.wait(ticket);
            self.audited(written);
        }
    }

    fn audited(&self, written: Result<(), Error>) {
        if let Err(e) = written {
            // An audit failure is loud but does not let anything through: the decision
            // stands either way.
            tracing::error!(error = %e, "writing the audit record failed");
            self.metrics.count_audit_error();
        }
    }
}

/// The audit records one decision has queued, each with its log.
#[derive(Default)]
struct Pending<'a>(Vec<(&'a AuditLog, Ticket)>);
