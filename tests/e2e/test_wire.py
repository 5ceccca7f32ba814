"""Wire compatibility of the HTTP data plane against the real beava binary:
the cross-SDK conformance scenario, the PageView/SiteMetrics/PathStats example
byte for byte, every wire error code that the data plane
can produce, routing rules, and the admin sidecar."""
import json
import os
import socket
import unittest

from harness import Beava, shared_path, main

JSON = {"Content-Type": "application/json"}

EXAMPLE = {
    "nodes": [
        {"kind": "event", "name": "PageView",
         "schema": {"fields": {"session_id": "str", "path": "str", "dwell_ms": "i64"}, "optional_fields": []}},
        {"kind": "derivation", "name": "SiteMetrics", "output_kind": "table", "upstreams": ["PageView"],
         "ops": [{"op": "group_by", "keys": [], "agg": {
             "median_dwell_1h": {"op": "quantile", "params": {"field": "dwell_ms", "q": 0.5, "window": "1h"}},
             "page_views_today": {"op": "count", "params": {"window": "24h"}},
             "top_page_1h": {"op": "top_k", "params": {"field": "path", "k": 1, "window": "1h"}}}}],
         "table_primary_key": []},
        {"kind": "derivation", "name": "PathStats", "output_kind": "table", "upstreams": ["PageView"],
         "ops": [{"op": "group_by", "keys": ["path"], "agg": {
             "path_views_1h": {"op": "count", "params": {"window": "1h"}},
             "path_dwell_mean_1h": {"op": "mean", "params": {"field": "dwell_ms", "window": "1h"}},
             "path_views_total": {"op": "count", "params": {}}}}],
         "table_primary_key": ["path"]},
    ]
}


def event_node(name, fields, **extra):
    n = {"kind": "event", "name": name, "schema": {"fields": fields, "optional_fields": extra.pop("optional", [])}}
    n.update(extra)
    return n


def table_node(name, source, keys, agg, ops_before=None):
    return {"kind": "derivation", "name": name, "output_kind": "table", "upstreams": [source],
            "ops": list(ops_before or []) + [{"op": "group_by", "keys": keys, "agg": agg}],
            "table_primary_key": keys}


class Conformance(unittest.TestCase):
    def test_scenario_json_passes_exactly(self):
        with open(shared_path("data", "conformance", "scenario.json")) as f:
            sc = json.load(f)
        with Beava() as b:
            st, body = b.register(sc["register_payload"])
            self.assertEqual(st, 200, body)
            self.assertEqual(body["registry_version"], 1)
            for ev in sc["events"]:
                st, body = b.push(ev["event_name"], ev["fields"])
                self.assertEqual(st, 200, body)
            for g in sc["gets"]:
                st, h, raw = b.raw("POST", "/get", {"table": g["table"], "key": g["key"]})
                self.assertEqual(st, 200, raw)
                self.assertEqual(json.loads(raw), g["expected"])
                self.assertEqual(raw, json.dumps(g["expected"], separators=(",", ":")).encode())


