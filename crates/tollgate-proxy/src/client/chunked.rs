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

pub(crate) fn decode_chunk(buf: &mut BytesMut, state: &mut Chunk) -> Result<Decoded, ClientError> {
    match state {
        Chunk::Size => {
            let Some(nl) = memchr::memchr(b'\n', buf) else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(ClientError::Chunked("chunk-size line too long"))
                } else {
                    Ok(Decoded::NeedMore)
                };
            };
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
            } else if buf.starts_with(b"\n") {
                buf.advance(1);
            } else if buf.len() < 2 {
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
                buf.advance(1);
                return Ok(Decoded::End(None));
            }
            let mut fields = [httparse::EMPTY_HEADER; 64];
            match httparse::parse_headers(buf, &mut fields) {
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
        let mut buf = BytesMut::new();
        let mut state = Chunk::Size;
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decode_chunk(&mut buf, &mut state)? {
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
            decode_chunk(&mut buf, &mut Chunk::Size),
            Err(ClientError::Chunked(_))
        ));
    }
}
