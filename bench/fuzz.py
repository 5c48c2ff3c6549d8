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
"""
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


counts = {}
failures = []
sent = 0
deadline = time.time() + secs
while time.time() < deadline:
    addr = rng.choice(addrs)
    method, target, params = path()
    payload = body() if method in ("PUT", "POST", "PATCH") or rng.random() < 0.1 else b""
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.request(method, target, body=payload)
        response = connection.getresponse()
        status = response.status
        answer = response.read(300)
    except Exception as error:  # a reset or a timeout: counted, not a 5xx
        status, answer = f"error: {type(error).__name__}", b""
    finally:
        connection.close()
    sent += 1
    counts[status] = counts.get(status, 0) + 1
    unknown_dc = params.get("dc", "dc1") != "dc1"  # Consul's 500 "No path to datacenter"
    if isinstance(status, int) and status >= 500 and not unknown_dc:
        failures.append((addr, method, target[:200], status, answer[:200]))

print(f"sent {sent} requests to {len(routes)} routes on {len(addrs)} agents in {secs} s (seed {seed})")
for status in sorted(counts, key=str):
    print(f"  {status}: {counts[status]}")
for failure in failures[:40]:
    print("  5xx:", failure)
sys.exit(1 if failures else 0)
