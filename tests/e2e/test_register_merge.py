"""Register with "mode":"merge" (README "Registering pipelines"): descriptors not named are
kept; named ones go through the one diff classifier with the same force and dry_run rules;
over HTTP and TCP; a crash replays it. Validation runs before the diff: a typo in a change
to a live table is a 400 with the validation code and path, never a destructive diff to
force. Numbers keep their declared type (a fraction for an i64 field is a 400). The
smaller fixes: a forced register lists a descriptor under `added` or `already_present`,
never both; a 415 reports the registry's version."""
import os
import shutil
import signal
import tempfile
import unittest

from harness import Beava, main
from test_tcp import Conn

OP_REGISTER, OP_ERROR = 0x0001, 0xFFFF

PAGEVIEW = {"kind": "event", "name": "PageView",
            "schema": {"fields": {"session_id": "str", "path": "str", "dwell_ms": "i64"}}}


def table(name, keys, agg):
    return {"kind": "derivation", "name": name, "output_kind": "table", "upstreams": ["PageView"],
            "ops": [{"op": "group_by", "keys": keys, "agg": agg}], "table_primary_key": keys}


SITE_AGG = {"views_24h": {"op": "count", "params": {"window": "24h"}},
            "last_dwell": {"op": "last", "params": {"field": "dwell_ms"}}}
SITE = table("SiteMetrics", [], SITE_AGG)
SITE_PLUS = table("SiteMetrics", [], dict(SITE_AGG, dwell_max={"op": "max", "params": {"field": "dwell_ms"}}))
SITE_1H = table("SiteMetrics", [], dict(SITE_AGG, views_24h={"op": "count", "params": {"window": "1h"}}))
PATHS = table("PathStats", ["path"], {"path_views": {"op": "count", "params": {"window": "1h"}}})


def views(b, path="/"):
    return {"event": "PageView", "data": {"session_id": "s", "path": path, "dwell_ms": 100}}


class Merge(unittest.TestCase):
    def setUp(self):
        self.b = Beava(test_mode=True).start()
        self.addCleanup(self.b.stop)
        st, body = self.b.register({"nodes": [PAGEVIEW, SITE]})
        self.assertEqual(st, 200, body)

    def push(self, n, path="/"):
        for _ in range(n):
            st, body = self.b.call("POST", "/push", views(self.b, path))
            self.assertEqual(st, 200, body)

    def version(self):
        return self.b.call("POST", "/push", views(self.b))[1]["registry_version"]

    def test_keeps_unnamed_descriptors(self):
        self.push(2)
        st, body = self.b.register({"mode": "merge", "nodes": [PATHS]})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["added"], ["PathStats"])
        self.assertEqual(body["already_present"], [])
        self.assertEqual(body["registry_version"], 2)
        self.assertEqual(sorted(body["registered_descriptors"]), ["PageView", "PathStats", "SiteMetrics"])
        # SiteMetrics kept its rows, PathStats starts empty and counts from now on
        self.assertEqual(self.b.get("SiteMetrics", "")[1]["views_24h"], 2)
        self.push(1, "/a")
        self.assertEqual(self.b.get("PathStats", "/a"), (200, {"path_views": 1}))
        self.assertEqual(self.b.get("SiteMetrics", "")[1]["views_24h"], 3)
        # the same merge again is a no-op naming only what it named
        st, body = self.b.register({"mode": "merge", "nodes": [PATHS]})
        self.assertEqual((st, body["added"], body["already_present"], body["registry_version"]),
                         (200, [], ["PathStats"], 2))
        # a replace without SiteMetrics would remove it: 409, nothing changes
        st, body = self.b.register({"nodes": [PAGEVIEW, PATHS]})
        self.assertEqual((st, body["error"]["code"]), (409, "force_required"))
        self.assertEqual(self.b.admin("GET", "/registry")[2], b'{"node_count":3,"version":2}')

    def test_additive_in_place_keeps_state(self):
        self.push(3)
        st, body = self.b.register({"mode": "merge", "nodes": [SITE_PLUS]})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["added"], ["SiteMetrics"])
        st, row = self.b.get("SiteMetrics", "")
        self.assertEqual(row["views_24h"], 3)        # kept
        self.push(1)
        st, row = self.b.get("SiteMetrics", "")
        self.assertEqual((row["views_24h"], row["dwell_max"]), (4, 100))

    def test_destructive_needs_force_and_dry_run_changes_nothing(self):
        self.b.register({"mode": "merge", "nodes": [PATHS]})
        self.push(2)
        st, body = self.b.register({"mode": "merge", "nodes": [SITE_1H]})
        self.assertEqual(st, 409, body)
        self.assertEqual(body["error"]["code"], "force_required")
        self.assertEqual(body["error"]["diff"]["destructive"],
                         [{"agg": "SiteMetrics.views_24h", "from": "24h", "kind": "window_change", "to": "1h"}])
        st, body = self.b.register({"mode": "merge", "dry_run": True, "nodes": [SITE_1H]})
        self.assertEqual((st, body["would_apply"]), (200, False))
        self.assertEqual(len(body["diff"]["destructive"]), 1)
        self.assertEqual(self.b.get("SiteMetrics", "")[1]["views_24h"], 2)
        self.assertEqual(self.version(), 2)
        st, body = self.b.register({"mode": "merge", "force": True, "nodes": [SITE_1H]})
        self.assertEqual(st, 200, body)
        self.assertEqual((body["added"], body["already_present"]), (["SiteMetrics"], []))
        # SiteMetrics was replaced (fresh state); PathStats, not named, kept its rows
        self.assertEqual(self.b.get("SiteMetrics", ""), (200, {}))
        self.assertEqual(self.b.get("PathStats", "/"), (200, {"path_views": 3}))

    def test_bad_mode_is_named(self):
        st, body = self.b.register({"mode": "append", "nodes": [PATHS]})
        self.assertEqual((st, body["error"]["code"], body["error"]["path"]), (400, "invalid_registration", "mode"))

    def test_over_tcp(self):
        c = Conn(self.b.bound["server.tcp_bound"])
        self.addCleanup(c.close)
        op, _, body = c.call(OP_REGISTER, {"mode": "merge", "nodes": [PATHS]})
        self.assertEqual((op, body["added"], body["registry_version"]), (OP_REGISTER, ["PathStats"], 2))
        op, _, body = c.call(OP_REGISTER, {"mode": "merge", "nodes": [SITE_1H]})
        self.assertEqual((op, body["error"]["code"]), (OP_ERROR, "force_required"))
        op, _, body = c.call(OP_REGISTER, {"mode": "merge", "dry_run": True, "nodes": [SITE_1H]})
        self.assertEqual((op, body["would_apply"]), (OP_REGISTER, False))
        op, _, body = c.call(OP_REGISTER, {"mode": "merge", "force": True, "nodes": [SITE_1H]})
        self.assertEqual((op, body["registry_version"]), (OP_REGISTER, 3))
        op, _, body = c.call(OP_REGISTER, {"mode": "merge", "nodes": [table("T", ["path"], {
            "t": {"op": "cuont", "params": {"window": "1h"}}})]})
        self.assertEqual((op, body["error"]["code"]), (OP_ERROR, "aggregation_unknown_op"))
        self.assertEqual(self.b.admin("GET", "/registry")[2], b'{"node_count":3,"version":3}')


