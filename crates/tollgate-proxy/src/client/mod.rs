//! The upstream side of HTTP/1.1, driven inline by the request's own task.
//!
//! A [`Connection`] is a TCP stream with a read buffer. [`Connection::exchange`]
//! writes the request head (and streams the body, if any) straight to the
//! socket and parses the response head with `httparse`; the response body is
//! a [`ResponseBody`] that owns the connection and reads its frames from the
//! socket when the client side polls it, then hands the connection back to
//! its worker's pool (see [`crate::pool`]) at the end of the message.
//!
//! There is no connection task and no channel between the request and the
//! socket. hyper's client runs each connection as a task of its own and
//! passes the request, the response head and every body frame between that
//! task and the caller through channels, waking two tasks per message; on a
//! pass-through request that was about a quarter of the gateway's user time
//! (bench/RESULTS.md). The client side of a proxy needs only a narrow part
//! of HTTP/1.1: origin-form requests it builds itself, and responses framed
//! as RFC 9112 section 6.3 says, which is what this module implements.
//!
//! Message framing follows RFC 9112:
//! - a request body of known length goes with `Content-Length`, one of unknown
//!   length with `Transfer-Encoding: chunked` (and its trailers);
//! - a response to `HEAD`, and every 1xx, 204 and 304 response, has no body;
//!   `Transfer-Encoding` ending in `chunked` is decoded (trailers included),
//!   another transfer coding is read until the connection closes, a
//!   `Content-Length` (several equal values allowed) is counted, and without
//!   either the body runs to the close;
//! - interim 1xx responses other than 101 are read and skipped; a 101 hands
//!   the raw connection, with any bytes already read, to the caller.
//!
//! The response's hop-by-hop fields (RFC 9110 section 7.6.1: `Connection`,
//! the fields it names, `Keep-Alive`, `Transfer-Encoding` and the rest) belong
//! to this connection and are dropped while the head is parsed, except in a
//! 101, whose `Upgrade` the tunnel needs. The other fields are not put in a
//! map: they stay spans of the head ([`PassedFields`]), which the server
//! writes back out (decision 0017).
//!
//! A connection is reused only after a complete response that did not ask
//! to close it, when the request body was sent in full and nothing
//! follows the response on the wire.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tollgate_core::fields::{PassedFields, UpstreamFields};

use crate::body::{BoxError, UpstreamBody};
use crate::headers::{Class, classify};

mod body;
pub(crate) mod chunked;

use body::Kind;
pub use body::ResponseBody;
use chunked::Chunk;

/// The largest response head (or trailer section) accepted from an upstream.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields accepted in a response head.
const MAX_HEADERS: usize = 256;
/// Free space made in the read buffer before each read.
const READ_RESERVE: usize = 16 * 1024;
/// Body data up to this size is copied out of the read buffer, which then
/// stays whole for the next message; larger data is split off without a copy.
const COPY_BELOW: usize = 4 * 1024;
/// The longest chunk-size line (size, extensions and CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the upstream closed the connection without answering")]
    Closed,
    #[error("i/o error on the upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("the upstream closed the connection before the end of the response body")]
    IncompleteBody,
    #[error("invalid chunked encoding in the response body: {0}")]
    Chunked(&'static str),
    #[error("the request body failed: {0}")]
    RequestBody(BoxError),
}

/// A failed exchange, and whether the request may be sent again on another
/// connection: nothing came back and the upstream cannot have acted on it.
#[derive(Debug)]
pub struct Failed {
    pub error: ClientError,
    pub resendable: bool,
}

/// What the gateway sends upstream, apart from the body.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Origin form: `/path?query`, already checked to be clean.
    pub target: &'a str,
    pub host: &'a HeaderValue,
    /// Every other field; framing fields here are ignored and rewritten.
    pub headers: &'a HeaderMap,
    /// The gateway's own fields, written after `headers`.
    pub added: &'a UpstreamFields,
}

