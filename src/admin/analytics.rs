//! `GET /_tierd/analytics/summary?window=1h|24h|7d`: what the journal says (read token when one
//! is set).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{error, refuse_read, AdminOptions};
use crate::cache::CacheState;

#[derive(Deserialize)]
#[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
pub(super) struct SummaryQuery {
    window: Option<String>,
}

pub(super) async fn summary(
    req: HttpRequest,
    st: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
    q: web::Query<SummaryQuery>,
) -> HttpResponse {
    if let Some(r) = refuse_read(&req, &opts) {
        return r;
    }
    #[cfg(feature = "duckdb")]
    {
        use crate::journal::Window;
        let Some(journal) = &st.journal else {
            return off();
        };
        let w = q.window.as_deref().unwrap_or("24h");
        let Some(window) = Window::parse(w) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("window '{w}' is not one of 1h, 24h, 7d"),
            );
        };
        match journal.summary(window, journal.now()).await {
            Ok(s) => HttpResponse::Ok()
                .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
                .json(s),
            Err(e) => {
                tracing::error!(error = %e, "analytics summary failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the journal could not be read; see the log",
                )
            }
        }
    }
    #[cfg(not(feature = "duckdb"))]
    {
        let _ = (st, q);
        off()
    }
}

fn off() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "the journal is off: set journal.enabled = true",
    )
}