class Replay(unittest.TestCase):
    def test_merge_replays_after_kill_9(self):
        root = tempfile.mkdtemp(prefix="beava-merge-replay-")
        self.addCleanup(shutil.rmtree, root, True)
        env = {"BEAVA_WAL_DIR": os.path.join(root, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(root, "snapshots")}
        b = Beava(memory_only=False, env=env, args=["--durability", "sync"]).start()
        try:
            self.assertEqual(b.register({"nodes": [PAGEVIEW, SITE]})[0], 200)
            for p in ("/", "/a", "/a"):
                self.assertEqual(b.call("POST", "/push", views(b, p))[0], 200)
            self.assertEqual(b.register({"mode": "merge", "nodes": [PATHS]})[0], 200)
            self.assertEqual(b.call("POST", "/push", views(b, "/a"))[0], 200)
            # a snapshot here: recovery loads it (the registry history in it holds the merge
            # bodies) and replays the rest from the WAL
            self.assertEqual(b.admin("POST", "/snapshot")[0], 200)
            self.assertEqual(b.register({"mode": "merge", "nodes": [SITE_PLUS]})[0], 200)
            self.assertEqual(b.call("POST", "/push", views(b, "/b"))[0], 200)
            self.assertEqual(b.register({"mode": "merge", "force": True, "nodes": [table(
                "PathStats", ["path"], {"path_views": {"op": "count", "params": {"window": "2h"}}})]})[0], 200)
            self.assertEqual(b.call("POST", "/push", views(b, "/a"))[0], 200)
            before = {
                "registry": b.admin("GET", "/registry")[2],
                "site": b.get("SiteMetrics", ""),
                "paths": [b.get("PathStats", p) for p in ("/", "/a", "/b")],
            }
        finally:
            b.stop(signal.SIGKILL)
        self.assertEqual(before["registry"], b'{"node_count":3,"version":4}')
        self.assertEqual(before["site"][1]["views_24h"], 6)
        self.assertEqual(before["paths"][1], (200, {"path_views": 1}))
        b = Beava(memory_only=False, env=env).start()
        try:
            after = {
                "registry": b.admin("GET", "/registry")[2],
                "site": b.get("SiteMetrics", ""),
                "paths": [b.get("PathStats", p) for p in ("/", "/a", "/b")],
            }
            self.assertEqual(after, before)
        finally:
            b.stop()


# Typos in a change to a live table: (agg spec, code, path under the table's agg)
TYPOS = [
    ({"op": "cuont", "params": {"window": "1h"}}, "aggregation_unknown_op", "op"),
    ({"op": "count", "params": {"window": "1hr"}}, "aggregation_invalid_window", "params.window"),
    ({"op": "sum", "params": {"field": "dwel_ms", "window": "1h"}}, "aggregation_unknown_field", "params.field"),
    ({"op": "count", "params": {"window": "1h", "where": "dwell_ms >>> 3"}}, "aggregation_invalid_where", "params.where"),
    ({"op": "quantile", "params": {"field": "dwell_ms", "q": 50, "window": "1h"}}, "invalid_percentile_q", "params.q"),
]


class ValidationBeforeDiff(unittest.TestCase):
    def test_typos_on_a_live_table(self):
        with Beava() as b:
            self.assertEqual(b.register({"nodes": [PAGEVIEW, SITE]})[0], 200)
            self.assertEqual(b.call("POST", "/push", views(b))[0], 200)
            for spec, code, member in TYPOS:
                agg = dict(SITE_AGG, views_24h=spec)
                for envelope in ({}, {"mode": "merge"}, {"force": True}, {"mode": "merge", "force": True}):
                    nodes = [table("SiteMetrics", [], agg)] if envelope.get("mode") else [PAGEVIEW, table("SiteMetrics", [], agg)]
                    st, body = b.register({"nodes": nodes}, **envelope)
                    where = "nodes[%d].ops[0].agg.views_24h.%s" % (len(nodes) - 1, member)
                    self.assertEqual((st, body["error"]["code"], body["error"]["path"]), (400, code, where),
                                     (spec, envelope, body))
                    self.assertEqual(body["registry_version"], 1)
            # the table is untouched
            self.assertEqual(b.admin("GET", "/registry")[2], b'{"node_count":2,"version":1}')
            self.assertEqual(b.get("SiteMetrics", "")[1]["views_24h"], 1)
            # a dry run shows the error next to the diff it would have been
            st, body = b.register({"nodes": [PAGEVIEW, table("SiteMetrics", [], dict(SITE_AGG, views_24h=TYPOS[0][0]))]},
                                  dry_run=True)
            self.assertEqual((st, body["would_apply"], body["error"]["code"]), (200, False, "aggregation_unknown_op"))

    def test_unknown_upstream_in_merge(self):
        with Beava() as b:
            self.assertEqual(b.register({"nodes": [PAGEVIEW]})[0], 200)
            bad = dict(PATHS, upstreams=["PageViews"])
            st, body = b.register({"mode": "merge", "nodes": [bad]})
            self.assertEqual((st, body["error"]["code"], body["error"]["path"]),
                             (400, "invalid_registration", "nodes[0].upstreams[0]"))


class NumbersKeepTheirType(unittest.TestCase):
    def test_fraction_for_i64_is_refused_integral_float_accepted(self):
        with Beava() as b:
            self.assertEqual(b.register({"nodes": [PAGEVIEW, SITE]})[0], 200)
            st, body = b.push("PageView", {"session_id": "s", "path": "/", "dwell_ms": 1.5})
            self.assertEqual(st, 400, body)
            self.assertEqual(body["error"]["code"], "invalid_event")
            self.assertIn("dwell_ms", body["error"]["reason"])
            self.assertIn("i64", body["error"]["reason"])
            self.assertEqual(b.get("SiteMetrics", ""), (200, {}))
            st, body = b.push("PageView", {"session_id": "s", "path": "/", "dwell_ms": 3.0})
            self.assertEqual(st, 200, body)
            st, raw = b.call("POST", "/get", {"table": "SiteMetrics", "key": ""})[0], \
                b.raw("POST", "/get", {"table": "SiteMetrics", "key": ""})[2]
            self.assertIn(b'"last_dwell":3,', raw)      # an integer, not 3.0
            for bad in (1e300, -0.5):
                st, body = b.push("PageView", {"session_id": "s", "path": "/", "dwell_ms": bad})
                self.assertEqual((st, body["error"]["code"]), (400, "invalid_event"))


class SmallFixes(unittest.TestCase):
    def test_forced_register_lists_a_name_once(self):
        with Beava() as b:
            self.assertEqual(b.register({"nodes": [PAGEVIEW, SITE]})[0], 200)
            st, body = b.register({"nodes": [PAGEVIEW, SITE_1H]}, force=True)
            self.assertEqual(st, 200, body)
            self.assertEqual((body["added"], body["already_present"]), (["SiteMetrics"], ["PageView"]))

    def test_415_reports_the_registry_version(self):
        with Beava() as b:
            self.assertEqual(b.register({"nodes": [PAGEVIEW, SITE]})[0], 200)
            st, body = b.call("POST", "/register", {"nodes": []}, {"Content-Type": "text/plain"})
            self.assertEqual((st, body["error"]["code"], body["registry_version"]), (415, "unsupported_media_type", 1))


if __name__ == "__main__":
    main()
