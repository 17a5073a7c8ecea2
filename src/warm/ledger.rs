//! Whether warming paid: every entry a warm fetch stored is remembered until it expires;
//! the first client served from it counts it used, one that expires unserved counts wasted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dashmap::DashMap;

use super::metrics::WarmMetrics;

struct Warmed {
    /// Unix seconds the entry stops being fresh.
    until: u64,
    /// Set by the first client served (under the map's read lock: hits do not serialise).
    used: AtomicBool,
}

/// The warmed entries of this node.
#[derive(Default)]
pub struct Ledger {
    map: DashMap<u64, Warmed>,
    len: AtomicUsize,
}

fn hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

impl Ledger {
    /// A warm fetch stored `key`, fresh until `until`. An unused entry it replaces is wasted.
    pub fn add(&self, key: &str, until: u64, metrics: &WarmMetrics) {
        let old = self.map.insert(
            hash(key),
            Warmed {
                until,
                used: AtomicBool::new(false),
            },
        );
        match old {
            Some(w) if !w.used.load(Ordering::Relaxed) => metrics.wasted.inc(),
            Some(_) => {}
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A client is being served `key` from a stored entry: true when a warm fetch stored it.
    #[inline]
    pub fn served(&self, key: &str, metrics: &WarmMetrics) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        match self.map.get(&hash(key)) {
            Some(w) => {
                if !w.used.swap(true, Ordering::Relaxed) {
                    metrics.used.inc();
                }
                true
            }
            None => false,
        }
    }

    /// Forgets entries no longer fresh at `now`; those never served are wasted.
    pub fn sweep(&self, now: u64, metrics: &WarmMetrics) {
        let mut removed = 0;
        self.map.retain(|_, w| {
            if w.until > now {
                return true;
            }
            if !w.used.load(Ordering::Relaxed) {
                metrics.wasted.inc();
            }
            removed += 1;
            false
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
    }

    /// Warmed entries remembered now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_serve_counts_used_and_an_unserved_expiry_counts_wasted() {
        let m = WarmMetrics::register(&prometheus::Registry::new());
        let l = Ledger::default();
        assert!(!l.served("h/a", &m));
        l.add("h/a", 100, &m);
        l.add("h/b", 100, &m);
        l.add("h/c", 300, &m);
        assert!(l.served("h/a", &m));
        assert!(l.served("h/a", &m));
        assert_eq!(m.used.get(), 1);
        l.sweep(100, &m);
        assert_eq!((m.wasted.get(), l.len()), (1, 1)); // h/b wasted, h/a used
        assert!(!l.served("h/a", &m));
        // Warmed again before anyone used it: the first warm was wasted.
        l.add("h/c", 400, &m);
        assert_eq!(m.wasted.get(), 2);
        assert_eq!(l.len(), 1);
    }
}
