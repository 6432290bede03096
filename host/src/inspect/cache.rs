//! Reports of objects seen whole, by URL and strong ETag, for a bounded time.
//!
//! The download paths keep them: the gateway's response mode so a hot object is not
//! hashed again on every request, the ICAP server's RESPMOD so a partial response (`206`)
//! can be judged by the whole object it is part of. Digests are cached, not verdicts:
//! every request is still decided by the filter and policy in force, and audited.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Report;

/// Which object a report is of: one representation of one URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// The URL (host and path with query, or the path the origin was asked for).
    pub url: String,
    /// Its strong `ETag`, quotes included (a weak one does not identify the bytes).
    pub etag: String,
    /// Its length in bytes, when known.
    pub length: Option<u64>,
}

/// Cached reports and when they were made, with the keys in insertion order.
#[derive(Default)]
struct Entries {
    map: HashMap<ObjectKey, (Report, Instant)>,
    order: VecDeque<ObjectKey>,
}

/// Reports of recently seen objects (see the module docs).
pub struct DigestCache {
    inner: Mutex<Entries>,
    capacity: usize,
    ttl: Duration,
}

impl DigestCache {
    /// A cache of at most `capacity` entries (0: none kept), each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> DigestCache {
        DigestCache {
            inner: Mutex::new(Entries::default()),
            capacity,
            ttl,
        }
    }

    /// The report of `key`'s object, if seen within the time kept.
    pub fn get(&self, key: &ObjectKey) -> Option<Report> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(report, _)| report.clone())
    }

    /// Keeps `report` as `key`'s, the oldest entry going when full.
    pub fn insert(&self, key: ObjectKey, report: Report) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Entries { map, order } = &mut *inner;
        // Oldest first out; an entry re-inserted keeps its old place (it ages out sooner).
        while map.len() >= self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
        if map.insert(key.clone(), (report, Instant::now())).is_none() {
            order.push_back(key);
        }
    }
}

/// A strong `ETag` value, or `None` for a weak or missing one.
pub fn strong_etag(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|e| e.starts_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> ObjectKey {
        ObjectKey {
            url: format!("/o/{n}"),
            etag: "\"e\"".into(),
            length: Some(n),
        }
    }

    #[test]
    fn entries_are_bounded_oldest_out_and_expire() {
        let cache = DigestCache::new(2, Duration::from_secs(60));
        for n in 0..3 {
            cache.insert(key(n), Report::plain(n, Vec::new()));
        }
        assert!(cache.get(&key(0)).is_none());
        assert_eq!(cache.get(&key(2)).unwrap().root().unwrap().size, 2);
        let expired = DigestCache::new(2, Duration::ZERO);
        expired.insert(key(1), Report::default());
        assert!(expired.get(&key(1)).is_none());
        assert_eq!(strong_etag(Some("W/\"x\"")), None);
        assert_eq!(strong_etag(Some(" \"x\" ")), Some("\"x\""));
    }
}
