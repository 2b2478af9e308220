//! Header hygiene at the edge: hop-by-hop stripping (RFC 9110 section 7.6.1),
//! forwarding headers from trusted proxies only, request ids and trace context.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tollgate_core::fields::{FieldBlock, UpstreamFields};

pub use tollgate_core::request_id::X_REQUEST_ID;
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A field name as a parser read it, in any case. Names outside the
/// standard table that requests to the gateway commonly carry come back as
/// the static names, shared; any other name outside the standard table is
/// an allocation of its own. The length and the first letter pick the one
/// candidate to compare, so a standard name costs next to nothing more.
pub(crate) fn field_name(raw: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    let candidate: Option<&HeaderName> = match (raw.len(), raw.first().map(u8::to_ascii_lowercase))
    {
        (9, Some(b'x')) => Some(&tollgate_identity::authn::headers::X_API_KEY),
        (10, Some(b'k')) => Some(&KEEP_ALIVE),
        (10, Some(b't')) => Some(&TRACESTATE),
        (11, Some(b't')) => Some(&TRACEPARENT),
        (12, Some(b'x')) => Some(&X_REQUEST_ID),
        (15, Some(b'x')) => Some(&X_FORWARDED_FOR),
        (16, Some(b'x')) => Some(&X_FORWARDED_HOST),
        (17, Some(b'x')) => Some(&X_FORWARDED_PROTO),
        _ => None,
    };
    match candidate {
        Some(name) if name.as_str().as_bytes().eq_ignore_ascii_case(raw) => Ok(name.clone()),
        _ => HeaderName::from_bytes(raw),
    }
}

/// Headers that are always connection-specific.
const HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// What a field is to the connection it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Connection,
    ContentLength,
    TransferEncoding,
    /// Another of the always hop-by-hop fields (RFC 9110 section 7.6.1).
    HopByHop,
    Other,
}

/// Classifies a field name as it arrived, in any case, without making a
/// `HeaderName` of it: [`HOP_BY_HOP`]'s names are all `HopByHop` but the
/// three that frame or manage the connection. The length picks the few
/// candidates, so most names cost one comparison or none.
pub(crate) fn classify(name: &[u8]) -> Class {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if is("te") => Class::HopByHop,
        7 if is("trailer") || is("upgrade") => Class::HopByHop,
        10 if is("connection") => Class::Connection,
        10 if is("keep-alive") => Class::HopByHop,
        14 if is("content-length") => Class::ContentLength,
        16 if is("proxy-connection") => Class::HopByHop,
        17 if is("transfer-encoding") => Class::TransferEncoding,
        _ => Class::Other,
    }
}

/// The position of `name` in [`HOP_BY_HOP`]. Most names are ruled out by
/// their length alone, without comparing them with all seven.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let s = name.as_str();
    match s.len() {
        2 | 7 | 10 | 16 | 17 => HOP_BY_HOP.iter().position(|h| h.as_str() == s),
        _ => None,
    }
}

/// Removes hop-by-hop headers: the fixed list and every field named in
/// `Connection`. Returns the `Upgrade` value when the message asked to
/// upgrade, so the caller can re-add it for a tunnel.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the names first, noting which fixed ones are present:
    // most requests carry none of them, and removing an absent name still
    // hashes it.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return None;
    }
    let mut upgrade_requested = false;
    // Fields named in `Connection` other than the fixed ones (usually none:
    // `keep-alive`, `close` and `upgrade` are the common tokens).
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("upgrade") {
                upgrade_requested = true;
            }
            let fixed = HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(token));
            if token.is_empty() || fixed || token.eq_ignore_ascii_case("close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
    }
    let upgrade = if upgrade_requested {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in listed {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    upgrade
}

/// Removes every `X-Tollgate-*` header a client sent: that namespace carries
/// the gateway's identity headers, which upstreams must be able to trust.
pub fn strip_reserved(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(tollgate_identity::authn::is_reserved_header)
    {
        return;
    }
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|n| tollgate_identity::authn::is_reserved_header(n))
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(&name);
    }
}

/// Cleans a request's trailer section before it goes upstream: no
/// hop-by-hop fields, none of the gateway's reserved identity fields, and
/// none of the fields a trailer must not carry because they frame, route,
/// authenticate or describe the message (RFC 9110 section 6.5.1). An
/// upstream that merges trailers into the header section would otherwise
/// take a client's `X-Tollgate-*` for the gateway's own.
pub fn clean_trailers(trailers: &mut HeaderMap) {
    strip_hop_by_hop(trailers);
    strip_reserved(trailers);
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HOST,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::CACHE_CONTROL,
        header::EXPECT,
        header::MAX_FORWARDS,
        header::RANGE,
        header::TRAILER,
    ] {
        trailers.remove(name);
    }
    for name in [
        &X_REQUEST_ID,
        &TRACEPARENT,
        &TRACESTATE,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &FORWARDED,
    ] {
        trailers.remove(name);
    }
}

