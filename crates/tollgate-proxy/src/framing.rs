//! Request-smuggling detection below hyper.
//!
//! hyper resolves ambiguous framing leniently: with both `Content-Length` and
//! `Transfer-Encoding` it drops the length, and it merges duplicate equal
//! lengths, so the handler never sees either. Tollgate refuses such requests
//! outright (400 and the connection closed). [`FramingIo`] wraps the client
//! connection, follows HTTP/1 message framing on the bytes hyper reads, and
//! records a verdict per request head; the proxy service checks the verdict
//! for each request by its sequence number on the connection.
//!
//! The same pass enforces the request-head limits, so their answers are
//! problem documents like every other gateway error: a head over the size or
//! field-count limit gets a verdict (431 `headers_too_large`), and a head that
//! starts but does not finish within the header deadline is answered 408
//! `request_timeout` here, before the connection closes. hyper's own limits are
//! set wider and stay as the backstop.
//!
//! The tracker never changes the bytes it reads. When it cannot follow the
//! stream (HTTP/2, an unparsable head, a tunnel), it stops and records nothing
//! further.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tollgate_core::problem::{ErrorCode, PROBLEM_JSON, Problem};

/// Limits on request heads, enforced while following the stream.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head in bytes; larger gets 431.
    pub max_bytes: usize,
    /// Most header fields; more gets 431.
    pub max_fields: usize,
    /// Time from a head's first byte to its end; slower gets 408.
    pub deadline: Duration,
}

impl HeadLimits {
    /// Bytes beyond `max_bytes` the tracker keeps following, so a head just over
    /// the limit still reaches the service and is answered with a problem.
    pub const SLACK: usize = 64 * 1024;
}

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ambiguous message framing (request smuggling).
    Framing(&'static str),
    /// The head is over a limit.
    HeadTooLarge(String),
}

/// The 408 written when a head does not arrive in time.
fn request_timeout_response() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let body = Problem::new(ErrorCode::RequestTimeout)
            .detail("the request head was not received in time")
            .to_json();
        let mut out = format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    })
}

/// Verdicts for one connection, shared with the service.
#[derive(Debug, Default)]
pub struct Verdicts {
    any_bad: AtomicBool,
    bad: Mutex<Vec<(u64, Refusal)>>,
    served: AtomicU64,
}

impl Verdicts {
    /// Called once per request, in order; returns why the request is
    /// refused, if it is.
    pub fn next_request(&self) -> Option<Refusal> {
        let idx = self.served.fetch_add(1, Ordering::Relaxed);
        if !self.any_bad.load(Ordering::Acquire) {
            return None;
        }
        let bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        bad.iter()
            .find(|(i, _)| *i == idx)
            .map(|(_, why)| why.clone())
    }

