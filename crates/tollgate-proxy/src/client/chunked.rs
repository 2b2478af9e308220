//! The chunked transfer coding of response bodies (RFC 9112 section 7.1),
//! decoded from the connection's read buffer one step at a time.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::body::ResponseBody;
use super::{ClientError, MAX_CHUNK_LINE, MAX_HEAD_BYTES};

/// Where the chunked decoder is.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes remain.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// One step of the chunked decoder.
pub(crate) enum Decoded {
    Data(Bytes),
    /// A size line or a chunk's CRLF was consumed.
    Progress,
    /// The last chunk and the trailer section were read.
    End(Option<HeaderMap>),
    NeedMore,
}

/// `strict` is for request bodies, which the gateway forwards to upstreams
/// that may read them differently: line ends must be CRLF, a chunk
/// extension may hold no control bytes, and a size line is at most
/// [`MAX_CHUNK_LINE`] long however it arrives. Responses are read leniently.
pub(crate) fn decode_chunk(
    buf: &mut BytesMut,
    state: &mut Chunk,
    strict: bool,
) -> Result<Decoded, ClientError> {
    match state {
        Chunk::Size => {
            let Some(nl) = memchr::memchr(b'\n', buf) else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(ClientError::Chunked("chunk-size line too long"))
                } else {
                    Ok(Decoded::NeedMore)
                };
            };
            if strict && (nl > MAX_CHUNK_LINE || nl == 0 || buf[nl - 1] != b'\r') {
                return Err(ClientError::Chunked("chunk-size line not ended by CRLF"));
            }
            let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
            let digits = line
                .iter()
                .position(|b| !b.is_ascii_hexdigit())
                .unwrap_or(line.len());
            if digits == 0 || digits > 15 {
                return Err(ClientError::Chunked("invalid chunk size"));
            }
            let rest = &line[digits..];
            if !(rest.is_empty() || matches!(rest.trim_ascii_start().first(), Some(b';'))) {
                return Err(ClientError::Chunked("invalid chunk size"));
            }
            if strict && !strict_extension(rest) {
                return Err(ClientError::Chunked("invalid chunk extension"));
            }
            let size = line[..digits]
                .iter()
                .fold(0u64, |n, c| (n << 4) | u64::from(hex_value(*c)));
            buf.advance(nl + 1);
            *state = if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            };
            Ok(Decoded::Progress)
        }
        Chunk::Data(rem) => {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let data = ResponseBody::take_data(buf, *rem);
            *rem -= data.len() as u64;
            if *rem == 0 {
                *state = Chunk::DataEnd;
            }
            Ok(Decoded::Data(data))
        }
        Chunk::DataEnd => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
            } else if buf.starts_with(b"\n") && !strict {
                buf.advance(1);
            } else if buf.len() < 2 && buf.first() != Some(&b'\n') {
                return Ok(Decoded::NeedMore);
            } else {
                return Err(ClientError::Chunked("missing CRLF after chunk data"));
            }
            *state = Chunk::Size;
            Ok(Decoded::Progress)
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Decoded::End(None));
            }
            if buf.starts_with(b"\n") {
                if strict {
                    return Err(ClientError::Chunked("trailer section not ended by CRLF"));
                }
                buf.advance(1);
                return Ok(Decoded::End(None));
            }
            let mut fields = [httparse::EMPTY_HEADER; 64];
            match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((len, _)))
                    if strict
                        && memchr::memchr_iter(b'\n', &buf[..len])
                            .any(|i| i == 0 || buf[i - 1] != b'\r') =>
                {
                    Err(ClientError::Chunked("trailer section not ended by CRLF"))
                }
                Ok(httparse::Status::Complete((len, parsed))) => {
                    let mut trailers = HeaderMap::with_capacity(parsed.len());
                    for f in parsed {
                        let name = HeaderName::from_bytes(f.name.as_bytes())
                            .map_err(|_| ClientError::Chunked("invalid trailer name"))?;
                        let value = HeaderValue::from_bytes(f.value)
                            .map_err(|_| ClientError::Chunked("invalid trailer value"))?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    Ok(Decoded::End(Some(trailers)))
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                    Err(ClientError::Chunked("trailer section too large"))
                }
                Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
                Err(_) => Err(ClientError::Chunked("invalid trailer section")),
            }
        }
    }
}