pub use tollgate_core::request_id::{request_id, request_id_at};

/// Whether a `traceparent` value is a well-formed W3C Trace Context header.
pub fn valid_traceparent(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    if b.len() < 55 {
        return false;
    }
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let (ver, trace, span, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(ver)
        && ver != b"ff"
        && hex(trace)
        && trace.iter().any(|c| *c != b'0')
        && hex(span)
        && span.iter().any(|c| *c != b'0')
        && hex(flags)
        && (b.len() == 55 || (ver != b"00" && b[55] == b'-'))
}

/// Whether `ip` is in the trusted proxy list.
pub fn is_trusted(ip: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address: the peer, or when the peer is a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client, trusted) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The client connection as the forwarding headers show it, formatted once
/// per connection rather than once per request.
#[derive(Debug)]
pub struct Peer {
    proto: &'static str,
    /// The address alone: `X-Forwarded-For`'s element.
    for_value: HeaderValue,
    /// `for=<node>;proto=<proto>`: `Forwarded`'s element without a host.
    element: HeaderValue,
    /// The forwarding fields for a request without a `Host`, encoded.
    bare: Arc<FieldBlock>,
    /// The forwarding values for the last `Host` seen on this connection.
    last: std::sync::Mutex<Option<ForHost>>,
}

/// A connection's forwarding values for one `Host`.
#[derive(Debug)]
struct ForHost {
    host: HeaderValue,
    /// `Forwarded`'s element with the host.
    element: HeaderValue,
    /// Every forwarding field, encoded: what a request from an untrusted
    /// peer sends.
    block: Arc<FieldBlock>,
}

impl Peer {
    pub fn new(peer: IpAddr, proto: &'static str) -> Peer {
        let ip = canonical(peer);
        let s = ip.to_string();
        let element = match ip {
            IpAddr::V6(_) => format!("for=\"[{s}]\";proto={proto}"),
            IpAddr::V4(_) => format!("for={s};proto={proto}"),
        };
        let for_value = HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("unknown"));
        let element =
            HeaderValue::from_str(&element).unwrap_or(HeaderValue::from_static("for=unknown"));
        let bare = Arc::new(FieldBlock::new(vec![
            (X_FORWARDED_FOR.clone(), for_value.clone()),
            (FORWARDED.clone(), element.clone()),
            (X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto)),
        ]));
        Peer {
            proto,
            for_value,
            element,
            bare,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Runs `f` on this connection's values for `host`, made when the
    /// `Host` differs from the last request's.
    fn for_host<T>(&self, host: &HeaderValue, f: impl FnOnce(&ForHost) -> T) -> T {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = &*last
            && seen.host == host
        {
            return f(seen);
        }
        // A copy of its own: the request's value shares the buffer its head
        // was read into, which the cache would otherwise keep alive.
        let host = &HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone());
        // `Forwarded` carries the host only when it is a plain token.
        let element = if host.as_bytes().iter().all(|c| c.is_ascii_graphic()) {
            let mut s = Vec::with_capacity(self.element.len() + host.len() + 8);
            s.extend_from_slice(self.element.as_bytes());
            s.extend_from_slice(b";host=\"");
            s.extend_from_slice(host.as_bytes());
            s.push(b'"');
            HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
                .unwrap_or_else(|_| self.element.clone())
        } else {
            self.element.clone()
        };
        let block = Arc::new(FieldBlock::new(vec![
            (X_FORWARDED_FOR.clone(), self.for_value.clone()),
            (FORWARDED.clone(), element.clone()),
            (
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(self.proto),
            ),
            (X_FORWARDED_HOST.clone(), host.clone()),
        ]));
        f(last.insert(ForHost {
            host: host.clone(),
            element,
            block,
        }))
    }
}

