//! Route matching. Routes are compiled once per snapshot into a list of
//! entries (one per host-pattern and path-pattern pair) sorted by specificity,
//! so the first entry that matches is the most specific route, and ties are
//! broken by route name: the outcome never depends on insertion order.
//!
//! Specificity, most significant first:
//! 1. host: exact name, then wildcard (longer first), then no host rule;
//! 2. path: exact (`=/a`), then more literal bytes, then template over prefix,
//!    then no path rule;
//! 3. a method rule over none; 4. more header rules; 5. route name.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use tollgate_core::config::{PathPattern, RouteSpec, Segment, parse_path_pattern};

/// A compiled host rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
    /// `example.*`, stored as `example.`.
    Prefix(String),
}

impl HostPattern {
    fn parse(raw: &str) -> HostPattern {
        let raw = raw.to_ascii_lowercase();
        if let Some(rest) = raw.strip_prefix('*') {
            HostPattern::Suffix(rest.to_owned())
        } else if let Some(rest) = raw.strip_suffix('*') {
            HostPattern::Prefix(rest.to_owned())
        } else {
            HostPattern::Exact(raw)
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostPattern::Prefix(p) => host.len() > p.len() && host.starts_with(p.as_str()),
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Suffix(s) | HostPattern::Prefix(s) => (1, s.len()),
        }
    }
}

/// What a route needs besides host and path.
#[derive(Debug)]
pub struct RouteMatcher<T> {
    pub name: Arc<str>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Vec<String>)>,
    /// What the snapshot attaches to the route (service, chain, flags).
    pub target: T,
}

#[derive(Debug)]
struct Entry {
    route: usize,
    host: Option<HostPattern>,
    path: Option<PathPattern>,
}

/// The result of a successful match.
#[derive(Debug)]
pub struct Match<'a, T> {
    pub route: &'a RouteMatcher<T>,
    /// The part of the path after the matched prefix (for `strip_path`):
    /// always starts with `/`.
    pub rest: &'a str,
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// Nothing matches host and path.
    NoRoute,
    /// Host and path match, but not with this method: the most specific
    /// such route, and the methods the matching routes accept (for `Allow`).
    Method { route: Arc<str>, allow: String },
}

/// A compiled router.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<RouteMatcher<T>>,
    entries: Vec<Entry>,
    /// Entries by the literal segments every path they match starts with.
    index: SegmentNode,
}

/// How many leading path segments the index looks at.
const INDEX_DEPTH: usize = 4;

/// A node of the segment index: the entries (positions in the sorted entry
/// list, ascending) whose patterns fix exactly the segments on the way here,
/// and the nodes one literal segment further. A request visits the nodes
/// along its own path's segments, so only entries that can match are tried,
/// in the same order as the full list.
#[derive(Debug, Default)]
struct SegmentNode {
    entries: Vec<u32>,
    /// foldhash, not SipHash: the keys come from the config, and a request
    /// only looks segments up, so it cannot plant colliding keys; SipHash
    /// over each segment was the index's largest cost.
    children: std::collections::HashMap<Box<str>, SegmentNode, foldhash::fast::RandomState>,
}

impl SegmentNode {
    fn insert(&mut self, segments: &[&str], entry: u32) {
        match segments.split_first() {
            Some((first, rest)) => self
                .children
                .entry(Box::from(*first))
                .or_default()
                .insert(rest, entry),
            None => self.entries.push(entry),
        }
    }
}

/// The literal segments every path matching `pattern` starts with (at most
/// [`INDEX_DEPTH`]).
fn fixed_segments(pattern: Option<&PathPattern>) -> Vec<&str> {
    let mut out: Vec<&str> = match pattern {
        None => Vec::new(),
        Some(PathPattern::Prefix(p)) if p == "/" => Vec::new(),
        Some(PathPattern::Prefix(p)) => {
            let mut segs: Vec<&str> = p[1..].split('/').collect();
            // `/v1/` matches `/v1/...`: the empty last segment is not fixed.
            if p.ends_with('/') {
                segs.pop();
            }
            segs
        }
        Some(PathPattern::Exact(p)) => p.get(1..).unwrap_or("").split('/').collect(),
        Some(PathPattern::Template(segs)) => segs
            .iter()
            .map_while(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Param(_) => None,
            })
            .collect(),
    };
    out.truncate(INDEX_DEPTH);
    out
}