/// After the size digits: nothing, or optional spaces or tabs, `;` and
/// extension bytes that are not control characters (tab aside).
fn strict_extension(rest: &[u8]) -> bool {
    let ext = rest.trim_ascii_start();
    let lead = &rest[..rest.len() - ext.len()];
    rest.is_empty()
        || (lead.iter().all(|b| *b == b' ' || *b == b'\t')
            && ext.first() == Some(&b';')
            && ext
                .iter()
                .all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)))
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to the decoder in pieces of `step` bytes and collects
    /// the body and the trailers.
    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ClientError> {
        decode_all_as(wire, step, false)
    }

    fn decode_all_as(
        wire: &[u8],
        step: usize,
        strict: bool,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), ClientError> {
        let mut buf = BytesMut::new();
        let mut state = Chunk::Size;
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decode_chunk(&mut buf, &mut state, strict)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Progress => {}
                Decoded::End(trailers) => {
                    assert!(buf.is_empty(), "nothing after the message");
                    return Ok((body, trailers));
                }
                Decoded::NeedMore => {
                    assert!(fed < wire.len(), "decoder wants more than the message");
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whole_in_any_split() {
        let wire = b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, trailers) = decode_all(wire, step).expect("decodes");
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert!(trailers.is_none());
        }
    }

    #[test]
    fn chunked_trailers_are_returned() {
        let wire = b"3\r\nabc\r\n0\r\nx-checksum: 42\r\nx-other: a\r\n\r\n";
        for step in [1, 5, wire.len()] {
            let (body, trailers) = decode_all(wire, step).expect("decodes");
            assert_eq!(body, b"abc");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-checksum"], "42");
            assert_eq!(trailers["x-other"], "a");
        }
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\nhello\r\n",
            b"10000000000000000\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(decode_all(wire, 4), Err(ClientError::Chunked(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = vec![b'1'; MAX_CHUNK_LINE + 10];
        let mut buf = BytesMut::from(&long_line[..]);
        assert!(matches!(
            decode_chunk(&mut buf, &mut Chunk::Size, false),
            Err(ClientError::Chunked(_))
        ));
    }

    /// Request bodies: what a CRLF-only reader would frame differently is
    /// refused; well-formed bodies decode as before.
    #[test]
    fn strict_decoding_refuses_bare_line_feeds_and_control_bytes() {
        let good = b"5;name=value\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n";
        for step in [1, 3, good.len()] {
            let (body, trailers) = decode_all_as(good, step, true).expect("decodes");
            assert_eq!(body, b"hello");
            assert!(trailers.is_some());
        }
        for wire in [
            &b"2;\nxx\r\n0\r\n\r\n"[..],
            b"2\nxx\r\n0\r\n\r\n",
            b"2\r\nxx\n0\r\n\r\n",
            b"2\r\nxx\r\n0\r\n\n",
            b"2\r\nxx\r\n0\r\nx-sum: 1\n\r\n",
            b"2;a\rb\r\nxx\r\n0\r\n\r\n",
            b"2\x0c;a\r\nxx\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(decode_all_as(wire, 4, true), Err(ClientError::Chunked(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
            assert!(
                decode_all(wire, 4).is_ok(),
                "responses stay lenient: {:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut long = b"1;".to_vec();
        long.extend(vec![b'x'; MAX_CHUNK_LINE]);
        long.extend_from_slice(b"\r\nx\r\n");
        let mut buf = BytesMut::from(&long[..]);
        assert!(matches!(
            decode_chunk(&mut buf, &mut Chunk::Size, true),
            Err(ClientError::Chunked(_))
        ));
    }
}
