#!/usr/bin/env bash
# Creates an organization, an app and a live API key through the admin API,
# and prints the request header that carries the key.
set -euo pipefail
api() {
    curl -fsS -X "$1" "$TOLLGATE_ADMIN_URL$2" \
        -H "Authorization: Bearer $TOLLGATE_ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d "$3"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
org="$(api POST /orgs '{"name": "bench", "display_name": "Bench"}' | field "['id']")"
app="$(api POST "/orgs/$org/apps" '{"name": "bench"}' | field "['id']")"
secret="$(api POST "/orgs/$org/apps/$app/keys" '{"name": "bench", "scopes": ["bench:read"]}' | field "['secret']")"
# The gateway learns new keys from the store's change feed; wait until it does.
for _ in $(seq 1 50); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $secret" "$TOLLGATE_PROXY_URL/")"
    [[ "$code" == 200 ]] && break
    sleep 0.1
done
echo "X-API-Key: $secret"