impl<T> Router<T> {
    /// Compiles routes. Specs are validated before they reach the store;
    /// a path that does not parse is skipped.
    pub fn new(routes: Vec<(RouteSpec, T)>) -> Router<T> {
        let mut matchers = Vec::with_capacity(routes.len());
        let mut entries = Vec::new();
        for (i, (spec, target)) in routes.into_iter().enumerate() {
            let hosts: Vec<Option<HostPattern>> = if spec.hosts.is_empty() {
                vec![None]
            } else {
                spec.hosts
                    .iter()
                    .map(|h| Some(HostPattern::parse(h)))
                    .collect()
            };
            let paths: Vec<Option<PathPattern>> = if spec.paths.is_empty() {
                vec![None]
            } else {
                spec.paths
                    .iter()
                    .filter_map(|p| parse_path_pattern(p).ok())
                    .map(Some)
                    .collect()
            };
            for host in &hosts {
                for path in &paths {
                    entries.push(Entry {
                        route: i,
                        host: host.clone(),
                        path: path.clone(),
                    });
                }
            }
            matchers.push(RouteMatcher {
                name: Arc::from(spec.name.as_str()),
                methods: spec
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
                headers: spec
                    .headers
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((HeaderName::from_bytes(k.as_bytes()).ok()?, v.clone()))
                    })
                    .collect(),
                target,
            });
        }
        entries.sort_by_key(|e| {
            let r = &matchers[e.route];
            let host = e.host.as_ref().map(HostPattern::rank).unwrap_or((0, 0));
            let path = match &e.path {
                None => (0, 0, 0),
                Some(p @ PathPattern::Exact(_)) => (1, p.literal_len(), 0),
                Some(p @ PathPattern::Template(_)) => (0, p.literal_len(), 1),
                Some(p @ PathPattern::Prefix(_)) => (0, p.literal_len(), 0),
            };
            (
                Reverse(host),
                Reverse(path),
                Reverse(!r.methods.is_empty()),
                Reverse(r.headers.len()),
                r.name.clone(),
            )
        });
        let mut index = SegmentNode::default();
        for (i, e) in entries.iter().enumerate() {
            index.insert(&fixed_segments(e.path.as_ref()), i as u32);
        }
        Router {
            routes: matchers,
            entries,
            index,
        }
    }

    /// The index nodes a path visits: the root, then one per leading segment.
    fn visited<'r>(&'r self, path: &str) -> ([&'r [u32]; INDEX_DEPTH + 1], usize) {
        let mut lists: [&[u32]; INDEX_DEPTH + 1] = [&[]; INDEX_DEPTH + 1];
        lists[0] = &self.index.entries;
        let mut n = 1;
        let mut node = &self.index;
        for seg in segments(path.get(1..).unwrap_or("")).take(INDEX_DEPTH) {
            match node.children.get(seg) {
                Some(next) => {
                    node = next;
                    lists[n] = &node.entries;
                    n += 1;
                }
                None => break,
            }
        }
        (lists, n)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the most specific route. `host` must be lower case without port.
    pub fn find<'a>(
        &'a self,
        method: &Method,
        host: &str,
        path: &'a str,
        headers: &HeaderMap,
    ) -> Result<Match<'a, T>, Miss> {
        let mut method_miss: Option<(Arc<str>, Vec<&Method>)> = None;
        // The candidate entries in sorted order: a merge of the visited
        // nodes' ascending lists.
        let (lists, n) = self.visited(path);
        let mut cursors = [0usize; INDEX_DEPTH + 1];
        let candidates = std::iter::from_fn(|| {
            let mut best: Option<(usize, u32)> = None;
            for (k, list) in lists[..n].iter().enumerate() {
                if let Some(&i) = list.get(cursors[k])
                    && best.is_none_or(|(_, b)| i < b)
                {
                    best = Some((k, i));
                }
            }
            let (k, i) = best?;
            cursors[k] += 1;
            Some(i as usize)
        });
        for e in candidates.map(|i| &self.entries[i]) {
            if let Some(h) = &e.host
                && !h.matches(host)
            {
                continue;
            }
            let rest = match &e.path {
                None => Some(path),
                Some(p) => match_path(p, path),
            };
            let Some(rest) = rest else { continue };
            let r = &self.routes[e.route];
            if !r
                .headers
                .iter()
                .all(|(name, values)| header_matches(headers, name, values))
            {
                continue;
            }
            if !r.methods.is_empty() && !r.methods.contains(method) {
                let (_, allow) = method_miss.get_or_insert_with(|| (r.name.clone(), Vec::new()));
                for m in &r.methods {
                    if !allow.contains(&m) {
                        allow.push(m);
                    }
                }
                continue;
            }
            return Ok(Match { route: r, rest });
        }
        Err(match method_miss {
            Some((route, allow)) => {
                let allow: Vec<&str> = allow.iter().map(|m| m.as_str()).collect();
                Miss::Method {
                    route,
                    allow: allow.join(", "),
                }
            }
            None => Miss::NoRoute,
        })
    }
}

