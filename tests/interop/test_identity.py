#!/usr/bin/env python3
"""Tollgate's identity features, exercised with standard third-party clients.

- OAuth2 client credentials with Authlib (client_secret_basic and
  client_secret_post), RFC 8414 metadata, RFC 7662 introspection, RFC 7009
  revocation, and the access token verified with PyJWT against the published
  JWKS (RFC 9068).
- External JWTs minted by PyJWT (RS256, PS256, ES256, ES384, EdDSA, HS256)
  for issuers configured in the gateway, with the negative cases (expired,
  wrong audience, pinned-algorithm mismatch, HS/RS confusion, alg none,
  unknown issuer) and a JWKS key rotation.
- API keys in `X-API-Key`.

Run by crates/tollgate/tests/interop.rs, which starts tollgate and an echo
upstream (it answers with a JSON document of the request it received:
{"method", "path", "headers": {lower-case name: value}}), then sets:

  TOLLGATE_PROXY_URL   http://127.0.0.1:PORT (also the OAuth issuer)
  TOLLGATE_ADMIN_URL   http://127.0.0.1:PORT
  TOLLGATE_ADMIN_TOKEN the admin API's bearer token
  ECHO_URL             the echo upstream
  HS256_SECRET         the HS256 issuer's shared secret (also in tollgate's env)

The script configures the gateway itself through the admin API. It prints one
line per passed check and exits non-zero at the first failed one.

    python3 tests/interop/test_identity.py
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Everything here talks to 127.0.0.1: never through an HTTP proxy from the
# environment (requests and urllib both read these variables).
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"

try:
    import jwt
    import requests
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.requests_client import OAuth2Session
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
except ImportError as e:  # pragma: no cover - depends on the machine
    print(
        f"FAIL: a dependency is missing ({e}); install tests/interop/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

TIMEOUT = 10  # seconds, for every HTTP request
AUDIENCE = "tollgate-interop"
PROBLEM = "application/problem+json"


class CheckFailed(Exception):
    pass


PASSED: list[str] = []


def ok(what: str) -> None:
    PASSED.append(what)
    print(f"ok   {what}", flush=True)


def check(cond: bool, what: str, detail: object = "") -> None:
    if not cond:
        raise CheckFailed(f"{what}{': ' if detail != '' else ''}{detail}")


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise CheckFailed(f"the environment variable {name} is not set")
    return value


def describe(r: requests.Response) -> str:
    return f"{r.request.method} {r.url} -> {r.status_code} {r.headers.get('content-type')} {r.text[:600]!r}"


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def poll(what: str, fn, limit: float = 5.0, every: float = 0.05):
    """Calls `fn` until it returns something other than None or False (a
    4xx `requests.Response` is falsy, so truthiness is not used); fails after
    `limit` seconds with the last value (or exception) it saw."""
    end = time.monotonic() + limit
    last: object = None
    while True:
        try:
            value = fn()
            if value is not None and value is not False:
                return value
            last = value
        except requests.RequestException as e:
            last = e
        if time.monotonic() >= end:
            raise CheckFailed(f"not true within {limit}s: {what} (last: {last})")
        time.sleep(every)


# ---------------------------------------------------------------- gateway helpers


class Gateway:
    def __init__(self) -> None:
        self.proxy = env("TOLLGATE_PROXY_URL").rstrip("/")
        self.admin_url = env("TOLLGATE_ADMIN_URL").rstrip("/")
        self.echo = env("ECHO_URL").rstrip("/")
        self.hs256_secret = env("HS256_SECRET")
        self.admin = session()
        self.admin.headers["Authorization"] = f"Bearer {env('TOLLGATE_ADMIN_TOKEN')}"
        self.http = session()

    def admin_call(self, method: str, path: str, body: object, expect: int) -> dict:
        r = self.admin.request(method, f"{self.admin_url}{path}", json=body, timeout=TIMEOUT)
        check(r.status_code == expect, f"admin {method} {path} answers {expect}", describe(r))
        try:
            return r.json()
        except ValueError:
            raise CheckFailed(f"admin {method} {path}: not JSON: {describe(r)}") from None

    def get(self, path: str, headers: dict | None = None) -> requests.Response:
        return self.http.get(f"{self.proxy}{path}", headers=headers or {}, timeout=TIMEOUT)

    def get_bearer(self, path: str, token: str) -> requests.Response:
        return self.get(path, {"Authorization": f"Bearer {token}"})


def problem_code(r: requests.Response) -> str | None:
    if r.headers.get("content-type", "").split(";")[0].strip() != PROBLEM:
        return None
    try:
        return r.json().get("code")
    except ValueError:
        return None


def expect_problem(r: requests.Response, status: int, code: str, what: str) -> None:
    check(
        r.status_code == status and problem_code(r) == code,
        f"{what}: expected {status} problem+json with code `{code}`",
        describe(r),
    )


def echoed(r: requests.Response, what: str) -> dict:
    """The request headers the echo upstream received (lower-case names)."""
    check(r.status_code == 200, f"{what}: expected 200 from the upstream", describe(r))
    try:
        doc = r.json()
    except ValueError:
        raise CheckFailed(f"{what}: the upstream's answer is not JSON: {describe(r)}") from None
    check(isinstance(doc, dict) and "headers" in doc, f"{what}: not an echo answer", describe(r))
    return {k.lower(): v for k, v in doc["headers"].items()}


def expect_headers(h: dict, want: dict, what: str) -> None:
    for name, value in want.items():
        check(h.get(name) == value, f"{what}: the upstream should see {name}: {value}", f"got {h.get(name)!r}; all: {h}")


# ---------------------------------------------------------------- JWKS server


class JwksServer:
    """Publishes JWK sets at /<name>/jwks.json on 127.0.0.1 (ephemeral port)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.fetches: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with outer.lock:
                    doc = outer.docs.get(self.path)
                    if doc is not None:
                        outer.fetches[self.path] = outer.fetches.get(self.path, 0) + 1
                body = json.dumps(doc if doc is not None else {"error": "not found"}).encode()
                self.send_response(200 if doc is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def path(self, name: str) -> str:
        return f"/{name}/jwks.json"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(name)}"

    def publish(self, name: str, jwks: list[dict]) -> None:
        with self.lock:
            self.docs[self.path(name)] = {"keys": jwks}

    def fetch_count(self, name: str) -> int:
        with self.lock:
            return self.fetches.get(self.path(name), 0)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SigningKey:
    """A private key, its kid and its public JWK."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg = alg
        self.kid = kid
        if alg in ("RS256", "PS256"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "ES384":
            self.private = ec.generate_private_key(ec.SECP384R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            raise ValueError(alg)
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        self.jwk = jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict, alg: str | None = None, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers={"kid": kid or self.kid})


def hs256_by_hand(header: dict, claims: dict, secret: bytes) -> str:
    """An HS256 JWS built without PyJWT (which refuses a PEM as an HMAC secret)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned_token(claims: dict) -> str:
    """`alg: none`, built by hand: header.payload. with an empty signature."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


# ---------------------------------------------------------------- configuration

# A syntactically valid organization id for the HS256 issuer's fixed `organization`.
PARTNER_ORG = "org_01jd5m3x9q7k2v8r4t6y0w1zab"

# External issuers: config name -> (iss, algorithm, claim mapping).
ISSUERS = {
    "ext-rs256": ("https://rs256.idp.test/", "RS256", {"organization": "tenant"}),
    "ext-ps256": ("https://ps256.idp.test/", "PS256", {"organization": "tenant"}),
    "ext-es256": ("https://es256.idp.test/", "ES256", {"organization": "tenant"}),
    "ext-es384": ("https://es384.idp.test/", "ES384", {"organization": "tenant"}),
    "ext-eddsa": (
        "https://eddsa.idp.test/",
        "EdDSA",
        {"organization": "org", "app": "appid", "scopes": "permissions"},
    ),
    "ext-hs256": ("partner-hub", "HS256", {}),
}


def auth(accept: list[str], scopes: list[str] | None = None, **extra) -> dict:
    cfg = {"accept": accept, **extra}
    if scopes:
        cfg["scopes"] = scopes
    return {"name": "auth", "config": cfg}


def route(name: str, path: str, policy: dict) -> dict:
    return {"name": name, "paths": [path], "strip_path": False, "policies": [policy]}


def gateway_config(g: Gateway, jwks: JwksServer) -> dict:
    issuers = []
    for name, (iss, alg, claims) in ISSUERS.items():
        spec = {
            "name": name,
            "issuer": iss,
            "audiences": [AUDIENCE],
            "algorithm": alg,
            "jwks_refetch_interval": "1s",
            "claims": claims,
        }
        if alg == "HS256":
            spec["secret_env"] = "HS256_SECRET"
            spec["organization"] = PARTNER_ORG
        else:
            spec["jwks_url"] = jwks.url(name)
        issuers.append(spec)
    return {
        "format_version": 1,
        "services": [
            {
                "name": "echo",
                "url": g.echo,
                "routes": [
                    route("open", "/open", {"name": "request_size_limit", "config": {"max_bytes": 1048576}}),
                    route("oauth-orders", "/oauth/orders", auth(["oauth"], ["orders:read"])),
                    route("key-orders", "/key/orders", auth(["api_key"], ["orders:read"], key_sources=["x_api_key", "bearer"])),
                    route("jwt-orders", "/jwt/orders", auth(["jwt"], ["orders:read"])),
                    route("jwt-es256-only", "/jwt/es256-only", auth(["jwt"], issuers=["ext-es256"])),
                ],
            }
        ],
        "jwt_issuers": issuers,
    }


def configure(g: Gateway, jwks: JwksServer) -> None:
    cfg = gateway_config(g, jwks)
    r = g.admin.put(f"{g.admin_url}/config", json=cfg, timeout=TIMEOUT)
    check(r.status_code == 200, "PUT /config is accepted", describe(r))
    ok("PUT /config with routes, auth policies and six jwt_issuers")

    # Bounded wait for the gateway to load it: every protected route asks for
    # a credential instead of answering 404 no_route.
    def loaded() -> bool:
        for path in ("/oauth/orders", "/key/orders", "/jwt/orders", "/jwt/es256-only"):
            if problem_code(g.get(path)) != "credential_missing":
                return False
        return g.get("/open").status_code == 200

    poll("the gateway serves the new configuration", loaded)
    r = g.get("/jwt/orders")
    expect_problem(r, 401, "credential_missing", "no credential")
    check(r.headers.get("www-authenticate", "").startswith("Bearer"), "401 carries a Bearer challenge", describe(r))
    ok("the configuration took effect; no credential -> 401 credential_missing")


# ---------------------------------------------------------------- external JWTs


def claims_for(name: str, *, sub: str, scopes: list[str], lifetime: int = 300, **over) -> dict:
    iss = ISSUERS[name][0]
    now = int(time.time())
    c = {"iss": iss, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + lifetime, "jti": str(uuid.uuid4())}
    if name == "ext-eddsa":
        c.update({"org": "acme-eddsa", "appid": "eddsa-app", "permissions": scopes})
    elif name == "ext-es256":
        c.update({"tenant": "acme-es256", "azp": "es256-app", "scope": scopes})  # array form
    elif name == "ext-es384":
        c.update({"tenant": "acme-es384", "azp": "es384-app", "scp": scopes})  # `scp` fallback
    elif name == "ext-hs256":
        c.update({"azp": "partner-app", "scope": " ".join(scopes)})
    else:
        tag = name.split("-")[1]
        c.update({"tenant": f"acme-{tag}", "azp": f"{tag}-app", "scope": " ".join(scopes)})
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def expected_headers(name: str, sub: str, scopes: list[str]) -> dict:
    if name == "ext-eddsa":
        org, app = "acme-eddsa", "eddsa-app"
    elif name == "ext-hs256":
        org, app = PARTNER_ORG, "partner-app"
    else:
        tag = name.split("-")[1]
        org, app = f"acme-{tag}", f"{tag}-app"
    return {
        "x-tollgate-credential": "jwt",
        "x-tollgate-subject": sub,
        "x-tollgate-scopes": " ".join(scopes),
        "x-tollgate-org": org,
        "x-tollgate-app": app,
        "x-tollgate-issuer": name,
    }


def test_external_jwts(g: Gateway, jwks: JwksServer, keys: dict[str, SigningKey]) -> None:
    secret = g.hs256_secret.encode()

    def sign(name: str, claims: dict, **kw) -> str:
        if name == "ext-hs256":
            return jwt.encode(claims, secret, algorithm="HS256", headers=kw.get("headers"))
        return keys[name].sign(claims, **kw)

    # Every issuer: a valid token passes, with the claims mapped.
    for name, (_, alg, _) in ISSUERS.items():
        sub = f"user-{alg.lower()}"
        scopes = ["orders:read", "profile"]
        token = sign(name, claims_for(name, sub=sub, scopes=scopes))
        check(jwt.get_unverified_header(token)["alg"] == alg, f"PyJWT signed with {alg}")
        h = echoed(g.get_bearer("/jwt/orders", token), f"{alg} token")
        expect_headers(h, expected_headers(name, sub, scopes), f"{alg} token")
        check("authorization" not in h, f"{alg} token: the credential is hidden from the upstream", h)
        ok(f"{alg} JWT from PyJWT -> 200; upstream sees credential=jwt, sub, scopes, org, app, issuer")

    # A valid token without the route's scope: 403.
    token = sign("ext-rs256", claims_for("ext-rs256", sub="u", scopes=["profile"]))
    expect_problem(g.get_bearer("/jwt/orders", token), 403, "insufficient_scope", "token without orders:read")
    ok("valid RS256 JWT without the route's scope -> 403 insufficient_scope")

    # Negatives: all 401 credential_invalid.
    rs = keys["ext-rs256"]
    now = int(time.time())
    negatives = [
        ("expired RS256 token", sign("ext-rs256", claims_for("ext-rs256", sub="u", scopes=["orders:read"], iat=now - 7200, nbf=now - 7200, exp=now - 3600))),
        ("expired HS256 token", sign("ext-hs256", claims_for("ext-hs256", sub="u", scopes=["orders:read"], iat=now - 7200, nbf=now - 7200, exp=now - 3600))),
        ("wrong audience (ES256)", sign("ext-es256", claims_for("ext-es256", sub="u", scopes=["orders:read"], aud="someone-else"))),
        ("wrong audience (HS256)", sign("ext-hs256", claims_for("ext-hs256", sub="u", scopes=["orders:read"], aud="someone-else"))),
        ("no exp claim", sign("ext-es384", claims_for("ext-es384", sub="u", scopes=["orders:read"], exp=None))),
        ("not yet valid (nbf in 1h)", sign("ext-eddsa", claims_for("ext-eddsa", sub="u", scopes=["orders:read"], nbf=now + 3600))),
        (
            "RS256 signature for the issuer pinned to PS256 (its own RSA key)",
            keys["ext-ps256"].sign(claims_for("ext-ps256", sub="u", scopes=["orders:read"]), alg="RS256"),
        ),
        (
            "PS256 signature for the issuer pinned to RS256 (its own RSA key)",
            rs.sign(claims_for("ext-rs256", sub="u", scopes=["orders:read"]), alg="PS256"),
        ),
        (
            "HS256 token for the RS256 issuer, MACed with its public key PEM",
            hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": rs.kid}, claims_for("ext-rs256", sub="u", scopes=["orders:read"]), rs.public_pem()),
        ),
        (
            "HS256 token for the RS256 issuer, MACed with its public JWK's modulus",
            hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": rs.kid}, claims_for("ext-rs256", sub="u", scopes=["orders:read"]), rs.jwk["n"].encode()),
        ),
        ("alg none (RS256 issuer)", unsigned_token(claims_for("ext-rs256", sub="u", scopes=["orders:read"]))),
        ("alg none (HS256 issuer)", unsigned_token(claims_for("ext-hs256", sub="u", scopes=["orders:read"]))),
        ("HS256 token with the wrong secret", jwt.encode(claims_for("ext-hs256", sub="u", scopes=["orders:read"]), b"not-the-secret-" * 3, algorithm="HS256")),
        ("unknown issuer", rs.sign(claims_for("ext-rs256", sub="u", scopes=["orders:read"], iss="https://unknown.idp.test/"))),
        (
            "ES256 token signed by another P-256 key under the issuer's kid",
            SigningKey("ES256", keys["ext-es256"].kid).sign(claims_for("ext-es256", sub="u", scopes=["orders:read"])),
        ),
        (
            "RS256 token with an embedded attacker `jwk` header",
            _embedded_jwk_token(claims_for("ext-rs256", sub="u", scopes=["orders:read"])),
        ),
        ("RS256 token with a tampered payload", _tamper(rs.sign(claims_for("ext-rs256", sub="u", scopes=["profile"])))),
    ]
    for what, token in negatives:
        r = g.get_bearer("/jwt/orders", token)
        expect_problem(r, 401, "credential_invalid", what)
        check('error="invalid_token"' in r.headers.get("www-authenticate", ""), f"{what}: WWW-Authenticate says invalid_token", describe(r))
        ok(f"{what} -> 401 credential_invalid")

    # `auth.issuers` restricts which issuers a route accepts.
    token = rs.sign(claims_for("ext-rs256", sub="u", scopes=["orders:read"]))
    expect_problem(g.get_bearer("/jwt/es256-only", token), 401, "credential_invalid", "RS256 token on a route for ext-es256 only")
    token = keys["ext-es256"].sign(claims_for("ext-es256", sub="u", scopes=[]))
    echoed(g.get_bearer("/jwt/es256-only", token), "ES256 token on its route")
    ok("auth.issuers: ES256 route accepts ext-es256, refuses ext-rs256 (401 credential_invalid)")

    # Key rotation: the JWKS now holds only a new key with a new kid. A token
    # with the new kid makes the gateway refetch the set.
    before = jwks.fetch_count("ext-rs256")
    new_key = SigningKey("RS256", "rs256-key-2")
    jwks.publish("ext-rs256", [new_key.jwk])
    claims = claims_for("ext-rs256", sub="rotated-user", scopes=["orders:read"])
    token = new_key.sign(claims)
    r = poll(
        "a token with the rotated kid is accepted",
        lambda: (lambda r: r if r.status_code == 200 else None)(g.get_bearer("/jwt/orders", token)),
        limit=5.0,
        every=0.25,
    )
    h = echoed(r, "token with the rotated kid")
    expect_headers(h, {"x-tollgate-credential": "jwt", "x-tollgate-subject": "rotated-user"}, "rotated kid")
    check(jwks.fetch_count("ext-rs256") > before, "the gateway refetched the JWKS", jwks.fetches)
    ok("JWKS rotation: a token with the new kid -> 200 (the gateway refetched the key set)")


def _embedded_jwk_token(claims: dict) -> str:
    """Signed by an attacker key that the token's own `jwk` header carries."""
    attacker = SigningKey("RS256", "rs256-key-1")
    pub = dict(attacker.jwk)
    return jwt.encode(claims, attacker.private, algorithm="RS256", headers={"kid": "rs256-key-1", "jwk": pub})


