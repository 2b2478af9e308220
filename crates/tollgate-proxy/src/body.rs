//! Streaming bodies. Nothing is buffered: request bodies flow to the upstream
//! and response bodies to the client frame by frame, so memory stays bounded
//! whatever the size. Limits and deadlines are enforced while streaming.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tollgate_core::fields::ResponseFields;

use crate::client::ResponseBody;
use crate::h1::RequestBody;
use crate::upstream::{InFlight, now_ms};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the gateway cut a request body short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tripped {
    None = 0,
    TooLarge = 1,
    Timeout = 2,
    ClientError = 3,
}

/// Shared between the request body and the handler, which reads it after a
/// failed upstream exchange to answer 413 or 408 instead of 502.
///
/// It also records when the body last moved, so the wait for the upstream's
/// answer counts from the end of the upload, not from its start.
#[derive(Debug)]
pub struct TripWire(AtomicU8, AtomicU64, AtomicU64);

impl Default for TripWire {
    fn default() -> Self {
        TripWire::at(now_ms())
    }
}

impl TripWire {
    /// A wire whose body last moved at `now_ms` ([`now_ms`]).
    pub fn at(now_ms: u64) -> TripWire {
        TripWire(AtomicU8::new(0), AtomicU64::new(now_ms), AtomicU64::new(0))
    }

    /// Request body bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.2.load(Ordering::Relaxed)
    }

    /// When the request body last made progress (milliseconds, [`now_ms`]).
    pub fn progress_ms(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.1.store(now_ms(), Ordering::Relaxed);
    }

    pub fn get(&self) -> Tripped {
        match self.0.load(Ordering::Acquire) {
            1 => Tripped::TooLarge,
            2 => Tripped::Timeout,
            3 => Tripped::ClientError,
            _ => Tripped::None,
        }
    }
    fn set(&self, t: Tripped) {
        self.0.store(t as u8, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("request body stalled for longer than {0:?}")]
    Timeout(Duration),
    #[error("response body stalled for longer than {0:?}")]
    UpstreamStalled(Duration),
    #[error("the exchange passed its deadline")]
    Deadline,
}

/// The client's body, held so a request whose body was never read (the
/// connection to the target failed) can be sent again to another target.
#[derive(Debug, Clone)]
pub struct ReplayableBody {
    /// None for a request without a body: nothing to share between
    /// attempts, and no allocation for the common bodiless request.
    slot: Option<Arc<Mutex<Option<RequestBody>>>>,
    hint: SizeHint,
    end: bool,
}

impl ReplayableBody {
    pub fn new(body: RequestBody) -> Self {
        let hint = body.size_hint();
        let end = body.is_end_stream();
        ReplayableBody {
            slot: match body {
                RequestBody::Empty => None,
                body => Some(Arc::new(Mutex::new(Some(body)))),
            },
            hint,
            end,
        }
    }

    /// Whether the body is still untouched (so an attempt may be repeated).
    pub fn unread(&self) -> bool {
        self.end
            || self
                .slot
                .as_ref()
                .is_none_or(|slot| slot.lock().map(|s| s.is_some()).unwrap_or(false))
    }

    pub fn is_empty(&self) -> bool {
        self.end
    }

    /// A body for one upstream attempt.
    pub fn attempt(&self, limit: Option<u64>, idle: Duration, wire: Arc<TripWire>) -> UpstreamBody {
        UpstreamBody {
            slot: if self.end { None } else { self.slot.clone() },
            inner: None,
            hint: self.hint,
            end: self.end,
            limit,
            seen: 0,
            idle,
            timer: None,
            wire,
        }
    }
}

impl UpstreamBody {
    /// A body with nothing in it (health probes).
    pub fn empty() -> Self {
        UpstreamBody {
            slot: None,
            inner: None,
            hint: SizeHint::with_exact(0),
            end: true,
            limit: None,
            seen: 0,
            idle: Duration::from_secs(1),
            timer: None,
            wire: Arc::new(TripWire::default()),
        }
    }
}

