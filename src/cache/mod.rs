//! The caching middleware stack.
//!
//! [`CacheHeaders`] (outer) answers client preconditions with 304/412 and adds ETags;
//! [`ResponseCache`] (inner) serves from and fills the tiered store. Wrap both around any
//! actix-web service: the gateway wraps its upstream proxy, an application wraps its handlers.

#[cfg(feature = "redis")]
mod bus;
mod cache_headers;
pub mod codec;
pub mod compress;
mod directive;
pub mod entry;
mod inspect;
pub mod key;
mod metrics;
mod response_cache;
pub mod single_flight;
mod values;
pub mod warm_hook;

#[cfg(feature = "redis")]
pub use bus::Bus;
pub use cache_headers::{CacheHeaders, CacheHeadersService};
pub use directive::CacheDirective;
pub use inspect::{Inspected, Lookup};
pub use metrics::{CacheMetrics, InvalidationMetrics};
pub use response_cache::{
    cache_status_header, CachePolicy, CacheState, GetWithBody, PurgeSource, ResponseCache,
    ResponseCacheService, UpstreamFailure,
};
pub use values::{ValueCache, ValueOptions};
pub use warm_hook::{parse_marker, WarmFetch, WarmHook, WARM_HEADER, WARM_RESULT_HEADER};

pub use crate::http::response::opaque;