/// What the gateway itself says in a request's fields: its forwarding
/// fields and the request id. The gateway's own names are reserved: a
/// client's `X-Tollgate-*` and `X-Request-Id` are removed, and so are its
/// forwarding fields unless the peer is a trusted proxy.
///
/// From a trusted peer, the forwarding chain is extended in `headers`; from
/// anyone else, the fields (the same for every request on a connection with
/// the same `Host`) go to `fields` encoded, so they cannot be forged.
pub fn set_gateway_fields(
    headers: &mut HeaderMap,
    fields: &mut UpstreamFields,
    peer: &Peer,
    trusted_peer: bool,
    host: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    strip_client_copies(headers, !trusted_peer);
    if trusted_peer {
        extend_forwarding(headers, peer, host);
    } else {
        fields.push_block(match host {
            Some(h) => peer.for_host(h, |c| c.block.clone()),
            None => peer.bare.clone(),
        });
    }
    fields.push(X_REQUEST_ID.clone(), request_id.clone());
}

/// Removes the fields whose names the gateway sets itself: every
/// `X-Tollgate-*` field (the identity fields, which upstreams must be able
/// to trust), `X-Request-Id`, and with `forwarding`, the forwarding fields.
/// One pass over the names finds them; most requests carry none.
fn strip_client_copies(headers: &mut HeaderMap, forwarding: bool) {
    let owned = |n: &HeaderName| {
        let s = n.as_str();
        match s.len() {
            12 => s == X_REQUEST_ID.as_str(),
            9 => forwarding && s == FORWARDED.as_str(),
            15..=17 => {
                forwarding
                    && (s == X_FORWARDED_FOR.as_str()
                        || s == X_FORWARDED_HOST.as_str()
                        || s == X_FORWARDED_PROTO.as_str())
            }
            _ => false,
        }
    };
    let reserved = tollgate_identity::authn::is_reserved_header;
    if !headers.keys().any(|n| owned(n) || reserved(n)) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| owned(n) || reserved(n))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// Extends the forwarding fields a trusted proxy sent: its chain gets this
