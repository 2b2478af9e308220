//! Header fields the gateway adds to a request going upstream, kept apart
//! from the client's own fields until something needs them together.
//!
//! Most of what the gateway adds is known before the request arrives: the
//! forwarding fields depend on the connection and its `Host`, a key's
//! identity fields on the key. A [`FieldBlock`] holds such fields already
//! encoded for the wire, so a request sends them with one copy, instead of
//! inserting each into the request's `HeaderMap`, encoding it again and
//! dropping it afterwards.
//!
//! [`UpstreamFields`] is the list for one request. The upstream client
//! writes it after the request's map. Code that reads or edits the upstream
//! request's fields as a map (a header transformer) first calls
//! [`UpstreamFields::materialize`], which moves every added field into the
//! map, with insert semantics, and leaves the list empty.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// Header fields encoded once, as `name: value\r\n` lines, beside the pairs
/// they were made from.
#[derive(Debug)]
pub struct FieldBlock {
    pairs: Vec<(HeaderName, HeaderValue)>,
    wire: Bytes,
}

impl FieldBlock {
    /// A block of these fields, in this order. Names are lower case (as
    /// `HeaderName` keeps them); values were checked when they were made.
    pub fn new(pairs: Vec<(HeaderName, HeaderValue)>) -> FieldBlock {
        let len = pairs
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let mut wire = Vec::with_capacity(len);
        for (name, value) in &pairs {
            write_field(&mut wire, name, value);
        }
        FieldBlock {
            pairs,
            wire: Bytes::from(wire),
        }
    }

    /// The fields as pairs.
    pub fn pairs(&self) -> &[(HeaderName, HeaderValue)] {
        &self.pairs
    }

    /// The fields as they go on the wire: one `name: value\r\n` per field.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

/// Appends one `name: value\r\n` line.
pub fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One entry of [`UpstreamFields`].
#[derive(Debug, Clone)]
enum Added {
    Block(Arc<FieldBlock>),
    Field(HeaderName, HeaderValue),
}

/// The fields the gateway adds to one request going upstream, in the order
/// they were added. Each name replaces any field of that name in the
/// request's map: the gateway removes the client's copies of the names it
/// sets (see the proxy), and [`UpstreamFields::materialize`] inserts.
#[derive(Debug, Clone, Default)]
pub struct UpstreamFields {
    added: SmallVec<[Added; 4]>,
}

impl UpstreamFields {
    /// Adds a block of fields.
    pub fn push_block(&mut self, block: Arc<FieldBlock>) {
        self.added.push(Added::Block(block));
    }

    /// Adds one field.
    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        self.added.push(Added::Field(name, value));
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
    }

    /// Moves every added field into `headers`, replacing fields of the same
    /// name, and empties the list.
    pub fn materialize(&mut self, headers: &mut HeaderMap) {
        for added in self.added.drain(..) {
            match added {
                Added::Block(block) => {
                    for (name, value) in block.pairs() {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                Added::Field(name, value) => {
                    headers.insert(name, value);
                }
            }
        }
    }

    /// Appends every added field to `out` as `name: value\r\n` lines.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for added in &self.added {
            match added {
                Added::Block(block) => out.extend_from_slice(block.wire()),
                Added::Field(name, value) => write_field(out, name, value),
            }
        }
    }
}

/// A message's fields as they arrived, passed on without a map: the head
/// they were read from and where each name and value lies in it. The
/// upstream client makes one for a response head with nothing unusual in
/// it; the gateway writes the fields back out from the spans, and builds a
/// map of them only when something needs one
/// ([`PassedFields::materialize`]).
///
/// `Content-Length` is kept apart: the server writes its own framing.
/// Fields the gateway sets itself win over these: a name that is in the
/// response's map is not passed on ([`PassedFields::encode`]).
#[derive(Debug, Clone)]
pub struct PassedFields {
    raw: Bytes,
    fields: SmallVec<[(Span, Span); 8]>,
    length: Option<(Span, u64)>,
    dated: bool,
}

/// A range of [`PassedFields`]'s head.
#[derive(Debug, Clone, Copy)]
struct Span(u32, u32);

impl Span {
    fn of(range: std::ops::Range<usize>) -> Span {
        Span(range.start as u32, range.end as u32)
    }
    fn range(self) -> std::ops::Range<usize> {
        self.0 as usize..self.1 as usize
    }
}

impl PassedFields {
    /// Fields that lie in `raw`, a head of at most 4 GiB.
    pub fn new(raw: Bytes) -> PassedFields {
        PassedFields {
            raw,
            fields: SmallVec::new(),
            length: None,
            dated: false,
        }
    }

    /// Adds a field: the ranges of its name and value in the head. The
    /// name must be a valid field name and the value a valid field value.
    pub fn push(&mut self, name: std::ops::Range<usize>, value: std::ops::Range<usize>) {
        if name.len() == 4 && self.raw[name.clone()].eq_ignore_ascii_case(b"date") {
            self.dated = true;
        }
        self.fields.push((Span::of(name), Span::of(value)));
    }

    /// Sets the message's `Content-Length`: its value's range and the length.
    pub fn set_length(&mut self, value: std::ops::Range<usize>, length: u64) {
        self.length = Some((Span::of(value), length));
    }

