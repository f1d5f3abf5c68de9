"""One service of a test microservice chain, stdlib only, unmodified by the agent.

    python3 chain.py PORT [--mode sequential|pool] [--pg PORT] [--redis PORT] [DOWNSTREAM_URL ...]

Every GET first reads from PostgreSQL and Redis when given (one query each, over this thread's
kept connection), then calls each downstream URL (one after another, or all at once through a thread pool),
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


def query_databases(pg_port, redis_port):
    """One PostgreSQL query and one Redis command over this thread's connections."""
    done = []
    if pg_port:
        conn = getattr(_local, "pg", None)
        if conn is None:
            import psycopg

            conn = _local.pg = psycopg.connect(host="127.0.0.1", port=pg_port, user="postgres",
                                               dbname="postgres", sslmode="disable",
                                               autocommit=True)
        conn.execute("SELECT 42 AS stock").fetchall()
        done.append("postgresql")
    if redis_port:
        client = getattr(_local, "redis", None)
        if client is None:
            import redis

            client = _local.redis = redis.Redis(host="127.0.0.1", port=redis_port)
            client.ping()
        client.get("stock:42")
        done.append("redis")
    return done


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    downstream = []
    pool = None
    pg_port = None
    redis_port = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.05)
        databases = query_databases(self.pg_port, self.redis_port)
        if self.pool is not None:
            results = list(self.pool.map(call, self.downstream))
        else:
            results = [call(url) for url in self.downstream]
        body = json.dumps({"path": self.path, "databases": databases, "calls": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=["sequential", "pool"], default="sequential")
    parser.add_argument("--pg", type=int)
    parser.add_argument("--redis", type=int)
    parser.add_argument("downstream", nargs="*")
    args = parser.parse_intermixed_args()
    Handler.downstream = args.downstream
    Handler.pg_port = args.pg
    Handler.redis_port = args.redis
    if args.mode == "pool":
        Handler.pool = ThreadPoolExecutor(max_workers=4)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
