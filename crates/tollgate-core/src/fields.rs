//! Header fields kept apart from a message's `HeaderMap` until something
//! needs them together (decision 0017).
//!
//! Most of what the gateway adds to a request going upstream is known
//! before the request arrives: the forwarding fields depend on the
//! connection and its `Host`, a key's identity fields on the key. A
//! [`FieldBlock`] holds such fields already encoded for the wire, so a
//! request sends them with one copy, instead of inserting each into the
//! request's `HeaderMap`, encoding it again and dropping it afterwards.
//!
//! [`UpstreamFields`] is the list for one request. The upstream client writes
//! it after the request's map. Code that reads or edits the upstream
//! request's fields as a map (a header transformer) first calls
//! [`UpstreamFields::materialize`], which moves every added field into the
//! map, with insert semantics, and leaves the list empty.
//!
//! On the way back, [`PassedFields`] are an upstream response's fields as
//! they arrived, and [`GatewayFields`] the few the gateway sets on a
//! response (`X-Request-Id`, `RateLimit`), encoded as they are set, which
//! costs one small buffer where a map costs two allocations and a hash per
//! field. [`ResponseFields`] holds both until the response head is written.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
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

/// Whether `name` is `raw`, a name as it came on the wire, in any case.
#[inline]
fn same_name(name: &[u8], raw: &[u8]) -> bool {
    name.len() == raw.len() && name.eq_ignore_ascii_case(raw)
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
/// Fields the gateway sets itself win over these: a name it set is not
/// passed on ([`PassedFields::encode`], [`ResponseFields`]).
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
    /// whose name `set` holds: the gateway set those itself.
    pub fn encode(&self, out: &mut impl BufMut, set: impl Fn(&[u8]) -> bool) {
        for (name, value) in self.iter() {
            if set(name) {
                continue;
            }
            out.put_slice(name);
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
    }
}

/// The fields the gateway sets on one response, as `name: value\r\n`
/// lines, in the order they were set. Each replaces the response's other
/// fields of its name ([`ResponseFields`]; [`GatewayFields::materialize`]
/// inserts).
///
/// Unlike [`UpstreamFields`], whose blocks are shared by many requests, these
/// values are made per response, so they are written straight into one
/// buffer: no value of their own, no map entry.
#[derive(Debug, Clone, Default)]
pub struct GatewayFields {
    wire: Vec<u8>,
    /// Where each line starts and how long its name is.
    names: SmallVec<[(u32, u32); 4]>,
    /// Bit `n` is set when a name of `n` bytes (`n` < 64) is among them: a
    /// name of another length is known to be absent without a compare.
    lengths: u64,
}

impl GatewayFields {
    /// Room for the usual fields (`X-Request-Id` and the two `RateLimit`
    /// fields of one or two limits) in one allocation.
    const ROOM: usize = 160;

    /// Adds a field.
    pub fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        let start = self.start_line(name);
        self.wire.extend_from_slice(value.as_bytes());
        self.end_line(start, name);
    }

    /// Adds a field whose value `write` appends to the buffer it is given;
    /// the field is dropped (and `false` returned) unless the value is a
    /// valid field value: visible ASCII, spaces and tabs, not empty and
    /// without leading or trailing whitespace.
    pub fn push_with(&mut self, name: &HeaderName, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let start = self.start_line(name);
        let at = self.wire.len();
        write(&mut self.wire);
        let value = &self.wire[at..];
        let valid = !value.is_empty()
            && value
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            && !matches!(value.first(), Some(b' ' | b'\t'))
            && !matches!(value.last(), Some(b' ' | b'\t'));
        if !valid {
            self.wire.truncate(start);
            return false;
        }
        self.end_line(start, name);
        true
    }

    /// Writes `name: ` and returns where its line starts.
    fn start_line(&mut self, name: &HeaderName) -> usize {
        if self.wire.capacity() == 0 {
            self.wire = Vec::with_capacity(Self::ROOM);
        }
        let start = self.wire.len();
        self.wire.extend_from_slice(name.as_str().as_bytes());
        self.wire.extend_from_slice(b": ");
        start
    }

    fn end_line(&mut self, start: usize, name: &HeaderName) {
        self.wire.extend_from_slice(b"\r\n");
        self.names.push((start as u32, name.as_str().len() as u32));
        self.lengths |= length_bit(name.as_str().len());
    }

    /// Whether nothing was set.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether a field named `raw` (in any case) was set.
    #[inline]
    pub fn holds(&self, raw: &[u8]) -> bool {
        length_bit(raw.len()) & self.lengths != 0 && self.holds_slow(raw)
    }

    fn holds_slow(&self, raw: &[u8]) -> bool {
        self.names.iter().any(|&(start, len)| {
            let start = start as usize;
            same_name(&self.wire[start..start + len as usize], raw)
        })
    }

    /// The fields as name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let ends = self
            .names
            .iter()
            .skip(1)
            .map(|&(start, _)| start as usize)
            .chain(std::iter::once(self.wire.len()));
        self.names.iter().zip(ends).map(|(&(start, len), end)| {
            let (start, len) = (start as usize, len as usize);
            (
                &self.wire[start..start + len],
                &self.wire[start + len + 2..end - 2],
            )
        })
    }

    /// Moves `other`'s fields to the end of this list.
    pub fn append(&mut self, other: &mut GatewayFields) {
        if self.is_empty() {
            std::mem::swap(self, other);
            return;
        }
        let base = self.wire.len() as u32;
        self.wire.extend_from_slice(&other.wire);
        self.names
            .extend(other.names.iter().map(|&(start, len)| (start + base, len)));
        self.lengths |= other.lengths;
        other.wire.clear();
        other.names.clear();
        other.lengths = 0;
    }

    /// Appends the fields to `out` as `name: value\r\n` lines.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_slice(&self.wire);
    }

    /// Moves every field into `headers`, replacing fields of the same name
    /// (two of one name here are both kept), and empties the list.
    pub fn materialize(&mut self, headers: &mut HeaderMap) {
        let mut set: SmallVec<[HeaderName; 4]> = SmallVec::new();
        for (name, value) in self.iter() {
            let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            else {
                continue;
            };
            if set.contains(&name) {
                headers.append(name, value);
            } else {
                headers.insert(name.clone(), value);
                set.push(name);
            }
        }
        self.wire.clear();
        self.names.clear();
        self.lengths = 0;
    }
}

