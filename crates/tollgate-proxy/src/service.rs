//! The proxy: one request from arrival to response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use tokio::time::Instant;
use tollgate_core::fields::ResponseFields;
use tollgate_identity::oauth::OAuthServer;
use tollgate_policies::{Arrival, LogSummary, Reply, RequestCtx};
use tollgate_telemetry::{RequestTrace, SpanHandle, SpanKind, attr, span_name};

use crate::body::{ProxyBody, Recording, ReplayableBody, TripWire, Tripped};
use crate::client::{RequestHead, ResponseBody};
use crate::error::ProxyError;
use crate::framing::Refusal;
use crate::h1::{OnUpgrade, RequestBody};
use crate::headers::{self, X_REQUEST_ID};
use crate::pool;
use crate::router::{Miss, has_dot_segment, request_host};
use crate::snapshot::{Gateway, RouteTarget, ServiceRt};
use crate::upstream::{Admit, InFlight, TrialGuard, ms_at};

/// What the service knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer as the forwarding headers show it.
    pub(crate) forwarded: headers::Peer,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            forwarded: headers::Peer::new(peer.ip(), if tls { "https" } else { "http" }),
        }
    }
}

/// Handles one request. Never fails: every error becomes a response here.
/// Every request is recorded once: routed ones where their response is
/// made (or, for an upstream's body, where it ends), the rest here.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Box<Request<RequestBody>>,
) -> Result<Response<ProxyBody>, Infallible> {
    // One clock read: the wall clock comes from the coarse timer's offset
    // between the two clocks.
    let at = std::time::Instant::now();
    let arrival = Arrival::new(at, crate::coarse_timer::unix_us_at(at));
    let request_id = headers::request_id_at(req.headers(), arrival.unix_ms() as u64);
    let method = req.method().clone();
    let mut res = match proxy(&gw, &conn, req, &request_id, arrival).await {
        Ok(res) => res,
        Err(e) => {
            if e.origin() != crate::error::Origin::Client {
                tracing::warn!(request_id = ?request_id, error = %e, "request failed");
            }
            let code = e.code();
            let res = e.into_response(&request_id);
            record_unrouted(&gw, &conn, arrival, method, &request_id, &res, Some(code));
            res
        }
    };
    // Beside the upstream's fields when they are passed on, else in the map;
    // either way it replaces an upstream's own.
    match res.body_mut().fields_mut() {
        Some(fields) => fields.own.push(&X_REQUEST_ID, &request_id),
        None => {
            res.headers_mut().insert(&X_REQUEST_ID, request_id);
        }
    }
    Ok(res)
}

/// Records a request that matched no route (or went to the OAuth2 server).
fn record_unrouted(
    gw: &Gateway,
    conn: &ConnInfo,
    arrival: Arrival,
    method: Method,
    request_id: &HeaderValue,
    res: &Response<ProxyBody>,
    error: Option<tollgate_core::ErrorCode>,
) {
    let recorder = gw.recorder();
    recorder.record(
        recorder.unrouted(),
        tollgate_analytics::Event {
            at_ms: arrival.unix_ms(),
            route: None,
            service: None,
            who: tollgate_analytics::Who::Anonymous,
            method,
            status: res.status().as_u16(),
            error,
            upstream_us: None,
            total_us: arrival.at.elapsed().as_micros() as u64,
            bytes_in: 0,
            bytes_out: res.body().full_len().unwrap_or(0),
            client_ip: conn.peer.ip(),
            request_id: request_id.clone(),
        },
    );
}

