//! The value cache (cache-aside): any serde value under a key of the application's choosing,
//! kept in the same tiers as responses (L1, and L2 / L3 when configured), with a TTL, tags,
//! per-key single flight and invalidation by key, tag or prefix on every tier and node.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # async fn example(state: Arc<tierd::cache::CacheState>) {
//! use tierd::cache::{ValueCache, ValueOptions};
//! let values = ValueCache::new(state);
//! // Five concurrent callers: one computation, four readers of its result.
//! let total: u64 = values
//!     .get_or_compute("stats:42", ValueOptions::ttl(Duration::from_secs(7200)).tag("item:42"), || async {
//!         42 // an expensive aggregate
//!     })
//!     .await;
//! values.invalidate_tag("item:42").await;
//! # }
//! ```
//!
//! Values are stored as JSON under a key no HTTP request can produce (its host, `<values>`, is
//! not a valid `Host`, which the guard answers with 400 and key building never yields), so a
//! client can neither read a value through the HTTP cache nor plant a response where a value is
//! expected. A computation's error is returned to its caller and never stored; callers that
//! waited on it then compute in turn. A stored value that no longer decodes as the requested type
//! (the type changed between releases) is a miss, and is replaced.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::entry::{CachedResponse, Retention, Slot};
use super::response_cache::{CacheState, PurgeSource};
use crate::metrics::Lookup;
use crate::selector::{path_tag, Selector};
use crate::store::{TierError, TierName, TierSet};

/// The host of every value key: not a valid `Host` (`<` and `>` are not allowed in one), so no
/// request's key can start with it.
const VALUES_HOST: &str = "<values>";

/// How long a value is kept, and the tags it is purged by.
#[derive(Debug, Clone)]
pub struct ValueOptions {
    ttl: Duration,
    tags: Vec<String>,
}

impl ValueOptions {
    /// Kept for `ttl` (at least one second: freshness is counted in whole seconds).
    pub fn ttl(ttl: Duration) -> Self {
        ValueOptions {
            ttl: ttl.max(Duration::from_secs(1)),
            tags: Vec::new(),
        }
    }

    /// Kept for `secs` seconds.
    pub fn secs(secs: u64) -> Self {
        ValueOptions::ttl(Duration::from_secs(secs))
    }