/// One HTTP/1.1 connection to an upstream target.
#[derive(Debug)]
pub struct Connection {
    io: TcpStream,
    /// Bytes read from the upstream and not yet consumed.
    buf: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    out: Vec<u8>,
    /// Where the response head's passed fields' names and values lie,
    /// while it is parsed; kept to reuse its allocation.
    fields: Vec<((usize, usize), (usize, usize))>,
    /// Whether this connection served a request before this one.
    reused: bool,
    /// The target's `host:port`: the pool it belongs to.
    target: Arc<str>,
    /// Closed after one exchange (health probes).
    single_use: bool,
}

impl Connection {
    /// A connection over `io` to `target`, boxed for its whole life: it
    /// moves from the pool into an exchange, from there into the response
    /// body and back to the pool, and each of those moves is then a
    /// pointer's, not the struct's.
    pub fn new(io: TcpStream, target: Arc<str>) -> Box<Connection> {
        Box::new(Connection {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            fields: Vec::new(),
            reused: false,
            target,
            single_use: false,
        })
    }

    /// Makes the connection close after its first exchange.
    pub fn single_use(mut self: Box<Self>) -> Box<Connection> {
        self.single_use = true;
        self
    }

    /// The target's `host:port`.
    pub fn target(&self) -> &Arc<str> {
        &self.target
    }

    /// Whether the idle connection can take a request: nothing has arrived
    /// on it since its last response (data or the upstream's FIN). Costs a
    /// system call only when the socket was last seen readable.
    pub fn is_idle_and_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends one request and reads the response head.
    pub async fn exchange(
        mut self: Box<Self>,
        head: &RequestHead<'_>,
        body: &mut UpstreamBody,
    ) -> Result<Response<ResponseBody>, Failed> {
        let reused = std::mem::replace(&mut self.reused, true);
        let bodiless = body.is_end_stream();
        let framing = encode_head(&mut self.out, head, body);
        // False while nothing of the request can have reached the upstream.
        let mut written = false;
        match self.send_and_read(head, body, framing, &mut written).await {
            Ok((res, kind, reusable)) => Ok(res.map(|passed| ResponseBody {
                conn: Some(self),
                kind,
                reusable,
                passed,
            })),
            Err(error) => {
                let nothing_back = matches!(&error, ClientError::Closed)
                    || matches!(&error, ClientError::Io(e) if is_reset(e));
                // A reused connection the upstream had already closed: the
                // request never reached it (the write failed), or it is a
                // bodiless idempotent request that got no answer at all.
                let resendable =
                    reused && nothing_back && bodiless && (!written || idempotent(head.method));
                Err(Failed { error, resendable })
            }
        }
    }

    /// Writes the request and reads up to the final response head. Returns
    /// the head, how its body is framed, and whether the connection can be
    /// reused after it.
    async fn send_and_read(
        &mut self,
        head: &RequestHead<'_>,
        body: &mut UpstreamBody,
        framing: ReqFraming,
        written: &mut bool,
    ) -> Result<(Response<Option<Box<PassedFields>>>, Kind, bool), ClientError> {
        self.io.write_all(&self.out).await?;
        *written = true;
        let body_done = match framing {
            ReqFraming::None => true,
            _ => match self.send_body(body, framing).await {
                Ok(done) => done,
                // An upstream that answers early and closes without reading
                // the rest (a 413, say) resets the connection under the
                // upload; its answer may already be waiting to be read.
                Err(ClientError::Io(e)) if is_reset(&e) => false,
                Err(e) => return Err(e),
            },
        };
        let head_only = *head.method == Method::HEAD;
        loop {
            let (res, next, keep_alive) = self.read_head(head_only).await?;
            match next {
                Next::Interim => continue,
                Next::Upgrade => return Ok((res, Kind::Upgrade, false)),
                Next::Body(kind) => {
                    return Ok((res, kind, keep_alive && body_done && !self.single_use));
                }
            }
        }
    }

