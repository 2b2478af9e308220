//! Header hygiene at the edge: hop-by-hop stripping (RFC 9110 section 7.6.1),
//! forwarding headers from trusted proxies only, request ids and trace context.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

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

/// Whether `name` is one of the always hop-by-hop fields.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
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
    /// The `Forwarded` value for the last `Host` seen on this connection.
    last: std::sync::Mutex<Option<(HeaderValue, HeaderValue)>>,
}

impl Peer {
    pub fn new(peer: IpAddr, proto: &'static str) -> Peer {
        let ip = canonical(peer);
        let s = ip.to_string();
        let element = match ip {
            IpAddr::V6(_) => format!("for=\"[{s}]\";proto={proto}"),
            IpAddr::V4(_) => format!("for={s};proto={proto}"),
        };
        Peer {
            proto,
            for_value: HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("unknown")),
            element: HeaderValue::from_str(&element)
                .unwrap_or(HeaderValue::from_static("for=unknown")),
            last: std::sync::Mutex::new(None),
        }
    }

    /// `Forwarded`'s element for a request with this `Host`.
    fn element_for(&self, host: Option<&HeaderValue>) -> Option<HeaderValue> {
        let host = host.filter(|h| h.as_bytes().iter().all(|c| c.is_ascii_graphic()));
        let Some(h) = host else {
            return Some(self.element.clone());
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, value)) = &*last
            && seen == h
        {
            return Some(value.clone());
        }
        let mut s = Vec::with_capacity(self.element.len() + h.len() + 8);
        s.extend_from_slice(self.element.as_bytes());
        s.extend_from_slice(b";host=\"");
        s.extend_from_slice(h.as_bytes());
        s.push(b'"');
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()?;
        *last = Some((h.clone(), value.clone()));
        Some(value)
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `Forwarded` for the upstream. From
/// a trusted peer, the chain is extended; from anyone else, whatever the
/// client sent is replaced, so it cannot be forged.
pub fn set_forwarding(
    headers: &mut HeaderMap,
    peer: &Peer,
    trusted_peer: bool,
    host: Option<&HeaderValue>,
) {
    let element = peer.element_for(host);
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
    if trusted_peer {
        let xff = joined(&X_FORWARDED_FOR, headers, peer.for_value.as_bytes())
            .unwrap_or_else(|| peer.for_value.clone());
        headers.insert(&X_FORWARDED_FOR, xff);
        if let Some(e) = element {
            let fwd = joined(&FORWARDED, headers, e.as_bytes()).unwrap_or(e);
            headers.insert(&FORWARDED, fwd);
        }
        // What a trusted proxy said about the scheme and host stands.
        headers
            .entry(&X_FORWARDED_PROTO)
            .or_insert_with(|| HeaderValue::from_static(peer.proto));
        if let Some(h) = host {
            headers
                .entry(&X_FORWARDED_HOST)
                .or_insert_with(|| h.clone());
        }
    } else {
        // Anything the client said is replaced (an insert drops every
        // earlier value of the name).
        headers.insert(&X_FORWARDED_FOR, peer.for_value.clone());
        match element {
            Some(e) => headers.insert(&FORWARDED, e),
            None => headers.remove(&FORWARDED),
        };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(peer.proto));
        match host {
            Some(h) => headers.insert(&X_FORWARDED_HOST, h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
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
        set_forwarding(
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
            set_forwarding(&mut h, &peer, false, Some(&HeaderValue::from_static(host)));
            let want = format!("for=203.0.113.9;proto=https;host=\"{host}\"");
            assert_eq!(h[&FORWARDED], want.as_str());
            assert_eq!(h[&X_FORWARDED_HOST], host);
        }
        let mut h = HeaderMap::new();
        set_forwarding(&mut h, &peer, false, None);
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
        set_forwarding(&mut h, &Peer::new(peer, "http"), true, None);
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.7, 10.0.0.2, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        let v6: IpAddr = "::1".parse().expect("ip");
        let mut h = HeaderMap::new();
        set_forwarding(&mut h, &Peer::new(v6, "https"), false, None);
        assert_eq!(h[&FORWARDED], "for=\"[::1]\";proto=https");
    }
}
