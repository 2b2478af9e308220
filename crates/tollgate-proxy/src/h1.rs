//! Tollgate's HTTP/1.x server connection (decision 0016).
//!
//! One task per client connection reads a request head, runs the proxy
//! service inline, and writes its response, then reads the next head
//! (keep-alive and pipelining). Each head is parsed once, with `httparse`,
//! straight from the connection's read buffer; the request target and the
//! field values share that buffer instead of being copied. The same pass
//! decides how the body is framed and refuses ambiguous framings
//! ([`crate::framing`]), and it enforces the head limits: a head over
//! `max_header_bytes` or with more than `max_headers` fields reaches the
//! service marked with a [`Refusal`] so that it is answered (431) and
//! recorded like any other gateway error; one that does not finish within
//! `header_read_timeout` is answered 408 here and the connection closed.
//!
//! A request body is read from the connection by the handler itself
//! ([`H1Body`]): the socket and the read buffer are lent to the body and
//! come back when it ends or is dropped. A body that the service did not
//! read to its end closes the connection after the response (unless what
//! is left of it has already arrived and can be skipped). `Expect:
//! 100-continue` is answered when the body is first read, so a request
//! refused before that (401, 413) does not make the client send its body.
//!
//! Responses are framed by `Content-Length` when it is known, chunked
//! otherwise (or by closing the connection, for an HTTP/1.0 client). A
//! small body leaves in the same write as the head. A `101 Switching
//! Protocols` hands the socket, with any bytes the client sent after its
//! head, to whoever holds the request's [`OnUpgrade`].

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tollgate_core::problem::{ErrorCode, PROBLEM_JSON, Problem};

use crate::body::{BoxError, ProxyBody};
use crate::client::chunked::{Chunk, Decoded, decode_chunk};
use crate::client::span_of;
use crate::coarse_timer;
use crate::framing::{BodyFraming, Refusal, body_framing};
use crate::service::{ConnInfo, handle};
use crate::snapshot::Gateway;

/// A client connection's byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// Most header fields `httparse` is given room for; `max_headers` is
/// enforced below it.
const FIELDS: usize = 256;
/// How long after the header deadline an idle keep-alive connection is
/// closed (decision 0013: the idle wait is a backstop on the coarse timer).
pub(crate) const IDLE_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The read buffer grows when less room than this is left in it.
const MIN_READ: usize = 2048;
/// Response body frames up to this size are copied behind the head and sent
/// in one write; larger ones are written on their own.
const COALESCE: usize = 16 * 1024;
/// Fields the gateway may add to a request's map before it goes upstream:
/// trace context (2) and a trusted proxy's forwarding fields (up to 4). Its
/// other fields are encoded beside the map (decision 0017).
const ADDED_FIELDS: usize = 6;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The socket and what has been read from it but not yet used.
pub struct Wire {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// A head's field names and where their values lie, while it is
    /// parsed; kept for the connection's life to reuse its allocation.
    fields: Vec<(HeaderName, (usize, usize))>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Wire {
    pub fn new(io: Box<dyn Io>, buf: BytesMut) -> Wire {
        Wire {
            io,
            buf,
            fields: Vec::new(),
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // The head of the request in flight shares this buffer: growing it
        // only when it is nearly full keeps a read ahead from copying it.
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }
}

/// The client connection after a `101 Switching Protocols`.
#[derive(Debug)]
pub struct Upgraded {
    pub io: Box<dyn Io>,
    /// What the client sent after its request head, for the new protocol.
    pub early: Bytes,
}

impl std::fmt::Debug for dyn Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

/// In a request's extensions when it asked to switch protocols: resolves to
/// the connection once the 101 has been written.
/// (Extensions must be `Clone`; the first clone to wait gets the connection.)
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        rx.await.ok()
    }
}

/// How far a lent body got when its wire came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Nothing,
    Bytes(u64),
    Unknown,
}

type Home = Arc<Mutex<Option<(Wire, Left)>>>;