/// The request body as sent upstream, with the size limit and the idle deadline.
#[derive(Debug)]
pub struct UpstreamBody {
    slot: Option<Arc<Mutex<Option<RequestBody>>>>,
    inner: Option<RequestBody>,
    hint: SizeHint,
    end: bool,
    limit: Option<u64>,
    seen: u64,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    wire: Arc<TripWire>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.end {
            return Poll::Ready(None);
        }
        if this.inner.is_none() {
            let Some(slot) = this.slot.take() else {
                return Poll::Ready(None);
            };
            this.inner = slot.lock().ok().and_then(|mut s| s.take());
            if this.inner.is_none() {
                return Poll::Ready(None);
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    crate::headers::clean_trailers(trailers);
                }
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    this.wire.2.store(this.seen, Ordering::Relaxed);
                    if let Some(limit) = this.limit.filter(|l| this.seen > *l) {
                        this.wire.set(Tripped::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(limit)))));
                    }
                }
                this.timer = None;
                this.wire.touch();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.wire.set(Tripped::ClientError);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.end = true;
                this.wire.touch();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
                this.wire.set(Tripped::Timeout);
                Poll::Ready(Some(Err(Box::new(BodyError::Timeout(idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// The body of a response to the client: either the gateway's own bytes or
/// the upstream's stream with its read deadlines.
#[derive(Debug)]
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Box<UpstreamResponse>),
}

/// An upstream response body in flight. The body holds its upstream
/// connection, and gives it back to the pool when it has been read to the
/// end (or closes it, dropped before that).
#[derive(Debug)]
pub struct UpstreamResponse {
    pub inner: ResponseBody,
    pub idle: Duration,
    pub idle_timer: Option<Pin<Box<Sleep>>>,
    pub deadline: Option<Pin<Box<Sleep>>>,
    /// Keeps the target's in-flight count until the body is done.
    pub guard: Option<InFlight>,
    /// The request's analytics record, finished when the body ends (or is
    /// dropped unfinished).
    pub recording: Option<Recording>,
    /// Body bytes passed to the client so far.
    pub sent: u64,
    /// The upstream's fields, passed on as they arrived, and the gateway's
    /// own, unless a policy moved them into the response's map.
    pub fields: Option<ResponseFields>,
}

impl UpstreamResponse {
    fn done(&mut self) {
        self.guard = None;
        if let Some(r) = self.recording.take() {
            r.finish(self.sent);
        }
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        if let Some(r) = self.recording.take() {
            r.finish(self.sent);
        }
    }
}

/// A request's analytics event, waiting for the response to end.
#[derive(Debug)]
pub struct Recording {
    pub recorder: Arc<tollgate_analytics::Recorder>,
    pub stats: Arc<tollgate_analytics::RouteStats>,
    pub event: tollgate_analytics::Event,
    pub started: std::time::Instant,
    /// The request body's last upstream attempt, for the bytes read.
    pub wire: Option<Arc<TripWire>>,
}

impl Recording {
    /// Completes the event with the response's size and the time taken, and
    /// records it.
    pub fn finish(mut self, bytes_out: u64) {
        self.event.bytes_out = bytes_out;
        self.event.total_us = self.started.elapsed().as_micros() as u64;
        if let Some(w) = &self.wire {
            self.event.bytes_in = w.bytes();
        }
        self.recorder.record(&self.stats, self.event);
    }
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
    pub fn upstream(
        inner: ResponseBody,
        idle: Duration,
        deadline: Option<Instant>,
        guard: InFlight,
        recording: Option<Recording>,
    ) -> Self {
        ProxyBody::Upstream(Box::new(UpstreamResponse {
            inner,
            idle,
            idle_timer: None,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            guard: Some(guard),
            recording,
            sent: 0,
            fields: None,
        }))
    }

    /// The fields still waiting to be written out beside the map.
    pub fn fields(&self) -> Option<&ResponseFields> {
        match self {
            ProxyBody::Upstream(u) => u.fields.as_ref(),
            ProxyBody::Full(_) => None,
        }
    }

    /// The fields waiting beside the map, to add the gateway's own to.
    pub fn fields_mut(&mut self) -> Option<&mut ResponseFields> {
        match self {
            ProxyBody::Upstream(u) => u.fields.as_mut(),
            ProxyBody::Full(_) => None,
        }
    }

    /// Takes the fields waiting beside the map, to be put in it.
    pub fn take_fields(&mut self) -> Option<ResponseFields> {
        match self {
            ProxyBody::Upstream(u) => u.fields.take(),
            ProxyBody::Full(_) => None,
        }
    }

    /// The body's length when the gateway made it.
    pub fn full_len(&self) -> Option<u64> {
        match self {
            ProxyBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(_) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ProxyBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ProxyBody::Upstream(u) => {
                if let Some(d) = u.deadline.as_mut()
                    && d.as_mut().poll(cx).is_ready()
                {
                    u.done();
                    return Poll::Ready(Some(Err(Box::new(BodyError::Deadline))));
                }
                match Pin::new(&mut u.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => {
                        u.idle_timer = None;
                        if let Some(d) = f.data_ref() {
                            u.sent += d.len() as u64;
                        }
                        // A body of known length ends with its last frame;
                        // record before the client can see that end.
                        if u.inner.is_end_stream() {
                            u.done();
                        }
                        Poll::Ready(Some(Ok(f)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        u.done();
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        u.done();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        let idle = u.idle;
                        let t = u
                            .idle_timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                        ready!(t.as_mut().poll(cx));
                        u.done();
                        Poll::Ready(Some(Err(Box::new(BodyError::UpstreamStalled(idle)))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            ProxyBody::Upstream(u) => u.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(u) => u.inner.size_hint(),
        }
    }
}
