#!/usr/bin/env python3
"""Random requests against every route of an agent's HTTP API, for a while.
Run by bench/fuzz.sh, which starts the agents; this sends the requests and
prints what came back.

Usage: fuzz.py SECS SEED ROUTES_FILE ADDR...
Routes come from the route table in agent/src/http/mod.rs (ROUTES_FILE), so
a new route is fuzzed without an edit here (but `/v1/agent/leave`, which
stops the agent). A 500 for an unknown `?dc=` is Consul's, and allowed. Each request: a random method,
the route's parameters filled with random (often hostile) text, random query
parameters from the ones Consul's API takes, and a random body (none, JSON
of the right shape or not, garbage). Prints the count of each status, and
every 5xx with its request. Exits 1 on a 5xx that is not documented.

Consistency: a write the agent refused (a 4xx to PUT, POST, DELETE or
PATCH) must change nothing. Around each one the script reads the state a
write can change (KV, nodes, services, intentions, config entries and ACLs
from the first agent, the server; the services, checks and user events of
the agent the request went to), leaving out what changes by itself (indexes, check
status and output). A change is a failure, printed with the difference,
and the script exits 1 on one; but a change to the catalog alone may be
anti-entropy syncing an earlier accepted agent registration in the
background, so that one counts only if the write, sent once more with the
state settled, is refused again and changes the catalog again.
"""
import hashlib
import http.client
import json
import random
import re
import sys
import time
import urllib.parse

secs, seed, routes_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
addrs = sys.argv[4:]
rng = random.Random(seed)
# Left out: the routes that stop the agent (as documented) rather than
# answer.
STOPS = {"/v1/agent/leave"}
# Each route with the methods it serves (`get(...)`, `put(...).post(...)`,
# `any(...)`), read from its line.
routes = []
for route, rest in re.findall(r'\.route\("([^"]+)",(.*)', open(routes_file).read()):
    if route not in STOPS:
        methods = [m.upper() for m in re.findall(r"\b(get|put|post|delete|any)\(", rest)]
        routes.append((route, ["GET", "PUT", "DELETE"] if "ANY" in methods or not methods else methods))

METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]
QUERY = ["index", "wait", "consistent", "stale", "filter", "dc", "recurse", "keys", "separator", "cas", "flags",
         "token", "ns", "near", "tag", "passing", "enable", "reason", "hash", "raw", "replace-existing-checks",
         "node-meta", "note", "service", "listen", "service-addr", "upstream", "address", "pretty", "cached",
         "max_stale", "acquire", "release", "id", "kind", "name", "format", "loglevel"]
TEXT = ["", "a", "web", "dc1", "dc9", "*", "..", "../..", "%", "%FF", "%00", " ", "a b", "\u202eevil", "é",
        "x" * 5000, "0", "-1", "18446744073709551616", "true", "false", "1s", "-5s", "10m", "abc",
        "Service.Name == web", "Node ==", "(((", "'", '"', "\\", "\n", "null", "{}", "[]", "web-sidecar-proxy",
        "global", "mesh", "service-defaults", "proxy-defaults", "_node_maintenance", "127.0.0.1:1", "api:9191"]
SHAPES = [
    {"Name": "web", "Port": 80},
    {"Node": "vm1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}},
    {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
    {"SourceName": "web", "DestinationName": "api", "Action": "allow"},
    {"Name": "p", "Rules": "key_prefix \"\" { policy = \"read\" }"},
    {"Description": "t", "Policies": [{"Name": "p"}]},
    {"CheckID": "c", "TTL": "10s"},
    {"Status": "passing", "Output": "ok"},
]


def text():
    return rng.choice(TEXT) if rng.random() < 0.8 else "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 40)))


def mutate(value, depth=0):
    roll = rng.random()
    if depth > 3 or roll < 0.15:
        return rng.choice([None, True, 0, -1, 1e308, text(), [], {}, [text()], {"x": text()}])
    if isinstance(value, dict):
        out = {k: mutate(v, depth + 1) if rng.random() < 0.3 else v for k, v in value.items() if rng.random() > 0.1}
        if rng.random() < 0.2:
            out[text()] = text()
        return out
    if isinstance(value, list):
        return [mutate(v, depth + 1) for v in value]
    return value if rng.random() < 0.6 else mutate(None, depth + 1)


def body():
    roll = rng.random()
    if roll < 0.3:
        return b""
    if roll < 0.75:
        return json.dumps(mutate(rng.choice(SHAPES))).encode()
    if roll < 0.9:
        return json.dumps(text()).encode()
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))


