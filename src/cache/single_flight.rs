//! Request coalescing: concurrent misses for one key make one origin request.
//!
//! The first request for a key becomes the leader and holds a [`FlightGuard`]; later ones get a
//! receiver and wait, with a timeout, for the leader's [`FlightOutcome`]. The guard removes the
//! flight when it completes or is dropped (a panicking or cancelled fetch releases its waiters,
//! who then go to the origin themselves).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::entry::CachedResponse;

/// What a completed fetch tells the requests that waited on it.
#[derive(Debug, Clone)]
pub enum FlightOutcome {
    /// A response was stored; waiters whose `Vary` selection matches may use it.
    Stored(Arc<CachedResponse>),
    /// The response may not be shared (private, no-store, too large...): every waiter goes to
    /// the origin on its own, at once.
    Uncacheable,
    /// The origin could not be reached or answered with an error; waiters may serve stale.
    /// `detail` is the `Cache-Status` detail of the failure (`origin-timeout`, ...);
    /// `unreachable` when no response came from the origin at all (refused, reset, closed,
    /// timed out), which `cache.stale_on_error_seconds` covers.
    Failed {
        status: u16,
        detail: &'static str,
        unreachable: bool,
    },
    /// The leader went away without an outcome (its task was cancelled or panicked): waiters
    /// join again, so exactly one of them fetches next.
    Abandoned,
}

type Slot = watch::Sender<Option<FlightOutcome>>;

/// The table of in-flight fetches.
#[derive(Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
}

/// How a request joined a flight.
pub enum Join {
    Leader(FlightGuard),
    Waiter(watch::Receiver<Option<FlightOutcome>>),
}

impl Flights {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the flight for `key`, starting one if none is in progress.
    pub fn join(&self, key: &str) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(key) {
            return Join::Waiter(tx.subscribe());
        }
        let tx = Arc::new(watch::Sender::new(None));
        map.insert(key.to_owned(), tx.clone());
        Join::Leader(FlightGuard {
            map: self.map.clone(),
            key: key.to_owned(),
            tx,
            done: false,
        })
    }

    /// True when a fetch for `key` is in progress.
    pub fn in_flight(&self, key: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// The number of fetches in progress.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by the leader of a flight.
pub struct FlightGuard {
    map: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
    key: String,
    tx: Arc<Slot>,
    done: bool,
}

impl FlightGuard {
    /// Publishes the outcome and ends the flight. The flight is removed from the table first,
    /// so a request arriving afterwards looks the store up again instead of waiting.
    pub fn complete(mut self, outcome: FlightOutcome) {
        self.remove();
        self.tx.send_replace(Some(outcome));
        self.done = true;
    }

    fn remove(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.key).is_some_and(|t| Arc::ptr_eq(t, &self.tx)) {
            map.remove(&self.key);
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.done {
            self.remove();
            self.tx.send_replace(Some(FlightOutcome::Abandoned));
        }
    }
}

/// Waits for a flight's outcome; [`FlightOutcome::Abandoned`] if the leader vanished without
/// one. Cancel-safe: a caller may wait again on the same receiver after a timeout.
pub async fn wait(rx: &mut watch::Receiver<Option<FlightOutcome>>) -> FlightOutcome {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(FlightOutcome::Abandoned),
        Err(_) => FlightOutcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_waiters_and_release() {
        let f = Flights::new();
        let Join::Leader(g) = f.join("k") else {
            panic!("first is leader")
        };
        let waiters: Vec<_> = (0..5)
            .map(|_| match f.join("k") {
                Join::Waiter(rx) => rx,
                Join::Leader(_) => panic!("second must wait"),
            })
            .collect();
        assert!(f.in_flight("k"));
        g.complete(FlightOutcome::Failed {
            status: 502,
            detail: "origin-unreachable",
            unreachable: true,
        });
        assert!(!f.in_flight("k"), "completed flight is removed");
        for mut rx in waiters {
            assert!(matches!(
                wait(&mut rx).await,
                FlightOutcome::Failed { status: 502, .. }
            ));
        }
        assert!(
            matches!(f.join("k"), Join::Leader(_)),
            "a new flight starts after completion"
        );
    }

    #[tokio::test]
    async fn dropped_leader_releases_waiters() {
        let f = Flights::new();
        let Join::Leader(g) = f.join("k") else {
            panic!()
        };
        let Join::Waiter(mut rx) = f.join("k") else {
            panic!()
        };
        drop(g);
        assert!(matches!(wait(&mut rx).await, FlightOutcome::Abandoned));
        assert!(f.is_empty());
        assert!(
            matches!(f.join("k"), Join::Leader(_)),
            "a waiter leads next"
        );
    }
}
