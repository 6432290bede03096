//! Prometheus metrics (text exposition format), shared by every front-end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::FilterInfo;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedOutcomeLabel {
    feed: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedActionLabel {
    feed: String,
    action: String,
}

/// One feed's filter, as its gauges report it.
#[derive(Clone, Debug, Default)]
struct FeedState {
    /// The filter's expiry, or the newest manifest's when the feed vouched for it.
    expires: u64,
    created: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IcapLabel {
    method: String,
    answer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProblemLabel {
    kind: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpoolLabel {
    spool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The outcomes every gateway request ends in.
const REQUEST_OUTCOMES: [&str; 4] = ["passed", "blocked", "refused", "error"];

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    /// The counters of [`REQUEST_OUTCOMES`], resolved once: a request then counts
    /// without a hash-map lookup or a shared lock.
    request_outcomes: [Counter; REQUEST_OUTCOMES.len()],
    icap_transactions: Family<IcapLabel, Counter>,
    inspected_bytes: Counter,
    inspected_objects: Counter,
    hits: Family<ActionLabel, Counter>,
    canaries: Counter,
    failures: Family<ActionLabel, Counter>,
    uninspectable: Family<ProblemLabel, Counter>,
    guest_traps: Counter,
    origin_errors: Counter,
    response_cache_hits: Counter,
    audit_errors: Counter,
    storms: Counter,
    feedback: Family<OutcomeLabel, Counter>,
    storms_active: Gauge,
    verdict_seconds: Histogram,
    filter_version: Gauge,
    filter_expires: AtomicU64,
    filter_created: AtomicU64,
    filter_age: Gauge,
    filter_stale: Gauge,
    /// Each feed's filter, by feed name (the aggregate gauges above are of them all).
    feeds: std::sync::Mutex<std::collections::BTreeMap<String, FeedState>>,
    feed_version: Family<FeedLabel, Gauge>,
    feed_stale: Family<FeedLabel, Gauge>,
    feed_fresh_until: Family<FeedLabel, Gauge>,
    feed_polls: Family<FeedOutcomeLabel, Counter>,
    feed_hits: Family<FeedActionLabel, Counter>,
    feed_updates: Family<OutcomeLabel, Counter>,
    feed_downloads: Family<OutcomeLabel, Counter>,
    confirmations: Family<OutcomeLabel, Counter>,
    feed_apply_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    feed_manifest_expires: Gauge,
    feed_last_success: Gauge,
    catalog_rows: Family<OutcomeLabel, Gauge>,
    catalog_degraded: Gauge,
    retroactive_hits: Family<ActionLabel, Counter>,
    rechecks: Family<OutcomeLabel, Counter>,
    recheck_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    recheck_rows: Gauge,
    in_flight: Gauge,
    tls_reloads: Family<OutcomeLabel, Counter>,
    spool_expired: Family<SpoolLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `hashgate_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hashgate");
        let requests = Family::<OutcomeLabel, Counter>::default();
        let m = Metrics {
            request_outcomes: REQUEST_OUTCOMES.map(|outcome| {
                requests
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.into(),
                    })
                    .clone()
            }),
            requests,
            icap_transactions: Family::default(),
            inspected_bytes: Counter::default(),
            inspected_objects: Counter::default(),
            hits: Family::default(),
            canaries: Counter::default(),
            failures: Family::default(),
            uninspectable: Family::default(),
            guest_traps: Counter::default(),
            origin_errors: Counter::default(),
            response_cache_hits: Counter::default(),
            audit_errors: Counter::default(),
            storms: Counter::default(),
            feedback: Family::default(),
            storms_active: Gauge::default(),
            verdict_seconds: Histogram::new([1e-6, 2e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3, 1e-2]),
            filter_version: Gauge::default(),
            filter_expires: AtomicU64::new(0),
            filter_created: AtomicU64::new(0),
            filter_age: Gauge::default(),
            filter_stale: Gauge::default(),
            feeds: Default::default(),
            feed_version: Family::default(),
            feed_stale: Family::default(),
            feed_fresh_until: Family::default(),
            feed_polls: Family::default(),
            feed_hits: Family::default(),
            feed_updates: Family::default(),
            feed_downloads: Family::default(),
            confirmations: Family::default(),
            feed_apply_seconds: Gauge::default(),
            feed_manifest_expires: Gauge::default(),
            feed_last_success: Gauge::default(),
            catalog_rows: Family::default(),
            catalog_degraded: Gauge::default(),
            retroactive_hits: Family::default(),
            rechecks: Family::default(),
            recheck_seconds: Gauge::default(),
            recheck_rows: Gauge::default(),
            in_flight: Gauge::default(),
            tls_reloads: Family::default(),
            spool_expired: Family::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests by outcome", m.requests.clone());
        registry.register(
            "requests_in_flight",
            "Requests (ICAP transactions) being answered now",
            m.in_flight.clone(),
        );
        registry.register(
            "tls_reloads",
            "TLS certificate reloads on SIGHUP, by outcome (done, failed: the old one kept)",
            m.tls_reloads.clone(),
        );
        registry.register(
            "spool_expired",
            "Abandoned uploads in pieces removed from a spool (s3, tus, nextcloud)",
            m.spool_expired.clone(),
        );
        registry.register(
            "icap_transactions",
            "ICAP transactions by method and answer",
            m.icap_transactions.clone(),
        );
        registry.register(
            "inspected_bytes",
            "Bytes hashed and checked",
            m.inspected_bytes.clone(),
        );
        registry.register(
            "inspected_objects",
            "Objects checked",
            m.inspected_objects.clone(),
        );
        registry.register("hits", "Filter hits by action taken", m.hits.clone());
        registry.register("canary_hits", "Canary files seen", m.canaries.clone());
        registry.register(
            "verdict_failures",
            "Objects without a verdict, by action",
            m.failures.clone(),
        );
        registry.register(
            "uninspectable",
            "Objects the inspection could not look into, by kind and action",
            m.uninspectable.clone(),
        );
        registry.register(
            "guest_traps",
            "Filter guest traps and deadline overruns",
            m.guest_traps.clone(),
        );
        registry.register(
            "origin_errors",
            "Origin connection failures and timeouts",
            m.origin_errors.clone(),
        );
        registry.register(
            "response_cache_hits",
            "Responses decided from cached digests instead of hashing",
            m.response_cache_hits.clone(),
        );
        registry.register(
            "storms",
            "Hit storms seen: one listed entry hit by many distinct clients in a window",
            m.storms.clone(),
        );
        registry.register(
            "feedback_reports",
            "Feedback reports to the authority by outcome (sent, failed attempts)",
            m.feedback.clone(),
        );
        registry.register(
            "storms_active",
            "Listed entries in a hit storm now",
            m.storms_active.clone(),
        );
        registry.register(
            "audit_errors",
            "Audit records that could not be written",
            m.audit_errors.clone(),
        );
        registry.register(
            "verdict_seconds",
            "Time to a verdict, excluding hashing",
            m.verdict_seconds.clone(),
        );
        registry.register(
            "filter_version",
            "Version of the enforced filter",
            m.filter_version.clone(),
        );
        registry.register(
            "filter_age_seconds",
            "Seconds past the filter's creation",
            m.filter_age.clone(),
        );
        registry.register(
            "filter_stale",
            "1 if the enforced filter has expired",
            m.filter_stale.clone(),
        );
        registry.register(
            "feed_filter_version",
            "Version of each feed's filter",
            m.feed_version.clone(),
        );
        registry.register(
            "feed_filter_stale",
            "1 if the feed's filter has expired (its feed vouched for it too long ago)",
            m.feed_stale.clone(),
        );
        registry.register(
            "feed_fresh_until_seconds",
            "When (Unix seconds) each feed's filter goes stale",
            m.feed_fresh_until.clone(),
        );
        registry.register(
            "feed_polls_by_feed",
            "Polls of each feed by outcome: applied, fresher, unchanged, or failed",
            m.feed_polls.clone(),
        );
        registry.register(
            "feed_hits",
            "Hits of each feed's filter by the action the object was given",
            m.feed_hits.clone(),
        );
        registry.register(
            "feed_polls",
            "Feed polls by outcome: applied, fresher, unchanged, or failed",
            m.feed_updates.clone(),
        );
        registry.register(
            "confirmations",
            "Filter hits sent for confirmation, by answer: confirmed, not-listed, confirmation-unavailable",
            m.confirmations.clone(),
        );
        registry.register(
            "feed_apply_seconds",
            "Seconds the last applied feed version took from its manifest to the swap",
            m.feed_apply_seconds.clone(),
        );
        registry.register(
            "feed_downloads",
            "Feed files downloaded and verified, by kind: delta, snapshot, guest",
            m.feed_downloads.clone(),
        );
        registry.register(
            "feed_manifest_expires_seconds",
            "Expiry (Unix seconds) of the newest accepted feed manifest",
            m.feed_manifest_expires.clone(),
        );
        registry.register(
            "feed_last_success_seconds",
            "When (Unix seconds) the feed was last polled successfully",
            m.feed_last_success.clone(),
        );
        registry.register(
            "catalog_rows",
            "Catalog rows since start, by result: written, dropped (queue full), failed (write error)",
            m.catalog_rows.clone(),
        );
        registry.register(
            "catalog_degraded",
            "1 while catalog rows are being lost (queue full, or the last write failed)",
            m.catalog_degraded.clone(),
        );
        registry.register(
            "retroactive_hits",
            "Stored objects a newer filter lists, found by a catalog re-check, by action",
            m.retroactive_hits.clone(),
        );
        registry.register(
            "rechecks",
            "Catalog re-checks by outcome: done, stopped (a newer filter came), failed",
            m.rechecks.clone(),
        );
        registry.register(
            "recheck_seconds",
            "Seconds the last catalog re-check took",
            m.recheck_seconds.clone(),
        );
        registry.register(
            "recheck_rows",
            "Objects and members the last catalog re-check went over",
            m.recheck_rows.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Sets the catalog recorder's counts.
    pub fn set_catalog(&self, stats: &crate::catalog::RecorderStats) {
        for (result, n) in [
            ("written", stats.written),
            ("dropped", stats.dropped),
            ("failed", stats.failed),
        ] {
            self.catalog_rows
                .get_or_create(&OutcomeLabel {
                    outcome: result.into(),
                })
                .set(n as i64);
        }
        self.catalog_degraded.set(stats.degraded as i64);
    }

    /// Whether the catalog is losing rows (for `/readyz`).
    pub fn catalog_is_degraded(&self) -> bool {
        self.catalog_degraded.get() != 0
    }

    /// Counts a stored object found listed by a re-check, by the action taken.
    pub fn count_retroactive(&self, action: &str) {
        self.retroactive_hits
            .get_or_create(&ActionLabel {
                action: action.into(),
            })
            .inc();
    }

    /// Counts a finished re-check: its outcome, time and rows.
    pub fn count_recheck(&self, outcome: &str, took: Duration, rows: u64) {
        self.rechecks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        self.recheck_seconds.set(took.as_secs_f64());
        self.recheck_rows.set(rows as i64);
    }

    /// Counts one poll of `feed` by its outcome (`applied`, `fresher`, `unchanged`,
    /// `failed`).
    pub fn count_feed_poll(&self, feed: &str, outcome: &str) {
        self.feed_polls
            .get_or_create(&FeedOutcomeLabel {
                feed: feed.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.feed_updates
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        if outcome != "failed" {
            self.feed_last_success.set(now() as i64);
        }
    }

    /// Records how long the last applied feed version took, manifest to swap.
    pub fn set_feed_apply(&self, took: Duration) {
        self.feed_apply_seconds.set(took.as_secs_f64());
    }

    /// Counts a confirmation answer by its evidence label.
    pub fn count_confirmation(&self, evidence: &str) {
        self.confirmations
            .get_or_create(&OutcomeLabel {
                outcome: evidence.into(),
            })
            .inc();
    }

    /// Counts a feed file that was downloaded and passed its checks (`delta`,
    /// `snapshot`, `guest`).
    pub fn count_feed_download(&self, kind: &str) {
        self.feed_downloads
            .get_or_create(&OutcomeLabel {
                outcome: kind.into(),
            })
            .inc();
    }

    /// Records the freshness `feed`'s manifest vouches for: with a feed, the filter is
    /// stale when its newest manifest has expired, whatever the snapshot's own expiry.
    pub fn set_fresh_until(&self, feed: &str, expires: u64) {
        self.feed_manifest_expires.set(expires as i64);
        self.with_feed(feed, |state| state.expires = expires);
    }

    /// Records the filter `feed` enforces now. The `first` feed's version is also
    /// `hashgate_filter_version`, for dashboards of a gateway that follows one.
    pub fn set_filter(&self, feed: &str, first: bool, info: &FilterInfo) {
        if first {
            self.filter_version.set(info.version as i64);
        }
        self.feed_version
            .get_or_create(&FeedLabel { feed: feed.into() })
            .set(info.version as i64);
        self.with_feed(feed, |state| {
            state.expires = info.expires;
            state.created = info.created;
        });
    }

    /// Changes `feed`'s state and brings the aggregate gauges up to date: the filters
    /// expire with the first of them to expire, and are as old as the oldest.
    fn with_feed(&self, feed: &str, change: impl FnOnce(&mut FeedState)) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let state = feeds.entry(feed.to_string()).or_default();
        change(state);
        self.feed_fresh_until
            .get_or_create(&FeedLabel { feed: feed.into() })
            .set(state.expires as i64);
        let expires = feeds.values().map(|s| s.expires).min().unwrap_or(0);
        let created = feeds.values().map(|s| s.created).min().unwrap_or(0);
        self.filter_expires.store(expires, Ordering::Relaxed);
        self.filter_created.store(created, Ordering::Relaxed);
    }

    /// Whether any enforced filter has expired.
    pub fn filter_is_stale(&self) -> bool {
        now() >= self.filter_expires.load(Ordering::Relaxed)
    }

    /// The feeds whose filters have expired, by name.
    pub fn stale_feeds(&self) -> Vec<String> {
        let now = now();
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .iter()
            .filter(|(_, s)| now >= s.expires)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Brings each feed's staleness gauge up to date.
    fn refresh_feeds(&self) {
        let now = now();
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        for (name, s) in feeds.iter() {
            self.feed_stale
                .get_or_create(&FeedLabel { feed: name.clone() })
                .set(i64::from(now >= s.expires));
        }
    }

    /// Observes one filter's verdict; `object` is the object's size when it is to be
    /// counted as inspected (once, however many filters check it).
    pub(crate) fn observe_verdict(&self, took: Duration, object: Option<u64>) {
        self.verdict_seconds.observe(took.as_secs_f64());
        if let Some(size) = object {
            self.inspected_objects.inc();
            self.inspected_bytes.inc_by(size);
        }
    }

    pub(crate) fn count_hit(&self, feed: &str, action: &str, canary: bool) {
        self.feed_hits
            .get_or_create(&FeedActionLabel {
                feed: feed.into(),
                action: action.into(),
            })
            .inc();
        self.hits
            .get_or_create(&ActionLabel {
                action: action.into(),
            })
            .inc();
        if canary {
            self.canaries.inc();
        }
    }

    pub(crate) fn count_failure(&self, action: &str) {
        self.failures
            .get_or_create(&ActionLabel {
                action: action.into(),
            })
            .inc();
    }

    pub(crate) fn count_uninspectable(&self, kind: &str, action: &str) {
        self.uninspectable
            .get_or_create(&ProblemLabel {
                kind: kind.into(),
                action: action.into(),
            })
            .inc();
    }

    pub(crate) fn count_guest_trap(&self) {
        self.guest_traps.inc();
    }

    /// Counts a hit storm seen.
    pub fn count_storm(&self) {
        self.storms.inc();
    }

    /// Counts a feedback report sent, or an attempt that failed.
    pub fn count_feedback(&self, outcome: &str) {
        self.feedback
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets how many listed entries are in a storm now.
    pub fn set_storms_active(&self, n: usize) {
        self.storms_active.set(n as i64);
    }

    pub(crate) fn count_audit_error(&self) {
        self.audit_errors.inc();
    }

    /// Counts an origin failure.
    pub fn count_origin_error(&self) {
        self.origin_errors.inc();
    }

    /// Counts a response decided from its cached digests.
    pub fn count_response_cache_hit(&self) {
        self.response_cache_hits.inc();
    }

    /// Counts one ICAP transaction by method and answer (`204`, `blocked`, `cut`, ...).
    pub fn count_icap(&self, method: &str, answer: &str) {
        self.icap_transactions
            .get_or_create(&IcapLabel {
                method: method.into(),
                answer: answer.into(),
            })
            .inc();
    }

    /// Counts a request (ICAP transaction) in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts a TLS certificate reload: `done`, or `failed` (the old one stays).
    pub fn count_tls_reload(&self, outcome: &str) {
        self.tls_reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts `n` abandoned uploads removed from the `spool` (`s3`, `tus`, `nextcloud`).
    pub fn count_spool_expired(&self, spool: &str, n: u64) {
        self.spool_expired
            .get_or_create(&SpoolLabel {
                spool: spool.into(),
            })
            .inc_by(n);
    }

    /// Counts a finished request by its outcome (`pass`, `blocked`, `error`, ...).
    pub fn count_request(&self, outcome: &str) {
        if let Some(i) = REQUEST_OUTCOMES.iter().position(|o| *o == outcome) {
            self.request_outcomes[i].inc();
            return;
        }
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let created = self.filter_created.load(Ordering::Relaxed);
        self.filter_age.set(now().saturating_sub(created) as i64);
        self.filter_stale.set(i64::from(self.filter_is_stale()));
        self.refresh_feeds();
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request counted in `hashgate_requests_in_flight` while this lives
/// ([`Metrics::in_flight`]).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
