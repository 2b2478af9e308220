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
//! The tracker only reads; it never changes the bytes. When it cannot follow
//! the stream (HTTP/2, an unparsable head, a tunnel), it stops and records
//! nothing further.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const MAX_HEAD: usize = 128 * 1024;

/// Verdicts for one connection, shared with the service.
#[derive(Debug, Default)]
pub struct Verdicts {
    any_bad: AtomicBool,
    bad: Mutex<Vec<(u64, &'static str)>>,
    served: AtomicU64,
}

impl Verdicts {
    /// Called once per request, in order; returns why the request's framing
    /// is refused, if it is.
    pub fn next_request(&self) -> Option<&'static str> {
        let idx = self.served.fetch_add(1, Ordering::Relaxed);
        if !self.any_bad.load(Ordering::Acquire) {
            return None;
        }
        let bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        bad.iter().find(|(i, _)| *i == idx).map(|(_, why)| *why)
    }

    /// How many requests have reached the service on this connection.
    pub fn requests(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn flag(&self, idx: u64, why: &'static str) {
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
}

impl<IO> FramingIo<IO> {
    pub fn new(io: IO) -> (Self, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::default());
        (
            FramingIo {
                io,
                state: State::Head(Vec::new()),
                heads: 0,
                verdicts: verdicts.clone(),
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
                        if line.len() > MAX_HEAD {
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
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(raw), Ok(httparse::Status::Complete(_))) {
            return State::Off;
        }
        let idx = self.heads;
        self.heads += 1;
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
                "the request has both Content-Length and Transfer-Encoding",
            );
        } else if lengths.len() > 1 {
            self.verdicts
                .flag(idx, "the request has more than one Content-Length");
        } else if lengths
            .first()
            .is_some_and(|v| v.is_empty() || !v.iter().all(u8::is_ascii_digit))
        {
            self.verdicts
                .flag(idx, "the request's Content-Length is not a number");
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

impl<IO: AsyncRead + Unpin> AsyncRead for FramingIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && !matches!(this.state, State::Off) {
            this.feed(&buf.filled()[before..]);
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

    fn run(chunks: &[&[u8]]) -> (Arc<Verdicts>, u64) {
        let (mut io, v) = FramingIo::new(());
        for c in chunks {
            io.feed(c);
        }
        (v, io.heads)
    }

    fn verdicts(v: &Verdicts, n: u64) -> Vec<Option<&'static str>> {
        (0..n).map(|_| v.next_request()).collect()
    }

    #[test]
    fn clean_pipelined_requests_pass() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /z HTTP/1.1\r\n\r\n";
        // Feed byte by byte to exercise every boundary.
        let (mut io, v) = FramingIo::new(());
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
        assert!(got[1].expect("flagged").contains("both"));

        let (v, _) =
            run(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"]);
        assert!(v.next_request().expect("dup").contains("more than one"));
        let (v, _) = run(&[b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"]);
        assert!(v.next_request().is_some());
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