class Example47(unittest.TestCase):
    def test_bodies_byte_for_byte(self):
        with Beava() as b:
            st, h, raw = b.raw("POST", "/register", EXAMPLE, JSON)
            self.assertEqual(st, 200)
            self.assertEqual(raw, b'{"added":["PathStats","SiteMetrics","PageView"],"already_present":[],'
                                  b'"registered_descriptors":["PageView","SiteMetrics","PathStats"],'
                                  b'"registry_version":1,"status":"ok"}')
            self.assertEqual(h["content-type"], "application/json")
            self.assertEqual(h["x-runtime"], "hand-rolled")
            st, h, raw = b.raw("POST", "/push", {"event": "PageView", "data": {"session_id": "s_1", "path": "/", "dwell_ms": 1240}})
            self.assertEqual(st, 200, raw)
            ack = json.loads(raw)
            self.assertEqual(list(ack.keys()), ["ack_lsn", "idempotent_replay", "registry_version"])
            self.assertFalse(ack["idempotent_replay"])
            self.assertEqual(ack["registry_version"], 1)
            st, h, raw = b.raw("POST", "/get", {"table": "SiteMetrics", "key": ""})
            self.assertEqual(raw, b'{"median_dwell_1h":1240.0,"page_views_today":1,'
                                  b'"top_page_1h":[{"count":1,"value":"/"}]}')
            st, h, raw = b.raw("POST", "/get", {"table": "PathStats", "key": "/"})
            self.assertEqual(raw, b'{"path_dwell_mean_1h":1240.0,"path_views_1h":1,"path_views_total":1}')
            st, h, raw = b.raw("POST", "/get", {"table": "PathStats", "key": "/nope"})
            self.assertEqual((st, raw), (200, b"{}"))
            # ack_lsn strictly increasing
            lsns = []
            for i in range(5):
                st, ack = b.push("PageView", {"session_id": "s", "path": "/a", "dwell_ms": i})
                lsns.append(ack["ack_lsn"])
            self.assertEqual(lsns, sorted(set(lsns)))
            self.assertGreater(lsns[0], json.loads(b'0'))
            # features filter, batch_get mixing keyed and global tables
            st, body = b.get("PathStats", "/a", ["path_views_total"])
            self.assertEqual(body, {"path_views_total": 5})
            st, body = b.get("PathStats", "/a", [])
            self.assertEqual((st, body), (200, {}))
            st, body = b.call("POST", "/batch_get", {"requests": [
                {"table": "PathStats", "key": "/a", "features": ["path_views_total"]},
                {"table": "SiteMetrics", "key": ""},
                {"table": "Nope", "key": "x"},
                {"table": "PathStats", "entity_id": "a|b"},
                {"table": "PathStats", "key": "/zzz"}]})
            self.assertEqual(st, 200)
            r = body["results"]
            self.assertEqual(len(r), 5)
            self.assertEqual(r[0], {"path_views_total": 5})
            self.assertEqual(r[1]["page_views_today"], 6)
            self.assertEqual(r[2], {"error": {"code": "unknown_table",
                                              "message": "table 'Nope' is not a registered aggregation"}})
            self.assertEqual(r[3], {"error": {"code": "key_parse_failure",
                                              "message": "key 'a|b' does not match table 'PathStats' group_keys arity (1)"}})
            self.assertEqual(r[4], {})
            # legacy GET /get/<feature>/<key> and /get/<table>/<key>
            st, body = b.call("GET", "/get/path_views_total/%2Fa")
            self.assertEqual((st, body["error"]["code"]), (404, "key_not_found"))  # no percent-decoding
            st, body = b.call("GET", "/get/PathStats//a")
            self.assertEqual(st, 200)
            self.assertEqual(body["path_views_total"], 5)
            st, body = b.call("GET", "/get/nothing/x")
            self.assertEqual((st, body), (404, {"error": {"code": "feature_not_found"}}))
            # no-op re-register
            st, body = b.register(EXAMPLE)
            self.assertEqual(st, 200)
            self.assertEqual(body["added"], [])
            self.assertEqual(body["registry_version"], 1)
            self.assertEqual(sorted(body["already_present"]), ["PageView", "PathStats", "SiteMetrics"])


class Keys(unittest.TestCase):
    def test_composite_global_and_single_int_keys(self):
        with Beava() as b:
            p = {"nodes": [
                event_node("Txn", {"user": "str", "card": "i64", "amount": "f64", "ok": "bool"}),
                table_node("ByUserCard", "Txn", ["user", "card"], {"uc": {"op": "count"}}),
                table_node("ByCard", "Txn", ["card"], {"cc": {"op": "count"}}),
                table_node("ByOk", "Txn", ["ok"], {"oc": {"op": "sum", "params": {"field": "amount"}}}),
                table_node("All", "Txn", [], {"total": {"op": "count", "params": {"window": "forever"}}}),
            ]}
            st, body = b.register(p)
            self.assertEqual(st, 200, body)
            for amt in (1.5, 2.5):
                st, _ = b.push("Txn", {"user": "alice", "card": 42, "amount": amt, "ok": True})
                self.assertEqual(st, 200)
            self.assertEqual(b.get("ByUserCard", "alice|42")[1], {"uc": 2})
            self.assertEqual(b.get("ByCard", "42")[1], {"cc": 2})         # single int key canonicalised
            self.assertEqual(b.get("ByOk", "true")[1], {"oc": 4.0})
            self.assertEqual(b.get("All", "")[1], {"total": 2})
            self.assertEqual(b.get("All", "x")[1], {"error": {"code": "key_parse_failure"}})
            self.assertEqual(b.get("ByUserCard", "alice")[0], 404)
            self.assertEqual(b.get("ByUserCard", "alice|42|x")[1]["error"]["code"], "key_parse_failure")
            self.assertEqual(b.get("ByCard", "")[1], {})