    /// Streams the request body. Returns whether it was sent to its end:
    /// an upstream that answers before the end (an early 413, say) stops it,
    /// and the connection is then not reused.
    async fn send_body(
        &mut self,
        body: &mut UpstreamBody,
        framing: ReqFraming,
    ) -> Result<bool, ClientError> {
        let chunked = framing == ReqFraming::Chunked;
        let mut frame_out: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::select! {
                biased;
                r = self.io.readable() => {
                    r?;
                    if self.answered_early()? {
                        return Ok(false);
                    }
                    continue;
                }
                f = body.frame() => f,
            };
            frame_out.clear();
            let mut data = Bytes::new();
            let last = match frame {
                None => {
                    if chunked {
                        frame_out.extend_from_slice(b"0\r\n\r\n");
                    }
                    true
                }
                Some(Err(e)) => return Err(ClientError::RequestBody(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) if d.is_empty() => continue,
                    Ok(d) => {
                        if chunked {
                            use std::io::Write;
                            let _ = write!(frame_out, "{:x}\r\n", d.len());
                        }
                        data = d;
                        false
                    }
                    Err(frame) => {
                        // Trailers end a chunked body; a body of declared
                        // length has nowhere to put them.
                        if chunked {
                            frame_out.extend_from_slice(b"0\r\n");
                            if let Ok(trailers) = frame.into_trailers() {
                                write_fields(&mut frame_out, &trailers);
                            }
                            frame_out.extend_from_slice(b"\r\n");
                        }
                        true
                    }
                },
            };
            let tail: &[u8] = if chunked && !data.is_empty() {
                b"\r\n"
            } else {
                b""
            };
            for part in [&frame_out[..], &data[..], tail] {
                if !part.is_empty() && self.write_or_answer(part).await? {
                    return Ok(false);
                }
            }
            if last {
                return Ok(true);
            }
        }
    }

    /// Writes `bytes` unless the upstream answers first. Returns whether it
    /// answered (the rest of the body is then not sent).
    async fn write_or_answer(&mut self, mut bytes: &[u8]) -> Result<bool, ClientError> {
        while !bytes.is_empty() {
            tokio::select! {
                biased;
                r = self.io.readable() => {
                    r?;
                    if self.answered_early()? {
                        return Ok(true);
                    }
                }
                r = self.io.writable() => {
                    r?;
                    match self.io.try_write(bytes) {
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(false)
    }

    /// Reads what the upstream sent while the body was going out. True when
    /// a final response has begun; interim heads (`100 Continue`) are not an
    /// answer and are consumed here.
    fn answered_early(&mut self) -> Result<bool, ClientError> {
        self.buf.reserve(READ_RESERVE);
        match self.io.try_read_buf(&mut self.buf) {
            // Closed: what it sent before, if anything, is its answer.
            Ok(0) if self.buf.is_empty() => {
                return Err(ClientError::Io(io::ErrorKind::ConnectionReset.into()));
            }
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        loop {
            // "HTTP/1.1 1xx" tells an interim status from a final one.
            let Some(status) = self.buf.get(9..12) else {
                return Ok(false);
            };
            if !self.buf.starts_with(b"HTTP/1.") || status[0] != b'1' || status == b"101" {
                return Ok(true);
            }
            match memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                Some(end) => self.buf.advance(end + 4),
                None => return Ok(false),
            }
        }
    }

    /// Reads one response head.
    async fn read_head(
        &mut self,
        head_only: bool,
    ) -> Result<(Response<Option<Box<PassedFields>>>, Next, bool), ClientError> {
        loop {
            if !self.buf.is_empty()
                && let Some(parsed) = self.parse_head(head_only)?
            {
                return Ok(parsed);
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ClientError::HeadTooLarge);
            }
            let before = self.buf.len();
            self.buf.reserve(READ_RESERVE);
            let n = std::future::poll_fn(|cx| read_into(&mut self.io, &mut self.buf, cx)).await?;
            if n == 0 {
                return Err(if before == 0 {
                    ClientError::Closed
                } else {
                    ClientError::Invalid("the connection closed inside the response head")
                });
            }
        }
    }

    /// Parses a complete head at the front of the buffer and consumes it.
    ///
    /// The fields are not put in a map: the response carries them as
    /// [`PassedFields`], spans of the head, which the server writes back out
    /// and turns into a map only when something asks for one. A 101's
    /// fields are the exception: they go to the map with the hop-by-hop
    /// ones, since the tunnel needs its `Upgrade`.
    #[allow(clippy::type_complexity)]
    fn parse_head(
        &mut self,
        head_only: bool,
    ) -> Result<Option<(Response<Option<Box<PassedFields>>>, Next, bool)>, ClientError> {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len =
            match config.parse_response_with_uninit_headers(&mut parsed, &self.buf, &mut fields) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(ClientError::Head(e)),
            };
        if len > MAX_HEAD_BYTES {
            return Err(ClientError::HeadTooLarge);
        }
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| ClientError::Invalid("invalid status code"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            self.buf.advance(len);
            return Ok(Some((Response::new(None), Next::Interim, true)));
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let reason = parsed.reason.unwrap_or("");
        let custom_reason = !reason.is_empty() && status.canonical_reason() != Some(reason);
        let reason_at = custom_reason.then(|| span_of(&self.buf, reason.as_bytes()));
        // The upstream connection's own fields are not passed on (a 101
        // keeps them: the tunnel needs its `Upgrade`).
        let keep_hop_by_hop = status == StatusCode::SWITCHING_PROTOCOLS;
        let mut close = version == Version::HTTP_10;
        let mut length: Option<(u64, (usize, usize))> = None;
        let mut transfer: Option<bool> = None;
        let mut listed = false;
        self.fields.clear();
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            let value = h.value;
            let class = classify(name);
            match class {
                Class::Connection => {
                    for token in value.split(|b| *b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            close = false;
                        } else if !token.is_empty() {
                            listed = true;
                        }
                    }
                }
                Class::ContentLength => {
                    for part in value.split(|b| *b == b',') {
                        let n = parse_decimal(part.trim_ascii())
                            .ok_or(ClientError::Invalid("invalid Content-Length"))?;
                        if length.is_some_and(|(l, _)| l != n) {
                            return Err(ClientError::Invalid("conflicting Content-Length values"));
                        }
                        length = Some((n, span_of(&self.buf, value)));
                    }
                    if !keep_hop_by_hop {
                        continue;
                    }
                }
                Class::TransferEncoding => {
                    // Only the last coding decides: a body is chunked when
                    // chunked is applied last.
                    let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
                    transfer = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
                Class::HopByHop | Class::Other => {}
            }
            if keep_hop_by_hop || class == Class::Other {
                self.fields
                    .push((span_of(&self.buf, name), span_of(&self.buf, value)));
            }
        }
        if listed && !keep_hop_by_hop {
            // Fields named in `Connection` are this connection's too.
            let buf = &self.buf;
            let named: Vec<&[u8]> = parsed
                .headers
                .iter()
                .filter(|h| classify(h.name.as_bytes()) == Class::Connection)
                .flat_map(|h| h.value.split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                .collect();
            self.fields.retain(|((start, end), _)| {
                !named
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&buf[*start..*end]))
            });
        }
        let raw = self.buf.split_to(len).freeze();
        let mut passed = Box::new(PassedFields::new(raw.clone()));
        for ((ns, ne), (vs, ve)) in self.fields.drain(..) {
            passed.push(ns..ne, vs..ve);
        }
        // RFC 9112 section 6.3: Transfer-Encoding overrides, and the length
        // must not be passed on. (A 101 kept its fields as they were.)
        if transfer.is_none()
            && !keep_hop_by_hop
            && let Some((n, (start, end))) = length
        {
            passed.set_length(start..end, n);
        }
        let mut res = Response::new(None);
        *res.status_mut() = status;
        *res.version_mut() = version;
        if let Some((start, end)) = reason_at
            && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(raw.slice(start..end))
        {
            res.extensions_mut().insert(phrase);
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            passed.materialize(res.headers_mut());
            return Ok(Some((res, Next::Upgrade, false)));
        }
        *res.body_mut() = Some(passed);
        let no_body =
            head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let kind = if no_body {
            Kind::Length(0)
        } else {
            match (transfer, length) {
                (Some(true), _) => Kind::Chunked(Chunk::Size),
                (Some(false), _) => {
                    close = true;
                    Kind::Eof
                }
                (None, Some((n, _))) => Kind::Length(n),
                (None, None) => {
                    close = true;
                    Kind::Eof
                }
            }
        };
        Ok(Some((res, Next::Body(kind), !close)))
    }
}

