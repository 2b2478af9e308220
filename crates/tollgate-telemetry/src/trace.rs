//! One request's spans: the SERVER span the gateway opens when a request
//! arrives, and the child spans it opens for the policy phases and the
//! upstream call.
//!
//! Spans are named by [`SpanHandle`]s, small copyable indexes into the
//! trace, rather than guards that borrow it: the proxy's request code has
//! many early returns and must read the trace (for the upstream's
//! `traceparent`) while a child span is open. A span left open is ended
//! when the trace is finished.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use crate::attr;
use crate::context::{TraceContext, new_span_id};
use crate::export::Queue;

/// The most spans one request records; further `start_*` calls return a
/// handle that records nothing.
pub const MAX_SPANS_PER_TRACE: usize = 64;
/// The most attributes one span keeps; further ones are ignored.
pub const MAX_ATTRIBUTES_PER_SPAN: usize = 32;

/// What a span describes, as OTLP's `Span.kind` (the integer is the wire
/// value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// Work inside the gateway, such as a policy phase.
    Internal = 1,
    /// The handling of a request the gateway received.
    Server = 2,
    /// A request the gateway sent, such as the upstream call.
    Client = 3,
}

/// A span's status, as OTLP's `Status.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum StatusCode {
    /// Not set: the default, meaning no error.
    #[default]
    Unset = 0,
    /// Explicitly successful.
    Ok = 1,
    /// Failed.
    Error = 2,
}

/// An attribute's value. Strings borrowed for `'static` are not copied.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// `stringValue`.
    String(Cow<'static, str>),
    /// `intValue`.
    Int(i64),
    /// `boolValue`.
    Bool(bool),
    /// `doubleValue`.
    Double(f64),
}

impl From<&str> for AttributeValue {
    /// Copies the string. Pass a `Cow::Borrowed` for a `'static` one.
    fn from(v: &str) -> Self {
        AttributeValue::String(Cow::Owned(v.to_owned()))
    }
}

impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        AttributeValue::String(Cow::Owned(v))
    }
}

impl From<Cow<'static, str>> for AttributeValue {
    fn from(v: Cow<'static, str>) -> Self {
        AttributeValue::String(v)
    }
}

impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        AttributeValue::Bool(v)
    }
}

impl From<f64> for AttributeValue {
    fn from(v: f64) -> Self {
        AttributeValue::Double(v)
    }
}

impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::Int(v)
    }
}

macro_rules! int_from {
    ($($t:ty),*) => {$(
        impl From<$t> for AttributeValue {
            fn from(v: $t) -> Self {
                AttributeValue::Int(i64::from(v))
            }
        }
    )*};
}
int_from!(i8, i16, i32, u8, u16, u32);

impl From<u64> for AttributeValue {
    /// Saturates at `i64::MAX`: OTLP integers are signed 64-bit.
    fn from(v: u64) -> Self {
        AttributeValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for AttributeValue {
    /// Saturates at `i64::MAX`.
    fn from(v: usize) -> Self {
        AttributeValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// One span of a request trace. Handles are only meaningful for the
/// [`RequestTrace`] that made them; on a trace that does not record, every
/// handle is inert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanHandle(u16);

impl SpanHandle {
    /// The request's SERVER span, the root of its spans in this process.
    pub const ROOT: SpanHandle = SpanHandle(0);
    /// A handle that names no span; operations on it do nothing.
    pub const NONE: SpanHandle = SpanHandle(u16::MAX);
}

/// A finished or open span, as the exporter sends it.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    /// Zero while the span is open.
    pub end_unix_nano: u64,
    pub attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    pub status: StatusCode,
    pub status_message: Option<Cow<'static, str>>,
}

/// Nanoseconds since the Unix epoch; zero before it.
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The spans of one request, from [`Tracer::start_request`](crate::Tracer::start_request).
///
/// There are three kinds, and each method costs what its kind needs:
/// - from a disabled tracer, a trace that does nothing at all (no
///   allocation, no clock read, no random numbers);
/// - an unsampled trace, which records nothing but still has a trace
///   context, so the upstream learns the trace is not sampled;
/// - a sampled trace, which records spans and hands them to the exporter
///   in [`finish`](Self::finish).
///
/// A sampled trace dropped without `finish` (the client went away and the
/// request's future was dropped) is still exported, its open spans ended at
/// that moment and the root marked `tollgate.cancelled = true`.
pub struct RequestTrace {
    state: State,
}

enum State {
    Off,
    Unsampled(TraceContext),
    Recording(Box<Recording>),
}

struct Recording {
    queue: Arc<Queue>,
    continued: bool,
    spans: Vec<SpanData>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Off => f.write_str("RequestTrace(off)"),
            State::Unsampled(ctx) => write!(f, "RequestTrace(unsampled {ctx})"),
            State::Recording(r) => write!(
                f,
                "RequestTrace(recording {} spans of {})",
                r.spans.len(),
                crate::context::hex_string(&r.spans[0].trace_id)
            ),
        }
    }
}

impl RequestTrace {
    /// A trace that does nothing: what a disabled tracer hands out.
    pub const fn off() -> RequestTrace {
        RequestTrace { state: State::Off }
    }