async fn proxy(
    gw: &Gateway,
    conn: &ConnInfo,
    req: Box<Request<RequestBody>>,
    request_id: &HeaderValue,
    arrival: Arrival,
) -> Result<Response<ProxyBody>, ProxyError> {
    match req.extensions().get::<Refusal>() {
        None => {}
        Some(Refusal::Framing(why)) => return Err(ProxyError::Smuggling(why)),
        Some(Refusal::Coding(why)) => return Err(ProxyError::CodingNotImplemented(why.clone())),
        Some(Refusal::HeadTooLarge(why)) => return Err(ProxyError::HeadersTooLarge(why.clone())),
    }
    let (mut parts, body) = (*req).into_parts();
    let uri = parts.uri.clone();
    let path = uri.path();
    if !path.starts_with('/') || has_dot_segment(path) {
        return Err(ProxyError::BadRequest(format!(
            "the request target `{}` is not a normalised absolute path",
            short(path)
        )));
    }
    if let Some(oauth) = gw.oauth()
        && OAuthServer::owns(path)
    {
        let method = parts.method.clone();
        // Boxed: the token endpoint's future is large, and inline it would
        // be part of every proxied request's.
        let res = Box::pin(oauth_endpoint(
            oauth,
            parts,
            body,
            gw.settings.body_read_timeout,
        ))
        .await?;
        record_unrouted(gw, conn, arrival, method, request_id, &res, None);
        return Ok(res);
    }
    let snap = gw.snapshot();
    let found = {
        let host = request_host(&parts.uri, &parts.headers);
        snap.router.find(&parts.method, &host, path, &parts.headers)
    };
    let m = match found {
        Ok(m) => m,
        Err(Miss::NoRoute) => {
            return Err(ProxyError::NoRoute {
                method: parts.method.to_string(),
                path: short(path).to_owned(),
            });
        }
        Err(Miss::Method { route, allow }) => {
            return Err(ProxyError::MethodNotAllowed {
                route: route.to_string(),
                method: parts.method.to_string(),
                allow,
            });
        }
    };
    let client_version = parts.version;
    let rt: &RouteTarget = &m.route.target;
    let svc = &snap.services[rt.service];
    let settings = &gw.settings;
    let peer = conn.peer.ip();
    let trusted_peer = headers::is_trusted(peer, &settings.trusted_proxies);
    let client_ip = headers::client_ip(peer, &parts.headers, &settings.trusted_proxies);
    let mut ctx = RequestCtx::arrived(
        arrival,
        request_id.clone(),
        peer,
        client_ip,
        m.route.name.clone(),
        svc.name.clone(),
    );
    let incoming_tp = parts.headers.get(&headers::TRACEPARENT);
    // A malformed `traceparent` is not passed on (nor its `tracestate`).
    let drop_tp = incoming_tp.is_some_and(|tp| !headers::valid_traceparent(tp));
    let mut trace = gw.tracer().start_request(incoming_tp, "");
    if trace.is_recording() {
        let root = SpanHandle::ROOT;
        trace.set_name(root, format!("{} {}", parts.method, m.route.name));
        trace.set_attribute(root, attr::HTTP_REQUEST_METHOD, parts.method.to_string());
        trace.set_attribute(root, attr::URL_PATH, short(path).to_owned());
        trace.set_attribute(
            root,
            attr::URL_SCHEME,
            if conn.tls { "https" } else { "http" },
        );
        trace.set_attribute(root, attr::TOLLGATE_ROUTE, m.route.name.to_string());
        trace.set_attribute(root, attr::TOLLGATE_SERVICE, svc.name.to_string());
        trace.set_attribute(root, attr::CLIENT_ADDRESS, client_ip.to_string());
        if let Ok(id) = request_id.to_str() {
            trace.set_attribute(root, attr::TOLLGATE_REQUEST_ID, id.to_owned());
        }
    }
    let rec = Rec {
        gw,
        rt,
        method: parts.method.clone(),
        unix_ms: arrival.unix_ms(),
    };
    if let Some(max) = settings.max_body_bytes {
        ctx.limit_body(max);
    }

    // Access phase.
    let access = trace.start_span(span_name::ACCESS, SpanKind::Internal);
    let flow = rt.chain.access(&mut ctx, &mut parts).await;
    trace.end_span(access);
    if let Err(reply) = flow {
        return Ok(finish_reply(&rec, &mut ctx, reply, trace));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(limit), Some(len)) = (ctx.body_limit, declared)
        && len > limit
    {
        return Ok(finish_error(
            &rec,
            &mut ctx,
            ProxyError::PayloadTooLarge { limit },
            trace,
        ));
    }

    // The request as the upstream will see it.
    let forward_path = if rt.strip_path { m.rest } else { path };
    let mut path_and_query = String::with_capacity(svc.base_path.len() + forward_path.len() + 32);
    path_and_query.push_str(&svc.base_path);
    if svc.base_path.is_empty() || forward_path != "/" || !rt.strip_path {
        path_and_query.push_str(forward_path);
    }
    if path_and_query.is_empty() {
        path_and_query.push('/');
    }
    if let Some(q) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    if !crate::client::clean_target(&path_and_query) {
        return Err(ProxyError::BadRequest(format!(
            "cannot forward the request target `{}`",
            short(&path_and_query)
        )));
    }
    let client_upgrade = if parts.version == Version::HTTP_11 {
        headers::strip_hop_by_hop(&mut parts.headers)
    } else {
        None
    };
    if parts.version != Version::HTTP_11 {
        headers::strip_hop_by_hop(&mut parts.headers);
    }
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    headers::set_gateway_fields(
        &mut parts.headers,
        &mut ctx.upstream_fields,
        &conn.forwarded,
        trusted_peer,
        original_host.as_ref(),
        request_id,
    );
    if drop_tp {
        parts.headers.remove(&headers::TRACEPARENT);
        parts.headers.remove(&headers::TRACESTATE);
    }
    let on_client_upgrade = if client_upgrade.is_some() {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    if let Some(up) = &client_upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, up.clone());
    }
    let phase = trace.start_span(span_name::UPSTREAM_REQUEST, SpanKind::Internal);
    rt.chain.upstream_request(&mut ctx, &mut parts);
    trace.end_span(phase);
    // One CLIENT span covers the upstream exchange (every attempt); the
    // upstream continues the trace under it.
    let upstream_span = trace.start_span(span_name::UPSTREAM, SpanKind::Client);
    if let Some(tp) = trace.traceparent_for_upstream(upstream_span) {
        parts.headers.insert(&headers::TRACEPARENT, tp);
        if !trace.is_continued() {
            parts.headers.remove(&headers::TRACESTATE);
        }
    }

    let exchange = Exchange {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        added: std::mem::take(&mut ctx.upstream_fields),
        host: if rt.preserve_host {
            original_host
        } else {
            None
        },
        body: ReplayableBody::new(body),
        body_limit: ctx.body_limit,
        body_idle: settings.body_read_timeout,
    };
    let sent = send(svc, &exchange).await;
    let Sent {
        res: upstream_res,
        guard,
        deadline,
        latency: upstream_latency,
        wire,
    } = match sent {
        Ok(ok) => ok,
        Err(e) => {
            trace.set_error(upstream_span, e.code().as_str());
            trace.end_span(upstream_span);
            return Ok(finish_error(&rec, &mut ctx, e, trace));
        }
    };
    if trace.is_recording() {
        trace.set_http_status(upstream_span, upstream_res.status().as_u16());
        trace.set_attribute(
            upstream_span,
            attr::SERVER_ADDRESS,
            guard.0.addr.to_string(),
        );
    }
    trace.end_span(upstream_span);

    let (mut res_parts, mut res_body) = upstream_res.into_parts();
    let mut fields = res_body.take_fields().map(ResponseFields::new);
    // The client's connection has its own protocol version; the upstream's is hop-by-hop.
    res_parts.version = client_version;
    let target = guard.0.addr.clone();
    let upgraded = res_parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let body = if upgraded {
        let (Some(client_side), Some((upstream_side, early))) =
            (on_client_upgrade, res_body.into_upgraded())
        else {
            return Ok(finish_error(
                &rec,
                &mut ctx,
                ProxyError::UpstreamProtocol {
                    target: target.to_string(),
                    source: "unrequested protocol switch".into(),
                },
                trace,
            ));
        };
        tokio::spawn(tunnel(client_side, upstream_side, early, guard));
        let upgrade = res_parts.headers.get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut res_parts.headers);
        if let Some(u) = upgrade {
            res_parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            res_parts.headers.insert(header::UPGRADE, u);
        }
        ProxyBody::empty()
    } else {
        // The client dropped the upstream connection's hop-by-hop fields
        // while it parsed the head (client/mod.rs).
        ProxyBody::upstream(res_body, svc.read_timeout, deadline, guard, None)
    };
    let phase = trace.start_span(span_name::RESPONSE, SpanKind::Internal);
    rt.chain.response(&mut ctx, &mut res_parts, &mut fields);
    trace.end_span(phase);
    let summary = LogSummary {
        status: res_parts.status,
        error: None,
        upstream_latency: Some(upstream_latency),
        target: Some(target),
    };
    rt.chain.log(&ctx, &summary);
    finish_trace(trace, summary.status.as_u16());
    let mut recording = rec.recording(&mut ctx, &summary, Some(wire));
    let body = match body {
        ProxyBody::Upstream(mut u) => {
            u.recording = Some(recording);
            u.fields = fields;
            ProxyBody::Upstream(u)
        }
        full => {
            // A protocol switch: the exchange is over for analytics once
            // the 101 is sent; the tunnel's bytes are not counted.
            debug_assert!(upgraded);
            recording.wire = None;
            recording.finish(0);
            full
        }
    };
    Ok(Response::from_parts(res_parts, body))
}