/// The bit of [`GatewayFields::lengths`] for a name of `len` bytes; the
/// lengths from 63 up share the last.
#[inline]
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// A response's fields while no map holds them: the upstream's, passed on
/// as they arrived, and the gateway's own, which replace the upstream's
/// fields of the same names and any the response's map holds.
#[derive(Debug, Clone)]
pub struct ResponseFields {
    /// Boxed by the client that parsed them: with room for eight fields
    /// inline they are 208 bytes, and the response that carries them is
    /// moved through several async frames on its way to the client.
    pub passed: Box<PassedFields>,
    pub own: GatewayFields,
}

impl ResponseFields {
    /// The upstream's fields, with none of the gateway's yet.
    pub fn new(passed: impl Into<Box<PassedFields>>) -> ResponseFields {
        ResponseFields {
            passed: passed.into(),
            own: GatewayFields::default(),
        }
    }

    /// The upstream's `Content-Length`, if it sent one.
    pub fn length(&self) -> Option<u64> {
        self.passed.length()
    }

    /// Whether a `Date` field is among the fields.
    pub fn has_date(&self) -> bool {
        self.passed.has_date() || self.own.holds(b"date")
    }

    /// Whether the gateway set a field of this name, which replaces one of
    /// the same name in the response's map.
    pub fn overrides(&self, name: &HeaderName) -> bool {
        self.own.holds(name.as_str().as_bytes())
    }

    /// Appends the upstream's fields but for those whose names the gateway
    /// set (here or in `headers`), then the gateway's own, as
    /// `name: value\r\n` lines. `headers` itself is left to the caller.
    pub fn encode(&self, out: &mut impl BufMut, headers: &HeaderMap) {
        self.passed.encode(out, |name| {
            self.own.holds(name)
                || (!headers.is_empty()
                    && headers
                        .keys()
                        .any(|k| same_name(k.as_str().as_bytes(), name)))
        });
        self.own.encode(out);
    }

