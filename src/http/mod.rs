//! Pure HTTP caching semantics (RFC 9110, 9111, 9211, 5861): no I/O, no clock reads.
//!
//! Every function here takes the facts it decides on, including `now`, so each rule is covered
//! by a table test that cites its section.

pub mod cache_control;
pub mod cache_status;
pub mod cidr;
pub mod conditional;
pub mod encoding;
pub mod forwarded;
pub mod freshness;
pub mod headers;
pub mod host;
pub mod hygiene;
pub mod range;
pub mod response;
pub mod storable;
pub mod structured;
pub mod target;
pub mod vary;