/// What recording a routed request needs besides its context.
struct Rec<'a> {
    gw: &'a Gateway,
    rt: &'a RouteTarget,
    method: Method,
    unix_ms: i64,
}

impl Rec<'_> {
    /// The request's event, to be finished when its response ends. Takes
    /// the caller out of the context: the log phase was its last use.
    fn recording(
        &self,
        ctx: &mut RequestCtx,
        summary: &LogSummary,
        wire: Option<Arc<TripWire>>,
    ) -> Recording {
        Recording {
            recorder: self.gw.recorder().clone(),
            stats: self.rt.stats.clone(),
            event: tollgate_analytics::Event {
                at_ms: self.unix_ms,
                route: Some(ctx.route.clone()),
                service: Some(ctx.service.clone()),
                who: ctx.caller.take().into(),
                method: self.method.clone(),
                status: summary.status.as_u16(),
                error: summary.error,
                upstream_us: summary.upstream_latency.map(|d| d.as_micros() as u64),
                total_us: 0,
                bytes_in: 0,
                bytes_out: 0,
                client_ip: ctx.client_ip,
                request_id: ctx.request_id.clone(),
            },
            started: ctx.arrival.at,
            wire,
        }
    }
}

/// Carries bytes both ways between the client's upgraded connection and
/// the upstream's, starting with what the upstream sent right behind its 101.
async fn tunnel(
    client: OnUpgrade,
    mut upstream: tokio::net::TcpStream,
    early: bytes::Bytes,
    guard: InFlight,
) {
    use tokio::io::AsyncWriteExt;
    match client.upgraded().await {
        Some(mut c) => {
            if !early.is_empty() && c.io.write_all(&early).await.is_err() {
                return;
            }
            if !c.early.is_empty() && upstream.write_all(&c.early).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut c.io, &mut upstream).await;
        }
        None => tracing::debug!("the client connection was not handed over"),
    }
    drop(guard);
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Hands a request to the OAuth2 server, with its body read up to the
/// endpoint's limit.
async fn oauth_endpoint(
    oauth: &Arc<OAuthServer>,
    parts: http::request::Parts,
    body: RequestBody,
    body_timeout: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    use http_body_util::BodyExt;
    let limit = tollgate_identity::oauth::MAX_FORM_BYTES as u64;
    // The form is small: all of it within the body deadline, or 408.
    let collected = tokio::time::timeout(
        body_timeout,
        http_body_util::Limited::new(body, limit as usize).collect(),
    )
    .await
    .map_err(|_| ProxyError::RequestTimeout)?;
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::PayloadTooLarge { limit });
        }
        Err(_) => {
            return Err(ProxyError::BadRequest(
                "the request body could not be read".into(),
            ));
        }
    };
    let res = oauth.handle(Request::from_parts(parts, bytes)).await;
    let (parts, body) = res.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::full(body)))
}