    /// Moves every field into `headers`: the upstream's where `headers`
    /// holds none of the name, then the gateway's own, replacing.
    pub fn materialize(mut self, headers: &mut HeaderMap) {
        self.passed.materialize(headers);
        self.own.materialize(headers);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

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
    fn passed_fields_are_written_as_they_came_but_for_names_the_gateway_sets() {
        let p = passed();
        assert!(p.has_date());
        assert_eq!(p.length(), Some(12));
        let mut out = BytesMut::new();
        ResponseFields::new(p.clone()).encode(&mut out, &HeaderMap::new());
        assert_eq!(
            &out[..],
            b"Server: up\r\nX-Request-Id: up-1\r\nVary: Accept\r\nDate: d\r\n"
        );
        // A name among the gateway's own fields or in the map is not passed
        // on; the gateway's own fields follow the upstream's.
        let mut map = HeaderMap::new();
        map.insert("vary", HeaderValue::from_static("gw"));
        let mut fields = ResponseFields::new(p);
        let (name, value) = pair("x-request-id", "gw-1");
        fields.own.push(&name, &value);
        let mut out = BytesMut::new();
        fields.encode(&mut out, &map);
        assert_eq!(&out[..], b"Server: up\r\nDate: d\r\nx-request-id: gw-1\r\n");
        assert!(fields.overrides(&name));
        assert!(!fields.overrides(&HeaderName::from_static("vary")));
        assert!(fields.has_date());
    }

    #[test]
    fn materialized_response_fields_keep_the_gateways_values() {
        let mut map = HeaderMap::new();
        map.insert("vary", HeaderValue::from_static("gw-vary"));
        let mut fields = ResponseFields::new(passed());
        let (name, value) = pair("x-request-id", "gw-1");
        fields.own.push(&name, &value);
        fields.materialize(&mut map);
        assert_eq!(
            map.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["gw-1"]
        );
        assert_eq!(map.get_all("vary").iter().collect::<Vec<_>>(), ["gw-vary"]);
        assert_eq!(map["server"], "up");
        assert_eq!(map["date"], "d");
        assert_eq!(map["content-length"], "12");
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn gateway_fields_are_encoded_as_set_and_know_their_names() {
        let mut fields = GatewayFields::default();
        assert!(fields.is_empty() && !fields.holds(b"x-a"));
        let (a, one) = pair("x-a", "1");
        fields.push(&a, &one);
        let mut more = GatewayFields::default();
        let (b, _) = pair("x-b", "2");
        assert!(more.push_with(&b, |out| out.extend_from_slice(b"\"n\";r=2")));
        // Not a field value: nothing is added.
        assert!(!more.push_with(&b, |out| out.extend_from_slice(b"x\r\nInjected: 1")));
        assert!(!more.push_with(&b, |out| out.extend_from_slice(b" padded")));
        assert!(!more.push_with(&b, |_| {}));
        fields.append(&mut more);
        assert!(more.is_empty());
        assert!(fields.holds(b"X-A") && fields.holds(b"x-b"));
        assert!(!fields.holds(b"x-c") && !fields.holds(b"x-"));
        // Long names share one length bit and are told apart by comparing.
        let mut long = GatewayFields::default();
        let (name, value) = pair(&"l".repeat(70), "v");
        long.push(&name, &value);
        assert!(long.holds("L".repeat(70).as_bytes()));
        assert!(!long.holds("l".repeat(64).as_bytes()));
        let mut out = Vec::new();
        fields.encode(&mut out);
        assert_eq!(out, b"x-a: 1\r\nx-b: \"n\";r=2\r\n");
        let pairs: Vec<_> = fields.iter().collect();
        assert_eq!(pairs, [(&b"x-a"[..], &b"1"[..]), (b"x-b", b"\"n\";r=2")]);

        let mut map = HeaderMap::new();
        map.insert("x-a", HeaderValue::from_static("upstream"));
        map.insert("x-kept", HeaderValue::from_static("k"));
        fields.push(&a, &pair("x-a", "2").1);
        fields.materialize(&mut map);
        assert!(fields.is_empty());
        assert_eq!(map.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(map["x-b"], "\"n\";r=2");
        assert_eq!(map["x-kept"], "k");
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
