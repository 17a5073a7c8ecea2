//! A built-in demo origin: a small assessments API with realistic latencies and ordinary
//! `Cache-Control`, so the quick start needs nothing else. Not for production.
//!
//! - `GET /api/assessments/{id}`: `in_progress` for ~20 s after first sight, then `completed`.
//! - `PUT /api/assessments/{id}` (JSON `{"status": ...}`), `DELETE /api/assessments/{id}`.
//! - `GET /api/dashboard/overview`: aggregate counts.
//! - `GET /api/recommendations/{id}?category=&min_score=`: filterable list.
//! - `GET /api/metrics/report`: a slow (about 1 s) report.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

const IN_PROGRESS_SECONDS: u64 = 20;

#[derive(Default)]
pub struct DemoState {
    assessments: Mutex<HashMap<u64, Assessment>>,
    requests: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct Assessment {
    status: String,
    created: SystemTime,
    updated: SystemTime,
    explicit: bool,
}

async fn latency(min_ms: u64, max_ms: u64) {
    let ms = fastrand::u64(min_ms..=max_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn current(a: &Assessment, now: SystemTime) -> &str {
    if a.explicit {
        return &a.status;
    }
    let age = now.duration_since(a.created).unwrap_or_default().as_secs();
    if age >= IN_PROGRESS_SECONDS {
        "completed"
    } else {
        "in_progress"
    }
}

fn etag_of(body: &str) -> String {
    etag::EntityTag::from_data(body.as_bytes()).to_string()
}

async fn get_assessment(path: web::Path<u64>, state: web::Data<DemoState>) -> HttpResponse {
    state
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    latency(50, 150).await;
    let id = path.into_inner();
    let now = SystemTime::now();
    let a = {
        let mut map = state.assessments.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id)
            .or_insert_with(|| Assessment {
                status: "in_progress".into(),
                created: now,
                updated: now,
                explicit: false,
            })
            .clone()
    };
    if a.status == "deleted" {
        return HttpResponse::NotFound()
            .insert_header((header::CACHE_CONTROL, "public, max-age=10"))
            .json(json!({"error": "not found", "id": id}));
    }
    let status = current(&a, now).to_owned();
    let body = json!({
        "id": id,
        "status": status,
        "score": (id * 37) % 100,
        "updated_at": httpdate::fmt_http_date(a.updated),
    })
    .to_string();
    let max_age = if status == "completed" { 300 } else { 10 };
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={max_age}, stale-while-revalidate=30, stale-if-error=300"),
        ))
        .insert_header((header::ETAG, etag_of(&body)))
        .insert_header((header::LAST_MODIFIED, httpdate::fmt_http_date(a.updated)))
        .insert_header(("Surrogate-Key", format!("assessment:{id} assessments")))
        .body(body)
}

#[derive(Deserialize)]
struct Update {
    status: String,
}

async fn put_assessment(
    path: web::Path<u64>,
    body: web::Bytes,
    state: web::Data<DemoState>,
) -> HttpResponse {
    latency(50, 100).await;
    let id = path.into_inner();
    let Ok(update) = serde_json::from_slice::<Update>(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({"error": "expected JSON {\"status\": \"...\"}"}));
    };
    if !["in_progress", "completed", "failed"].contains(&update.status.as_str()) {
        return HttpResponse::UnprocessableEntity()
            .json(json!({"error": "status must be in_progress, completed or failed"}));
    }
    let now = SystemTime::now();
    let mut map = state.assessments.lock().unwrap_or_else(|p| p.into_inner());
    map.insert(
        id,
        Assessment {
            status: update.status.clone(),
            created: now,
            updated: now,
            explicit: true,
        },
    );
    HttpResponse::Ok().json(json!({"id": id, "status": update.status}))
}

async fn delete_assessment(path: web::Path<u64>, state: web::Data<DemoState>) -> HttpResponse {
    latency(50, 100).await;
    let id = path.into_inner();
    let now = SystemTime::now();
    let mut map = state.assessments.lock().unwrap_or_else(|p| p.into_inner());
    map.insert(
        id,
        Assessment {
            status: "deleted".into(),
            created: now,
            updated: now,
            explicit: true,
        },
    );
    HttpResponse::NoContent().finish()
}

async fn overview(state: web::Data<DemoState>) -> HttpResponse {
    latency(150, 300).await;
    let now = SystemTime::now();
    let (mut in_progress, mut completed, mut failed) = (0, 0, 0);
    for a in state
        .assessments
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
    {
        match current(a, now) {
            "in_progress" => in_progress += 1,
            "completed" => completed += 1,
            "failed" => failed += 1,
            _ => {}
        }
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=30"))
        .json(json!({
            "assessments": {"in_progress": in_progress, "completed": completed, "failed": failed},
            "origin_requests": state.requests.load(std::sync::atomic::Ordering::Relaxed),
            "generated_at": httpdate::fmt_http_date(now),
        }))
}

#[derive(Deserialize)]
struct RecoQuery {
    category: Option<String>,
    min_score: Option<u32>,
}

async fn recommendations(path: web::Path<u64>, q: web::Query<RecoQuery>) -> HttpResponse {
    latency(100, 250).await;
    let id = path.into_inner();
    let categories = ["security", "performance", "cost", "reliability"];
    let items: Vec<_> = (0..12u64)
        .map(|i| {
            let score = ((id + i) * 53 % 100) as u32;
            let category = categories[(i % 4) as usize];
            json!({
                "id": format!("rec-{id}-{i}"),
                "category": category,
                "score": score,
                "summary": format!(
                    "Assessment {id}: the {category} review found item {i} worth acting on; apply the \
                     change in the next maintenance window and run the assessment again to confirm."
                ),
            })
        })
        .filter(|r| q.category.as_deref().is_none_or(|c| r["category"] == c))
        .filter(|r| q.min_score.is_none_or(|m| r["score"].as_u64().unwrap_or(0) >= u64::from(m)))
        .collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=120"))
        .json(json!({"assessment_id": id, "recommendations": items}))
}

async fn report() -> HttpResponse {
    latency(900, 1200).await;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(
            json!({"report": "weekly", "generated_at": httpdate::fmt_http_date(SystemTime::now())}),
        )
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::CACHE_CONTROL, "public, max-age=10"))
        .json(json!({"error": "not found", "path": req.path()}))
}

/// Registers the demo API.
pub fn configure(state: web::Data<DemoState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .route("/api/assessments/{id}", web::get().to(get_assessment))
            .route("/api/assessments/{id}", web::put().to(put_assessment))
            .route("/api/assessments/{id}", web::delete().to(delete_assessment))
            .route("/api/dashboard/overview", web::get().to(overview))
            .route("/api/recommendations/{id}", web::get().to(recommendations))
            .route("/api/metrics/report", web::get().to(report))
            .default_service(web::to(not_found));
    }
}