fn finish_reply(
    rec: &Rec<'_>,
    ctx: &mut RequestCtx,
    reply: Reply,
    trace: RequestTrace,
) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(reply.body));
    *res.status_mut() = reply.status;
    *res.headers_mut() = reply.headers;
    finish(rec, ctx, res, reply.code, trace)
}

fn finish_error(
    rec: &Rec<'_>,
    ctx: &mut RequestCtx,
    e: ProxyError,
    trace: RequestTrace,
) -> Response<ProxyBody> {
    if e.origin() != crate::error::Origin::Client {
        tracing::warn!(request_id = ?ctx.request_id, route = %ctx.route, error = %e, "upstream request failed");
    }
    let code = e.code();
    let res = e.into_response(&ctx.request_id);
    finish(rec, ctx, res, Some(code), trace)
}

/// Ends the SERVER span with the status sent to the client.
fn finish_trace(mut trace: RequestTrace, status: u16) {
    if trace.is_recording() {
        trace.set_http_status(SpanHandle::ROOT, status);
    }
    trace.finish(status);
}

/// The response phases of an answer the gateway made itself, and its record.
fn finish(
    rec: &Rec<'_>,
    ctx: &mut RequestCtx,
    res: Response<ProxyBody>,
    code: Option<tollgate_core::ErrorCode>,
    mut trace: RequestTrace,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    let phase = trace.start_span(span_name::RESPONSE, SpanKind::Internal);
    rec.rt.chain.response(ctx, &mut parts, &mut None);
    trace.end_span(phase);
    if let Some(code) = code {
        trace.set_attribute(SpanHandle::ROOT, attr::ERROR_TYPE, code.as_str());
    }
    let summary = LogSummary {
        status: parts.status,
        error: code,
        upstream_latency: None,
        target: None,
    };
    rec.rt.chain.log(ctx, &summary);
    finish_trace(trace, summary.status.as_u16());
    rec.recording(ctx, &summary, None)
        .finish(body.full_len().unwrap_or(0));
    Response::from_parts(parts, body)
}

