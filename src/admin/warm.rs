//! `POST /_tierd/warm` (a pass now; token) and `GET /_tierd/warm` (schedule, model, last
//! passes, precision).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{error, refuse, refuse_read, AdminOptions};
use crate::warm::{PassReply, WarmError};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WarmQuery {
    /// Answer when the pass is done, with its summary.
    #[serde(default)]
    wait: bool,
    /// Answer the plan; fetch nothing.
    #[serde(default)]
    dry_run: bool,
}

fn off() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "warming is off: set [warming] enabled = true (TIERD__WARMING__ENABLED=true)",
    )
}

/// `POST /_tierd/warm[?wait=true][&dry_run=true]`.
pub(super) async fn run(req: HttpRequest, opts: web::Data<AdminOptions>) -> HttpResponse {
    if let Some(res) = refuse(&req, &opts) {
        return res;
    }
    let q = match web::Query::<WarmQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the query takes wait=true|false and dry_run=true|false only",
            )
        }
    };
    let Some(warmer) = &opts.warmer else {
        return off();
    };
    match warmer.pass(q.dry_run, q.wait).await {
        Ok(PassReply::Started) => HttpResponse::Accepted().json(json!({
            "started": true,
            "trigger": "demand",
            "see": "GET /_tierd/warm for its summary when it is done",
        })),
        Ok(PassReply::Busy(t)) => error(
            StatusCode::CONFLICT,
            format!(
                "a warm pass is running (trigger {}); see GET /_tierd/warm and ask again when it is done",
                t.as_str()
            ),
        ),
        Ok(PassReply::Done(summary)) => HttpResponse::Ok().json(summary),
        Ok(PassReply::Plan(plan, journal_error)) => HttpResponse::Ok().json(json!({
            "dry_run": true,
            "planned": plan.len(),
            "plan": plan,
            "journal_error": journal_error,
        })),
        Err(e @ WarmError::NotRunning) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e @ WarmError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
    }
}

/// `GET /_tierd/warm`.
pub(super) async fn show(req: HttpRequest, opts: web::Data<AdminOptions>) -> HttpResponse {
    if let Some(res) = refuse_read(&req, &opts) {
        return res;
    }
    match &opts.warmer {
        Some(w) => HttpResponse::Ok().json(w.status()),
        None => HttpResponse::Ok().json(json!({"enabled": false})),
    }
}