/// What follows a response head.
enum Next {
    /// A 1xx other than 101: another head follows.
    Interim,
    /// 101: the connection now carries another protocol.
    Upgrade,
    Body(Kind),
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqFraming {
    None,
    Length,
    Chunked,
}

/// Writes the request head into `out` and says how the body follows.
fn encode_head(out: &mut Vec<u8>, head: &RequestHead<'_>, body: &UpstreamBody) -> ReqFraming {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(head.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut had_length = false;
    for (name, value) in head.headers {
        if name == header::HOST || name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    head.added.encode(out);
    let framing = if body.is_end_stream() {
        let expects_body = !matches!(
            *head.method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        );
        if had_length || expects_body {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        ReqFraming::None
    } else if let Some(n) = body.size_hint().exact() {
        let mut digits = itoa::Buffer::new();
        write_field(out, b"content-length", digits.format(n).as_bytes());
        if n == 0 {
            ReqFraming::None
        } else {
            ReqFraming::Length
        }
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        ReqFraming::Chunked
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// Reads what the socket has into the free space of `buf`.
///
/// Through tokio's `AsyncRead`, which clears the socket's cached readiness
/// after a read that did not fill the buffer (the socket is drained). The
/// pool's check of an idle connection ([`Connection::is_idle_and_open`])
/// then costs no system call unless something arrived since.
fn read_into(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Whether a request target is safe to put on a request line: no space,
/// control character or DEL, so it cannot end the line or smuggle a field.
pub fn clean_target(target: &str) -> bool {
    !target.is_empty() && target.bytes().all(|b| b > 0x20 && b != 0x7f)
}

/// Whether a method is idempotent (RFC 9110 section 9.2.2): a request that
/// may be sent again after a failure without changing its effect.
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// Where `part` (a slice of `whole`) sits in it.
/// Where `part`, a slice of `whole`, lies in it.
pub(crate) fn span_of(whole: &[u8], part: &[u8]) -> (usize, usize) {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    (start, start + part.len())
}

/// A `Content-Length` value: one to 19 ASCII digits (no sign, no list).
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn head_for(
        method: Method,
        headers: &[(&str, &str)],
        body: UpstreamBody,
    ) -> (String, ReqFraming) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let host = HeaderValue::from_static("up.example:8080");
        let mut added = UpstreamFields::default();
        added.push(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("r1"),
        );
        let head = RequestHead {
            method: &method,
            target: "/a/b?c=d",
            host: &host,
            headers: &map,
            added: &added,
        };
        let mut out = Vec::new();
        let framing = encode_head(&mut out, &head, &body);
        (String::from_utf8(out).expect("ascii"), framing)
    }

    #[test]
    fn request_heads_carry_one_host_and_framing_of_their_own() {
        let (head, framing) = head_for(
            Method::GET,
            &[
                ("host", "client.example"),
                ("x-a", "1"),
                ("x-a", "2"),
                ("content-length", "0"),
                ("transfer-encoding", "chunked"),
            ],
            UpstreamBody::empty(),
        );
        assert_eq!(framing, ReqFraming::None);
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nhost: up.example:8080\r\nx-a: 1\r\nx-a: 2\r\nx-request-id: r1\r\ncontent-length: 0\r\n\r\n"
        );
        let (head, _) = head_for(Method::GET, &[], UpstreamBody::empty());
        assert!(!head.contains("content-length"), "{head}");
        let (head, _) = head_for(Method::POST, &[], UpstreamBody::empty());
        assert!(head.ends_with("content-length: 0\r\n\r\n"), "{head}");
    }

    #[test]
    fn request_targets_with_spaces_or_controls_are_not_clean() {
        assert!(clean_target("/a/b?c=%20d"));
        assert!(clean_target("/caf\u{e9}"));
        for bad in ["", "/a b", "/a\r\nx: y", "/a\tb", "/a\u{7f}"] {
            assert!(!clean_target(bad), "{bad:?}");
        }
    }

    #[test]
    fn content_lengths_parse_as_plain_decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}