/// Everything needed to (re)build the upstream request for each attempt.
struct Exchange {
    method: Method,
    path_and_query: String,
    headers: http::HeaderMap,
    /// The gateway's fields, encoded, unless a policy moved them into `headers`.
    added: tollgate_core::fields::UpstreamFields,
    host: Option<HeaderValue>,
    body: ReplayableBody,
    body_limit: Option<u64>,
    body_idle: Duration,
}

/// Waits for the upstream's response head. `read_timeout` counts from the
/// last progress of the request body (its end, for a finished upload), so a
/// slow client upload is not blamed on the upstream, while an upstream that
/// stops reading the body still times out. `deadline` bounds the whole wait.
/// `now` is the time the attempt started, already read by the caller.
///
/// The deadline waits on the coarse timer until it is near
/// ([`crate::coarse_timer::deadline`]): nearly every answer comes long
/// before it, and a tokio timer armed and cancelled for each was about 3%
/// of a pass-through request's instructions.
///
/// The exchange is pinned by the caller and borrowed here: taken by value,
/// it would be stored twice in this future (as the argument and as the
/// pinned local) and copied twice more on the way in, for every request.
async fn await_head<F: std::future::Future>(
    mut fut: std::pin::Pin<&mut F>,
    wire: &TripWire,
    read_timeout: Duration,
    deadline: Option<Instant>,
    mut now: Instant,
) -> Result<F::Output, ()> {
    let read_ms = read_timeout.as_millis() as u64;
    loop {
        let last = wire.progress_ms();
        let idle_left =
            Duration::from_millis((last + read_ms).saturating_sub(ms_at(now.into_std())));
        let mut wake = now + idle_left;
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        tokio::select! {
            out = fut.as_mut() => return Ok(out),
            () = crate::coarse_timer::deadline(wake, now) => {
                now = Instant::now();
                let moved = wire.progress_ms() != last;
                let past_deadline = deadline.is_some_and(|d| now >= d);
                if past_deadline || !moved {
                    return Err(());
                }
            }
        }
    }
}

/// An upstream's response head and what its body needs.
struct Sent {
    /// The head; the body holds the connection until it has been read.
    res: Response<ResponseBody>,
    guard: InFlight,
    deadline: Option<Instant>,
    latency: Duration,
    wire: Arc<TripWire>,
}

