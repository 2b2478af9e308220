//! A RESP2 connection of the limiter's own, for the one command on its hot
//! path: the batched `EVALSHA` of `decide.lua`, whose reply is a flat array
//! of integers.
//!
//! The `redis` crate stays for every other call (quota reads, concurrency
//! slots given back, the synced backend). For this command, what the Redis
//! path cost Tollgate over the in-process limiter was about twice what it
//! is with this connection: the crate builds a generic reply tree with a
//! combinator parser, copies the command into and out of its buffers, and
//! hands each call to its connection task with a timer. Here the batch is
//! encoded straight into the connection's write buffer and the reply is
//! parsed in one pass into the caller's `Vec<i64>` (decision 0015 has the
//! figures).
//!
//! A `Wire` is owned by one batching task at a time and carries one
//! command at a time; it is dropped after any failure that leaves the
//! stream out of step (I/O error, a reply it does not understand, a
//! timeout mid-exchange) and a new one is made for the next batch.

use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What went wrong on a [`Wire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The server answered with an error reply (`-NOSCRIPT ...`); the
    /// connection is still in step and may be used again.
    Server(String),
    /// The connection failed or went out of step; it must be dropped.
    Broken(String),
}

impl WireError {
    /// An error reply to a command that others follow on the wire, unread
    /// or unwanted: the connection cannot be used further.
    pub(crate) fn fatal(self, context: &str) -> WireError {
        match self {
            WireError::Server(m) => WireError::Broken(format!("{context}: {m}")),
            broken => broken,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Server(m) => write!(f, "Redis replied: {m}"),
            WireError::Broken(m) => f.write_str(m),
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// One connection to Redis speaking RESP2.
pub(crate) struct Wire {
    stream: Stream,
    /// The command being built; sent by [`Wire::send`].
    out: Vec<u8>,
    /// Bytes read and not yet parsed.
    inp: BytesMut,
}

impl Wire {
    /// Connects and, as the URL asks, authenticates and selects the
    /// database. Not bounded in time by itself: the caller's timeout is.
    pub(crate) async fn connect(info: &ConnectionInfo) -> Result<Wire, WireError> {
        let broken = |e: std::io::Error| WireError::Broken(format!("cannot connect to Redis: {e}"));
        let stream = match &info.addr {
            ConnectionAddr::Tcp(host, port) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(broken)?;
                s.set_nodelay(true).map_err(broken)?;
                Stream::Tcp(s)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Stream::Unix(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(broken)?,
            ),
            other => {
                return Err(WireError::Broken(format!(
                    "Redis address {other} is not supported by the limiter"
                )));
            }
        };
        let mut wire = Wire {
            stream,
            out: Vec::with_capacity(4096),
            inp: BytesMut::with_capacity(4096),
        };
        let r = &info.redis;
        let mut replies = 0;
        if let Some(password) = &r.password {
            match &r.username {
                Some(user) => {
                    wire.start(3);
                    wire.bulk(b"AUTH");
                    wire.bulk(user.as_bytes());
                }
                None => {
                    wire.start(2);
                    wire.bulk(b"AUTH");
                }
            }
            wire.bulk(password.as_bytes());
            replies += 1;
        }
        if r.db != 0 {
            wire.start(2);
            wire.bulk(b"SELECT");
            wire.int(r.db);
            replies += 1;
        }
        if replies > 0 {
            wire.send().await?;
            for _ in 0..replies {
                // A refused AUTH or SELECT leaves this connection useless.
                wire.simple()
                    .await
                    .map_err(|e| e.fatal("Redis refused the connection"))?;
            }
        }
        Ok(wire)
    }

    /// Starts a command of `args` arguments (the command's name included).
    pub(crate) fn start(&mut self, args: usize) {
        self.out.push(b'*');
        self.decimal(args as i64);
    }

    /// Appends a string argument.
    pub(crate) fn bulk(&mut self, arg: &[u8]) {
        self.out.push(b'$');
        self.decimal(arg.len() as i64);
        self.out.extend_from_slice(arg);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends an integer argument (sent, as Redis wants, as its decimal string).
    pub(crate) fn int(&mut self, n: i64) {
        let mut digits = itoa::Buffer::new();
        self.bulk(digits.format(n).as_bytes());
    }

    fn decimal(&mut self, n: i64) {
        let mut digits = itoa::Buffer::new();
        self.out.extend_from_slice(digits.format(n).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Sends the commands built so far.
    pub(crate) async fn send(&mut self) -> Result<(), WireError> {
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(&self.out).await,
            #[cfg(unix)]
            Stream::Unix(s) => s.write_all(&self.out).await,
        };
        self.out.clear();
        r.map_err(|e| WireError::Broken(format!("cannot write to Redis: {e}")))
    }

    /// Reads one reply that must be an array of integers into `into`
    /// (cleared first).
    pub(crate) async fn integers(&mut self, into: &mut Vec<i64>) -> Result<(), WireError> {
        self.reply(|buf| {
            into.clear();
            parse_integers(buf, into)
        })
        .await
    }

    /// Reads one status, string or integer reply, whose content is not needed.
    pub(crate) async fn simple(&mut self) -> Result<(), WireError> {
        self.reply(parse_simple).await
    }

    /// Reads until `parse` finds a whole reply, and takes it off the input.
    async fn reply(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> Result<Parsed, WireError>,
    ) -> Result<(), WireError> {
        loop {
            match parse(&self.inp)? {
                Parsed::Whole(used) => {
                    self.inp.advance(used);
                    return Ok(());
                }
                Parsed::Refused(used, text) => {
                    self.inp.advance(used);
                    return Err(WireError::Server(text));
                }
                Parsed::Partial => self.fill().await?,
            }
        }
    }

    async fn fill(&mut self) -> Result<(), WireError> {
        self.inp.reserve(4096);
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.read_buf(&mut self.inp).await,
            #[cfg(unix)]
            Stream::Unix(s) => s.read_buf(&mut self.inp).await,
        }
        .map_err(|e| WireError::Broken(format!("cannot read from Redis: {e}")))?;
        if n == 0 {
            return Err(WireError::Broken("Redis closed the connection".into()));
        }
        Ok(())
    }
}

/// A reply found at the start of the input, or not yet.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A whole reply of the expected kind, this many bytes long.
    Whole(usize),
    /// An error reply this many bytes long, and its text.
    Refused(usize, String),
    /// The reply has not all arrived.
    Partial,
}

/// The line starting at `at` (without its CRLF) and where the next one
/// starts, or `None` when it has not all arrived.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, WireError> {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(lf) = memchr::memchr(b'\n', rest) else {
        return Ok(None);
    };
    match rest[..lf].strip_suffix(b"\r") {
        Some(content) => Ok(Some((content, at + lf + 1))),
        None => Err(out_of_step("a line without CRLF")),
    }
}

fn out_of_step(what: &str) -> WireError {
    WireError::Broken(format!("unexpected reply from Redis: {what}"))
}

/// A RESP integer's digits.
fn number(digits: &[u8]) -> Result<i64, WireError> {
    let (negative, magnitude) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    let malformed = || out_of_step("a malformed number");
    if magnitude.is_empty() {
        return Err(malformed());
    }
    // Accumulated as a negative number, whose range holds every i64.
    let mut n: i64 = 0;
    for &d in magnitude {
        let v = d.wrapping_sub(b'0');
        if v > 9 {
            return Err(malformed());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(i64::from(v)))
            .ok_or_else(malformed)?;
    }
    if negative {
        Ok(n)
    } else {
        n.checked_neg().ok_or_else(malformed)
    }
}

/// An error reply's text and length.
fn refused(text: &[u8], used: usize) -> Parsed {
    Parsed::Refused(used, String::from_utf8_lossy(text).into_owned())
}

/// Parses an array of integers (or an error reply) from the start of `buf`.
fn parse_integers(buf: &[u8], into: &mut Vec<i64>) -> Result<Parsed, WireError> {
    let Some((head, mut at)) = line(buf, 0)? else {
        return Ok(Parsed::Partial);
    };
    match head.split_first() {
        Some((b'*', count)) => {
            let count = number(count)?;
            let count = usize::try_from(count).map_err(|_| out_of_step("a null array"))?;
            // Room for what has arrived (an item takes 4 bytes at least),
            // not for whatever count the reply claims.
            into.reserve(count.min(buf.len() / 4));
            for _ in 0..count {
                let Some((item, next)) = line(buf, at)? else {
                    return Ok(Parsed::Partial);
                };
                match item.split_first() {
                    Some((b':', digits)) => into.push(number(digits)?),
                    _ => return Err(out_of_step("an array item that is not an integer")),
                }
                at = next;
            }
            Ok(Parsed::Whole(at))
        }
        Some((b'-', text)) => Ok(refused(text, at)),
        _ => Err(out_of_step("not an array")),
    }
}

/// Parses a status, bulk string or integer reply (or an error reply) from
/// the start of `buf`, as [`parse_integers`] does.
fn parse_simple(buf: &[u8]) -> Result<Parsed, WireError> {
    let Some((head, at)) = line(buf, 0)? else {
        return Ok(Parsed::Partial);
    };
    match head.split_first() {
        Some((b'+' | b':', _)) => Ok(Parsed::Whole(at)),
        Some((b'$', len)) => {
            let len = number(len)?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Parsed::Whole(at)); // a null string
            };
            let end = at + len + 2;
            if buf.len() < end {
                return Ok(Parsed::Partial);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(out_of_step("a string of the wrong length"));
            }
            Ok(Parsed::Whole(end))
        }
        Some((b'-', text)) => Ok(refused(text, at)),
        _ => Err(out_of_step("not a status, string or integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_of_integers_is_read_whole_and_only_whole() {
        let reply = b"*3\r\n:1700000000000000\r\n:-1\r\n:0\r\n+OK\r\n";
        let whole = reply.len() - 5;
        let mut v = Vec::new();
        assert_eq!(parse_integers(reply, &mut v), Ok(Parsed::Whole(whole)));
        assert_eq!(v, [1_700_000_000_000_000, -1, 0]);
        // Every shorter prefix is partial, not an error.
        for cut in 0..whole {
            let p = parse_integers(&reply[..cut], &mut v);
            assert_eq!(p, Ok(Parsed::Partial), "cut at {cut}");
        }
        assert_eq!(parse_integers(b"*0\r\n", &mut v), Ok(Parsed::Whole(4)));
        // A count far beyond what arrived allocates nothing for it.
        let mut v = Vec::new();
        let huge = b"*9223372036854775807\r\n:1\r\n";
        assert_eq!(parse_integers(huge, &mut v), Ok(Parsed::Partial));
        assert!(v.capacity() < 64, "reserved {}", v.capacity());
    }

    #[test]
    fn an_error_reply_keeps_its_text_and_length() {
        let mut v = Vec::new();
        let reply = b"-NOSCRIPT No matching script\r\n:1\r\n";
        assert_eq!(
            parse_integers(reply, &mut v),
            Ok(Parsed::Refused(
                reply.len() - 4,
                "NOSCRIPT No matching script".into()
            ))
        );
        assert_eq!(
            parse_simple(b"-WRONGPASS invalid password\r\n"),
            Ok(Parsed::Refused(29, "WRONGPASS invalid password".into()))
        );
        assert_eq!(parse_simple(b"-WRONGPASS"), Ok(Parsed::Partial));
    }

    #[test]
    fn replies_it_does_not_expect_break_the_connection() {
        let mut v = Vec::new();
        for bad in [
            &b"$3\r\nabc\r\n"[..],
            b"*2\r\n:1\r\n$1\r\nx\r\n",
            b"*-1\r\n",
            b"*1\r\n:12x\r\n",
            b"*1\n",
        ] {
            assert!(
                matches!(parse_integers(bad, &mut v), Err(WireError::Broken(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_simple(b"*1\r\n:1\r\n"),
            Err(WireError::Broken(_))
        ));
        assert!(matches!(
            parse_simple(b"$2\r\nabc\r\n"),
            Err(WireError::Broken(_))
        ));
    }

    #[test]
    fn numbers_cover_the_range_of_i64_and_nothing_else() {
        for n in [0, 7, -7, 1_700_000_000_000_000, i64::MAX, i64::MIN] {
            assert_eq!(number(n.to_string().as_bytes()), Ok(n));
        }
        for bad in [
            "",
            "-",
            "+1",
            "1 ",
            "9223372036854775808",
            "-9223372036854775809",
            "1e3",
        ] {
            assert!(number(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn simple_replies_of_each_kind() {
        assert_eq!(parse_simple(b"+OK\r\n"), Ok(Parsed::Whole(5)));
        assert_eq!(parse_simple(b":3\r\n"), Ok(Parsed::Whole(4)));
        assert_eq!(parse_simple(b"$-1\r\n"), Ok(Parsed::Whole(5)));
        let sha = b"$40\r\n0123456789012345678901234567890123456789\r\n";
        assert_eq!(parse_simple(sha), Ok(Parsed::Whole(sha.len())));
        assert_eq!(parse_simple(&sha[..sha.len() - 1]), Ok(Parsed::Partial));
        assert_eq!(parse_simple(b"+OK"), Ok(Parsed::Partial));
    }
}
