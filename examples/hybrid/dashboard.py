#!/usr/bin/env python3
"""The dashboard: shows the counting service's latest number.

It runs in a Kubernetes pod with the Weft sidecar injected
(k8s/dashboard.yaml) and reaches counting through its sidecar's upstream
on 127.0.0.1:9191, wherever counting runs (a VM, here). A failed call is
a 503 that says why. Standard library only.
"""
import argparse
import json
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    counting = "http://127.0.0.1:9191/"

    def do_GET(self):
        try:
            with urllib.request.urlopen(self.counting, timeout=5) as answer:
                count = json.load(answer)["count"]
            status, body = 200, f"dashboard: count={count}\n"
        except Exception as error:  # the mesh said no, or counting is down
            status, body = 503, f"dashboard: counting unreachable: {error}\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--counting", default=Handler.counting)
    args = parser.parse_args()
    Handler.counting = args.counting
    ThreadingHTTPServer((args.listen, args.port), Handler).serve_forever()
