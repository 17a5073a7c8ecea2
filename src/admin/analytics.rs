//! `GET /_tierd/analytics/summary?window=1h|24h|7d`: what the journal says (read token when one
//! is set); `POST /_tierd/analytics/sql`: one read-only query over it (the token always: the
//! rows say who asked for what).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{error, read_body, refuse, refuse_read, AdminOptions};
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
            Err(e) => unreadable(&e, "summary"),
        }
    }
    #[cfg(not(feature = "duckdb"))]
    {
        let _ = (st, q);
        off()
    }
}

/// The 503 for a journal that could not be read, with the reason in the log only.
#[cfg(feature = "duckdb")]
fn unreadable(e: &crate::journal::JournalError, call: &str) -> HttpResponse {
    tracing::error!(error = %e, call, "analytics: the journal could not be read");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the journal could not be read; see the log",
    )
}

fn off() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "the journal is off: set journal.enabled = true",
    )
}

/// Largest SQL request body accepted.
const MAX_SQL_BODY_BYTES: usize = 64 * 1024;
/// Rows answered at most (and by default).
#[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
const MAX_SQL_ROWS: usize = 10_000;

#[derive(Deserialize)]
#[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
struct SqlRequest {
    sql: String,
    limit: Option<usize>,
}

/// `POST /_tierd/analytics/sql` with `{"sql": "SELECT ...", "limit": 100}`: answers
/// `{"columns": [...], "rows": [[...]], "truncated": bool}`, every cell as text (NULL as "").
pub(super) async fn sql(
    req: HttpRequest,
    st: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
    payload: web::Payload,
) -> HttpResponse {
    if opts.token.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "SQL over the journal needs the admin token: set admin.token (or TIERD__ADMIN__TOKEN) and send Authorization: Bearer <token>",
        );
    }
    if let Some(r) = refuse(&req, &opts) {
        return r;
    }
    let body = match read_body(payload, MAX_SQL_BODY_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q: SqlRequest = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{\"sql\": \"SELECT ...\", \"limit\": N}}: {e}"),
            )
        }
    };
    #[cfg(feature = "duckdb")]
    {
        use crate::journal::JournalError;
        let Some(journal) = &st.journal else {
            return off();
        };
        let limit = q.limit.unwrap_or(MAX_SQL_ROWS).min(MAX_SQL_ROWS);
        // One row more than asked tells whether there were more.
        match journal.query(&q.sql, limit + 1).await {
            Ok(mut t) => {
                let truncated = t.rows.len() > limit;
                t.rows.truncate(limit);
                HttpResponse::Ok()
                    .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
                    .json(serde_json::json!({
                        "columns": t.columns,
                        "rows": t.rows,
                        "truncated": truncated,
                    }))
            }
            Err(JournalError::Query(m)) => error(StatusCode::BAD_REQUEST, m),
            Err(e @ JournalError::Timeout(_)) => {
                error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            Err(e) => unreadable(&e, "sql"),
        }
    }
    #[cfg(not(feature = "duckdb"))]
    {
        let _ = (st, q);
        off()
    }
}