    /// How many requests have reached the service on this connection.
    pub fn requests(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn flag(&self, idx: u64, why: Refusal) {
        self.bad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((idx, why));
        self.any_bad.store(true, Ordering::Release);
    }
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkCrlf(u8),
    Trailers(Vec<u8>),
    Off,
}

/// A client connection whose HTTP/1 framing is followed.
#[derive(Debug)]
pub struct FramingIo<IO> {
    io: IO,
    state: State,
    heads: u64,
    verdicts: Arc<Verdicts>,
    limits: HeadLimits,
    /// Armed while a head is arriving.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The current head was already flagged as too large.
    oversized: bool,
}

impl<IO> FramingIo<IO> {
    pub fn new(io: IO, limits: HeadLimits) -> (Self, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::default());
        (
            FramingIo {
                io,
                state: State::Head(Vec::new()),
                heads: 0,
                verdicts: verdicts.clone(),
                limits,
                deadline: None,
                oversized: false,
            },
            verdicts,
        )
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let head_like = !matches!(self.state, State::ChunkSize(_));
            match &mut self.state {
                State::Off => return,
                State::Fixed(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkCrlf(2);
                    }
                }
                State::ChunkCrlf(k) => {
                    let take = usize::from(*k).min(data.len());
                    *k -= take as u8;
                    data = &data[take..];
                    if *k == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Head(line)
                    if line.is_empty() && !matches!(data.first(), Some(b'\r' | b'\n')) =>
                {
                    // The usual case: a whole head at the start of a read.
                    // Found without copying it byte by byte.
                    let Some(end) = head_end(data) else {
                        line.push(data[0]);
                        data = &data[1..];
                        continue;
                    };
                    let (head, rest) = data.split_at(end);
                    data = rest;
                    self.state = self.on_head(head);
                }
                State::ChunkSize(line) | State::Trailers(line) | State::Head(line) => {
                    let mut done = None;
                    for (i, b) in data.iter().enumerate() {
                        line.push(*b);
                        if *b != b'\n' {
                            continue;
                        }
                        let empty_line = line.as_slice() == b"\r\n" || line.as_slice() == b"\n";
                        if !head_like
                            || empty_line
                            || line.ends_with(b"\r\n\r\n")
                            || line.ends_with(b"\n\n")
                        {
                            done = Some(i + 1);
                            break;
                        }
                    }
                    let Some(used) = done else {
                        let len = line.len();
                        if head_like && len > self.limits.max_bytes && !self.oversized {
                            self.oversized = true;
                            let why =
                                format!("the request head is over {} bytes", self.limits.max_bytes);
                            self.verdicts.flag(self.heads, Refusal::HeadTooLarge(why));
                        }
                        if len > self.limits.max_bytes + HeadLimits::SLACK {
                            self.state = State::Off;
                        }
                        return;
                    };
                    data = &data[used..];
                    let line = std::mem::take(line);
                    self.state = match std::mem::replace(&mut self.state, State::Off) {
                        State::Head(_) => self.on_head(&line),
                        State::ChunkSize(_) => on_chunk_size(&line),
                        _ => State::Head(Vec::new()),
                    };
                }
            }
        }
    }

    fn on_head(&mut self, raw: &[u8]) -> State {
        // Empty lines before a request line are ignored (RFC 9112 section 2.2).
        let start = raw
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(raw.len());
        let raw = &raw[start..];
        if raw.is_empty() {
            return State::Head(Vec::new());
        }
        if raw.starts_with(b"PRI * HTTP/2.0") {
            return State::Off;
        }
        // Left uninitialised: zeroing 256 fields (8 KiB) per request cost
        // more than the parse itself.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
        let mut req = httparse::Request::new(&mut []);
        if !matches!(
            req.parse_with_uninit_headers(raw, &mut headers),
            Ok(httparse::Status::Complete(_))
        ) {
            return State::Off;
        }
        let idx = self.heads;
        self.heads += 1;
        let oversized = std::mem::take(&mut self.oversized);
        if !oversized && raw.len() > self.limits.max_bytes {
            let why = format!("the request head is over {} bytes", self.limits.max_bytes);
            self.verdicts.flag(idx, Refusal::HeadTooLarge(why));
        } else if !oversized && req.headers.len() > self.limits.max_fields {
            let why = format!(
                "the request has more than {} header fields",
                self.limits.max_fields
            );
            self.verdicts.flag(idx, Refusal::HeadTooLarge(why));
        }
        let mut lengths = Vec::new();
        let mut te = false;
        let mut chunked_last = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked_last = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        if te && !lengths.is_empty() {
            self.verdicts.flag(
                idx,
                Refusal::Framing("the request has both Content-Length and Transfer-Encoding"),
            );
        } else if lengths.len() > 1 {
            self.verdicts.flag(
                idx,
                Refusal::Framing("the request has more than one Content-Length"),
            );
        } else if lengths
            .first()
            .is_some_and(|v| v.is_empty() || !v.iter().all(u8::is_ascii_digit))
        {
            self.verdicts.flag(
                idx,
                Refusal::Framing("the request's Content-Length is not a number"),
            );
        }
        if te {
            return if chunked_last {
                State::ChunkSize(Vec::new())
            } else {
                State::Off
            };
        }
        let len = lengths
            .first()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match len {
            Some(0) | None if lengths.is_empty() => State::Head(Vec::new()),
            Some(0) => State::Head(Vec::new()),
            Some(n) => State::Fixed(n),
            None => State::Off,
        }
    }
}

