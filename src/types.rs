//! Small shared types at the bottom of the house: they import nothing of tierd's.

use actix_web::http::StatusCode;

/// A storage tier's name; the same string is the `tier` metric label and `Cache-Status` detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TierName {
    L1,
    L2,
    L3,
}

impl TierName {
    pub const ALL: [TierName; 3] = [TierName::L1, TierName::L2, TierName::L3];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why a request was refused; the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Rejection {
    UriTooLong,
    TooManyHeaders,
    HeadersTooLarge,
    BodyTooLarge,
    BodyTimeout,
    /// The body broke off or was malformed (a bad chunk, the connection closed early).
    BadBody,
    /// No valid `Host`: missing in HTTP/1.1, sent twice, or not a `host[:port]`.
    BadHost,
}

impl Rejection {
    pub const ALL: [Rejection; 7] = [
        Rejection::BadHost,
        Rejection::UriTooLong,
        Rejection::TooManyHeaders,
        Rejection::HeadersTooLarge,
        Rejection::BodyTooLarge,
        Rejection::BodyTimeout,
        Rejection::BadBody,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn status(self) -> StatusCode {
        match self {
            Rejection::UriTooLong => StatusCode::URI_TOO_LONG,
            Rejection::TooManyHeaders | Rejection::HeadersTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BadHost | Rejection::BadBody => StatusCode::BAD_REQUEST,
        }
    }
}