/// Sends the exchange to a target, retrying on another target when that is
/// safe: the request never reached an upstream (connect failure) or it is
/// idempotent and its body was never read, and the retry budget allows it.
async fn send(svc: &ServiceRt, ex: &Exchange) -> Result<Sent, ProxyError> {
    let started = Instant::now();
    let deadline = svc.total_timeout.map(|t| started + t);
    let admit = match &svc.breaker {
        Some(_) => svc
            .state
            .breaker
            .admit()
            .ok_or_else(|| ProxyError::CircuitOpen {
                service: svc.name.to_string(),
            })?,
        None => Admit::Closed,
    };
    if svc.retries > 0 {
        svc.state.budget.deposit(&svc.retry_budget);
    }
    let mut trial = TrialGuard::new(&svc.state.breaker, admit);
    let mut tried: Vec<usize> = Vec::new();
    let mut retried: u32 = 0;
    let mut last_err: Option<ProxyError> = None;
    loop {
        // One clock read per attempt, shared by the pick, the pool and the
        // deadlines (the first attempt's is `started`).
        let now = if tried.is_empty() {
            started
        } else {
            Instant::now()
        };
        let now_ms = ms_at(now.into_std());
        let Some(idx) = svc.balancer.pick_at(&tried, now_ms) else {
            // Nothing (else) to try: after a failed attempt, report that failure.
            return Err(last_err.unwrap_or_else(|| ProxyError::NoHealthyTarget {
                service: svc.name.to_string(),
            }));
        };
        let target = svc.balancer.targets[idx].clone();
        let guard = InFlight::new(target.clone());
        let may_retry = retried < svc.retries;
        let head = RequestHead {
            method: &ex.method,
            target: &ex.path_and_query,
            host: ex.host.as_ref().unwrap_or(&target.host_header),
            headers: &ex.headers,
            added: &ex.added,
        };
        let wire = Arc::new(TripWire::at(now_ms));
        let mut body = ex.body.attempt(ex.body_limit, ex.body_idle, wire.clone());
        let exchange = pool::send(
            &target.addr,
            svc.connect_timeout,
            &head,
            &mut body,
            now.into_std(),
        );
        let outcome = await_head(
            std::pin::pin!(exchange),
            &wire,
            svc.read_timeout,
            deadline,
            now,
        )
        .await;
        let err = match outcome {
            Ok(Ok(res)) => {
                let ok = !res.status().is_server_error();
                target.record(ok, svc.passive.as_ref());
                if let Some(cfg) = &svc.breaker {
                    svc.state.breaker.record(cfg, admit, ok);
                    trial.settle();
                }
                return Ok(Sent {
                    res,
                    guard,
                    deadline,
                    latency: started.elapsed(),
                    wire,
                });
            }
            Ok(Err(pool::SendError::Connect(error))) => ProxyError::UpstreamConnect {
                target: target.addr.to_string(),
                source: Box::new(error),
            },
            Ok(Err(pool::SendError::Exchange(e))) => match wire.get() {
                Tripped::TooLarge => {
                    return Err(ProxyError::PayloadTooLarge {
                        limit: ex.body_limit.unwrap_or(0),
                    });
                }
                Tripped::Timeout => return Err(ProxyError::RequestTimeout),
                Tripped::ClientError => {
                    return Err(ProxyError::BadRequest(
                        "the client aborted the request body".into(),
                    ));
                }
                Tripped::None => ProxyError::UpstreamProtocol {
                    target: target.addr.to_string(),
                    source: Box::new(e),
                },
            },
            Err(_) => match wire.get() {
                Tripped::TooLarge => {
                    return Err(ProxyError::PayloadTooLarge {
                        limit: ex.body_limit.unwrap_or(0),
                    });
                }
                Tripped::Timeout => return Err(ProxyError::RequestTimeout),
                _ => ProxyError::UpstreamTimeout {
                    target: target.addr.to_string(),
                },
            },
        };
        target.record(false, svc.passive.as_ref());
        if let Some(cfg) = &svc.breaker {
            svc.state.breaker.record(cfg, admit, false);
            trial.settle();
            if admit == Admit::Trial {
                return Err(err);
            }
        }
        let replayable = ex.body.is_empty() || (err.retry_safe() && ex.body.unread());
        let allowed = err.retry_safe()
            || (crate::client::idempotent(&ex.method)
                && ex.body.is_empty()
                && !matches!(err, ProxyError::UpstreamTimeout { .. }));
        let in_time = deadline.is_none_or(|d| Instant::now() < d);
        if !(may_retry
            && replayable
            && allowed
            && in_time
            && svc.state.budget.withdraw(&svc.retry_budget))
        {
            return Err(err);
        }
        tracing::debug!(target = %target.addr, error = %err, "retrying on another target");
        retried += 1;
        last_err = Some(err);
        tried.push(idx);
        if tried.len() >= svc.balancer.targets.len() {
            tried.clear();
            tried.push(idx);
        }
    }
}