fn on_chunk_size(line: &[u8]) -> State {
    let digits: &[u8] = line
        .split(|b| *b == b';' || *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(&[]);
    let text = std::str::from_utf8(digits).map(str::trim).unwrap_or("");
    match u64::from_str_radix(text, 16) {
        Ok(0) => State::Trailers(Vec::new()),
        Ok(n) => State::ChunkData(n),
        Err(_) => State::Off,
    }
}

/// Where a head that starts at `data[0]` ends: just past the first empty
/// line, `\r\n\r\n` or a bare `\n\n`, whichever comes first.
///
/// One pass over the line ends: `memmem::find` builds a searcher on every
/// call, which cost more than the search on heads of a few hundred bytes.
fn head_end(data: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', data).find_map(|p| match data.get(p + 1..) {
        Some([b'\n', ..]) => Some(p + 2),
        Some([b'\r', b'\n', ..]) if p > 0 && data[p - 1] == b'\r' => Some(p + 3),
        _ => None,
    })
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for FramingIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) if !matches!(this.state, State::Off) => {
                this.feed(&buf.filled()[before..]);
                // The deadline runs from a head's first byte to its end.
                match &this.state {
                    State::Head(line) if !line.is_empty() => {
                        if this.deadline.is_none() {
                            this.deadline =
                                Some(Box::pin(tokio::time::sleep(this.limits.deadline)));
                        }
                    }
                    _ => this.deadline = None,
                }
            }
            Poll::Pending => {
                if let Some(timer) = this.deadline.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    // Best effort: the answer is small and the socket idle.
                    let _ = Pin::new(&mut this.io).poll_write(cx, request_timeout_response());
                    this.deadline = None;
                    this.state = State::Off;
                    // End of stream: hyper drops the half-read head and closes.
                    return Poll::Ready(Ok(()));
                }
            }
            _ => {}
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_fields: 10,
        deadline: Duration::from_secs(10),
    };

    /// Every string of up to eight bytes over `\r`, `\n` and `a`: the end
    /// found is the end of the first `\r\n\r\n` or `\n\n`, whichever ends first.
    #[test]
    fn head_end_finds_the_first_empty_line_of_either_kind() {
        fn reference(data: &[u8]) -> Option<usize> {
            let find = |pat: &[u8]| {
                data.windows(pat.len())
                    .position(|w| w == pat)
                    .map(|i| i + pat.len())
            };
            match (find(b"\r\n\r\n"), find(b"\n\n")) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        let alphabet = [b'\r', b'\n', b'a'];
        for len in 0..=8u32 {
            for mut code in 0..3usize.pow(len) {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        let c = alphabet[code % 3];
                        code /= 3;
                        c
                    })
                    .collect();
                assert_eq!(head_end(&data), reference(&data), "{data:?}");
            }
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
    }

    fn run(chunks: &[&[u8]]) -> (Arc<Verdicts>, u64) {
        let (mut io, v) = FramingIo::new((), LIMITS);
        for c in chunks {
            io.feed(c);
        }
        (v, io.heads)
    }

    fn verdicts(v: &Verdicts, n: u64) -> Vec<Option<Refusal>> {
        (0..n).map(|_| v.next_request()).collect()
    }

    #[test]
    fn clean_pipelined_requests_pass() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /z HTTP/1.1\r\n\r\n";
        // Feed byte by byte to exercise every boundary.
        let (mut io, v) = FramingIo::new((), LIMITS);
        for b in stream.iter() {
            io.feed(std::slice::from_ref(b));
        }
        assert_eq!(io.heads, 4);
        assert_eq!(verdicts(&v, 4), [None, None, None, None]);
        let (_, heads) = run(&[stream]);
        assert_eq!(heads, 4);
    }

    #[test]
    fn ambiguous_framing_is_flagged_per_request() {
        let stream = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (v, heads) = run(&[stream]);
        assert_eq!(heads, 2);
        let got = verdicts(&v, 2);
        assert_eq!(got[0], None);
        assert!(matches!(&got[1], Some(Refusal::Framing(why)) if why.contains("both")));

        let (v, _) =
            run(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"]);
        assert!(
            matches!(v.next_request(), Some(Refusal::Framing(why)) if why.contains("more than one"))
        );
        let (v, _) = run(&[b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"]);
        assert!(v.next_request().is_some());
    }

    #[test]
    fn heads_over_the_limits_are_flagged() {
        let big = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
            "a".repeat(2000)
        );
        let (v, heads) = run(&[big.as_bytes()]);
        assert_eq!(heads, 2);
        assert!(
            matches!(v.next_request(), Some(Refusal::HeadTooLarge(why)) if why.contains("1024 bytes"))
        );
        assert_eq!(v.next_request(), None);
        let many: String = (0..11).map(|i| format!("X-{i}: 1\r\n")).collect();
        let (v, _) = run(&[format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()]);
        assert!(
            matches!(v.next_request(), Some(Refusal::HeadTooLarge(why)) if why.contains("10 header fields"))
        );
        let (v, _) = run(&[b"GET / HTTP/1.1\r\nX-1: 1\r\n\r\n"]);
        assert_eq!(v.next_request(), None);
    }

    #[test]
    fn chunk_extensions_and_trailers() {
        let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (v, heads) = run(&[stream]);
        assert_eq!(heads, 2);
        assert_eq!(v.next_request(), None);
        assert!(v.next_request().is_some());
    }

    #[test]
    fn http2_preface_switches_tracking_off() {
        let (v, heads) = run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x00\x12\x04"]);
        assert_eq!(heads, 0);
        assert_eq!(v.next_request(), None);
    }
}
