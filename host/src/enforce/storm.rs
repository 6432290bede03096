//! Hit storms: one listed entry hit by many distinct clients in a short time.
//!
//! A storm is either a wrongly listed popular file (in 2021 a hash service flagged
//! WordPress's default images, and every site that used them) or a real wave of a
//! listed file. Both deserve an operator's eyes at once, so a storm raises
//! `hashgate_storms_total`, a warning in the log, and a place among the hottest entries
//! on the admin listener (`/storms`).
//!
//! What a storm *does* is the operator's choice, `on_storm`:
//! - `alert` (the default): nothing changes; the entry still blocks. An attacker who
//!   can make hits from many addresses (a botnet, an IPv6 network) must not be able to
//!   switch blocking off for a listed file by tripping a breaker on purpose, and a real
//!   wave is exactly when blocking matters most.
//! - `monitor`: for `cooldown_secs` after the storm is seen, that one entry's hits are
//!   let through and audited (`"storm":"monitor"`), as if its category were monitored;
//!   for an operator who would rather serve a possibly wrongly listed file than refuse
//!   it to everyone. The canary always blocks.
//!
//! Counting is bounded whatever the traffic: at most `tracked` entries (the busiest
//! stay, as in the Space-Saving top-k algorithm: a new entry replaces the one with the
//! fewest hits that is not storming), and per entry at most `clients` distinct clients
//! per window. A client is its IPv4 address, or its IPv6 /64 network (one subscriber's
//! whole allocation counts once). Only hits are counted: a clean object never takes
//! the lock.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a storm does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStorm {
    /// Alert only; the entry goes on blocking (the default; see the module docs).
    #[default]
    Alert,
    /// Alert, and let the entry's hits through (audited) for the cool-down.
    Monitor,
}

impl OnStorm {
    /// The name the config and audit records use.
    pub fn name(self) -> &'static str {
        match self {
            OnStorm::Alert => "alert",
            OnStorm::Monitor => "monitor",
        }
    }
}

/// The `[storm]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormConfig {
    /// Distinct clients hitting one entry within `window_secs` that make a storm.
    #[serde(default = "default_clients")]
    pub clients: usize,
    /// The window, in seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// What a storm does.
    #[serde(default)]
    pub on_storm: OnStorm,
    /// How long a storm lasts after its threshold was last met, in seconds.
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
    /// Listed entries counted at once.
    #[serde(default = "default_tracked")]
    pub tracked: usize,
}

fn default_clients() -> usize {
    100
}
fn default_window() -> u64 {
    60
}
fn default_cooldown() -> u64 {
    600
}
fn default_tracked() -> usize {
    1024
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            clients: default_clients(),
            window_secs: default_window(),
            on_storm: OnStorm::default(),
            cooldown_secs: default_cooldown(),
            tracked: default_tracked(),
        }
    }
}

/// What [`Storms::observe`] saw of one hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The entry is in a storm.
    pub storming: bool,
    /// This hit started the storm.
    pub started: bool,
    /// Distinct clients of the entry in the current window (up to the threshold).
    pub clients: usize,
}

/// One counted entry, as the admin listener shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HotEntry {
    /// The listed entry (`sha256:HEX`, `pdq:HEX`).
    pub entry: String,
    /// Hits since it was first counted (an overestimate by at most what the entry it
    /// replaced had, as in Space-Saving).
    pub hits: u64,
    /// Distinct clients in the current window (capped at the threshold).
    pub clients: usize,
    /// Whether it is in a storm now.
    pub storming: bool,
    /// When its last storm started (Unix seconds).
    pub storm_started: Option<u64>,
}

/// The counts (see the module docs).
pub struct Storms {
    config: StormConfig,
    table: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    hits: u64,
    window_start: Instant,
    clients: HashSet<u64>,
    storm_until: Option<Instant>,
    storm_started: Option<u64>,
}

impl Storms {
    /// Counts as `config` says.
    pub fn new(config: StormConfig) -> Storms {
        Storms {
            config,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StormConfig {
        &self.config
    }

    /// Counts a hit of `entry` by `client` (an IP address as the front-end names it)
    /// at `now`.
    pub fn observe(&self, entry: &str, client: &str, now: Instant) -> Observation {
        let window = Duration::from_secs(self.config.window_secs);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.contains_key(entry) {
            let floor = if table.len() >= self.config.tracked.max(1) {
                evict(&mut table, now)
            } else {
                0
            };
            table.insert(
                entry.to_string(),
                Entry {
                    hits: floor,
                    window_start: now,
                    clients: HashSet::new(),
                    storm_until: None,
                    storm_started: None,
                },
            );
        }
        let e = table.get_mut(entry).expect("inserted");
        e.hits += 1;
        if now.saturating_duration_since(e.window_start) >= window {
            e.window_start = now;
            e.clients.clear();
        }
        if e.clients.len() < self.config.clients {
            e.clients.insert(client_key(client));
        }
        let was = e.storm_until.is_some_and(|u| u > now);
        let mut started = false;
        if e.clients.len() >= self.config.clients.max(1) {
            e.storm_until = Some(now + Duration::from_secs(self.config.cooldown_secs));
            if !was {
                started = true;
                e.storm_started = Some(unix_now());
            }
        }
        Observation {
            storming: e.storm_until.is_some_and(|u| u > now),
            started,
            clients: e.clients.len(),
        }
    }

    /// The `n` entries with the most hits, busiest first.
    pub fn hottest(&self, n: usize, now: Instant) -> Vec<HotEntry> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let window = Duration::from_secs(self.config.window_secs);
        let mut all: Vec<HotEntry> = table
            .iter()
            .map(|(k, e)| HotEntry {
                entry: k.clone(),
                hits: e.hits,
                clients: if now.saturating_duration_since(e.window_start) < window {
                    e.clients.len()
                } else {
                    0
                },
                storming: e.storm_until.is_some_and(|u| u > now),
                storm_started: e.storm_started,
            })
            .collect();
        all.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.entry.cmp(&b.entry)));
        all.truncate(n);
        all
    }

    /// Entries in a storm now.
    pub fn active(&self, now: Instant) -> usize {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .values()
            .filter(|e| e.storm_until.is_some_and(|u| u > now))
            .count()
    }
}