    /// The `Content-Length`, if the message had one.
    pub fn length(&self) -> Option<u64> {
        self.length.map(|(_, n)| n)
    }

    /// Whether a `Date` field is among the fields.
    pub fn has_date(&self) -> bool {
        self.dated
    }

    /// The fields other than `Content-Length`, as name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.range()], &self.raw[v.range()]))
    }

    /// Appends to `headers` every field whose name it does not hold already,
    /// `Content-Length` included.
    pub fn materialize(self, headers: &mut HeaderMap) {
        let set: SmallVec<[HeaderName; 4]> = headers.keys().cloned().collect();
        let length = self
            .length
            .map(|(v, _)| (http::header::CONTENT_LENGTH.as_str().as_bytes(), v));
        let spans = self
            .fields
            .iter()
            .map(|(n, v)| (&self.raw[n.range()], *v))
            .chain(length);
        for (name, value) in spans {
            let Ok(name) = HeaderName::from_bytes(name) else {
                continue;
            };
            if set.contains(&name) {
                continue;
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(self.raw.slice(value.range())) {
                headers.append(name, value);
            }
        }
    }

    /// Appends the fields other than `Content-Length` to `out` as
    /// `name: value\r\n` lines, in the order they arrived, except those
    /// whose name `headers` holds: the gateway set those itself.
    pub fn encode(&self, out: &mut BytesMut, headers: &HeaderMap) {
        for (name, value) in self.iter() {
            let overridden = !headers.is_empty()
                && headers.keys().any(|k| {
                    k.as_str().len() == name.len()
                        && k.as_str().as_bytes().eq_ignore_ascii_case(name)
                });
            if overridden {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: &str, v: &str) -> (HeaderName, HeaderValue) {
        (
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        )
    }

    #[test]
    fn blocks_and_fields_encode_in_order() {
        let block = Arc::new(FieldBlock::new(vec![pair("X-A", "1"), pair("x-b", "two")]));
        assert_eq!(block.wire(), b"x-a: 1\r\nx-b: two\r\n");
        let mut fields = UpstreamFields::default();
        assert!(fields.is_empty());
        fields.push(pair("x-request-id", "r1").0, pair("x", "r1").1);
        fields.push_block(block);
        let mut out = b"GET / HTTP/1.1\r\n".to_vec();
        fields.encode(&mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nx-request-id: r1\r\nx-a: 1\r\nx-b: two\r\n"
        );
    }

    #[test]
    fn materializing_replaces_fields_of_the_same_name_and_empties_the_list() {
        let mut map = HeaderMap::new();
        map.append("x-a", HeaderValue::from_static("client 1"));
        map.append("x-a", HeaderValue::from_static("client 2"));
        map.insert("x-kept", HeaderValue::from_static("k"));
        let mut fields = UpstreamFields::default();
        fields.push_block(Arc::new(FieldBlock::new(vec![
            pair("x-a", "gateway"),
            pair("x-b", "b"),
        ])));
        fields.push(pair("x-c", "c").0, pair("x-c", "c").1);
        fields.materialize(&mut map);
        assert!(fields.is_empty());
        let mut out = Vec::new();
        fields.encode(&mut out);
        assert!(out.is_empty());
        let all: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(all, [&HeaderValue::from_static("gateway")]);
        assert_eq!(map["x-b"], "b");
        assert_eq!(map["x-c"], "c");
        assert_eq!(map["x-kept"], "k");
    }

    fn passed() -> PassedFields {
        let raw = Bytes::from_static(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nX-Request-Id: up-1\r\nVary: Accept\r\nDate: d\r\nContent-Length: 12\r\n\r\n",
        );
        let at = |s: &str| {
            let i = raw
                .windows(s.len())
                .position(|w| w == s.as_bytes())
                .expect("in head");
            i..i + s.len()
        };
        let mut p = PassedFields::new(raw.clone());
        p.push(at("Server"), at("up\r").start..at("up\r").end - 1);
        p.push(at("X-Request-Id"), at("up-1"));
        p.push(at("Vary"), at("Accept"));
        p.push(at("Date"), at("d\r").start..at("d\r").end - 1);
        p.set_length(at("12"), 12);
        p
    }

    #[test]
    fn passed_fields_are_written_as_they_came_but_for_names_the_map_sets() {
        let p = passed();
        assert!(p.has_date());
        assert_eq!(p.length(), Some(12));
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("gw-1"));
        let mut out = BytesMut::new();
        p.encode(&mut out, &map);
        assert_eq!(&out[..], b"Server: up\r\nVary: Accept\r\nDate: d\r\n");
        let mut out = BytesMut::new();
        p.encode(&mut out, &HeaderMap::new());
        assert_eq!(
            &out[..],
            b"Server: up\r\nX-Request-Id: up-1\r\nVary: Accept\r\nDate: d\r\n"
        );
    }

    #[test]
    fn materialized_passed_fields_join_the_map_without_replacing_it() {
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("gw-1"));
        passed().materialize(&mut map);
        assert_eq!(
            map.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["gw-1"]
        );
        assert_eq!(map["server"], "up");
        assert_eq!(map["vary"], "Accept");
        assert_eq!(map["date"], "d");
        assert_eq!(map["content-length"], "12");
        assert_eq!(map.len(), 5);
    }
}
