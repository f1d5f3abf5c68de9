"""A Python client calling an HTTPS URL several times over one kept-alive connection.

    python3 tls_client.py HOST PORT PATH [PATH ...]
"""
import http.client
import ssl
import sys


def main():
    host, port, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    for path in paths:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        print(path, resp.status)
    conn.close()


if __name__ == "__main__":
    main()