def _tamper(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "orders:read profile"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{sig}"


# ---------------------------------------------------------------- identity objects


class Identity:
    def __init__(self, g: Gateway) -> None:
        org = g.admin_call("POST", "/orgs", {"name": "acme", "display_name": "Acme"}, 201)
        check(str(org.get("id", "")).startswith("org_"), "POST /orgs returns an org_ id", org)
        self.org = org["id"]
        app = g.admin_call("POST", f"/orgs/{self.org}/apps", {"name": "billing"}, 201)
        check(str(app.get("id", "")).startswith("app_"), "POST /orgs/{org}/apps returns an app_ id", app)
        self.app = app["id"]
        ok(f"admin API: created org {self.org} and app {self.app}")

        key = g.admin_call(
            "POST",
            f"/orgs/{self.org}/apps/{self.app}/keys",
            {"name": "k", "environment": "live", "scopes": ["orders:read"]},
            201,
        )
        check(
            isinstance(key.get("key"), dict) and str(key["key"].get("id", "")).startswith("key_"),
            "POST .../keys returns {key: {id: key_...}}",
            key,
        )
        check(str(key.get("secret", "")).startswith("tg_live_"), "POST .../keys returns the secret tg_live_...", key)
        self.key_id = key["key"]["id"]
        self.key_secret = key["secret"]
        ok(f"admin API: created API key {self.key_id}")

        client = g.admin_call(
            "POST",
            f"/orgs/{self.org}/apps/{self.app}/oauth-clients",
            {"name": "c", "scopes": ["orders:read"]},
            201,
        )
        check(
            isinstance(client.get("client"), dict) and str(client["client"].get("id", "")).startswith("cli_"),
            "POST .../oauth-clients returns {client: {id: cli_...}}",
            client,
        )
        check(str(client.get("client_secret", "")).startswith("tgcs_"), "POST .../oauth-clients returns client_secret tgcs_...", client)
        self.client_id = client["client"]["id"]
        self.client_secret = client["client_secret"]
        ok(f"admin API: created OAuth client {self.client_id}")


def typo(secret: str) -> str:
    """The key with one character of its random part changed."""
    i = len("tg_live_") + 5
    c = secret[i]
    return secret[:i] + ("b" if c != "b" else "c") + secret[i + 1 :]


def test_api_key(g: Gateway, ident: Identity) -> None:
    def accepted():
        r = g.get("/key/orders", {"X-API-Key": ident.key_secret})
        return r if r.status_code == 200 else None

    h = echoed(poll("the new API key reaches the gateway", accepted), "API key")
    expect_headers(
        h,
        {
            "x-tollgate-credential": "api_key",
            "x-tollgate-org": ident.org,
            "x-tollgate-app": ident.app,
            "x-tollgate-key-id": ident.key_id,
            "x-tollgate-environment": "live",
            "x-tollgate-scopes": "orders:read",
        },
        "API key",
    )
    check("x-api-key" not in h, "the API key is hidden from the upstream", h)
    ok("X-API-Key -> 200; upstream sees credential=api_key, org, app, key id")

    expect_problem(g.get("/key/orders", {"X-API-Key": typo(ident.key_secret)}), 401, "credential_invalid", "API key with a typo")
    ok("X-API-Key with a one-character typo -> 401 credential_invalid")

    # A client's own X-Tollgate-* headers never reach the upstream.
    h = echoed(g.get("/key/orders", {"X-API-Key": ident.key_secret, "X-Tollgate-Org": "org_forged"}), "forged header")
    check(h.get("x-tollgate-org") == ident.org, "a forged X-Tollgate-Org is replaced", h)
    h = echoed(g.get("/open", {"X-Tollgate-Credential": "oauth"}), "open route")
    check(not any(k.startswith("x-tollgate-") for k in h), "X-Tollgate-* from clients are removed on open routes", h)
    ok("client-sent X-Tollgate-* headers are removed or replaced")


# ---------------------------------------------------------------- OAuth2 server


def oauth_session(ident: Identity, method: str, secret: str | None = None, scope: str | None = None) -> OAuth2Session:
    s = OAuth2Session(
        client_id=ident.client_id,
        client_secret=secret if secret is not None else ident.client_secret,
        token_endpoint_auth_method=method,
        scope=scope,
    )
    s.trust_env = False
    return s


def test_oauth(g: Gateway, ident: Identity) -> None:
    # RFC 8414 metadata.
    r = g.get("/.well-known/oauth-authorization-server")
    check(r.status_code == 200, "metadata document answers 200", describe(r))
    meta = r.json()
    issuer = meta.get("issuer")
    check(issuer == g.proxy, "metadata issuer is the proxy URL", f"{issuer!r} != {g.proxy!r}")
    base = issuer.rstrip("/")
    for field, path in (
        ("token_endpoint", "/oauth2/token"),
        ("jwks_uri", "/oauth2/jwks"),
        ("introspection_endpoint", "/oauth2/introspect"),
        ("revocation_endpoint", "/oauth2/revoke"),
    ):
        check(meta.get(field) == f"{base}{path}", f"metadata {field}", meta.get(field))
    check("client_credentials" in meta.get("grant_types_supported", []), "metadata lists client_credentials", meta)
    for m in ("client_secret_basic", "client_secret_post"):
        check(m in meta.get("token_endpoint_auth_methods_supported", []), f"metadata lists {m}", meta)
    ok("RFC 8414 metadata: issuer, token/jwks/introspection/revocation endpoints")

    # Wait (bounded) until the new client reaches the gateway.
    def client_known():
        try:
            return oauth_session(ident, "client_secret_basic").fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        except OAuthError as e:
            if e.error == "invalid_client":
                return None
            raise

    poll("the new OAuth client reaches the gateway", client_known)

    tokens = {}
    for method in ("client_secret_basic", "client_secret_post"):
        s = oauth_session(ident, method)
        tok = s.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        check(tok.get("token_type", "").lower() == "bearer", f"{method}: token_type Bearer", tok)
        check(tok.get("scope") == "orders:read", f"{method}: the client's scopes are granted", tok)
        check(isinstance(tok.get("expires_in"), int) and tok["expires_in"] > 0, f"{method}: expires_in", tok)
        tokens[method] = tok["access_token"]
        ok(f"Authlib fetch_token with {method} -> access token")

        r = s.get(f"{g.proxy}/oauth/orders", timeout=TIMEOUT)
        h = echoed(r, f"{method}: route call through the session")
        expect_headers(
            h,
            {
                "x-tollgate-credential": "oauth",
                "x-tollgate-app": ident.app,
                "x-tollgate-org": ident.org,
                "x-tollgate-subject": ident.client_id,
                "x-tollgate-scopes": "orders:read",
                "x-tollgate-issuer": "tollgate",
            },
            method,
        )
        ok(f"{method}: session GET /oauth/orders -> 200; upstream sees credential=oauth, app, org")

    # Token endpoint errors, as Authlib reports them.
    try:
        oauth_session(ident, "client_secret_basic", secret=ident.client_secret[:-1] + ("A" if ident.client_secret[-1] != "A" else "B")).fetch_token(
            meta["token_endpoint"], grant_type="client_credentials"
        )
        raise CheckFailed("a wrong client secret got a token")
    except OAuthError as e:
        check(e.error == "invalid_client", "wrong secret -> invalid_client", f"{e.error}: {e.description}")
    ok("wrong client secret -> Authlib OAuthError invalid_client")
    try:
        oauth_session(ident, "client_secret_post", secret="tgcs_" + "x" * 43).fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        raise CheckFailed("a wrong client secret (post) got a token")
    except OAuthError as e:
        check(e.error == "invalid_client", "wrong secret (post) -> invalid_client", f"{e.error}: {e.description}")
    ok("wrong client secret with client_secret_post -> Authlib OAuthError invalid_client")
    try:
        oauth_session(ident, "client_secret_basic", scope="orders:write").fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        raise CheckFailed("a scope the client lacks was granted")
    except OAuthError as e:
        check(e.error == "invalid_scope", "scope the client lacks -> invalid_scope", f"{e.error}: {e.description}")
    ok("requesting a scope the client lacks -> Authlib OAuthError invalid_scope")

    # The same errors on the wire (RFC 6749 5.1, 5.2): no-store on token
    # responses, 401 with a Basic challenge for failed Basic authentication.
    r = g.http.post(meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=(ident.client_id, ident.client_secret), timeout=TIMEOUT)
    check(r.status_code == 200 and "no-store" in r.headers.get("cache-control", ""), "token response has Cache-Control: no-store", describe(r))
    r = g.http.post(meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=(ident.client_id, "tgcs_wrong"), timeout=TIMEOUT)
    check(
        r.status_code == 401 and r.json().get("error") == "invalid_client" and r.headers.get("www-authenticate", "").lower().startswith("basic"),
        "failed client_secret_basic -> 401 invalid_client with WWW-Authenticate: Basic",
        describe(r),
    )
    r = g.http.post(meta["token_endpoint"], data={"grant_type": "password", "username": "u", "password": "p"}, auth=(ident.client_id, ident.client_secret), timeout=TIMEOUT)
    check(r.status_code == 400 and r.json().get("error") == "unsupported_grant_type", "password grant -> unsupported_grant_type", describe(r))
    ok("token endpoint on the wire: no-store, 401 + Basic challenge, unsupported_grant_type")

    # RFC 9068: the access token verifies against the published JWKS.
    token = tokens["client_secret_basic"]
    header = jwt.get_unverified_header(token)
    check(header.get("typ") == "at+jwt", "access token typ at+jwt", header)
    check(header.get("alg") == "ES256" and header.get("kid"), "access token alg ES256 with a kid", header)
    r = g.http.get(meta["jwks_uri"], timeout=TIMEOUT)
    check(r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json"), "JWKS answers JSON", describe(r))
    published = r.json().get("keys", [])
    check(any(k.get("kid") == header["kid"] for k in published), "the JWKS publishes the token's kid", published)
    private = {"d", "p", "q", "dp", "dq", "qi", "k"}
    check(not any(private & set(k) for k in published), "the JWKS holds public keys only", published)
    jwk_client = jwt.PyJWKClient(meta["jwks_uri"], cache_keys=False)
    signing_key = jwk_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256"],
        audience=issuer,
        issuer=issuer,
        options={"require": ["iss", "aud", "exp", "iat", "sub", "jti", "client_id"]},
    )
    check(claims["client_id"] == ident.client_id, "token client_id", claims)
    check(claims.get("scope") == "orders:read", "token scope", claims)
    check(claims["sub"] == ident.client_id, "token sub is the client id (client credentials)", claims)
    check(claims["exp"] > time.time(), "token exp in the future", claims)
    ok("PyJWT verifies the access token with PyJWKClient(jwks_uri): typ at+jwt, iss/aud/exp/client_id/scope")

    # Platform tokens are not external JWTs: a jwt-only route refuses them.
    expect_problem(g.get_bearer("/jwt/orders", token), 401, "credential_invalid", "OAuth token on a jwt-only route")
    ok("OAuth access token on a route accepting only external JWTs -> 401 credential_invalid")

    # RFC 7662 introspection with client_secret_basic, through Authlib.
    s = oauth_session(ident, "client_secret_basic")
    r = s.introspect_token(meta["introspection_endpoint"], token=token, timeout=TIMEOUT)
    check(r.status_code == 200, "introspection answers 200", describe(r))
    info = r.json()
    check(info.get("active") is True, "introspection: active", info)
    check(info.get("client_id") == ident.client_id and info.get("scope") == "orders:read", "introspection: client_id and scope", info)
    check(info.get("exp") == claims["exp"] and info.get("iss") == issuer, "introspection: exp and iss", info)
    ok("RFC 7662 introspection (Authlib, client_secret_basic) -> active: true with client_id, scope, exp")

    # Garbage is inactive, not an error.
    r = s.introspect_token(meta["introspection_endpoint"], token="not-a-token", timeout=TIMEOUT)
    check(r.status_code == 200 and r.json().get("active") is False, "introspecting garbage -> active: false", describe(r))
    ok("introspecting a non-token -> active: false")

    # Another client can neither introspect nor revoke this client's token.
    other = g.admin_call("POST", f"/orgs/{ident.org}/apps/{ident.app}/oauth-clients", {"name": "other", "scopes": ["orders:read"]}, 201)
    other_id, other_secret = other["client"]["id"], other["client_secret"]

    def other_session():
        s2 = OAuth2Session(client_id=other_id, client_secret=other_secret, token_endpoint_auth_method="client_secret_basic")
        s2.trust_env = False
        return s2

    def other_known():
        try:
            return other_session().fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        except OAuthError as e:
            if e.error == "invalid_client":
                return None
            raise

    poll("the second OAuth client reaches the gateway", other_known)
    r = other_session().introspect_token(meta["introspection_endpoint"], token=token, timeout=TIMEOUT)
    check(r.status_code == 200 and r.json() == {"active": False}, "another client introspecting the token -> active: false only", describe(r))
    r = other_session().revoke_token(meta["revocation_endpoint"], token=token, timeout=TIMEOUT)
    check(r.status_code == 200, "another client revoking the token -> 200 (RFC 7009 2.2)", describe(r))
    echoed(g.get_bearer("/oauth/orders", token), "the token after another client tried to revoke it")
    ok("another client's introspection says active: false, and its revocation has no effect")

    # RFC 7009 revocation, then the gateway refuses the token within 1 s.
    r = s.revoke_token(meta["revocation_endpoint"], token=token, token_type_hint="access_token", timeout=TIMEOUT)
    check(r.status_code == 200, "revocation answers 200", describe(r))
    revoked_at = time.monotonic()
    ok("RFC 7009 revocation (Authlib) -> 200")

    def refused():
        r = g.get_bearer("/oauth/orders", token)
        return r if r.status_code == 401 else None

    r = poll("the gateway refuses the revoked token", refused, limit=1.0, every=0.02)
    expect_problem(r, 401, "credential_invalid", "revoked token")
    took = time.monotonic() - revoked_at
    ok(f"revoked token -> 401 credential_invalid after {took * 1000:.0f} ms")
    r = s.introspect_token(meta["introspection_endpoint"], token=token, timeout=TIMEOUT)
    check(r.status_code == 200 and r.json().get("active") is False, "introspection after revocation -> active: false", describe(r))
    ok("introspection after revocation -> active: false")

    # The other token (client_secret_post) is unaffected.
    echoed(g.get_bearer("/oauth/orders", tokens["client_secret_post"]), "the other, unrevoked token")
    ok("another token of the same client still works after the revocation")

    # Revoking again, or a garbage token, is still 200 (RFC 7009 2.2).
    r = s.revoke_token(meta["revocation_endpoint"], token="not-a-token", timeout=TIMEOUT)
    check(r.status_code == 200, "revoking a non-token -> 200", describe(r))
    ok("revoking a non-token -> 200")


# ---------------------------------------------------------------- main


def main() -> int:
    started = time.monotonic()
    jwks = None
    try:
        g = Gateway()
        jwks = JwksServer()
        keys = {name: SigningKey(alg, f"{alg.lower()}-key-1") for name, (_, alg, _) in ISSUERS.items() if alg != "HS256"}
        for name, key in keys.items():
            jwks.publish(name, [key.jwk])
        ok(f"JWKS server on 127.0.0.1:{jwks.port} publishes RS256, PS256, ES256, ES384 and EdDSA keys")

        configure(g, jwks)
        test_external_jwts(g, jwks, keys)
        ident = Identity(g)
        test_api_key(g, ident)
        test_oauth(g, ident)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        print(f"({len(PASSED)} checks passed before the failure)", file=sys.stderr)
        return 1
    except Exception:  # an unexpected error is a failure too, with its traceback
        print("FAIL: unexpected error:", file=sys.stderr)
        traceback.print_exc()
        print(f"({len(PASSED)} checks passed before the failure)", file=sys.stderr)
        return 1
    finally:
        if jwks is not None:
            jwks.stop()
    print(f"PASSED: all {len(PASSED)} identity interop checks in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
