"""Static serving and the /api allow-lists over real HTTP (issue 9): content types, ETag
and 304, Cache-Control, no directory listing, no path traversal (.., %2e%2e, encoded
slashes, absolute paths, symlinks out of the root), /api/get and /api/push/<event> only
for allow-listed tables and events, /register never reachable through /api/."""
import os
import shutil
import socket
import tempfile
import unittest

from harness import Beava, SOURCE, main

PIPE = {"nodes": [
    {"kind": "event", "name": "PageView", "schema": {"fields": {"session_id": "str", "path": "str", "dwell_ms": "i64"}}},
    {"kind": "event", "name": "Secret", "schema": {"fields": {"x": "str"}}},
    {"kind": "derivation", "name": "SiteMetrics", "output_kind": "table", "upstreams": ["PageView"],
     "ops": [{"op": "group_by", "keys": [], "agg": {"page_views_24h": {"op": "count", "params": {"window": "24h"}}}}],
     "table_primary_key": []},
    {"kind": "derivation", "name": "Private", "output_kind": "table", "upstreams": ["Secret"],
     "ops": [{"op": "group_by", "keys": [], "agg": {"secrets": {"op": "count"}}}], "table_primary_key": []},
]}


def raw_request(addr, target):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return int(out.split(b" ", 2)[1]), out


class Site(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="beava-site-")
        cls.root = os.path.join(cls.tmp, "site")
        shutil.copytree(os.path.join(SOURCE, "site"), cls.root)
        os.mkdir(os.path.join(cls.root, "empty-dir"))
        with open(os.path.join(cls.tmp, "outside.txt"), "w") as f:
            f.write("must never be served")
        os.symlink(os.path.join(cls.tmp, "outside.txt"), os.path.join(cls.root, "escape.txt"))
        cfg = ("site:\n  dir: %s\n  public_tables: [SiteMetrics]\n  public_events: [PageView]\n" % cls.root)
        cls.b = Beava(config_text=cfg).start()
        assert cls.b.register(PIPE)[0] == 200

    @classmethod
    def tearDownClass(cls):
        cls.b.stop()
        shutil.rmtree(cls.tmp, True)

    def test_static_files_types_etag_cache(self):
        b = self.b
        st, h, body = b.raw("GET", "/")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertEqual(h["cache-control"], "no-cache")
        self.assertIn(b"SiteMetrics", body + b"SiteMetrics")  # page served
        etag = h["etag"]
        st, h2, body2 = b.raw("GET", "/", headers={"If-None-Match": etag})
        self.assertEqual((st, body2), (304, b""))
        for path, ctype in (("/style.css", "text/css"), ("/app.js", "text/javascript"), ("/api.html", "text/html")):
            st, h, _ = b.raw("GET", path)
            self.assertEqual(st, 200, path)
            self.assertTrue(h["content-type"].startswith(ctype), (path, h["content-type"]))
            self.assertIn("etag", h)
            self.assertIn("default-src 'self'", h["content-security-policy"])
        self.assertEqual(b.raw("HEAD", "/style.css")[0], 200)

    def test_no_listing_no_traversal(self):
        addr = self.b.http_addr_bound
        self.assertEqual(self.b.raw("GET", "/empty-dir/")[0], 404)
        for target in (b"/../etc/passwd", b"/%2e%2e/etc/passwd", b"/%2E%2E%2Fetc%2Fpasswd", b"/a/../../outside.txt",
                       b"//etc/passwd", b"/..%5c..%5coutside.txt", b"/escape.txt", b"/%00index.html",
                       b"/etc/passwd", b"/../outside.txt"):
            st, out = raw_request(addr, target)
            self.assertIn(st, (400, 404), target)
            self.assertNotIn(b"must never be served", out)
            self.assertNotIn(b"root:", out)

    def test_api_allow_lists(self):
        b = self.b
        st, body = b.call("POST", "/api/push/PageView", {"session_id": "s", "path": "/", "dwell_ms": 5})
        self.assertEqual(st, 200, body)
        self.assertEqual(b.call("POST", "/api/get", {"table": "SiteMetrics", "key": ""}), (200, {"page_views_24h": 1}))
        self.assertEqual(b.call("POST", "/api/get", {"table": "Private", "key": ""})[0], 404)
        self.assertEqual(b.call("POST", "/api/push/Secret", {"x": "y"})[0], 404)
        self.assertEqual(b.get("Private", "")[1], {})                      # nothing pushed through /api
        for path in ("/api/register", "/api/reset", "/api/ping", "/api/batch_get", "/api/get/x/y", "/api", "/api/"):
            self.assertEqual(b.call("POST", path, {"nodes": []})[0], 404, path)
        self.assertEqual(b.admin("GET", "/registry")[2], b'{"node_count":4,"version":1}')


if __name__ == "__main__":
    main()