    /// Also purged by [`ValueCache::invalidate_tag`] with `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

impl From<Duration> for ValueOptions {
    fn from(ttl: Duration) -> Self {
        ValueOptions::ttl(ttl)
    }
}

/// The value cache over a [`CacheState`]'s tiers; cheap to clone.
#[derive(Clone)]
pub struct ValueCache {
    state: Arc<CacheState>,
    /// One lock per key being computed: the first caller computes, the others wait for it and
    /// then find the value stored.
    computing: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl ValueCache {
    /// A value cache over `state`'s tiers ([`Cache::values`](crate::Cache::values) is one).
    pub fn new(state: Arc<CacheState>) -> Self {
        ValueCache {
            state,
            computing: Arc::default(),
        }
    }

    /// The value under `key`, or `compute`'s, which is then stored for `options`' TTL. Concurrent
    /// callers for one key share one computation. A value that cannot be encoded is returned
    /// and not stored (logged).
    pub async fn get_or_compute<T, F, Fut>(
        &self,
        key: &str,
        options: impl Into<ValueOptions>,
        compute: F,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        match self
            .try_get_or_compute(key, options, || async {
                Ok::<T, std::convert::Infallible>(compute().await)
            })
            .await
        {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_compute`](Self::get_or_compute) for a fallible computation: an `Err` is
    /// returned to this caller and nothing is stored (callers waiting on this key then compute
    /// in turn).
    pub async fn try_get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        options: impl Into<ValueOptions>,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = value_key(key);
        if let Some(v) = self.lookup(&key).await {
            return Ok(v);
        }
        let lock = {
            let mut computing = self.computing.lock().unwrap_or_else(|p| p.into_inner());
            computing.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _turn = lock.lock().await;
            // Whoever held the lock before may have stored the value meanwhile.
            match self.lookup_l1(&key) {
                Some(v) => Ok(v),
                None => match compute().await {
                    Ok(v) => {
                        self.store(&key, &v, options.into());
                        Ok(v)
                    }
                    Err(e) => Err(e),
                },
            }
        };
        drop(lock);
        let mut computing = self.computing.lock().unwrap_or_else(|p| p.into_inner());
        if computing
            .get(&key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            computing.remove(&key);
        }
        result
    }

    /// The value under `key`, when one is stored, fresh and of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.lookup(&value_key(key)).await
    }

    /// Stores `value` under `key` on every tier.
    pub fn insert<T: Serialize>(&self, key: &str, value: &T, options: impl Into<ValueOptions>) {
        self.store(&value_key(key), value, options.into());
    }

    /// Removes the value under `key` from every tier of this node and of the others (through
    /// Redis pub/sub when L2 is on). Returns what each tier removed.
    pub async fn invalidate(&self, key: &str) -> Vec<(TierName, Result<u64, TierError>)> {
        let path = value_path(key);
        self.purge(Selector::Url {
            host: Some(VALUES_HOST.into()),
            path,
            query: None,
        })
        .await
    }

    /// Removes every value whose key starts with `prefix`.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Vec<(TierName, Result<u64, TierError>)> {
        self.purge(Selector::Prefix {
            host: Some(VALUES_HOST.into()),
            prefix: value_path(prefix),
        })
        .await
    }

    /// Removes every value stored with `tag` (responses carrying the tag too: tags are shared
    /// with the HTTP cache, so `item:42` can purge a route and the values derived from it).
    pub async fn invalidate_tag(&self, tag: &str) -> Vec<(TierName, Result<u64, TierError>)> {
        self.purge(Selector::Tag(tag.into())).await
    }

    async fn purge(&self, selector: Selector) -> Vec<(TierName, Result<u64, TierError>)> {
        self.state.invalidate(&selector, PurgeSource::Value).await
    }

    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        if let Some(v) = self.lookup_l1(key) {
            return Some(v);
        }
        let st = &self.state;
        if !st.store.has_lower() {
            return None;
        }
        let (slot, tier) = st.store.get_lower(key, TierSet::ALL).await?;
        self.decode(&slot, tier)
    }

    fn lookup_l1<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        match self.state.store.get_l1(key) {
            Some(slot) => self.decode(&slot, TierName::L1),
            None => {
                self.state.metrics.tier(TierName::L1).lookup(Lookup::Miss);
                None
            }
        }
    }

    /// The slot's value, when it is fresh and decodes as `T`; counted in `tier`'s lookups.
    fn decode<T: DeserializeOwned>(&self, slot: &Slot, tier: TierName) -> Option<T> {
        let tm = self.state.metrics.tier(tier);
        let entry = slot.select(&HeaderMap::new());
        let fresh = entry.filter(|e| e.age(self.state.clock.now()) < e.lifetime);
        match fresh.map(|e| serde_json::from_slice::<T>(&e.body)) {
            Some(Ok(v)) => {
                tm.lookup(Lookup::Hit);
                Some(v)
            }
            Some(Err(_)) | None => {
                tm.lookup(Lookup::Miss);
                None
            }
        }
    }

    fn store<T: Serialize>(&self, key: &str, value: &T, options: ValueOptions) {
        let body = match serde_json::to_vec(value) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "value not stored: it cannot be encoded as JSON");
                return;
            }
        };
        let now = self.state.clock.now();
        let mut tags = options.tags;
        if let Some(parts) = crate::policy::KeyParts::parse(key) {
            tags.push(path_tag(parts.path));
        }
        let entry = CachedResponse {
            status: StatusCode::OK,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )]
            .into_boxed_slice(),
            body,
            response_time: now,
            initial_age: 0,
            lifetime: options.ttl.as_secs(),
            stale_while_revalidate: 0,
            stale_if_error: 0,
            encoded: None,
            no_cache: false,
            no_stale: true,
            etag: None,
            origin_etag: false,
            last_modified: None,
            vary: Box::new([]),
            tags: tags.into_boxed_slice(),
        };
        let slot = Slot::single(Arc::new(entry), now, Retention::default());
        self.state
            .store
            .update(key, TierSet::ALL, |_| Some(Arc::new(slot)));
    }
}

/// The path a value key is stored under: `/` and the key, with the bytes that end a key's path
/// in the store (`?`, space) and `%` escaped, so that `a?b` is not the key `a` with a query.
fn value_path(key: &str) -> String {
    let mut path = String::with_capacity(key.len() + 1);
    path.push('/');
    for c in key.chars() {
        match c {
            '%' => path.push_str("%25"),
            '?' => path.push_str("%3F"),
            ' ' => path.push_str("%20"),
            c => path.push(c),
        }
    }
    path
}

fn value_key(key: &str) -> String {
    let mut k = String::from(VALUES_HOST);
    k.push_str(&value_path(key));
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_keys_are_one_path_on_a_host_no_request_can_name() {
        assert!(!crate::http::host::is_valid(VALUES_HOST.as_bytes()));
        let k = value_key("stats:42?x y%");
        assert_eq!(k, "<values>/stats:42%3Fx%20y%25");
        let parts = crate::policy::KeyParts::parse(&k).expect("parts");
        assert_eq!(
            (parts.host, parts.path, parts.query),
            ("<values>", "/stats:42%3Fx%20y%25", "")
        );
    }
}