/// connection's peer, and what it said about the scheme and host stands.
fn extend_forwarding(headers: &mut HeaderMap, peer: &Peer, host: Option<&HeaderValue>) {
    let element = match host {
        Some(h) => peer.for_host(h, |c| c.element.clone()),
        None => peer.element.clone(),
    };
    let joined = |name: &HeaderName, headers: &HeaderMap, last: &[u8]| -> Option<HeaderValue> {
        let mut parts = headers.get_all(name).iter().peekable();
        parts.peek()?;
        let mut out = Vec::with_capacity(64);
        for v in parts {
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(last);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    };
    let xff = joined(&X_FORWARDED_FOR, headers, peer.for_value.as_bytes())
        .unwrap_or_else(|| peer.for_value.clone());
    headers.insert(&X_FORWARDED_FOR, xff);
    let fwd = joined(&FORWARDED, headers, element.as_bytes()).unwrap_or(element);
    headers.insert(&FORWARDED, fwd);
    headers
        .entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static(peer.proto));
    if let Some(h) = host {
        headers
            .entry(&X_FORWARDED_HOST)
            .or_insert_with(|| h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_found_in_any_case_and_others_parsed() {
        for raw in [
            "X-API-Key",
            "x-api-key",
            "TRACEPARENT",
            "tracestate",
            "Keep-Alive",
            "X-Request-Id",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "X-Forwarded-Proto",
        ] {
            let name = field_name(raw.as_bytes()).expect("valid");
            assert_eq!(name.as_str(), raw.to_ascii_lowercase());
        }
        assert_eq!(field_name(b"Host").expect("valid"), header::HOST);
        assert_eq!(field_name(b"X-Custom").expect("valid").as_str(), "x-custom");
        // Same length and first letter as an interned name, but another name.
        assert_eq!(
            field_name(b"X-API-Kez").expect("valid").as_str(),
            "x-api-kez"
        );
        assert!(field_name(b"bad name").is_err());
        assert!(field_name(b"").is_err());
    }

    #[test]
    fn raw_names_classify_as_their_header_names_do() {
        for name in HOP_BY_HOP {
            let upper = name.as_str().to_ascii_uppercase();
            assert_ne!(classify(upper.as_bytes()), Class::Other, "{name}");
        }
        assert_eq!(classify(b"Connection"), Class::Connection);
        assert_eq!(classify(b"content-LENGTH"), Class::ContentLength);
        assert_eq!(classify(b"Transfer-Encoding"), Class::TransferEncoding);
        for other in ["content-type", "x-upgrade", "tE2", "date", "trailers"] {
            assert_eq!(classify(other.as_bytes()), Class::Other, "{other}");
        }
    }

    #[test]
    fn every_hop_by_hop_name_passes_the_length_filter() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::ACCEPT), None);
        assert_eq!(
            hop_by_hop_index(&HeaderName::from_static("x-upgrade")),
            None
        );
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("connection", "X-Other"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("x-kept", "1"),
            ("upgrade", "h2c"),
        ]);
        assert!(strip_hop_by_hop(&mut h).is_none());
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn reports_upgrade_only_when_connection_asks() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h).expect("upgrade"), "websocket");
        assert!(h.is_empty());
    }

    #[test]
    fn request_ids_are_propagated_or_made() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-123")])), "abc-123");
        let made = request_id(&map(&[("x-request-id", "bad value with spaces")]));
        assert_eq!(made.len(), 26);
        assert_eq!(request_id(&HeaderMap::new()).len(), 26);
    }

    #[test]
    fn traceparent_validation() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(valid_traceparent(&ok));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(!valid_traceparent(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    /// The gateway's fields for a request, moved into its map.
    fn forward(h: &mut HeaderMap, peer: &Peer, trusted: bool, host: Option<&HeaderValue>) {
        let mut fields = UpstreamFields::default();
        let id = HeaderValue::from_static("rid-1");
        set_gateway_fields(h, &mut fields, peer, trusted, host, &id);
        fields.materialize(h);
        assert_eq!(h[&X_REQUEST_ID], "rid-1");
    }

    /// From an untrusted peer, nothing the client sent under the gateway's
    /// names is left in the map, and the gateway's own values wait encoded.
    #[test]
    fn gateway_fields_from_an_untrusted_peer_are_encoded_beside_the_map() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("X-Forwarded-Host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-request-id", "client-id"),
            ("x-tollgate-org", "org_forged"),
            ("x-kept", "1"),
        ]);
        let peer = Peer::new("203.0.113.9".parse().expect("ip"), "http");
        let mut fields = UpstreamFields::default();
        let host = HeaderValue::from_static("api.example.com");
        let id = HeaderValue::from_static("rid-1");
        set_gateway_fields(&mut h, &mut fields, &peer, false, Some(&host), &id);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "1");
        let mut wire = Vec::new();
        fields.encode(&mut wire);
        assert_eq!(
            String::from_utf8(wire).expect("utf-8"),
            "x-forwarded-for: 203.0.113.9\r\n\
             forwarded: for=203.0.113.9;proto=http;host=\"api.example.com\"\r\n\
             x-forwarded-proto: http\r\n\
             x-forwarded-host: api.example.com\r\n\
             x-request-id: rid-1\r\n"
        );
        // A trusted proxy's forwarding fields stay (and are extended in the
        // map); the reserved names still go.
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-request-id", "client-id"),
            ("x-tollgate-app", "app_forged"),
        ]);
        let mut fields = UpstreamFields::default();
        set_gateway_fields(&mut h, &mut fields, &peer, true, None, &id);
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.7, 203.0.113.9");
        assert!(h.get("x-tollgate-app").is_none());
        assert!(h.get(&X_REQUEST_ID).is_none());
        let mut wire = Vec::new();
        fields.encode(&mut wire);
        assert_eq!(wire, b"x-request-id: rid-1\r\n");
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_replaced() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        forward(
            &mut h,
            &Peer::new(peer, "http"),
            false,
            Some(&HeaderValue::from_static("api.example.com")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example.com");
        assert_eq!(
            h[&FORWARDED],
            "for=203.0.113.9;proto=http;host=\"api.example.com\""
        );
    }

    /// A connection's `Forwarded` value is reused for the same `Host` and
    /// remade when the `Host` changes.
    #[test]
    fn forwarded_follows_the_host_of_each_request_on_a_connection() {
        let peer = Peer::new("203.0.113.9".parse().expect("ip"), "https");
        for host in ["a.example", "a.example", "b.example", "a.example"] {
            let mut h = HeaderMap::new();
            forward(&mut h, &peer, false, Some(&HeaderValue::from_static(host)));
            let want = format!("for=203.0.113.9;proto=https;host=\"{host}\"");
            assert_eq!(h[&FORWARDED], want.as_str());
            assert_eq!(h[&X_FORWARDED_HOST], host);
        }
        let mut h = HeaderMap::new();
        forward(&mut h, &peer, false, None);
        assert_eq!(h[&FORWARDED], "for=203.0.113.9;proto=https");
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_are_extended() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.7, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        forward(&mut h, &Peer::new(peer, "http"), true, None);
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.7, 10.0.0.2, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        let v6: IpAddr = "::1".parse().expect("ip");
        let mut h = HeaderMap::new();
        forward(&mut h, &Peer::new(v6, "https"), false, None);
        assert_eq!(h[&FORWARDED], "for=\"[::1]\";proto=https");
    }
}
