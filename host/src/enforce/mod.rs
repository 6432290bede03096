//! The shared verdict core behind every front-end (gateway, ICAP server, scan): turns the
//! guest's verdict into a decision under the operator's policy, writes the audit record
//! and counts the metrics. Front-ends hash and call [`Enforcer::decide`]; they never
//! interpret hits themselves.

pub mod audit;
pub mod metrics;
pub mod policy;

use std::time::Instant;

use crate::{Digest, Error, FilterEngine, Hit, Verdict};

pub use audit::{AuditLog, AuditRecord};
pub use metrics::Metrics;
pub use policy::{Action, AllowList, FailureMode, Policy};

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
    /// The part of the body the object was (a multipart file name), if not the whole.
    pub part: Option<String>,
    /// Where a copy of the body is kept if it is blocked (quarantine), if anywhere.
    pub quarantine: Option<String>,
}

/// The verdict core: one filter, one policy, one audit log, one set of metrics.
pub struct Enforcer {
    engine: FilterEngine,
    policy: Policy,
    audit: Option<AuditLog>,
    metrics: Metrics,
}

impl Enforcer {
    /// Puts the parts together.
    pub fn new(
        engine: FilterEngine,
        policy: Policy,
        audit: Option<AuditLog>,
        metrics: Metrics,
    ) -> Self {
        metrics.set_filter(engine.info());
        Enforcer {
            engine,
            policy,
            audit,
            metrics,
        }
    }

    /// The loaded filter.
    pub fn engine(&self) -> &FilterEngine {
        &self.engine
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The short JSON body every front-end sends with a refusal (451, 503, 408, ...),
    /// naming the request and the filter version that decided.
    pub fn refusal_body(&self, status: u16, reason: &str, request_id: &str) -> String {
        let info = self.engine.info();
        let body = serde_json::json!({
            "status": status,
            "reason": reason,
            "request_id": request_id,
            "filter": {"series": info.series, "version": info.version},
        });
        format!("{body}\n")
    }

    /// Decides on one object: asks the guest, applies the allow-list and the per-category
    /// actions, audits every remaining hit, and counts. Runs on the caller's thread (a
    /// verdict takes about a microsecond).
    pub fn decide(&self, ctx: &Context, digests: &[Digest], size: u64) -> Decision {
        let started = Instant::now();
        let verdict = self.engine.check(digests, size);
        self.metrics.observe_verdict(started.elapsed(), size);
        let hits = match verdict {
            Ok(Verdict::Clean) => Vec::new(),
            Ok(Verdict::Hit(hits)) => hits,
            Err(e) => return self.unavailable(ctx, size, &e),
        };
        let hits: Vec<Hit> = hits
            .into_iter()
            .filter(|h| !self.policy.allow.contains(h.algorithm, &h.bytes))
            .collect();
        let outcome = if hits.is_empty() {
            Outcome::Pass
        } else if hits.iter().any(|h| {
            h.is_canary() || self.policy.action_for(h.category.as_deref()) == Action::Block
        }) {
            Outcome::Block
        } else {
            Outcome::Monitor
        };
        for hit in &hits {
            let action = match outcome {
                Outcome::Block => "block",
                _ => "monitor",
            };
            self.metrics.count_hit(action, hit.is_canary());
            self.write_audit(ctx, size, Some(hit), action);
        }
        Decision { outcome, hits }
    }

    fn unavailable(&self, ctx: &Context, size: u64, error: &Error) -> Decision {
        tracing::error!(request_id = %ctx.request_id, %error, "no verdict");
        if matches!(error, Error::GuestTrap(_)) {
            self.metrics.count_guest_trap();
        }
        let (outcome, action) = match self.policy.on_failure {
            FailureMode::FailClosed => (Outcome::Unavailable, "fail-closed"),
            FailureMode::FailOpen => (Outcome::Pass, "fail-open"),
        };
        self.metrics.count_failure(action);
        self.write_audit(ctx, size, None, action);
        Decision {
            outcome,
            hits: Vec::new(),
        }
    }

    fn write_audit(&self, ctx: &Context, size: u64, hit: Option<&Hit>, action: &str) {
        let Some(audit) = &self.audit else { return };
        let info = self.engine.info();
        let record = AuditRecord::new(ctx, size, hit, action, &info.series, info.version);
        if let Err(e) = audit.append(&record) {
            // An audit failure is loud but does not let anything through: the decision
            // stands either way.
            tracing::error!(error = %e, "writing the audit record failed");
            self.metrics.count_audit_error();
        }
    }
}