fn header_matches(headers: &HeaderMap, name: &HeaderName, values: &[String]) -> bool {
    headers.get_all(name).iter().any(|v| {
        values
            .iter()
            .any(|want| want.as_bytes().eq_ignore_ascii_case(v.as_bytes()))
    })
}

/// Returns the remainder after the matched part, or `None`.
fn match_path<'a>(pattern: &PathPattern, path: &'a str) -> Option<&'a str> {
    match pattern {
        PathPattern::Exact(p) => (p == path).then_some("/"),
        PathPattern::Prefix(p) => {
            if p == "/" {
                return Some(path);
            }
            let rest = path.strip_prefix(p.as_str())?;
            if rest.is_empty() {
                Some("/")
            } else if p.ends_with('/') {
                Some(&path[p.len() - 1..])
            } else if rest.starts_with('/') {
                Some(rest)
            } else {
                None
            }
        }
        PathPattern::Template(segs) => {
            let mut parts = segments(&path[1..]);
            for seg in segs {
                let part = parts.next()?;
                match seg {
                    Segment::Literal(l) if l != part => return None,
                    Segment::Param(_) if part.is_empty() => return None,
                    _ => {}
                }
            }
            parts.next().is_none().then_some("/")
        }
    }
}

/// The pieces of `s` between slashes, as `s.split('/')` yields them.
///
/// `str::split` with a `char` goes through the general character searcher,
/// which cost about 400 instructions a request on the full stack's routing
/// (callgrind); path segments are short, and a plain byte scan is cheaper.
fn segments(s: &str) -> Segments<'_> {
    Segments { rest: Some(s) }
}

struct Segments<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match s.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// The lower-case host name of a request, without port or trailing dot.
/// Borrowed from the request when it is already in that form (the usual
/// case), so most requests allocate nothing here.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Cow<'a, str> {
    let raw = uri
        .host()
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let without_port = if raw.starts_with('[') {
        raw.split(']').next().map(|h| &h[1..]).unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Whether a path contains a dot segment (`.` or `..`, also percent-encoded),
/// which upstreams may resolve differently from the router.
pub fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|c| c == b'.' || c == b'%') {
        return false;
    }
    path.as_bytes().split(|c| *c == b'/').any(is_dot_segment)
}