class Dedupe(unittest.TestCase):
    def test_replay_returns_original_ack_bytes(self):
        with Beava() as b:
            p = {"nodes": [event_node("Pay", {"id": "str", "amount": "f64"}, dedupe_key="id", dedupe_window_ms=60000),
                           table_node("Pays", "Pay", [], {"n": {"op": "count"}})]}
            self.assertEqual(b.register(p)[0], 200)
            st, h1, raw1 = b.raw("POST", "/push", {"event": "Pay", "data": {"id": "p1", "amount": 5}})
            st, h2, raw2 = b.raw("POST", "/push", {"event": "Pay", "data": {"id": "p1", "amount": 5}})
            self.assertEqual(st, 200)
            self.assertEqual(raw1, raw2)
            self.assertNotIn("x-beava-idempotent-replay", h1)
            self.assertEqual(h2.get("x-beava-idempotent-replay"), "1")
            b.push("Pay", {"id": "p2", "amount": 5})
            self.assertEqual(b.get("Pays", "")[1], {"n": 2})


class Reset(unittest.TestCase):
    def test_reset_forbidden_outside_test_mode(self):
        with Beava() as b:
            st, body = b.call("POST", "/reset", {})
            self.assertEqual(st, 403)
            self.assertEqual(body["error"]["code"], "reset_disabled_in_production")
            self.assertIn("BEAVA_TEST_MODE=1", body["error"]["reason"])
            st, body = b.call("GET", "/reset")
            self.assertEqual(st, 405)

    def test_reset_in_test_mode(self):
        with Beava(test_mode=True) as b:
            self.assertEqual(b.register(EXAMPLE)[0], 200)
            b.push("PageView", {"session_id": "s", "path": "/", "dwell_ms": 1})
            st, raw = b.raw("POST", "/reset", b"{}")[0::2]
            self.assertEqual((st, raw), (200, b'{"registry_version":2,"reset":true}'))
            st, body = b.push("PageView", {"session_id": "s", "path": "/", "dwell_ms": 1})
            self.assertEqual((st, body), (404, {"error": {"code": "event_not_found",
                                                          "reason": "event 'PageView' is not registered"}}))
            st, body = b.register(EXAMPLE)
            self.assertEqual(body["registry_version"], 3)
            self.assertEqual(b.get("PathStats", "/")[1], {})
            st, h, raw = b.admin("GET", "/registry")
            self.assertEqual(json.loads(raw), {"node_count": 3, "version": 3})


