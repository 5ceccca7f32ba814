"""The bug this project was born from, end to end against the real binary:
force=true with only a new field on an existing event is 200 and replaces (fresh state);
the same without force is 200, widens the event in place and keeps the state of the
untouched aggregations; a new feature on a live table starts empty while its siblings
keep their rows; dry_run reports the diff and changes nothing (README "Registering pipelines")."""
import copy
import unittest

from harness import Beava, main

BASE = {"nodes": [
    {"kind": "event", "name": "PageView",
     "schema": {"fields": {"path": "str", "dwell_ms": "i64"}, "optional_fields": []}},
    {"kind": "derivation", "name": "SiteMetrics", "output_kind": "table", "upstreams": ["PageView"],
     "ops": [{"op": "group_by", "keys": [], "agg": {"views": {"op": "count", "params": {"window": "24h"}}}}],
     "table_primary_key": []},
    {"kind": "derivation", "name": "PathStats", "output_kind": "table", "upstreams": ["PageView"],
     "ops": [{"op": "group_by", "keys": ["path"], "agg": {"path_views": {"op": "count"}}}],
     "table_primary_key": ["path"]},
]}


def with_session_id(payload):
    p = copy.deepcopy(payload)
    p["nodes"][0]["schema"]["fields"]["session_id"] = "str"
    return p


class Evolution(unittest.TestCase):
    def setUp(self):
        self.b = Beava().start()
        st, body = self.b.register(BASE)
        self.assertEqual(st, 200, body)
        for path in ("/", "/", "/a"):
            self.assertEqual(self.b.push("PageView", {"path": path, "dwell_ms": 5})[0], 200)

    def tearDown(self):
        self.b.stop()

    def test_force_with_only_new_field_is_200_and_replaces(self):
        st, body = self.b.register(with_session_id(BASE), force=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["registry_version"], 2)
        self.assertEqual(body["status"], "ok")
        self.assertIn("PageView", body["added"])
        # replaced with fresh state: the cascaded tables start empty
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {})
        self.assertEqual(self.b.get("PathStats", "/")[1], {})
        st, _ = self.b.push("PageView", {"path": "/", "dwell_ms": 1, "session_id": "s1"})
        self.assertEqual(st, 200)
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {"views": 1})

    def test_new_field_without_force_widens_in_place_keeping_state(self):
        dry = self.b.register(with_session_id(BASE), dry_run=True)
        self.assertEqual(dry, (200, {"diff": {"additive": [
            {"event": "PageView", "field": "session_id", "kind": "new_field", "type": "str"}],
            "destructive": [], "already_present": ["PathStats", "SiteMetrics"]}, "would_apply": False}))
        self.assertEqual(self.b.admin("GET", "/registry")[2], b'{"node_count":3,"version":1}')
        st, body = self.b.register(with_session_id(BASE))
        self.assertEqual(st, 200, body)
        self.assertEqual(body["registry_version"], 2)
        self.assertIn("PageView", body["added"])
        self.assertNotIn("PageView", body["already_present"])
        # state kept
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {"views": 3})
        self.assertEqual(self.b.get("PathStats", "/")[1], {"path_views": 2})
        # the new field is accepted now, and counted on top of the kept state
        st, body = self.b.push("PageView", {"path": "/", "dwell_ms": 1, "session_id": "s1"})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["registry_version"], 2)
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {"views": 4})
        # re-sending the widened payload is a no-op
        st, body = self.b.register(with_session_id(BASE))
        self.assertEqual((st, body["registry_version"], body["added"]), (200, 2, []))

    def test_new_feature_on_live_table_starts_empty_others_keep_state(self):
        p = copy.deepcopy(BASE)
        p["nodes"][2]["ops"][0]["agg"]["path_dwell"] = {"op": "sum", "params": {"field": "dwell_ms"}}
        st, body = self.b.register(p)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["registry_version"], 2)
        self.assertIn("PathStats", body["added"])
        self.assertEqual(self.b.get("PathStats", "/")[1], {"path_dwell": None, "path_views": 2})
        self.b.push("PageView", {"path": "/", "dwell_ms": 7})
        self.assertEqual(self.b.get("PathStats", "/")[1], {"path_dwell": 7.0, "path_views": 3})
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {"views": 4})

    def test_changed_param_is_destructive_agg_change(self):
        p = copy.deepcopy(BASE)
        p["nodes"][1]["ops"][0]["agg"]["views"]["params"]["where"] = "(dwell_ms > 1)"
        st, body = self.b.register(p)
        self.assertEqual(st, 409, body)
        self.assertEqual(body["error"]["diff"]["destructive"],
                         [{"agg": "views", "kind": "agg_change", "table": "SiteMetrics"}])
        st, body = self.b.register(p, force=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {})
        self.assertEqual(self.b.get("PathStats", "/")[1], {"path_views": 2})   # untouched table kept

    def test_removal_needs_force_and_cascade(self):
        p = {"nodes": [BASE["nodes"][0], BASE["nodes"][1]]}
        st, body = self.b.register(p)
        self.assertEqual(st, 409)
        st, body = self.b.register(p, force=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.b.get("PathStats", "/")[0], 404)
        self.assertEqual(self.b.get("SiteMetrics", "")[1], {"views": 3})

    def test_forced_rename_keeps_feature_names(self):
        p = copy.deepcopy(BASE)
        p["nodes"][2]["name"] = "PathStats2"
        st, body = self.b.register(p)
        self.assertEqual(st, 409)
        self.assertEqual(body["error"]["diff"]["destructive"], [{"from": "PathStats", "kind": "rename", "to": "PathStats2"}])
        st, body = self.b.register(p, force=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.b.get("PathStats2", "/")[1], {})


if __name__ == "__main__":
    main()