    pub(crate) fn unsampled(ctx: TraceContext) -> RequestTrace {
        RequestTrace {
            state: State::Unsampled(ctx),
        }
    }

    /// A recording trace whose root span has `ctx` (our span id) and, when
    /// continued, the caller's span as parent.
    pub(crate) fn recording(
        queue: Arc<Queue>,
        ctx: TraceContext,
        parent: Option<[u8; 8]>,
        name: Cow<'static, str>,
    ) -> RequestTrace {
        let mut spans = Vec::with_capacity(4);
        spans.push(SpanData {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: parent,
            name,
            kind: SpanKind::Server,
            start_unix_nano: unix_nanos(SystemTime::now()),
            end_unix_nano: 0,
            attributes: Vec::new(),
            status: StatusCode::Unset,
            status_message: None,
        });
        RequestTrace {
            state: State::Recording(Box::new(Recording {
                queue,
                continued: parent.is_some(),
                spans,
            })),
        }
    }

    /// Whether this trace records spans (it is sampled). When it does not,
    /// skip building attribute values that cost something.
    #[inline]
    pub fn is_recording(&self) -> bool {
        matches!(self.state, State::Recording(_))
    }

    /// Whether this trace continues a valid incoming `traceparent`. When a
    /// request carried a `traceparent` that was not continued (malformed),
    /// its `tracestate` belongs to another trace and must not be forwarded.
    /// Always `false` for a trace from a disabled tracer.
    pub fn is_continued(&self) -> bool {
        match &self.state {
            State::Recording(r) => r.continued,
            // An unsampled trace keeps the incoming trace id or a fresh
            // one; it does not remember which, and need not: it sends no
            // spans.
            State::Unsampled(_) | State::Off => false,
        }
    }

    /// The context of `span` (`SpanHandle::ROOT` for the SERVER span):
    /// for logs that link to the trace. `None` from a disabled tracer or for
    /// an unknown handle. On an unsampled trace every handle gives the one
    /// context it has.
    pub fn context(&self, span: SpanHandle) -> Option<TraceContext> {
        match &self.state {
            State::Off => None,
            State::Unsampled(ctx) => Some(*ctx),
            State::Recording(r) => r.spans.get(usize::from(span.0)).map(|s| TraceContext {
                trace_id: s.trace_id,
                span_id: s.span_id,
                flags: crate::context::FLAG_SAMPLED,
            }),
        }
    }

    /// The `traceparent` the upstream should receive when it is called
    /// inside `span` (the CLIENT span of that attempt): the same trace id,
    /// `span`'s id as the parent, and the sampling decision. For an
    /// unsampled trace it carries the unsampled flag, so a parent-based
    /// upstream does not sample either. An unknown handle (such as
    /// `SpanHandle::NONE` past the span limit) gives the SERVER span's id.
    ///
    /// `None` from a disabled tracer: leave the request's `traceparent` as
    /// the client sent it (after validation).
    #[inline]
    pub fn traceparent_for_upstream(&self, span: SpanHandle) -> Option<HeaderValue> {
        let ctx = match &self.state {
            State::Recording(r) => {
                let s = r.spans.get(usize::from(span.0)).unwrap_or(&r.spans[0]);
                TraceContext {
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    flags: crate::context::FLAG_SAMPLED,
                }
            }
            State::Unsampled(ctx) => *ctx,
            State::Off => return None,
        };
        Some(ctx.to_traceparent())
    }

