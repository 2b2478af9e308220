//! How a request head frames its body (RFC 9112 section 6), and the
//! ambiguous framings that Tollgate refuses.
//!
//! A gateway and an upstream that disagree on where a request ends can be
//! made to see two requests where the other sees one (request smuggling).
//! Tollgate's own HTTP/1 connection ([`crate::h1`]) reads the body the way
//! it forwards it, and it refuses the shapes such attacks use rather than
//! pick one reading: both `Content-Length` and `Transfer-Encoding`, more
//! than one `Content-Length`, a length that is not a number, a transfer
//! coding that does not end in `chunked`, and `chunked` applied twice.
//! Those requests are answered 400 `request_smuggling` and the connection
//! is closed.
//!
//! Tollgate decodes no transfer coding but `chunked`. A request framed by
//! `chunked` with another coding under it (`gzip, chunked`) is answered 501
//! `transfer_coding_not_implemented` (RFC 9112 section 6.1), and the
//! connection is closed: passing the decoded bytes on without the coding
//! that names them would hand the upstream content it cannot read.

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ambiguous message framing (request smuggling).
    Framing(&'static str),
    /// A transfer coding other than `chunked`.
    Coding(String),
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
    // The codings in the order applied, over every Transfer-Encoding line
    // (RFC 9110 section 5.3: several lines are one comma-separated list).
    let mut chunked = 0;
    let mut chunked_last = false;
    let mut other: Option<&[u8]> = None;
    for h in fields {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            for coding in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                if chunked_last {
                    chunked += 1;
                } else {
                    other.get_or_insert(coding);
                }
            }
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
        if !chunked_last {
            return Err(Refusal::Framing(
                "the request's Transfer-Encoding does not end in chunked",
            ));
        }
        if chunked > 1 {
            return Err(Refusal::Framing(
                "the request's Transfer-Encoding applies chunked more than once",
            ));
        }
        if let Some(coding) = other {
            let coding = String::from_utf8_lossy(&coding[..coding.len().min(64)]);
            return Err(Refusal::Coding(format!(
                "the transfer coding `{coding}` is not implemented; only chunked is"
            )));
        }
        return Ok(BodyFraming::Chunked);
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
            framing(&[("Transfer-Encoding", " Chunked ")]),
            Ok(BodyFraming::Chunked)
        );
        // Empty list elements are allowed (RFC 9110 section 5.6.1).
        assert_eq!(
            framing(&[("transfer-encoding", ", chunked,")]),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn codings_other_than_chunked_are_not_implemented() {
        for fields in [
            &[("Transfer-Encoding", "gzip, Chunked")][..],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "x-custom ,chunked")],
        ] {
            assert!(
                matches!(framing(fields), Err(Refusal::Coding(_))),
                "{fields:?}"
            );
        }
        let Err(Refusal::Coding(why)) = framing(&[("transfer-encoding", "gzip, chunked")]) else {
            panic!("not refused");
        };
        assert!(why.contains("`gzip`"), "{why}");
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
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip"),
            ],
            &[("transfer-encoding", "chunked, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "")],
        ] {
            assert!(
                matches!(framing(fields), Err(Refusal::Framing(_))),
                "{fields:?}"
            );
        }
    }
}
