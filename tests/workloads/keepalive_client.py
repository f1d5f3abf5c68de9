"""An HTTP client that keeps one connection open and sends one GET per line read on stdin,
printing each status: lets a test make requests on a connection opened before the agent.

    python3 keepalive_client.py HOST PORT
"""
import http.client
import sys


def main():
    conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            break
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        print(path, resp.status, flush=True)
    conn.close()


if __name__ == "__main__":
    main()
