#!/usr/bin/env bash
# Loads the key ring of the full-stack scenario through the admin API: one
# organization, 100 apps, 100 keys each (10,000 keys, all with the scope the
# routes require), then waits until the gateway accepts one picked from the
# middle of the ring and prints the request header that carries it.
# KEYS (default 10000) and APPS (default 100) change the sizes.
set -euo pipefail
exec python3 -B - <<'PY'
import http.client, json, os, sys, time, urllib.parse

admin = urllib.parse.urlsplit(os.environ["TOLLGATE_ADMIN_URL"])
proxy = urllib.parse.urlsplit(os.environ["TOLLGATE_PROXY_URL"])
token = os.environ["TOLLGATE_ADMIN_TOKEN"]
keys, apps = int(os.environ.get("KEYS", "10000")), int(os.environ.get("APPS", "100"))
path = os.environ.get("BENCH_PATH", "/")
conn = http.client.HTTPConnection(admin.hostname, admin.port, timeout=30)

def api(method, url, body):
    conn.request(method, url, json.dumps(body), {
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    res = conn.getresponse()
    data = res.read()
    if res.status >= 300:
        sys.exit(f"{method} {url}: {res.status} {data[:300]!r}")
    return json.loads(data)

started = time.monotonic()
org = api("POST", "/orgs", {"name": "bench", "display_name": "Bench"})["id"]
picked = None
for a in range(apps):
    app = api("POST", f"/orgs/{org}/apps", {"name": f"app-{a}"})["id"]
    for k in range(keys // apps):
        secret = api("POST", f"/orgs/{org}/apps/{app}/keys",
                     {"name": f"key-{k}", "scopes": ["bench:read"]})["secret"]
        if a == apps // 2 and k == 0:
            picked = secret
print(f"created {keys} keys in {time.monotonic() - started:.1f} s", file=sys.stderr)

# The gateway learns keys from the store's change feed; wait until it has this one.
gw = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=5)
for _ in range(300):
    gw.request("GET", path, headers={"X-API-Key": picked})
    res = gw.getresponse()
    res.read()
    if res.status == 200:
        break
    time.sleep(0.1)
print(f"X-API-Key: {picked}")
PY
