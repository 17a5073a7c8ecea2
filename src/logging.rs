//! The gateway's log output: `log.level` as a static filter; text or JSON lines; and the request
//! a line belongs to.
//!
//! Every line logged while a request is handled names it (`request{method="GET" path="/x"}:` in
//! text, `"span": {"name": "request", "method": "GET", "path": "/x"}` in JSON), as a `request`
//! span would. It is not a `tracing` span: creating, entering and closing a span and formatting
//! its fields for the registry cost a tenth of an L1 hit's CPU, for lines that are almost never
//! written. [`InRequest`] keeps the request in a thread-local while its future is polled (a
//! pointer swap), and the line formatter reads it only when a line is written. Where tierd's
//! formatter is not installed (an application with its own subscriber), [`Observe`] opens a real
//! `request` span instead.
//!
//! [`Observe`]: crate::observe::Observe

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use actix_web::http::{Method, Uri};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The log line format (`log.format`).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber: `format` lines at `level` (`RUST_LOG`, when set, wins).
pub fn init(format: LogFormat, level: &str) {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    // `log.level` in its usual forms ("info", "info,tierd::access=debug") is a static filter,
    // decided once per call site: nothing is evaluated per request or per span. RUST_LOG, or a
    // directive only EnvFilter understands (span and field filters), gets an EnvFilter.
    let filter: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> =
        match std::env::var("RUST_LOG") {
            Ok(env) if !env.is_empty() => {
                Box::new(EnvFilter::try_new(&env).unwrap_or_else(|_| EnvFilter::new(level)))
            }
            _ => match level.parse::<Targets>() {
                Ok(targets) => Box::new(targets),
                Err(_) => {
                    Box::new(EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")))
                }
            },
        };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_span_events(FmtSpan::NONE);
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => Box::new(
            fmt.fmt_fields(JsonFields::new())
                .event_format(LineFormat { json: true }),
        ),
        LogFormat::Text => Box::new(
            fmt.fmt_fields(PlainFields)
                .event_format(LineFormat { json: false }),
        ),
    };
    REQUEST_CONTEXT.store(true, Ordering::Release);
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
}

/// Set once tierd's line formatter is installed: lines then name their request from
/// [`InRequest`], and no `request` span is needed.
static REQUEST_CONTEXT: AtomicBool = AtomicBool::new(false);

/// True when log lines take their request from [`InRequest`] (tierd's formatter is installed).
pub fn request_context_installed() -> bool {
    REQUEST_CONTEXT.load(Ordering::Acquire)
}

/// The request a line belongs to.
#[derive(Debug)]
pub struct RequestContext {
    method: Method,
    uri: Uri,
}

impl RequestContext {
    pub fn new(method: Method, uri: Uri) -> Rc<Self> {
        Rc::new(RequestContext { method, uri })
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RequestContext>>> = const { RefCell::new(None) };
}

/// The request being handled on this thread, if any.
pub fn current_request() -> Option<Rc<RequestContext>> {
    CURRENT
        .try_with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
        .ok()
        .flatten()
}

pin_project_lite::pin_project! {
    /// A future whose log lines belong to a request: the request is current while it is polled.
    pub struct InRequest<F> {
        request: Option<Rc<RequestContext>>,
        #[pin]
        inner: F,
    }
}

impl<F> InRequest<F> {
    pub fn new(request: Option<Rc<RequestContext>>, inner: F) -> Self {
        InRequest { request, inner }
    }

