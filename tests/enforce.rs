//! The shared verdict core: policy, allow-list, audit records, and what happens when the
//! guest cannot answer.

mod common;

use std::sync::Arc;

use hashgate_guest::Algorithm;
use hashgate_host::enforce::{
    Action, AllowList, AuditLog, Context, Enforcer, FailureMode, Metrics, Outcome, Policy,
};
use hashgate_host::{FilterEngine, Limits, Runtime};

fn enforcer(
    policy: Policy,
    runtime: Arc<Runtime>,
    audit: Option<AuditLog>,
) -> (Enforcer, Vec<u8>, Vec<u8>) {
    let a = common::random_digests(Algorithm::Sha256, 1, 1).remove(0);
    let b = common::random_digests(Algorithm::Sha256, 1, 2).remove(0);
    let body = common::build_body(
        &[
            (Algorithm::Sha256, Some("blocked-cat"), a.clone()),
            (Algorithm::Sha256, Some("watched"), b.clone()),
        ],
        1e-9,
    );
    let engine = FilterEngine::from_verified(runtime, body).unwrap();
    (Enforcer::new(engine, policy, audit, Metrics::new()), a, b)
}

fn ctx() -> Context {
    Context {
        request_id: "r1".into(),
        client: "127.0.0.1".into(),
        method: "PUT".into(),
        host: "h".into(),
        path: "/p".into(),
        part: None,
        layers: None,
        quarantine: None,
    }
}

#[test]
fn actions_per_category_and_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut policy = Policy::default();
    policy.actions.insert("watched".into(), Action::Monitor);
    let (e, a, b) = enforcer(
        policy,
        common::runtime(),
        Some(AuditLog::open(&dir.path().join("audit")).unwrap()),
    );
    let d = |x: &[u8]| vec![common::host_digest(Algorithm::Sha256, x)];
    assert_eq!(
        e.decide(&e.filter(), &ctx(), &d(&a), 10).outcome,
        Outcome::Block
    );
    assert_eq!(
        e.decide(&e.filter(), &ctx(), &d(&b), 10).outcome,
        Outcome::Monitor
    );
    assert_eq!(
        e.decide(&e.filter(), &ctx(), &d(&[0u8; 32]), 10).outcome,
        Outcome::Pass
    );
    let audit = std::fs::read_to_string(dir.path().join("audit")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "block");
    assert_eq!(lines[0]["digest"], hex::encode(&a));
    assert_eq!(lines[1]["action"], "monitor");
    assert_eq!(lines[1]["category"], "watched");

    std::fs::write(
        dir.path().join("allow"),
        format!("# ours\nsha256:{}\n", hex::encode(&a)),
    )
    .unwrap();
    let policy = Policy {
        allow: AllowList::read(&dir.path().join("allow")).unwrap(),
        ..Policy::default()
    };
    let (e, a2, _) = enforcer(policy, common::runtime(), None);
    assert_eq!(a, a2);
    assert_eq!(
        e.decide(&e.filter(), &ctx(), &d(&a), 10).outcome,
        Outcome::Pass
    );
    std::fs::write(dir.path().join("bad"), "sha256:abcd\n").unwrap();
    assert!(AllowList::read(&dir.path().join("bad"))
        .unwrap_err()
        .to_string()
        .contains("bad:1"));
}

#[test]
fn a_guest_that_cannot_answer_fails_closed_or_open_as_configured() {
    // A guest with 2 MiB of memory cannot take a 4 MiB digest list: the call traps.
    let limits = Limits {
        max_memory: 2 << 20,
        max_instances: 4,
        ..Limits::default()
    };
    let runtime = Arc::new(Runtime::new(limits).unwrap());
    let huge = vec![common::host_digest(Algorithm::Sha256, &[0u8; 32]); 200_000];
    let (closed, _, _) = enforcer(Policy::default(), runtime.clone(), None);
    assert_eq!(
        closed.decide(&closed.filter(), &ctx(), &huge, 1).outcome,
        Outcome::Unavailable
    );
    assert!(closed
        .metrics()
        .render()
        .contains("hashgate_guest_traps_total 1"));
    let open = Policy {
        on_failure: FailureMode::FailOpen,
        ..Policy::default()
    };
    let (open, a, _) = enforcer(open, runtime, None);
    assert_eq!(
        open.decide(&open.filter(), &ctx(), &huge, 1).outcome,
        Outcome::Pass
    );
    // And the next object gets a real verdict from a fresh instance.
    let d = vec![common::host_digest(Algorithm::Sha256, &a)];
    assert_eq!(
        open.decide(&open.filter(), &ctx(), &d, 1).outcome,
        Outcome::Block
    );
}