/// A request body read from an HTTP/1 connection.
pub struct H1Body {
    wire: Option<Wire>,
    home: Home,
    state: BodyState,
    /// Bytes of the `100 Continue` still to write before the first read.
    interim: usize,
    /// The `100 Continue` is written but maybe not flushed (TLS).
    flush_interim: bool,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("lent", &self.wire.is_some())
            .field("state", &self.state)
            .finish()
    }
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(Chunk),
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("the client closed the connection before the end of the request body")]
    Closed,
    #[error("i/o error on the client connection: {0}")]
    Io(#[from] io::Error),
    #[error("invalid chunked encoding in the request body: {0}")]
    Chunked(&'static str),
}

impl H1Body {
    fn give_back(&mut self) {
        if let Some(wire) = self.wire.take() {
            let left = match &self.state {
                BodyState::Length(0) => Left::Nothing,
                BodyState::Length(n) => Left::Bytes(*n),
                BodyState::Chunked(_) => Left::Unknown,
            };
            let mut home = self.home.lock().unwrap_or_else(|e| e.into_inner());
            *home = Some((wire, left));
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        loop {
            let Some(wire) = self.wire.as_mut() else {
                return Poll::Ready(None);
            };
            if self.interim > 0 {
                let from = CONTINUE.len() - self.interim;
                let n = ready!(Pin::new(&mut wire.io).poll_write(cx, &CONTINUE[from..]))?;
                if n == 0 {
                    return Poll::Ready(Some(Err(RequestBodyError::Closed)));
                }
                self.interim -= n;
                self.flush_interim = self.interim == 0;
                continue;
            }
            if self.flush_interim {
                ready!(Pin::new(&mut wire.io).poll_flush(cx))?;
                self.flush_interim = false;
            }
            match &mut self.state {
                BodyState::Length(0) => {
                    self.give_back();
                    return Poll::Ready(None);
                }
                BodyState::Length(left) => {
                    if !wire.buf.is_empty() {
                        let n = (*left).min(wire.buf.len() as u64);
                        *left -= n;
                        let data = wire.buf.split_to(n as usize).freeze();
                        if *left == 0 {
                            self.give_back();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(chunk) => match decode_chunk(&mut wire.buf, chunk, true) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Progress) => continue,
                    Ok(Decoded::End(trailers)) => {
                        self.state = BodyState::Length(0);
                        self.give_back();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(crate::client::ClientError::Chunked(why)) => {
                        return Poll::Ready(Some(Err(RequestBodyError::Chunked(why))));
                    }
                    Err(_) => return Poll::Ready(Some(Err(RequestBodyError::Chunked("invalid")))),
                },
            }
            if ready!(wire.poll_fill(cx))? == 0 {
                return Poll::Ready(Some(Err(RequestBodyError::Closed)));
            }
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// A request body, whichever protocol brought it.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    H1(H1Body),
    H2(hyper::body::Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::H1(b) => b.poll_next(cx).map_err(Into::into),
            RequestBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::H1(b) => b.wire.is_none() || matches!(b.state, BodyState::Length(0)),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::H1(b) => match b.state {
                BodyState::Length(n) => SizeHint::with_exact(n),
                BodyState::Chunked(_) => SizeHint::default(),
            },
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}

/// Limits on request heads.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head in bytes; larger gets 431.
    pub max_bytes: usize,
    /// Most header fields; more gets 431.
    pub max_fields: usize,
    /// Time from a head's first byte to its end; slower gets 408.
    pub deadline: std::time::Duration,
}

impl HeadLimits {
    /// Bytes beyond `max_bytes` still read, so that a head just over the
    /// limit reaches the service and is answered and recorded there.
    pub const SLACK: usize = 64 * 1024;
}

/// A parsed request head, before its body.
struct Head {
    /// Boxed from the start: the request passes by value through the
    /// connection, the service and the proxy before it is taken apart,
    /// and so moves as a pointer instead of some 340 bytes each time.
    request: Box<Request<RequestBody>>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

/// What reading a head came to.
enum Read {
    Head(Head),
    /// The connection ended, went idle for too long, or the gateway is
    /// shutting down, between requests: close without an answer.
    Close,
    /// Answer with these bytes and close.
    Answer(Vec<u8>),
}

/// The server's shutdown as its HTTP/1 connections see it: a flag read
/// without a lock, set once, with every keep-alive wait for a next request
/// woken when it is set ([`crate::coarse_timer::drain`]). Watching the
/// server's cancellation token instead meant registering a waiter under
/// the token's lock, and removing it, for every request.
#[derive(Debug, Default)]
pub struct Draining(std::sync::atomic::AtomicBool);

impl Draining {
    /// The server is shutting down: idle connections close now, busy ones
    /// after their response.
    pub fn start(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
        coarse_timer::drain();
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Serves HTTP/1.x on one connection until it closes. `buf` holds bytes
/// already read from it (the protocol sniff's).
pub async fn serve(
    wire: Wire,
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    limits: HeadLimits,
    draining: Arc<Draining>,
) {
    let mut c = Connection {
        gw,
        conn,
        limits,
        draining,
        home: Arc::new(Mutex::new(None)),
        out: BytesMut::with_capacity(4096),
        read_closed: false,
    };
    let mut wire = wire;
    while let Some(next) = c.exchange(wire).await {
        wire = next;
    }
}

/// One connection's state between requests.
struct Connection {
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    limits: HeadLimits,
    draining: Arc<Draining>,
    /// Where a lent request body leaves the wire when it is done.
    home: Home,
    /// The write buffer, kept for the connection's life.
    out: BytesMut,
    /// The client has closed its side; what it sent before is still
    /// answered.
    read_closed: bool,
}

impl Connection {
    /// Reads one request and writes its response; the wire back when the
    /// connection can carry another.
    async fn exchange(&mut self, mut wire: Wire) -> Option<Wire> {
        let head = match read_head(&mut wire, &self.limits, &self.draining).await {
            Read::Head(h) => h,
            Read::Close => return None,
            Read::Answer(bytes) => {
                let _ = wire.send(&bytes).await;
                let _ = wire.io.shutdown().await;
                return None;
            }
        };
        let Head {
            mut request,
            framing,
            mut keep_alive,
            expect_continue,
            upgrade,
        } = head;
        let head_method = request.method() == Method::HEAD;
        let version = request.version();
        let upgrade = upgrade.then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            request
                .extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        let mut body_left = Left::Nothing;
        let response = if framing == BodyFraming::Empty {
            // While the request is handled, the connection is watched: a
            // client that goes away cancels it (its upstream exchange, a
            // circuit breaker's trial, its place in a queue), and a
            // pipelined request is read ahead, up to the head limits.
            let handled = handle(self.gw.clone(), self.conn.clone(), request);
            tokio::pin!(handled);
            let mut watch = !self.read_closed;
            loop {
                tokio::select! {
                    biased;
                    Ok(response) = &mut handled => break response,
                    read = wire.fill(), if watch => match read {
                        // Gone, with nothing more to answer: cancel.
                        Ok(0) | Err(_) if wire.buf.is_empty() => return None,
                        // A client that half-closed after pipelining
                        // requests still gets its answers.
                        Ok(0) | Err(_) => {
                            self.read_closed = true;
                            watch = false;
                        }
                        Ok(_) => watch = wire.buf.len() <= self.limits.max_bytes,
                    },
                }
            }
        } else {
            *request.body_mut() = RequestBody::H1(H1Body {
                wire: Some(wire),
                home: self.home.clone(),
                state: match framing {
                    BodyFraming::Length(n) => BodyState::Length(n),
                    _ => BodyState::Chunked(Chunk::Size),
                },
                interim: if expect_continue { CONTINUE.len() } else { 0 },
                flush_interim: false,
            });
            let Ok(response) = handle(self.gw.clone(), self.conn.clone(), request).await;
            // The body has been dropped with the request by now; if it was
            // kept somewhere, the connection cannot go on.
            let back = self.home.lock().unwrap_or_else(|e| e.into_inner()).take();
            let (back, left) = back?;
            wire = back;
            body_left = left;
            match left {
                Left::Nothing => {}
                // What is left of the body has arrived already: skip it.
                Left::Bytes(n) if n <= wire.buf.len() as u64 => wire.buf.advance(n as usize),
                _ => keep_alive = false,
            }
            response
        };
        // The service closes the connection after answers that leave it
        // untrustworthy (`Connection: close` on its response).
        if self.draining.is_set() || asks_to_close(response.headers()) {
            keep_alive = false;
        }
        let out = &mut self.out;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Unread request body bytes must not pass for the new protocol's.
            if body_left != Left::Nothing {
                return None;
            }
            let tx = upgrade?;
            out.clear();
            encode_head(out, &response, version, None, keep_alive);
            wire.send(out).await.ok()?;
            let early = wire.buf.split().freeze();
            let _ = tx.send(Upgraded { io: wire.io, early });
            return None;
        }
        drop(upgrade);
        match write_response(&mut wire, out, response, version, head_method, keep_alive).await {
            Ok(true) => Some(wire),
            Ok(false) | Err(_) => {
                let _ = wire.io.shutdown().await;
                None
            }
        }
    }
}

/// Whether a `Connection` field lists `close`.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Reads and parses the next request head.
async fn read_head(wire: &mut Wire, limits: &HeadLimits, draining: &Draining) -> Read {
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // One idle deadline per head: blank lines, which are skipped, do not
    // put it off. Made before the shutdown flag is looked at, so a drain
    // in between ends it at once.
    let idle = coarse_timer::drainable_until(coarse_timer::now() + limits.deadline + IDLE_SLACK);
    tokio::pin!(idle);
    loop {
        // Empty lines before a request line are ignored (RFC 9112 section 2.2).
        let blank = wire
            .buf
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(wire.buf.len());
        wire.buf.advance(blank);
        if !wire.buf.is_empty() {
            match parse_head(&mut wire.buf, &mut wire.fields, limits) {
                Ok(Some(head)) => return Read::Head(head),
                Ok(None) => {}
                Err(answer) => return Read::Answer(answer),
            }
            if wire.buf.len() > limits.max_bytes + HeadLimits::SLACK {
                return Read::Answer(too_large(limits));
            }
        }
        let read = if wire.buf.is_empty() {
            // Between requests: wait for one, up to the idle deadline.
            tokio::select! {
                biased;
                r = wire.fill() => r,
                // Shutting down: what has arrived is still served.
                () = std::future::ready(()), if draining.is_set() => return Read::Close,
                () = &mut idle => {
                    if draining.is_set() || coarse_timer::now() >= idle.deadline() {
                        return Read::Close;
                    }
                    // Another server in this process drained: wait on.
                    let due = idle.deadline();
                    idle.set(coarse_timer::drainable_until(due));
                    continue;
                }
            }
        } else {
            // A head has started: it has until the header deadline.
            // Only a head that arrives in pieces arms it, so it can be precise.
            let timer =
                deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limits.deadline)));
            tokio::select! {
                biased;
                r = wire.fill() => r,
                () = timer.as_mut() => {
                    return Read::Answer(problem_answer(
                        408,
                        "Request Timeout",
                        ErrorCode::RequestTimeout,
                        "the request head was not received in time",
                    ));
                }
            }
        };
        match read {
            Ok(0) | Err(_) => return Read::Close,
            Ok(_) => {}
        }
    }
}

/// A complete answer with a problem document, for the few cases the
/// connection answers itself before (or instead of) the service: a head
/// that never finishes, one far over the size limit, one that cannot be
/// parsed. It has a request id of its own, and the connection closes after
/// it.
fn problem_answer(status: u16, reason: &str, code: ErrorCode, detail: &str) -> Vec<u8> {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let id = tollgate_core::request_id::request_id_at(&HeaderMap::new(), unix_ms);
    let id = id.to_str().unwrap_or("");
    let body = Problem::new(code).detail(detail).request_id(id).to_json();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {PROBLEM_JSON}\r\ncache-control: no-store\r\nx-request-id: {id}\r\ncontent-length: {}\r\nconnection: close\r\ndate: ",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&http_date());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

fn too_large(limits: &HeadLimits) -> Vec<u8> {
    problem_answer(
        431,
        "Request Header Fields Too Large",
        ErrorCode::HeadersTooLarge,
        &format!("the request head is over {} bytes", limits.max_bytes),
    )
}

fn bad_request(detail: &str) -> Vec<u8> {
    problem_answer(400, "Bad Request", ErrorCode::BadRequest, detail)
}

/// Parses a complete head at the start of `buf` and takes it out of the
/// buffer; `None` when more bytes are needed. `spans` is scratch space.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<(HeaderName, (usize, usize))>,
    limits: &HeadLimits,
) -> Result<Option<Head>, Vec<u8>> {
    // Left uninitialised: zeroing 256 fields (8 KiB) per request cost more
    // than the parse itself.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(problem_answer(
                431,
                "Request Header Fields Too Large",
                ErrorCode::HeadersTooLarge,
                &format!(
                    "the request has more than {} header fields",
                    limits.max_fields
                ),
            ));
        }
        Err(e) => return Err(bad_request(&format!("malformed request head: {e}"))),
    };
    let mut refusal = None;
    if len > limits.max_bytes {
        refusal = Some(Refusal::HeadTooLarge(format!(
            "the request head is over {} bytes",
            limits.max_bytes
        )));
    } else if req.headers.len() > limits.max_fields {
        refusal = Some(Refusal::HeadTooLarge(format!(
            "the request has more than {} header fields",
            limits.max_fields
        )));
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad_request("invalid request method"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let framing = match body_framing(req.headers) {
        // RFC 9112 section 6.1: an HTTP/1.0 message with a transfer coding
        // is faulty framing; a 1.0 intermediary would not have decoded it.
        Ok(BodyFraming::Chunked) if version == Version::HTTP_10 => {
            refusal.get_or_insert(Refusal::Framing(
                "an HTTP/1.0 request has a Transfer-Encoding",
            ));
            BodyFraming::Empty
        }
        Ok(f) => f,
        Err(why) => {
            refusal.get_or_insert(why);
            BodyFraming::Empty
        }
    };
    let target = span_of(buf, req.path.unwrap_or("").as_bytes());
    let mut keep_alive = version == Version::HTTP_11;
    let mut expect_continue = false;
    let mut upgrade = false;
    let mut hosts = 0;
    spans.clear();
    for h in req.headers.iter() {
        let name = crate::headers::field_name(h.name.as_bytes())
            .map_err(|_| bad_request("invalid header field name"))?;
        if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        } else if name == header::EXPECT {
            // HTTP/1.0 has no interim responses (RFC 9110 section 10.1.1).
            expect_continue = version == Version::HTTP_11
                && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::UPGRADE {
            upgrade = version == Version::HTTP_11;
        } else if name == header::HOST {
            hosts += 1;
        }
        spans.push((name, span_of(buf, h.value)));
    }
    // RFC 9112 section 3.2: exactly one Host in HTTP/1.1.
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(bad_request(
            "an HTTP/1.1 request needs exactly one Host field",
        ));
    }
    let raw = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(raw.slice(target.0..target.1))
        .map_err(|_| bad_request("invalid request target"))?;
    // Room for the fields the gateway adds to the map, so that adding them
    // does not grow and rehash it.
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_FIELDS);
    for (name, (start, end)) in spans.drain(..) {
        let value = HeaderValue::from_maybe_shared(raw.slice(start..end))
            .map_err(|_| bad_request("invalid header field value"))?;
        headers.append(name, value);
    }
    // RFC 9112 section 3.2.2: with an absolute-form target, the target's
    // authority is the host, whatever the Host field says.
    if let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let mut request = Box::new(Request::new(RequestBody::Empty));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    if let Some(why) = refusal {
        // The service answers it; the connection closes after that.
        request.extensions_mut().insert(why);
        return Ok(Some(Head {
            request,
            framing: BodyFraming::Empty,
            keep_alive: false,
            expect_continue: false,
            upgrade: false,
        }));
    }
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expect_continue: expect_continue && framing != BodyFraming::Empty,
        upgrade,
    }))
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    /// Read to the close (an HTTP/1.0 client without a length).
    Close,
}

