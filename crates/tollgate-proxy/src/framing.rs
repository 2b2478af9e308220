//! How a request head frames its body (RFC 9112 section 6), and the
//! ambiguous framings that Tollgate refuses.
//!
//! A gateway and an upstream that disagree on where a request ends can be
//! made to see two requests where the other sees one (request smuggling).
//! Tollgate's own HTTP/1 connection ([`crate::h1`]) reads the body the way
//! it forwards it, and it refuses the shapes such attacks use rather than
//! pick one reading: both `Content-Length` and `Transfer-Encoding`, more
//! than one `Content-Length`, a length that is not a number, and a transfer
//! coding that does not end in `chunked`. Those requests are answered 400
//! `request_smuggling` and the connection is closed.

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ambiguous message framing (request smuggling).
    Framing(&'static str),
    /// The head is over a limit.
    HeadTooLarge(String),
}

/// Where a request's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no framing field, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// The body framing of a request with these header fields, or why it is
/// refused.
pub fn body_framing(fields: &[httparse::Header<'_>]) -> Result<BodyFraming, Refusal> {
    let mut length: Option<&[u8]> = None;
    let mut lengths = 0;
    let mut te = false;
    let mut chunked_last = false;
    for h in fields {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked_last = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    if te && lengths > 0 {
        return Err(Refusal::Framing(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    if lengths > 1 {
        return Err(Refusal::Framing(
            "the request has more than one Content-Length",
        ));
    }
    if te {
        return if chunked_last {
            Ok(BodyFraming::Chunked)
        } else {
            Err(Refusal::Framing(
                "the request's Transfer-Encoding does not end in chunked",
            ))
        };
    }
    match length {
        None => Ok(BodyFraming::Empty),
        Some(v) => match crate::client::parse_decimal(v.trim_ascii()) {
            Some(0) => Ok(BodyFraming::Empty),
            Some(n) => Ok(BodyFraming::Length(n)),
            None => Err(Refusal::Framing(
                "the request's Content-Length is not a number",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(fields: &[(&str, &str)]) -> Result<BodyFraming, Refusal> {
        let headers: Vec<httparse::Header<'_>> = fields
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect();
        body_framing(&headers)
    }

    #[test]
    fn plain_framings() {
        assert_eq!(framing(&[("host", "t")]), Ok(BodyFraming::Empty));
        assert_eq!(framing(&[("Content-Length", "0")]), Ok(BodyFraming::Empty));
        assert_eq!(
            framing(&[("content-length", " 42 ")]),
            Ok(BodyFraming::Length(42))
        );
        assert_eq!(
            framing(&[("Transfer-Encoding", "gzip, Chunked")]),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn ambiguous_framings_are_refused() {
        for fields in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            &[("content-length", "3"), ("content-length", "3")],
            &[("content-length", "3"), ("content-length", "4")],
            &[("content-length", "3, 3")],
            &[("content-length", "+3")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999")],
            &[("transfer-encoding", "chunked, gzip")],
        ] {
            assert!(
                matches!(framing(fields), Err(Refusal::Framing(_))),
                "{fields:?}"
            );
        }
    }
}