/// `.` or `..`, each dot written as itself or as `%2e` in either case. No
/// allocation: a path with a dot in it (a file name, a version) is common.
fn is_dot_segment(seg: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = seg;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_like_str_split() {
        for path in [
            "",
            "a",
            "a/b",
            "a//b",
            "/",
            "a/",
            "/a/b/",
            "x/\u{e9}t\u{e9}/y",
        ] {
            let ours: Vec<&str> = segments(path).collect();
            let std: Vec<&str> = path.split('/').collect();
            assert_eq!(ours, std, "{path:?}");
        }
    }
    use std::collections::BTreeMap;

    fn route(
        name: &str,
        hosts: &[&str],
        paths: &[&str],
        methods: &[&str],
    ) -> (RouteSpec, &'static str) {
        let spec = RouteSpec {
            name: name.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            headers: BTreeMap::new(),
            strip_path: true,
            preserve_host: false,
        };
        (spec, "")
    }

    fn find<'a>(
        r: &'a Router<&'static str>,
        method: &str,
        host: &str,
        path: &'a str,
    ) -> Result<(&'a str, &'a str), Miss> {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        r.find(&m, host, path, &HeaderMap::new())
            .map(|m| (&*m.route.name, m.rest))
    }

    /// The index must give the answer a scan of every entry gives.
    #[test]
    fn the_segment_index_agrees_with_a_full_scan() {
        let routes = vec![
            route("root-exact", &[], &["=/"], &[]),
            route("slash-prefix", &[], &["/v1/"], &[]),
            route("v1", &[], &["/v1"], &[]),
            route("leading-param", &[], &["/{tenant}/orders"], &[]),
            route("deep", &[], &["=/v1/a/b/c/d/e"], &[]),
            route("deep-prefix", &[], &["/v1/a/b/c/d"], &[]),
            route("tpl", &[], &["/v1/{x}/items"], &[]),
            route("post-only", &[], &["/v1/a"], &["POST"]),
            route("hosted", &["api.example.com"], &["/v1/a"], &[]),
            route("catch-all", &[], &[], &["GET"]),
        ];
        let r = Router::new(routes);
        let scan = |method: &str, host: &str, path: &str| -> Option<String> {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            r.entries
                .iter()
                .find(|e| {
                    e.host.as_ref().is_none_or(|h| h.matches(host))
                        && e.path
                            .as_ref()
                            .is_none_or(|p| match_path(p, path).is_some())
                        && {
                            let rt = &r.routes[e.route];
                            rt.methods.is_empty() || rt.methods.contains(&m)
                        }
                })
                .map(|e| r.routes[e.route].name.to_string())
        };
        for path in [
            "/",
            "/v1",
            "/v1/",
            "/v1/a",
            "/v1/a/b/c/d",
            "/v1/a/b/c/d/e",
            "/v1/a/b/c/d/e/f",
            "/v1/z/items",
            "/acme/orders",
            "/v2",
            "/v1/a/x",
        ] {
            for (method, host) in [("GET", "x"), ("POST", "x"), ("GET", "api.example.com")] {
                let got = find(&r, method, host, path).ok().map(|(n, _)| n.to_owned());
                assert_eq!(got, scan(method, host, path), "{method} {host}{path}");
            }
        }
        assert_eq!(
            find(&r, "GET", "x", "/v1/a/b/c/d/e").map(|m| m.0),
            Ok("deep")
        );
        assert_eq!(
            find(&r, "GET", "x", "/acme/orders").map(|m| m.0),
            Ok("leading-param")
        );
    }

    #[test]
    fn most_specific_route_wins_regardless_of_order() {
        let routes = vec![
            route("catch-all", &[], &["/"], &[]),
            route("orders", &[], &["/orders"], &[]),
            route("orders-exact", &[], &["=/orders/list"], &[]),
            route("order-by-id", &[], &["/orders/{id}"], &[]),
            route("orders-admin", &[], &["/orders/admin"], &[]),
            route("host-wild", &["*.example.com"], &["/"], &[]),
            route("host-exact", &["api.example.com"], &["/"], &[]),
            route("orders-post", &[], &["/orders"], &["POST"]),
        ];
        let mut reversed = routes.clone();
        reversed.reverse();
        for r in [Router::new(routes), Router::new(reversed)] {
            assert_eq!(find(&r, "GET", "other", "/orders"), Ok(("orders", "/")));
            assert_eq!(
                find(&r, "POST", "other", "/orders/x/y"),
                Ok(("orders-post", "/x/y"))
            );
            assert_eq!(
                find(&r, "GET", "other", "/orders/list"),
                Ok(("orders-exact", "/"))
            );
            assert_eq!(
                find(&r, "GET", "other", "/orders/42"),
                Ok(("order-by-id", "/"))
            );
            assert_eq!(
                find(&r, "GET", "other", "/orders/admin"),
                Ok(("orders-admin", "/"))
            );
            assert_eq!(
                find(&r, "GET", "other", "/orders/42/items"),
                Ok(("orders", "/42/items"))
            );
            assert_eq!(
                find(&r, "GET", "other", "/ordersx"),
                Ok(("catch-all", "/ordersx"))
            );
            assert_eq!(
                find(&r, "GET", "api.example.com", "/orders"),
                Ok(("host-exact", "/orders"))
            );
            assert_eq!(
                find(&r, "GET", "x.example.com", "/orders"),
                Ok(("host-wild", "/orders"))
            );
            assert_eq!(
                find(&r, "GET", "example.com", "/a"),
                Ok(("catch-all", "/a"))
            );
        }
    }

    #[test]
    fn method_and_header_rules() {
        let mut spec = route("h", &[], &["/a"], &["GET"]);
        spec.0.headers.insert("x-version".into(), vec!["v2".into()]);
        let r = Router::new(vec![spec, route("fallback", &[], &["/a"], &["GET"])]);
        let mut h = HeaderMap::new();
        h.insert("x-version", "V2".parse().expect("v"));
        assert_eq!(
            &*r.find(&Method::GET, "", "/a", &h)
                .expect("match")
                .route
                .name,
            "h"
        );
        assert_eq!(
            &*r.find(&Method::GET, "", "/a", &HeaderMap::new())
                .expect("match")
                .route
                .name,
            "fallback"
        );
        assert_eq!(
            r.find(&Method::DELETE, "", "/a", &h).map(|_| ()),
            Err(Miss::Method {
                route: Arc::from("h"),
                allow: "GET".into()
            })
        );
        assert_eq!(
            r.find(&Method::GET, "", "/b", &h).map(|_| ()),
            Err(Miss::NoRoute)
        );
    }

    #[test]
    fn hosts_and_dot_segments() {
        let uri: http::Uri = "/x".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            "API.Example.com.:8000".parse().expect("host"),
        );
        assert_eq!(request_host(&uri, &h), "api.example.com");
        let uri: http::Uri = "http://[::1]:80/x".parse().expect("uri");
        assert_eq!(request_host(&uri, &HeaderMap::new()), "::1");
        // A host already in normal form is borrowed, not copied.
        let uri: http::Uri = "/x".parse().expect("uri");
        h.insert(
            http::header::HOST,
            "api.example.com:8000".parse().expect("host"),
        );
        assert!(matches!(
            request_host(&uri, &h),
            Cow::Borrowed("api.example.com")
        ));
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/%2E%2e/b"));
        assert!(has_dot_segment("/a/."));
        assert!(!has_dot_segment("/a/..b/c.d"));
    }

    /// The allocation-free check agrees with the rule it replaced (lower
    /// case, `%2e` decoded, then `.` or `..`) on every segment of up to
    /// seven bytes over the characters that matter.
    #[test]
    fn dot_segments_match_the_decoding_rule() {
        fn reference(seg: &str) -> bool {
            let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
            decoded == "." || decoded == ".."
        }
        let alphabet = [".", "%", "2", "e", "E", "a"];
        for len in 0..=7u32 {
            for mut code in 0..alphabet.len().pow(len) {
                let seg: String = (0..len)
                    .map(|_| {
                        let c = alphabet[code % alphabet.len()];
                        code /= alphabet.len();
                        c
                    })
                    .collect();
                assert_eq!(is_dot_segment(seg.as_bytes()), reference(&seg), "{seg:?}");
            }
        }
    }

    #[test]
    fn trailing_slash_prefix() {
        let r = Router::new(vec![route("a", &[], &["/api/"], &[])]);
        assert_eq!(find(&r, "GET", "", "/api/x"), Ok(("a", "/x")));
        assert!(find(&r, "GET", "", "/apix").is_err());
    }
}