class Errors(unittest.TestCase):
    """Every wire error code the HTTP data plane can produce, provoked once, status and body checked;
    and no state change after each."""

    @classmethod
    def setUpClass(cls):
        cls.b = Beava().start()
        st, body = cls.b.register(EXAMPLE)
        assert st == 200, body

    @classmethod
    def tearDownClass(cls):
        cls.b.stop()

    def reg_error(self, payload, code, status=400, path=None):
        st, body = self.b.register(payload)
        self.assertEqual(st, status, body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertEqual(body["registry_version"], 1)
        if path is not None:
            self.assertEqual(body["error"]["path"], path)
        self.assertEqual(self.b.admin("GET", "/registry")[2], b'{"node_count":3,"version":1}')
        return body

    def with_extra(self, *nodes):
        return {"nodes": EXAMPLE["nodes"] + list(nodes)}

    def test_unsupported_media_type(self):
        st, h, raw = self.b.raw("POST", "/register", EXAMPLE, {"Content-Type": "text/plain"})
        self.assertEqual(st, 415)
        # the registry's version (the reference always says 0; ours says where it is)
        self.assertEqual(raw, b'{"error":{"code":"unsupported_media_type","path":"/register",'
                              b'"reason":"expected application/json"},"registry_version":1}')
        st, h, raw = self.b.raw("POST", "/register", EXAMPLE)
        self.assertEqual(st, 415)
        st, body = self.b.call("POST", "/register", EXAMPLE, {"Content-Type": "Application/JSON; charset=utf-8"})
        self.assertEqual(st, 200)

    def test_register_prechecks(self):
        join = table_node("J", "PageView", [], {"jx": {"op": "count"}}, [{"op": "join", "with": "X"}])
        self.reg_error(self.with_extra(join), "feature_removed_no_joins_v0", path="nodes[3].J.ops[0]")
        union = table_node("U", "PageView", [], {"ux": {"op": "count"}}, [{"op": "union"}])
        self.reg_error(self.with_extra(union), "feature_removed_no_unions_v0")
        ev = event_node("E", {"a": "str"}, event_time_field="a")
        self.reg_error(self.with_extra(ev), "unknown_field_event_time_v0", path="nodes[3].E.event_time_field")
        ev = event_node("E", {"a": "str"}, tolerate_delay_ms=5)
        self.reg_error(self.with_extra(ev), "unknown_field_tolerate_delay_v0")
        self.reg_error(self.with_extra({"kind": "upsert", "name": "X"}), "unsupported_node_kind", path="nodes[3].X.kind")
        t = table_node("L", "PageView", [], {"ln": {"op": "last_n", "params": {"field": "path"}}})
        self.reg_error(self.with_extra(t), "unbounded_op_in_lifetime_mode")
        self.reg_error({"descriptors": []}, "invalid_registration", path="<body>")
        self.reg_error({"nodes": [{"name": "X"}]}, "invalid_registration")

    def test_validation_codes(self):
        self.reg_error(self.with_extra(event_node("Bad-Name", {"a": "str"})), "invalid_registration")
        self.reg_error(self.with_extra(event_node("_beava_x", {"a": "str"})), "invalid_registration")
        self.reg_error(self.with_extra(event_node("N" * 129, {"a": "str"})), "invalid_registration")
        self.reg_error(self.with_extra(event_node("E", {})), "invalid_registration")
        self.reg_error(self.with_extra(event_node("E", {"a": "float"})), "invalid_registration")
        self.reg_error(self.with_extra(event_node("E", {"a": "str"}, dedupe_key="b")), "invalid_registration")
        self.reg_error(self.with_extra(event_node("E", {"a": "str"}, dedupe_key="a", dedupe_window_ms=0)),
                       "invalid_registration")
        self.reg_error(self.with_extra(event_node("PageView", {"a": "str"})), "invalid_registration")  # duplicate
        self.reg_error(self.with_extra(table_node("T", "Nope", [], {"tn": {"op": "count"}})), "invalid_registration")
        self.reg_error(self.with_extra(table_node("T", "PageView", ["nope"], {"tn": {"op": "count"}})),
                       "aggregation_unknown_field")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "sum", "params": {"field": "nope"}}})),
                       "aggregation_unknown_field")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "count", "params": {"window": "1w"}}})),
                       "aggregation_invalid_window")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "count", "params": {"window": "0s"}}})),
                       "aggregation_invalid_window")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "count", "params": {"where": "(path =="}}})),
                       "aggregation_invalid_where")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "count", "params": {"where": "(nope == 1)"}}})),
                       "aggregation_invalid_where")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "frobnicate", "params": {"window": "1h"}}})),
                       "aggregation_unknown_op")
        self.reg_error(self.with_extra(table_node("T", "PageView", ["path"], {"path": {"op": "count"}})),
                       "aggregation_group_key_collides_with_feature")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"path_views_1h": {"op": "count"}})),
                       "aggregation_feature_name_collision_across_aggregations")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tq": {"op": "quantile", "params": {"field": "dwell_ms", "q": 1.5}}})),
                       "invalid_percentile_q")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tk": {"op": "top_k", "params": {"field": "path", "k": 2000}}})),
                       "invalid_top_k_k")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tb": {"op": "bloom_member", "params": {"field": "path", "window": "1h"}}})),
                       "window_not_supported")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tb": {"op": "bloom_member", "params": {"field": "path", "fpr": 1.5}}})),
                       "invalid_bloom_fpr")
        self.reg_error(self.with_extra(table_node("T", "PageView", [], {"tn": {"op": "ewma", "params": {"field": "dwell_ms"}}})),
                       "invalid_registration")           # half_life missing
        self.reg_error(self.with_extra(table_node("T2", "SiteMetrics", [], {"t2": {"op": "count"}})),
                       "aggregation_on_table_not_supported")
        f64key = {"nodes": EXAMPLE["nodes"] + [event_node("Geo", {"lat": "f64"}),
                                               table_node("G", "Geo", ["lat"], {"gc": {"op": "count"}})]}
        self.reg_error(f64key, "aggregation_unknown_field")
        filt = table_node("T", "PageView", [], {"tf": {"op": "count"}}, [{"op": "filter", "expr": "(nope > 1)"}])
        self.reg_error(self.with_extra(filt), "invalid_expression")

    def test_cycle_and_topology(self):
        a = {"kind": "derivation", "name": "A", "output_kind": "event", "upstreams": ["B"], "ops": [{"op": "filter", "expr": "(x > 1)"}]}
        b = {"kind": "derivation", "name": "B", "output_kind": "event", "upstreams": ["A"], "ops": [{"op": "filter", "expr": "(x > 1)"}]}
        self.reg_error(self.with_extra(a, b), "invalid_registration")

    def test_force_required_409(self):
        p = {"nodes": [n for n in EXAMPLE["nodes"] if n["name"] != "PathStats"]}
        st, h, raw = self.b.raw("POST", "/register", p, JSON)
        self.assertEqual(st, 409)
        self.assertEqual(raw, b'{"error":{"code":"force_required","diff":{"additive":[],"already_present":'
                              b'["PageView","SiteMetrics"],"destructive":[{"agg":"","kind":"agg_removal",'
                              b'"table":"PathStats"}]},"reason":"Destructive registry change requires '
                              b'force=true. See diff for details."},"registry_version":1}')
        st, body = self.b.register(p, dry_run=True)
        self.assertEqual(st, 200)
        self.assertFalse(body["would_apply"])
        self.assertEqual(self.b.admin("GET", "/registry")[2], b'{"node_count":3,"version":1}')

    def test_push_errors(self):
        b = self.b
        before = b.get("SiteMetrics", "")[1]
        cases = [
            (b"not json", "/push", 400, "invalid_json_body"),
            (b'{"event":"PageV', "/push", 400, "invalid_json_body"),
            (b'{"data":{}}', "/push", 400, "missing_event_name_in_body"),
            (b'{"event":5,"data":{}}', "/push", 400, "missing_event_name_in_body"),
            (b'{"event":"PageView","data":[1]}', "/push", 400, "invalid_event"),
            (b'{"event":"PageView","data":{"session_id":"a\\u0000b","path":"/","dwell_ms":1}}', "/push", 400, "control_character_in_string"),
            (b'{"event":"PageView","data":{"session_id":"a\\nb","path":"/","dwell_ms":1}}', "/push", 400, "control_character_in_string"),
            (b'{"event":"PageView","data":{"session_id":"a\\u0085","path":"/","dwell_ms":1}}', "/push", 400, "control_character_in_string"),
            (b'{"event":"Nope","data":{}}', "/push", 404, "event_not_found"),
            (b'{"event":"SiteMetrics","data":{}}', "/push", 404, "event_not_found"),
            (b'{"event":"PageView","data":{"session_id":"s","path":"/","dwell_ms":1,"x":1}}', "/push", 400, "unknown_field_v0"),
            (b'{"event":"PageView","data":{"session_id":"s","path":"/","dwell_ms":1,"event_time":1}}', "/push", 400, "unknown_field_event_time_v0"),
            (b'{"event":"PageView","data":{"session_id":"s","path":"/"}}', "/push", 400, "invalid_event"),
            (b'{"event":"PageView","data":{"session_id":"s","path":"/","dwell_ms":null}}', "/push", 400, "invalid_event"),
            (b'{"event":"PageView","data":{"session_id":"s","path":"/","dwell_ms":"42"}}', "/push", 400, "invalid_event"),
            (b'{"event":"PageView","data":{"session_id":1,"path":"/","dwell_ms":1}}', "/push", 400, "invalid_event"),
            (b'[1,2]', "/push/PageView", 400, "invalid_event"),
            (b'{"session_id":"s","path":"/","dwell_ms":1}', "/push/Nope", 404, "event_not_found"),
            (b'[' * 5000 + b']' * 5000, "/push", 400, "invalid_json_body"),
        ]
        for body, path, status, code in cases:
            st, h, raw = b.raw("POST", path, body)
            self.assertEqual(st, status, (body[:80], raw))
            parsed = json.loads(raw)
            self.assertEqual(parsed["error"]["code"], code, (body[:80], raw))
            self.assertEqual(sorted(parsed.keys()), ["error"])
        self.assertEqual(b.get("SiteMetrics", "")[1], before)
        # legacy forms work
        st, body = b.call("POST", "/push/PageView", {"session_id": "s", "path": "/x", "dwell_ms": 3})
        self.assertEqual(st, 200, body)
        st, body = b.call("POST", "/push-batch/PageView", {"session_id": "s", "path": "/x", "dwell_ms": 3})
        self.assertEqual(st, 200, body)
        self.assertEqual(b.get("PathStats", "/x")[1]["path_views_total"], 2)

    def test_get_errors(self):
        b = self.b
        self.assertEqual(b.get("Nope", "x"), (404, {"error": {"code": "unknown_table"}}))
        self.assertEqual(b.get("PathStats", "a|b"), (404, {"error": {"code": "key_parse_failure"}}))
        st, body = b.get("PathStats", "/", ["path_views_1h", "zz", "aa"])
        self.assertEqual(st, 500)
        self.assertEqual(body, {"error": {"code": "internal_error",
                                          "reason": 'feature_not_found: missing=["zz", "aa"] table=PathStats'}})
        st, body = b.call("POST", "/get", {"keys": ["a"], "features": ["b"]})
        self.assertEqual(st, 400)
        self.assertEqual(body["error"]["code"], "unsupported_request_shape")
        self.assertTrue(body["error"]["message"].startswith("POST /get expects {table, key, features?}"))
        st, body = b.call("POST", "/get", {"feature": "a", "key": "b"})
        self.assertEqual((st, body["error"]["code"]), (400, "unsupported_request_shape"))
        for bad in (b"", b"nope", b'{"table":"PathStats"}', b'{"table":"PathStats","key":["a","b"]}', b"[]"):
            st, h, raw = b.raw("POST", "/get", bad)
            self.assertEqual(st, 500, (bad, raw))
            self.assertEqual(json.loads(raw)["error"]["code"], "internal_error")
        st, body = b.call("POST", "/batch_get", {"nope": 1})
        self.assertEqual((st, body["error"]["code"]), (500, "internal_error"))
        st, body = b.call("POST", "/batch_get", {"requests": []})
        self.assertEqual((st, body), (200, {"results": []}))
        st, body = b.call("POST", "/batch_get", {"requests": [{"table": "PathStats", "key": "/", "entity_id": "/"}]})
        self.assertEqual(st, 500)
        st, body = b.call("POST", "/batch_get", {"requests": [{"table": "PathStats", "key": "/", "features": ["nope"]}]})
        self.assertEqual(st, 500)
        self.assertIn("feature_not_found", body["error"]["reason"])
        st, body = b.call("GET", "/get/path_views_total/a|b")
        self.assertEqual((st, body), (404, {"error": {"code": "key_parse_failure"}}))

    def test_routes(self):
        b = self.b
        self.assertEqual(b.call("GET", "/nope?x=1"), (404, {"error": {"code": "not_found", "path": "/nope?x=1"}}))
        self.assertEqual(b.call("GET", "/push"), (405, {"error": {"code": "method_not_allowed", "method": "GET", "path": "/push"}}))
        self.assertEqual(b.call("POST", "/health")[0], 405)
        self.assertEqual(b.call("GET", "/health/"), (200, {"status": "ok"}))
        self.assertEqual(b.call("GET", "/ready"), (200, {"status": "ready"}))
        self.assertEqual(b.call("GET", "/registry"), (404, {"error": {"code": "not_found", "path": "/registry"}}))
        self.assertEqual(b.call("POST", "/ping/"), (200, {"pong": True, "registry_version": 1}))
        for p in ("/upsert/x", "/delete/x", "/retract", "/table/x", "/api/get", "/api/register"):
            self.assertEqual(b.call("POST", p)[0], 404, p)

    def test_body_caps(self):
        b = self.b
        host, port = b.http_addr_bound.rsplit(":", 1)
        # a declared 5 MiB body is refused as soon as the headers arrive
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (5 * 1024 * 1024))
        resp = b""
        while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
        s.close()
        self.assertTrue(resp.startswith(b"HTTP/1.1 413"), resp[:100])
        self.assertEqual(json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"]["code"], "http_protocol_error")
        # a chunked body that grows past the cap is refused at its end
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * (1024 * 1024)
        for _ in range(5):
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        resp = b""
        while not resp.rstrip().endswith(b"}"):
            part = s.recv(65536)
            if not part:
                break
            resp += part
        s.close()
        self.assertTrue(resp.startswith(b"HTTP/1.1 413"), resp[:100])
        st, body = b.call("POST", "/ping")
        self.assertEqual(st, 200)

    def test_big_register_payload_rejected_cleanly(self):
        nodes = [event_node("E%d" % i, {"a": "str"}) for i in range(10000)]
        st, body = self.b.register({"nodes": EXAMPLE["nodes"] + nodes})
        self.assertEqual(st, 400)
        self.assertEqual(body["error"]["code"], "invalid_registration")
        self.assertEqual(self.b.admin("GET", "/registry")[2], b'{"node_count":3,"version":1}')

    def test_duplicate_feature_names_and_non_json(self):
        st, h, raw = self.b.raw("POST", "/register", b'{"nodes": [', JSON)
        self.assertEqual(st, 400)
        self.assertEqual(json.loads(raw)["error"]["code"], "invalid_registration")
        dup = table_node("D", "PageView", [], {"d1": {"op": "count"}})
        dup2 = table_node("D2", "PageView", [], {"d1": {"op": "count"}})
        self.reg_error(self.with_extra(dup, dup2), "aggregation_feature_name_collision_across_aggregations")


class Admin(unittest.TestCase):
    def test_admin_routes_and_metrics(self):
        with Beava() as b:
            st, h, raw = b.admin("GET", "/health")
            self.assertEqual((st, raw), (200, b'{"status":"ok"}'))
            st, h, raw = b.admin("GET", "/ready")
            self.assertEqual((st, raw), (200, b'{"status":"ready"}'))
            self.assertEqual(b.admin("GET", "/registry")[2], b'{"node_count":0,"version":0}')
            self.assertEqual(b.admin("GET", "/nope")[0], 404)
            self.assertEqual(b.admin("POST", "/health")[0], 405)
            b.register(EXAMPLE)
            for i in range(3):
                b.push("PageView", {"session_id": "s", "path": "/p%d" % i, "dwell_ms": 10})
            st, h, raw = b.admin("GET", "/metrics")
            self.assertEqual(st, 200)
            self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
            text = raw.decode()
            vals = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    k, v = line.rsplit(" ", 1)
                    vals[k] = float(v)
            self.assertEqual(vals["beava_registry_version"], 1)
            self.assertEqual(vals["beava_node_count"], 3)
            self.assertEqual(vals["beava_entity_count_resident"], 4)  # 1 global + 3 paths
            self.assertEqual(vals["beava_events_applied_total"], 3)
            self.assertGreater(vals["beava_bytes_per_entity_p99"], 0)
            for name in ("beava_entropy_categories_capped_total", "beava_cold_entity_evictions_total",
                         "beava_bucket_reclaim_total", "beava_lifetime_op_cap_hit_total"):
                self.assertIn("# TYPE " + name, text)


class KeepAlive(unittest.TestCase):
    """Many requests on one keep-alive connection, sent back to back before any answer is
    read: each answer comes back in request order with its own status and body (the
    server reuses one request context per connection; short and long request paths,
    errors, pushes answered at once and pushes that wait for their fsync all mixed)."""

    PIPE = {"nodes": [
        event_node("E", {"k": "str", "v": "i64"}),
        table_node("ByKey", "E", ["k"], {"n": {"op": "count", "params": {}}}),
    ]}

    @staticmethod
    def request(method, path, body=None):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body or b"")
        head = "%s %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            method, path, len(data))
        return head.encode() + data

    @staticmethod
    def responses(sock, n):
        """Read n Content-Length framed responses from sock, in order."""
        buf = b""
        out = []
        while len(out) < n:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed after %d answers" % len(out))
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            need = int(hdrs["content-length"])
            while len(buf) < need:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed inside an answer")
                buf += chunk
            out.append((int(lines[0].split()[1]), json.loads(buf[:need])))
            buf = buf[need:]
        return out

    def test_pipelined_answers_in_order_with_their_bodies(self):
        with Beava(memory_only=False, args=["--durability", "batch"]) as b:
            st, body = b.register(self.PIPE)
            self.assertEqual(st, 200, body)
            long_event = "X" * 150                    # a path longer than the inline URI copy
            long_path = "/nowhere/" + "p" * 200 + "?q=1"
            reqs = [
                ("POST", "/push/E", {"k": "a", "v": 1}),
                ("POST", "/push/E", b"{not json"),
                ("POST", "/push-sync/E", {"k": "a", "v": 2}),
                ("POST", "/push/" + long_event, {"k": "a", "v": 3}),
                ("GET", long_path, None),
                ("POST", "/push", {"event": "E", "data": {"k": "b", "v": 4}}),
                ("GET", "/push/E", None),
                ("POST", "/get", {"table": "ByKey", "key": "a"}),
                ("POST", "/push-sync", {"event": "E", "data": {"k": "a", "v": 5}}),
                ("POST", "/get", {"table": "ByKey", "key": "a"}),
            ]
            host, port = b.http_addr_bound.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as s:
                for rounds in range(3):                  # back to back, then again on the same connection
                    s.sendall(b"".join(self.request(m, p, d) for m, p, d in reqs))
                    got = self.responses(s, len(reqs))
                    (s0, a0), (s1, e1), (s2, a2), (s3, e3), (s4, e4), (s5, a5), (s6, e6), (s7, g7), (s8, a8), (s9, g9) = got
                    self.assertEqual((s0, s2, s5, s8), (200, 200, 200, 200), got)
                    self.assertEqual(list(a0), ["ack_lsn", "idempotent_replay", "registry_version"])
                    self.assertTrue(a0["ack_lsn"] < a2["ack_lsn"] < a5["ack_lsn"] < a8["ack_lsn"], got)
                    self.assertEqual((s1, e1["error"]["code"]), (400, "invalid_event"), e1)
                    self.assertEqual((s3, e3["error"]["code"]), (404, "event_not_found"), e3)
                    self.assertIn("event '" + long_event[:100], e3["error"]["reason"])   # the name, maybe cut
                    self.assertEqual((s4, e4["error"]["code"], e4["error"]["path"]), (404, "not_found", long_path))
                    self.assertEqual((s6, e6["error"]["code"]), (405, "method_not_allowed"), e6)
                    self.assertEqual(e6["error"]["path"], "/push/E")
                    # reads see every earlier push of the connection
                    self.assertEqual((s7, g7["n"]), (200, 2 + 3 * rounds), g7)
                    self.assertEqual((s9, g9["n"]), (200, 3 + 3 * rounds), g9)

    def test_large_headers_and_bodies_between_small_ones(self):
        """On one keep-alive connection: a push with several KB of request headers (the
        per-connection memory holds them), one whose body outgrows the request context's
        inline copy, then small ones again (the reused context starts from its inline
        copy): all answered 200 and all counted."""
        with Beava() as b:
            st, body = b.register(self.PIPE)
            self.assertEqual(st, 200, body)
            small = self.request("POST", "/push/E", {"k": "h", "v": 1})
            padded = json.dumps({"k": "h", "v": 2}).encode() + b" " * 3000    # JSON allows trailing spaces
            big_body = self.request("POST", "/push/E", padded)
            big_head = small.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * 6000 + b"\r\n\r\n", 1)
            host, port = b.http_addr_bound.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as s:
                for req in (small, big_head, small, big_body, small, big_body, big_head, small):
                    s.sendall(req)
                    (st, ack), = self.responses(s, 1)
                    self.assertEqual(st, 200, ack)
                    self.assertIn("ack_lsn", ack)
                s.sendall(self.request("POST", "/get", {"table": "ByKey", "key": "h"}))
                (st, got), = self.responses(s, 1)
                self.assertEqual((st, got["n"]), (200, 8), got)


if __name__ == "__main__":
    main()