/// Removes the entry with the fewest hits that is not storming (any, if all are) and
/// returns its count: the newcomer starts from it.
fn evict(table: &mut HashMap<String, Entry>, now: Instant) -> u64 {
    let storming = |e: &Entry| e.storm_until.is_some_and(|u| u > now);
    let victim = table
        .iter()
        .filter(|(_, e)| !storming(e))
        .min_by_key(|(_, e)| e.hits)
        .or_else(|| table.iter().min_by_key(|(_, e)| e.hits))
        .map(|(k, e)| (k.clone(), e.hits));
    match victim {
        Some((key, hits)) => {
            table.remove(&key);
            hits
        }
        None => 0,
    }
}

/// A client as counted: an IPv4 address, an IPv6 /64, or the name as given.
fn client_key(client: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match client.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.hash(&mut h),
        Ok(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.hash(&mut h),
            None => (a.to_bits() >> 64).hash(&mut h),
        },
        Err(_) => client.hash(&mut h),
    }
    h.finish()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storms(clients: usize, tracked: usize) -> Storms {
        Storms::new(StormConfig {
            clients,
            tracked,
            ..StormConfig::default()
        })
    }

    #[test]
    fn many_distinct_clients_make_a_storm_one_client_never_does() {
        let s = storms(5, 16);
        let now = Instant::now();
        for _ in 0..200 {
            assert!(!s.observe("sha256:aa", "10.0.0.1", now).storming);
        }
        let seen: Vec<Observation> = (1..=5)
            .map(|i| s.observe("sha256:bb", &format!("10.0.1.{i}"), now))
            .collect();
        assert!(!seen[3].storming);
        assert!(seen[4].storming && seen[4].started);
        let again = s.observe("sha256:bb", "10.0.1.9", now);
        assert!(again.storming && !again.started);
        assert_eq!(s.active(now), 1);
        let hot = s.hottest(10, now);
        assert_eq!(hot[0].entry, "sha256:aa");
        assert_eq!(
            (hot[0].hits, hot[0].clients, hot[0].storming),
            (200, 1, false)
        );
        assert!(hot[1].storming);
    }

    #[test]
    fn a_storm_ends_after_its_cool_down_and_windows_restart() {
        let s = Storms::new(StormConfig {
            clients: 3,
            window_secs: 60,
            cooldown_secs: 600,
            ..StormConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..3 {
            s.observe("md5:01", &format!("192.0.2.{i}"), t0);
        }
        assert_eq!(s.active(t0 + Duration::from_secs(599)), 1);
        assert_eq!(s.active(t0 + Duration::from_secs(601)), 0);
        // Two clients in one window and one in the next are no storm.
        let t1 = t0 + Duration::from_secs(1000);
        s.observe("md5:02", "192.0.2.1", t1);
        s.observe("md5:02", "192.0.2.2", t1);
        let later = s.observe("md5:02", "192.0.2.3", t1 + Duration::from_secs(61));
        assert!(!later.storming);
        assert_eq!(later.clients, 1);
    }

    #[test]
    fn one_ipv6_network_counts_once() {
        let s = storms(3, 16);
        let now = Instant::now();
        for i in 0..100 {
            let o = s.observe("sha1:ff", &format!("2001:db8:0:1::{i:x}"), now);
            assert!(!o.storming);
        }
        assert_eq!(s.observe("sha1:ff", "::ffff:192.0.2.1", now).clients, 2);
    }

    #[test]
    fn memory_is_bounded_and_storms_are_kept() {
        let s = storms(2, 8);
        let now = Instant::now();
        s.observe("hot", "192.0.2.1", now);
        s.observe("hot", "192.0.2.2", now);
        for i in 0..10_000 {
            s.observe(&format!("e{i}"), "192.0.2.1", now);
        }
        let hot = s.hottest(100, now);
        assert_eq!(hot.len(), 8);
        assert!(hot.iter().any(|h| h.entry == "hot" && h.storming));
    }
}