    /// `inner` in the request current now (a task spawned while handling it).
    pub fn current(inner: F) -> Self {
        InRequest::new(current_request(), inner)
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = Entered::enter(this.request.clone());
        this.inner.poll(cx)
    }
}

/// Runs `f` with `request` current (when there is one).
pub fn with_request<R>(request: &Option<Rc<RequestContext>>, f: impl FnOnce() -> R) -> R {
    match request {
        Some(r) => {
            let _current = Entered::enter(Some(r.clone()));
            f()
        }
        None => f(),
    }
}

/// Restores the previous request when a poll ends (or unwinds).
struct Entered(Option<Rc<RequestContext>>);

impl Entered {
    fn enter(request: Option<Rc<RequestContext>>) -> Self {
        let previous = CURRENT
            .try_with(|c| {
                c.try_borrow_mut()
                    .map(|mut c| std::mem::replace(&mut *c, request))
            })
            .ok()
            .and_then(Result::ok)
            .flatten();
        Entered(previous)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = CURRENT.try_with(|c| c.try_borrow_mut().map(|mut c| *c = previous));
    }
}

/// One line per event: `TIME LEVEL request{..}: span{..}: fields` in text, or one JSON object
/// (`timestamp`, `level`, `fields`, and `span` / `spans` as tracing's JSON format has them).
struct LineFormat {
    json: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let request = current_request();
        if self.json {
            return json_line(ctx, w, event, request.as_deref());
        }
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} ", event.metadata().level())?;
        if let Some(r) = &request {
            w.write_str("request{method=")?;
            quoted(&mut w, r.method.as_str())?;
            w.write_str(" path=")?;
            quoted(&mut w, r.uri.path())?;
            w.write_str("}: ")?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                w.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>().filter(|f| !f.is_empty()) {
                    write!(w, "{{{f}}}")?;
                }
                w.write_str(": ")?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// `s` between quotes, as `{:?}` prints it (written directly when nothing needs escaping).
fn quoted(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    if needs_no_escape(s) {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        write!(w, "{s:?}")
    }
}

fn json_line<S, N>(
    ctx: &FmtContext<'_, S, N>,
    mut w: Writer<'_>,
    event: &Event<'_>,
    request: Option<&RequestContext>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    use serde_json::{Map, Value};
    let mut time = String::new();
    SystemTime.format_time(&mut Writer::new(&mut time))?;
    let mut fields = Map::new();
    event.record(&mut JsonVisitor(&mut fields));
    let mut spans = Vec::new();
    if let Some(r) = request {
        let mut span = Map::new();
        span.insert("method".into(), r.method.as_str().into());
        span.insert("path".into(), r.uri.path().into());
        span.insert("name".into(), "request".into());
        spans.push(Value::Object(span));
    }
    if let Some(scope) = ctx.event_scope() {
        for span in scope.from_root() {
            let ext = span.extensions();
            let mut obj = ext
                .get::<FormattedFields<N>>()
                .and_then(|f| serde_json::from_str::<Map<String, Value>>(f).ok())
                .unwrap_or_default();
            obj.insert("name".into(), span.name().into());
            spans.push(Value::Object(obj));
        }
    }
    let mut line = Map::new();
    line.insert("timestamp".into(), time.into());
    line.insert("level".into(), event.metadata().level().as_str().into());
    line.insert("fields".into(), Value::Object(fields));
    if let Some(last) = spans.last() {
        line.insert("span".into(), last.clone());
        line.insert("spans".into(), Value::Array(spans));
    }
    writeln!(w, "{}", Value::Object(line))
}

/// An event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Fields as `name=value`, separated by spaces, the message bare: the output of
/// `debug_fn(|w, f, v| write!(w, "{f}={v:?}"))`, with strings and integers written directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = PlainVisitor {
            w: Staged {
                out: writer,
                buf: [0; STAGE],
                len: 0,
            },
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result.and_then(|()| v.w.flush())
    }
}

/// Bytes of fields gathered on the stack before they reach the line.
const STAGE: usize = 256;

/// A line's fields gathered on the stack and handed on in one write: the span's fields go into
/// an empty `String`, which grew (and reallocated) once per piece when written piecewise.
struct Staged<'w> {
    out: Writer<'w>,
    buf: [u8; STAGE],
    len: usize,
}

impl Staged<'_> {
    fn flush(&mut self) -> fmt::Result {
        if self.len > 0 {
            // Only whole `str`s are copied in, so the bytes are UTF-8.
            let staged = std::str::from_utf8(&self.buf[..self.len]).map_err(|_| fmt::Error)?;
            self.out.write_str(staged)?;
            self.len = 0;
        }
        Ok(())
    }
}

impl fmt::Write for Staged<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > STAGE {
            self.flush()?;
            if s.len() > STAGE {
                return self.out.write_str(s);
            }
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

struct PlainVisitor<'w> {
    w: Staged<'w>,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// The separator and `name=`, or nothing for the message.
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.w.write_char(' ')?;
        }
        self.first = false;
        if field.name() == "message" {
            return Ok(());
        }
        self.w.write_str(field.name())?;
        self.w.write_char('=')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Staged<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(&mut self.w));
        }
    }
}

