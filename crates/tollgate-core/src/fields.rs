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

use bytes::Bytes;
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

    /// The value of an added field, if `name` was added.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.added.iter().rev().find_map(|added| match added {
            Added::Block(block) => block
                .pairs()
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v),
            Added::Field(n, v) => (n == name).then_some(v),
        })
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
        assert_eq!(
            fields.get(&HeaderName::from_static("x-b")),
            Some(&HeaderValue::from_static("two"))
        );
        assert_eq!(fields.get(&HeaderName::from_static("x-c")), None);
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
}