def path():
    route, methods = rng.choice(routes)
    filled = re.sub(r"\{\*?[a-z_]+\}", lambda _: urllib.parse.quote(text(), safe=""), route)
    params = [(rng.choice(QUERY), text()) for _ in range(rng.randrange(0, 4))]
    query = "&".join(k if rng.random() < 0.2 else f"{k}={urllib.parse.quote(v, safe='')}" for k, v in params)
    method = rng.choice(methods) if rng.random() < 0.85 else rng.choice(METHODS)
    return method, filled + (f"?{query}" if query else ""), dict(params)


KINDS = ["service-defaults", "proxy-defaults", "service-resolver", "service-splitter", "service-router",
         "service-intentions", "ingress-gateway", "mesh"]
SHARED_STATE = ["/v1/kv/?recurse", "/v1/catalog/nodes", "/v1/catalog/services", "/v1/connect/intentions",
                "/v1/acl/policies", "/v1/acl/tokens", "/v1/acl/roles", "/v1/acl/auth-methods",
                "/v1/acl/binding-rules"] + [f"/v1/config/{kind}" for kind in KINDS]
LOCAL_STATE = ["/v1/agent/services", "/v1/agent/checks", "/v1/event/list"]
# What anti-entropy changes in the background.
SYNCED = ("/v1/catalog/nodes", "/v1/catalog/services")
# What changes without a write: Raft indexes, and what check runs report.
VOLATILE = {"CreateIndex", "ModifyIndex", "Status", "Output", "LastUsed"}
WRITES = ("PUT", "POST", "DELETE", "PATCH")


def send(addr, method, target, payload=b"", limit=300):
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.request(method, target, body=payload)
        response = connection.getresponse()
        return response.status, response.read(limit)
    except Exception as error:  # a reset or a timeout: counted, not a 5xx
        return f"error: {type(error).__name__}", b""
    finally:
        connection.close()


def stable(value):
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def state(addr):
    """What a write to `addr` may change: {path: answer}, volatile fields left out."""
    seen = {}
    for where, paths in ((addrs[0], SHARED_STATE), (addr, LOCAL_STATE)):
        for p in paths:
            status, answer = send(where, "GET", p, limit=1 << 24)
            try:
                seen[where + p] = (status, stable(json.loads(answer)))
            except ValueError:
                seen[where + p] = (status, hashlib.sha256(answer).hexdigest())
    return seen


def difference(before, after):
    return [f"{p}: {json.dumps(before.get(p))[:300]} -> {json.dumps(after.get(p))[:300]}"
            for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]


def settled(addr):
    """The state once two reads a second apart agree (at most 10 s)."""
    last = state(addr)
    for _ in range(10):
        time.sleep(1)
        now = state(addr)
        if now == last:
            return now
        last = now
    return last


def refused(status):
    return isinstance(status, int) and 400 <= status < 500


def changed_again(addr, method, target, payload):
    """Sends a refused write once more, the state settled: what it changed, if it was refused again."""
    before = settled(addr)
    status, _ = send(addr, method, target, payload)
    if not refused(status):
        return []  # accepted this time: what it may change depends on the state
    return difference(before, state(addr))


counts = {}
failures = []
changes = []
sent = checked = 0
# The state before the next write to an agent, while no write has been sent since it was read.
known = {}
deadline = time.time() + secs
while time.time() < deadline:
    addr = rng.choice(addrs)
    method, target, params = path()
    payload = body() if method in ("PUT", "POST", "PATCH") or rng.random() < 0.1 else b""
    write = method in WRITES
    before = (known.get(addr) or state(addr)) if write else None
    status, answer = send(addr, method, target, payload)
    sent += 1
    if write:
        known = {}
        if refused(status):
            checked += 1
            after = known[addr] = state(addr)
            changed = difference(before, after)
            if changed and all(line.split(": ", 1)[0].endswith(SYNCED) for line in changed):
                changed = changed_again(addr, method, target, payload)
                known = {}
            if changed:
                changes.append((addr, method, target[:200], status, payload[:200], changed))
    counts[status] = counts.get(status, 0) + 1
    unknown_dc = params.get("dc", "dc1") != "dc1"  # Consul's 500 "No path to datacenter"
    if isinstance(status, int) and status >= 500 and not unknown_dc:
        failures.append((addr, method, target[:200], status, answer[:200]))

print(f"sent {sent} requests to {len(routes)} routes on {len(addrs)} agents in {secs} s (seed {seed})")
for status in sorted(counts, key=str):
    print(f"  {status}: {counts[status]}")
for failure in failures[:40]:
    print("  5xx:", failure)
print(f"refused writes checked for changes: {checked}; changed the state: {len(changes)}")
for addr, method, target, status, payload, changed in changes[:20]:
    print(f"  changed by a refused write ({status}): {method} {addr}{target} {payload!r}")
    for line in changed[:10]:
        print(f"    {line}")
sys.exit(1 if failures or changes else 0)