/// What `{:?}` prints for `s` unchanged between quotes: printable ASCII but `"` and `\`.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| quoted(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::field::MakeExt;
    use tracing_subscriber::fmt::format::debug_fn;
    use tracing_subscriber::fmt::MakeWriter;

    /// A writer that keeps every line in memory.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn log_with<F>(fields: F) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_writer(lines.clone())
                .fmt_fields(fields),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", method = "GET", path = "/a b/\"q\"\n/é");
            let _in = span.enter();
            tracing::warn!(status = 502u64, delta = -3i64, ok = true, ratio = 0.5, why = ?Some(1), "origin \"failed\"");
            tracing::info!(path = "/plain", message = "a str message");
            // Past the stack buffer: one value longer than it, and many that overflow it.
            let long = "y".repeat(300);
            tracing::info!(long = long.as_str(), after = 1u64, "long");
            let pieces: Vec<String> = (0..40).map(|i| format!("piece-{i}")).collect();
            tracing::info!(a = pieces[0].as_str(), b = pieces[1].as_str(), c = ?pieces, d = 7u64);
        });
        let out = lines.0.lock().expect("lines").clone();
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn plain_fields_print_what_the_debug_formatter_prints() {
        let reference = log_with(
            debug_fn(|w, field, value| {
                if field.name() == "message" {
                    write!(w, "{value:?}")
                } else {
                    write!(w, "{field}={value:?}")
                }
            })
            .delimited(" "),
        );
        let plain = log_with(PlainFields);
        assert!(
            reference.contains(r#"path="/a b/\"q\"\n/é""#),
            "{reference}"
        );
        assert!(
            reference.contains("status=502 delta=-3 ok=true"),
            "{reference}"
        );
        assert!(reference.contains(&format!("long=\"{}\" after=1", "y".repeat(300))));
        assert!(reference.contains("piece-39\"] d=7"), "{reference}");
        assert_eq!(plain, reference);
    }

    fn lines_of(json: bool, f: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = Lines::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(lines.clone());
        let subscriber = tracing_subscriber::registry();
        if json {
            let s = subscriber.with(
                layer
                    .fmt_fields(JsonFields::new())
                    .event_format(LineFormat { json: true }),
            );
            tracing::subscriber::with_default(s, f);
        } else {
            let s = subscriber.with(
                layer
                    .fmt_fields(PlainFields)
                    .event_format(LineFormat { json: false }),
            );
            tracing::subscriber::with_default(s, f);
        }
        let out = lines.0.lock().expect("lines").clone();
        String::from_utf8(out).expect("utf-8")
    }

    /// Logs outside a request, inside one (in its future and in a task it spawned), and after.
    fn request_lines() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let request = RequestContext::new(Method::GET, Uri::from_static("/items/7?page=2"));
        tracing::info!("before");
        local.block_on(&rt, async {
            let mut spawned = None;
            InRequest::new(Some(request), async {
                tracing::warn!(kind = "timeout", "origin request failed");
                spawned = Some(tokio::task::spawn_local(InRequest::current(async {
                    tracing::info!("in the spawned task");
                })));
            })
            .await;
            let spawned = spawned.expect("spawned");
            tracing::info!("between");
            spawned.await.expect("spawned");
        });
        tracing::info!("after");
    }

    #[test]
    fn text_lines_name_the_request_they_were_logged_in() {
        let text = lines_of(false, request_lines);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].ends_with(" INFO before"), "{text}");
        assert!(
            lines[1].ends_with(
                r#" WARN request{method="GET" path="/items/7"}: origin request failed kind="timeout""#
            ),
            "{text}"
        );
        assert!(lines[2].ends_with(" INFO between"), "{text}");
        assert!(
            lines[3]
                .ends_with(r#" INFO request{method="GET" path="/items/7"}: in the spawned task"#),
            "{text}"
        );
        assert!(lines[4].ends_with(" INFO after"), "{text}");
        // A timestamp first, as tracing's own format has it.
        assert!(
            lines[0].starts_with("20") && lines[0].contains("Z  INFO"),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_the_request_as_their_span() {
        let text = lines_of(true, request_lines);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].get("span").is_none(), "{text}");
        let warn = &lines[1];
        assert_eq!(warn["level"], "WARN");
        assert_eq!(warn["fields"]["message"], "origin request failed");
        assert_eq!(warn["fields"]["kind"], "timeout");
        assert_eq!(warn["span"]["name"], "request");
        assert_eq!(warn["span"]["method"], "GET");
        assert_eq!(warn["span"]["path"], "/items/7");
        assert_eq!(warn["spans"][0]["path"], "/items/7");
        assert!(lines[2].get("span").is_none(), "{text}");
        assert_eq!(lines[3]["span"]["path"], "/items/7", "{text}");
        assert!(lines[4].get("span").is_none(), "{text}");
    }

    #[test]
    fn a_real_span_still_shows_in_both_formats() {
        let inside = || {
            let span = tracing::info_span!("job", id = 7u64);
            let _in = span.enter();
            tracing::info!("working");
        };
        let text = lines_of(false, inside);
        assert!(
            text.trim_end().ends_with("INFO job{id=7}: working"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(lines_of(true, inside).trim()).expect("JSON");
        assert_eq!(json["span"]["name"], "job");
        assert_eq!(json["span"]["id"], 7);
    }
}
