"""One service of a test microservice chain, stdlib only, unmodified by the agent.

    python3 chain.py PORT [--mode sequential|pool] [DOWNSTREAM_URL ...]

Every GET calls each downstream URL (one after another, or all at once through a thread pool),
then answers 200 with what they said. Outgoing connections are kept alive per thread, so one
connection carries many requests. The service name comes from OTEL_SERVICE_NAME, as it would
for an SDK.
"""
import argparse
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_local = threading.local()


def call(url):
    """GET url over this thread's kept-alive connection to its host."""
    target = urlparse(url)
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    key = (target.hostname, target.port)
    for attempt in range(2):
        conn = conns.get(key)
        if conn is None:
            conn = conns[key] = http.client.HTTPConnection(*key, timeout=10)
        try:
            conn.request("GET", target.path or "/")
            resp = conn.getresponse()
            body = resp.read()
            return {"url": url, "status": resp.status, "bytes": len(body)}
        except (http.client.HTTPException, OSError):
            conn.close()
            conns.pop(key, None)
            if attempt:
                raise
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    downstream = []
    pool = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.05)
        if self.pool is not None:
            results = list(self.pool.map(call, self.downstream))
        else:
            results = [call(url) for url in self.downstream]
        body = json.dumps({"path": self.path, "calls": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=["sequential", "pool"], default="sequential")
    parser.add_argument("downstream", nargs="*")
    args = parser.parse_intermixed_args()
    Handler.downstream = args.downstream
    if args.mode == "pool":
        Handler.pool = ThreadPoolExecutor(max_workers=4)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
