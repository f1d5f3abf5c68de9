"""A stdlib HTTP service whose handlers talk to real databases through ordinary drivers.

    python3 db_app.py PORT --pg PGPORT --mysql MYSQLPORT --redis REDISPORT

GET /pg, /mysql, /redis each run a fixed sequence of operations (below) inside the request,
so their spans must come out as children of the request's span.
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None


def run_postgres():
    import psycopg

    out = []
    with psycopg.connect(host="127.0.0.1", port=ARGS.pg, user="postgres", dbname="postgres",
                         sslmode="disable", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text)")
        cur.execute("DELETE FROM items")
        for i in range(3):
            # Server-side prepared: parsed once, executed three times.
            cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (i, f"item-{i}"),
                        prepare=True)
        cur.execute("SELECT name FROM items WHERE id = %s", (1,), prepare=True)
        out.append(cur.fetchall())
        with conn.pipeline():
            cur.execute("UPDATE items SET name = %s WHERE id = %s", ("renamed", 2))
            cur.execute("SELECT count(*) FROM items")
        try:
            cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (1, "duplicate"))
        except psycopg.errors.UniqueViolation:
            out.append("unique violation")
    return out


def run_mysql():
    import pymysql

    out = []
    conn = pymysql.connect(host="127.0.0.1", port=ARGS.mysql, user="root", password="",
                           autocommit=True, ssl_disabled=True)
    try:
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS shop")
        conn.select_db("shop")
        cur.execute("CREATE TABLE IF NOT EXISTS orders (id INT PRIMARY KEY, total INT)")
        cur.execute("DELETE FROM orders")
        cur.execute("INSERT INTO orders (id, total) VALUES (%s, %s)", (1, 250))
        cur.execute("SELECT total FROM orders WHERE id = %s", (1,))
        out.append(cur.fetchall())
        try:
            cur.execute("SELECT * FROM missing_table")
        except pymysql.err.ProgrammingError:
            out.append("no such table")
    finally:
        conn.close()
    return out


def run_redis():
    import redis

    r = redis.Redis(host="127.0.0.1", port=ARGS.redis, db=0)
    r.set("cart:42", "3 items")
    out = [r.get("cart:42").decode()]
    pipe = r.pipeline(transaction=False)
    pipe.incr("visits")
    pipe.incr("visits")
    pipe.get("visits")
    out.append([str(x) for x in pipe.execute()])
    try:
        r.lpush("cart:42", "oops")
    except redis.exceptions.ResponseError:
        out.append("wrong type")
    r.close()
    return out


ROUTES = {"/pg": run_postgres, "/mysql": run_mysql, "/redis": run_redis}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        route = ROUTES.get(self.path)
        if route is None:
            status, body = 404, {"error": "not found"}
        else:
            try:
                status, body = 200, {"result": route()}
            except Exception as exc:  # the test reads the reason from the body
                status, body = 500, {"error": repr(exc)}
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--pg", type=int)
    parser.add_argument("--mysql", type=int)
    parser.add_argument("--redis", type=int)
    ARGS = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
