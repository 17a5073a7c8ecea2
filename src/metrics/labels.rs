//! The label enums of tierd's metrics: each variant's string is its label value.

use super::*;

/// What the cache did with a request; feeds the `cache_status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Fresh response from storage.
    Hit,
    /// Stale response from storage while a background refresh runs.
    StaleWhileRevalidate,
    /// Stale response from storage because the origin failed.
    StaleIfError,
    /// Waited for another request's fetch and shared its stored response.
    Collapsed,
    /// Fetched from the origin and stored.
    Miss,
    /// Stale entry validated by the origin with a 304.
    Revalidated,
    /// Fetched from the origin, not stored (uncacheable, bypass, method).
    Pass,
    /// tierd answered with an error of its own (502, 504).
    Error,
    /// Stale response from storage because the origin quota was spent.
    StaleOriginLimited,
    /// Refused with 429 by a client, rule or origin quota.
    RateLimited,
    /// Refused by request hardening (414, 431, 413, 408) before reaching the cache.
    Rejected,
}

impl Outcome {
    pub const COUNT: usize = 11;
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Hit,
        Outcome::StaleWhileRevalidate,
        Outcome::StaleIfError,
        Outcome::Collapsed,
        Outcome::Miss,
        Outcome::Revalidated,
        Outcome::Pass,
        Outcome::Error,
        Outcome::StaleOriginLimited,
        Outcome::RateLimited,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the body came from storage (the origin sent nothing, or only a 304).
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            Outcome::Hit
                | Outcome::StaleWhileRevalidate
                | Outcome::StaleIfError
                | Outcome::Collapsed
                | Outcome::Revalidated
                | Outcome::StaleOriginLimited
        )
    }
}

/// A request method as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "UPPERCASE")]
pub enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    #[strum(serialize = "other")]
    Other,
}

impl MethodLabel {
    pub const COUNT: usize = 8;
    pub const ALL: [MethodLabel; MethodLabel::COUNT] = [
        MethodLabel::Get,
        MethodLabel::Head,
        MethodLabel::Post,
        MethodLabel::Put,
        MethodLabel::Patch,
        MethodLabel::Delete,
        MethodLabel::Options,
        MethodLabel::Other,
    ];

    pub fn of(m: &Method) -> MethodLabel {
        match *m {
            Method::GET => MethodLabel::Get,
            Method::HEAD => MethodLabel::Head,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::PATCH => MethodLabel::Patch,
            Method::DELETE => MethodLabel::Delete,
            Method::OPTIONS => MethodLabel::Options,
            _ => MethodLabel::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A response status as a bounded label: `1xx` … `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum StatusClass {
    #[strum(serialize = "1xx")]
    Informational,
    #[strum(serialize = "2xx")]
    Success,
    #[strum(serialize = "3xx")]
    Redirection,
    #[strum(serialize = "4xx")]
    ClientError,
    #[strum(serialize = "5xx")]
    ServerError,
}

impl StatusClass {
    pub const COUNT: usize = 5;

    pub fn of(status: u16) -> StatusClass {
        match status {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why an entry left a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EvictionCause {
    Expired,
    Size,
    Explicit,
    Replaced,
}

impl EvictionCause {
    pub const ALL: [EvictionCause; 4] = [
        EvictionCause::Expired,
        EvictionCause::Size,
        EvictionCause::Explicit,
        EvictionCause::Replaced,
    ];
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Kinds of origin failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum OriginError {
    Connect,
    Timeout,
    Protocol,
    Body,
    /// The TLS handshake with an `https://` origin failed (its certificate, most often).
    Tls,
    /// The origin answered with a 5xx status.
    #[strum(serialize = "5xx")]
    Status5xx,
}

impl OriginError {
    pub const ALL: [OriginError; 6] = [
        OriginError::Connect,
        OriginError::Timeout,
        OriginError::Protocol,
        OriginError::Body,
        OriginError::Tls,
        OriginError::Status5xx,
    ];
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The `Cache-Status` detail of an error response tierd makes because of this failure.
    pub fn cache_status_detail(self) -> &'static str {
        match self {
            OriginError::Connect => "origin-unreachable",
            OriginError::Timeout => "origin-timeout",
            OriginError::Protocol => "origin-protocol-error",
            OriginError::Body => "origin-body-error",
            OriginError::Tls => "origin-tls-error",
            OriginError::Status5xx => "origin-error",
        }
    }
}

/// A lookup's result in one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Lookup {
    /// A fresh entry.
    Hit,
    /// An entry past its freshness lifetime (served stale, revalidated or refetched).
    Stale,
    Miss,
    /// The tier failed or was skipped (timeout, open circuit, undecodable record): a miss.
    Error,
}

impl Lookup {
    pub const ALL: [Lookup; 4] = [Lookup::Hit, Lookup::Stale, Lookup::Miss, Lookup::Error];
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why a tier operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TierFault {
    Timeout,
    Unavailable,
    CircuitOpen,
    Decode,
}

impl TierFault {
    pub const ALL: [TierFault; 4] = [
        TierFault::Timeout,
        TierFault::Unavailable,
        TierFault::CircuitOpen,
        TierFault::Decode,
    ];
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What became of a write accepted for a lower tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum WriteOutcome {
    Written,
    /// The tier's queue was full; the write was refused before being accepted.
    QueueFull,
    /// Accepted, then the tier failed to store it.
    Failed,
}

impl WriteOutcome {
    pub const ALL: [WriteOutcome; 3] = [
        WriteOutcome::Written,
        WriteOutcome::QueueFull,
        WriteOutcome::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