    /// Opens a child of the SERVER span, starting now.
    pub fn start_span(&mut self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> SpanHandle {
        self.start_child(SpanHandle::ROOT, name, kind)
    }

    /// Opens a child of `parent`, starting now.
    pub fn start_child(
        &mut self,
        parent: SpanHandle,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
    ) -> SpanHandle {
        if !self.is_recording() {
            return SpanHandle::NONE;
        }
        self.start_child_at(parent, name, kind, SystemTime::now())
    }

    /// Opens a child of `parent` that started at `at` (for work measured
    /// before it was traced). An unknown parent means the SERVER span.
    pub fn start_child_at(
        &mut self,
        parent: SpanHandle,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        at: SystemTime,
    ) -> SpanHandle {
        let State::Recording(r) = &mut self.state else {
            return SpanHandle::NONE;
        };
        if r.spans.len() >= MAX_SPANS_PER_TRACE {
            return SpanHandle::NONE;
        }
        let parent = r.spans.get(usize::from(parent.0)).unwrap_or(&r.spans[0]);
        let span = SpanData {
            trace_id: parent.trace_id,
            span_id: new_span_id(),
            parent_span_id: Some(parent.span_id),
            name: name.into(),
            kind,
            start_unix_nano: unix_nanos(at),
            end_unix_nano: 0,
            attributes: Vec::new(),
            status: StatusCode::Unset,
            status_message: None,
        };
        let index = r.spans.len();
        r.spans.push(span);
        // MAX_SPANS_PER_TRACE is far below u16::MAX.
        SpanHandle(u16::try_from(index).unwrap_or(u16::MAX))
    }

    #[inline]
    fn span_mut(&mut self, span: SpanHandle) -> Option<&mut SpanData> {
        match &mut self.state {
            State::Recording(r) => r.spans.get_mut(usize::from(span.0)),
            _ => None,
        }
    }

    /// Ends `span` now. Ending a span twice keeps the first end.
    #[inline]
    pub fn end_span(&mut self, span: SpanHandle) {
        if let Some(s) = self.span_mut(span)
            && s.end_unix_nano == 0
        {
            s.end_unix_nano = unix_nanos(SystemTime::now()).max(s.start_unix_nano);
        }
    }

    /// Ends `span` at `at`.
    pub fn end_span_at(&mut self, span: SpanHandle, at: SystemTime) {
        if let Some(s) = self.span_mut(span)
            && s.end_unix_nano == 0
        {
            s.end_unix_nano = unix_nanos(at).max(s.start_unix_nano);
        }
    }

    /// Renames `span`, for example the SERVER span to `GET /users/{id}`
    /// once the route is known. Check [`is_recording`](Self::is_recording)
    /// before formatting a name.
    pub fn set_name(&mut self, span: SpanHandle, name: impl Into<Cow<'static, str>>) {
        if let Some(s) = self.span_mut(span) {
            s.name = name.into();
        }
    }

    /// Sets an attribute on `span`, replacing one with the same key. The
    /// value is converted only when the trace records.
    pub fn set_attribute(
        &mut self,
        span: SpanHandle,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<AttributeValue>,
    ) {
        let Some(s) = self.span_mut(span) else {
            return;
        };
        let key = key.into();
        if let Some(slot) = s.attributes.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value.into();
        } else if s.attributes.len() < MAX_ATTRIBUTES_PER_SPAN {
            s.attributes.push((key, value.into()));
        }
    }

    /// Sets `span`'s status, with an optional description (kept only for
    /// `Error`, as OTLP says).
    pub fn set_status(
        &mut self,
        span: SpanHandle,
        code: StatusCode,
        message: Option<Cow<'static, str>>,
    ) {
        if let Some(s) = self.span_mut(span) {
            s.status = code;
            s.status_message = if code == StatusCode::Error {
                message
            } else {
                None
            };
        }
    }

    /// Marks `span` failed, with `error.type` naming the failure (for
    /// example `timeout` or `connect`, for an upstream call that got no
    /// response).
    pub fn set_error(&mut self, span: SpanHandle, error_type: impl Into<Cow<'static, str>>) {
        if !self.is_recording() {
            return;
        }
        let error_type = error_type.into();
        self.set_status(span, StatusCode::Error, None);
        self.set_attribute(span, attr::ERROR_TYPE, error_type);
    }

    /// Records an HTTP status on `span` as `http.response.status_code`, and
    /// marks the span failed as the HTTP conventions say: a SERVER span on
    /// 5xx, a CLIENT span on 4xx and 5xx (with `error.type` set to the
    /// code).
    #[inline]
    pub fn set_http_status(&mut self, span: SpanHandle, status: u16) {
        let Some(s) = self.span_mut(span) else {
            return;
        };
        let failed = match s.kind {
            SpanKind::Client => status >= 400,
            _ => status >= 500,
        };
        self.set_attribute(span, attr::HTTP_RESPONSE_STATUS_CODE, status);
        if failed {
            self.set_status(span, StatusCode::Error, None);
            self.set_attribute(span, attr::ERROR_TYPE, status.to_string());
        }
    }

    /// Finishes the request with the status the client gets: records it on
    /// the SERVER span (see [`set_http_status`](Self::set_http_status)),
    /// ends every open span now, and hands the spans to the exporter's
    /// queue. Never blocks: when the queue is full the spans are dropped
    /// and counted.
    #[inline]
    pub fn finish(mut self, status: u16) {
        self.set_http_status(SpanHandle::ROOT, status);
        self.submit();
    }

    fn submit(&mut self) {
        let State::Recording(r) = std::mem::replace(&mut self.state, State::Off) else {
            return;
        };
        let Recording {
            queue, mut spans, ..
        } = *r;
        let now = unix_nanos(SystemTime::now());
        for s in &mut spans {
            if s.end_unix_nano == 0 {
                s.end_unix_nano = now.max(s.start_unix_nano);
            }
        }
        queue.push(spans);
    }
}

impl Drop for RequestTrace {
    #[inline]
    fn drop(&mut self) {
        if self.is_recording() {
            self.set_attribute(SpanHandle::ROOT, attr::TOLLGATE_CANCELLED, true);
            self.submit();
        }
    }
}