/// Encodes the status line and fields. `framing` adds the fields for the
/// body's framing.
fn encode_head(
    out: &mut BytesMut,
    res: &Response<ProxyBody>,
    version: Version,
    framing: Option<Out>,
    keep_alive: bool,
) {
    let status = res.status();
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    // The upstream's own reason phrase, when it had one (the client keeps it).
    match res.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    // RFC 9110 section 8.6: no Content-Length in a 1xx or a 204.
    let lengthless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut dated = false;
    // An upstream's fields first, as they arrived, except those the gateway
    // set itself; then the gateway's own; then the map's.
    let beside = res.body().fields();
    if let Some(fields) = beside {
        fields.encode(out, res.headers());
        dated = fields.has_date();
        if framing.is_none()
            && !lengthless
            && let Some(n) = fields.length()
        {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in res.headers() {
        if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && (framing.is_some() || lengthless))
            || (name == header::CONNECTION && !switching)
            || beside.is_some_and(|f| f.overrides(name))
        {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Some(Out::Length(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Some(Out::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date());
        out.extend_from_slice(b"\r\n");
    }
    if !switching {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response; `Ok(true)` when the connection may carry another.
async fn write_response(
    wire: &mut Wire,
    out: &mut BytesMut,
    res: Response<ProxyBody>,
    version: Version,
    head_method: bool,
    mut keep_alive: bool,
) -> io::Result<bool> {
    let status = res.status();
    // Upstream lengths were checked by the client; an unusable one is
    // dropped here and the body framed by what it turns out to be.
    let declared = match res.body().fields() {
        Some(fields) => fields.length(),
        None => res
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| crate::client::parse_decimal(v.as_bytes().trim_ascii())),
    };
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let hint = res.body().size_hint().exact();
    let framing = if bodiless {
        Out::None
    } else if let Some(n) = declared.or(hint) {
        Out::Length(n)
    } else if head_method {
        Out::None
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        keep_alive = false;
        Out::Close
    };
    out.clear();
    // A HEAD response keeps the upstream's own length field, if any.
    let fields = match framing {
        Out::None => None,
        Out::Length(_) if head_method && declared.is_none() && hint == Some(0) => None,
        f => Some(f),
    };
    encode_head(out, &res, version, fields, keep_alive);
    if head_method || framing == Out::None {
        wire.send(out).await?;
        return Ok(keep_alive);
    }
    let mut body = res.into_body();
    // The upstream's fields are written: let go of the head they lie in,
    // which shares its allocation with the upstream connection's buffer.
    drop(body.take_fields());
    let mut sent: u64 = 0;
    let mut trailers: Option<HeaderMap> = None;
    loop {
        // Whatever is ready is gathered behind the head; what is gathered
        // is written before waiting for more.
        let ready = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Some(f)),
            Poll::Pending if !out.is_empty() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let frame = match ready {
            Some(f) => f,
            None => {
                wire.send(out).await?;
                out.clear();
                continue;
            }
        };
        let frame = match frame {
            None => break,
            // The body failed midway: the client sees the connection close
            // instead of a complete response.
            Some(Err(_)) => return Ok(false),
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match framing {
            Out::Length(n) if sent > n => return Ok(false),
            Out::Chunked => {
                let mut hex = [0u8; 16];
                out.extend_from_slice(hex_len(data.len(), &mut hex));
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            if !out.is_empty() {
                wire.io.write_all(out).await?;
                out.clear();
            }
            wire.io.write_all(&data).await?;
            // TLS may hold records back until flushed; the next frame may
            // be a while.
            wire.io.flush().await?;
        }
        if framing == Out::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            wire.send(out).await?;
            out.clear();
        }
    }
    match framing {
        Out::Length(n) if sent != n => {
            wire.send(out).await?;
            return Ok(false);
        }
        Out::Chunked => {
            out.extend_from_slice(b"0\r\n");
            for (name, value) in trailers.iter().flatten() {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
    wire.send(out).await?;
    out.clear();
    Ok(keep_alive)
}

fn hex_len(n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The current time as an HTTP date, from the coarse clock (at most a tick
/// behind), formatted once per second per thread.
fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::{Duration, UNIX_EPOCH};
    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
    }
    let secs = coarse_timer::unix_secs();
    CACHE.with(|c| {
        let (at, text) = c.get();
        if at == secs && secs != 0 {
            return text;
        }
        let mut text = [b' '; 29];
        let formatted = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        let n = formatted.len().min(29);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        c.set((secs, text));
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 1024,
            max_fields: 4,
            deadline: std::time::Duration::from_secs(1),
        }
    }

    fn parse(text: &str) -> Result<Option<Head>, Vec<u8>> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_head(&mut buf, &mut Vec::new(), &limits())
    }

    fn head(text: &str) -> Head {
        parse(text).expect("parsed").expect("complete")
    }

    #[test]
    fn heads_parse_with_shared_values_and_framing() {
        let h = head(
            "POST /a?b=1 HTTP/1.1\r\nHost: t\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri().path(), "/a");
        assert_eq!(h.request.uri().query(), Some("b=1"));
        assert_eq!(h.request.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive);
        assert!(
            parse("GET / HTTP/1.1\r\nHost: t\r\n")
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!head("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let h =
            head("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        let h = head("GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue, "nothing to continue without a body");
    }

    #[test]
    fn refusals_reach_the_service_and_close() {
        let h = head(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(matches!(
            h.request.extensions().get::<Refusal>(),
            Some(Refusal::Framing(_))
        ));
        assert!(!h.keep_alive);
        assert_eq!(h.framing, BodyFraming::Empty);
        let h = head("GET / HTTP/1.1\r\nHost: t\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n");
        assert!(matches!(
            h.request.extensions().get::<Refusal>(),
            Some(Refusal::HeadTooLarge(_))
        ));
    }

    #[test]
    fn host_rules() {
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        ] {
            let answer = parse(bad).err().expect("answered");
            assert!(answer.starts_with(b"HTTP/1.1 400 "), "{bad:?}");
        }
        assert!(
            !head("GET / HTTP/1.0\r\n\r\n").keep_alive,
            "1.0 needs no Host"
        );
        let h = head("GET http://b.example:8080/x HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(h.request.headers()["host"], "b.example:8080");
        let h = head("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(
            h.request.extensions().get::<Refusal>(),
            Some(Refusal::Framing(_))
        ));
    }

    #[test]
    fn malformed_heads_are_answered_400() {
        for bad in [
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            let answer = parse(bad).err().expect("answered");
            assert!(answer.starts_with(b"HTTP/1.1 400 "), "{bad:?}");
        }
    }

    #[test]
    fn problem_answers_are_complete_responses() {
        let answer = problem_answer(408, "Request Timeout", ErrorCode::RequestTimeout, "slow");
        let text = String::from_utf8(answer).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert!(head.contains("connection: close"));
        assert!(head.contains("\r\ndate: "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("request id");
        assert!(body.contains("request_timeout") && body.contains(id));
    }

    #[test]
    fn close_is_found_in_any_connection_field() {
        let mut h = HeaderMap::new();
        assert!(!asks_to_close(&h));
        h.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
        assert!(!asks_to_close(&h));
        h.append(header::CONNECTION, HeaderValue::from_static("x-foo, Close"));
        assert!(asks_to_close(&h));
    }

    #[test]
    fn expect_continue_is_ignored_from_http10_clients() {
        let h = head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn hex_lengths() {
        let mut b = [0u8; 16];
        assert_eq!(hex_len(0, &mut b), b"0");
        assert_eq!(hex_len(255, &mut b), b"ff");
        assert_eq!(hex_len(0x1234, &mut b), b"1234");
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let d = http_date();
        let text = std::str::from_utf8(&d).expect("ascii");
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
