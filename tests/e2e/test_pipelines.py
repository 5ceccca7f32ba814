"""Whole pipelines against the real binary, checked against brute force computed in Python
from the events this test sent.

1. Derivation chains at push time (the reference never ran them): a table over an event derivation over
   an event derivation over a pushed event is fed by pushes of the root event through
   the composed chain (filter, with_columns creating the key); filtered rows are not
   counted; pushing to a derivation name is event_not_found; changing a derivation in
   the chain replaces the table (force), widening the root event keeps its state.
2. fraud-team.json (shared/data/bench): registers, takes a replay of 100,000 generated
   Txn events (tests/bench/gen.h: user key "k%08u" over 2,000 keys, event_time
   counter, extra fields by type) over TCP PUSH_MANY, and every exactly computable
   feature of its five Txn tables equals brute force for a sample of keys; approximate
   and arrival-time features are checked for type and plausibility (closed forms within
   a tolerance where they exist).
3. The demo manifests (config/manifests/, rendered by beava-control) register on a fresh
   server together with the site's manifest, use at least 20 operator kinds, a `where`,
   a composite key and an event-derivation chain; every line of the three demo streams
   (shared/data/demos) is accepted; rows are spot-checked against brute force.

The server stamps events with its own arrival time, so only value-determined features
are compared exactly; 5-minute windows are compared only when the replay took less than
their length.
"""
import collections
import json
import math
import os
import random
import socket
import struct
import subprocess
import time
import unittest

from harness import BEAVA_BIN, SOURCE, Beava, main, shared_path

CONTROL_BIN = os.environ.get("BEAVA_CONTROL_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(BEAVA_BIN)), "control", "beava-control")
MANIFEST_DIR = os.path.join(SOURCE, "config", "manifests")

OP_PUSH_MANY = 0x0012
BATCH = 2000
REL = 1e-9


def log(msg):
    print("  [pipelines] " + msg, flush=True)


# -- TCP framing (see test_tcp.py) -----------------------------------------------------
class Tcp:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=120)
        self.buf = b""

    def call(self, op, body):
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.s.sendall(struct.pack(">IHB", len(payload) + 3, op, 1) + payload)
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        n = struct.unpack(">I", self.buf[:4])[0]
        rop, ct = struct.unpack(">HB", self.buf[4:7])
        data = self.buf[7:4 + n]
        self.buf = self.buf[4 + n:]
        return rop, json.loads(data)

    def close(self):
        self.s.close()


class Pushed:
    """What push_many did: acks[i] is the final ack of events[i]; order lists the indices
    in the order the server accepted them (per entity, the order they are applied in);
    retries counts `overloaded` answers (backpressure: nothing applied, retried)."""

    def __init__(self, n):
        self.acks = [None] * n
        self.order = []
        self.retries = 0

    def applied(self, events):
        return [events[i] for i in self.order if "error" not in self.acks[i]]


def push_many(b, events):
    """Push (event, body) pairs in PUSH_MANY batches. An event answered `overloaded` is
    sent again (alone with the other refused ones of its batch) before the next batch, so
    the accepted order is known exactly."""
    c = Tcp(b.bound["server.tcp_bound"])
    out = Pushed(len(events))
    try:
        for start in range(0, len(events), BATCH):
            pending = list(range(start, min(len(events), start + BATCH)))
            while pending:
                chunk = [{"event": events[i][0], "body": events[i][1]} for i in pending]
                op, res = c.call(OP_PUSH_MANY, {"events": chunk})
                assert op == OP_PUSH_MANY, (op, res)
                again = []
                for i, ack in zip(pending, res["acks"]):
                    if isinstance(ack.get("error"), dict) and ack["error"].get("code") == "overloaded":
                        again.append(i)
                    else:
                        out.acks[i] = ack
                        out.order.append(i)
                if again:
                    out.retries += len(again)
                    time.sleep(0.005)
                pending = again
    finally:
        c.close()
    return out


def rejected(pushed):
    return [(i, a) for i, a in enumerate(pushed.acks) if "error" in a or "code" in a]


def batch_get(b, reqs):
    out = []
    for i in range(0, len(reqs), 200):
        st, body = b.call("POST", "/batch_get", {"requests": [{"table": t, "key": k} for t, k in reqs[i:i + 200]]})
        assert st == 200, body
        out.extend(body["results"])
    return out


# -- brute force helpers ----------------------------------------------------------------
def close(a, b, rel=REL, abs_=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def sample_var(xs):
    n = len(xs)
    if n < 2:
        return None
    m = sum(xs) / n
    return sum((x - m) ** 2 for x in xs) / (n - 1)


def quantile(xs, q):
    a = sorted(xs)
    if not a:
        return None
    pos = q * (len(a) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


def top_k(xs, k):
    c = collections.Counter(xs)
    return [{"count": n, "value": v} for v, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def entropy(xs):
    c = collections.Counter(xs)
    n = len(xs)
    return -sum((m / n) * math.log2(m / n) for m in c.values()) if n else 0.0


def changes(xs):
    return sum(1 for a, b in zip(xs, xs[1:]) if a != b)


def z_score(xs):
    v = sample_var(xs)
    if v is None or v <= 0:
        return None
    return (xs[-1] - sum(xs) / len(xs)) / math.sqrt(v)


def outliers(xs, sigma=3.0):
    n, mean, m2, out = 0, 0.0, 0.0, 0
    for x in xs:
        if n >= 5:
            var = m2 / (n - 1)
            if var > 0 and abs(x - mean) > sigma * math.sqrt(var):
                out += 1
        n += 1
        d = x - mean
        mean += d / n
        m2 += d * (x - mean)
    return out


def reservoir(xs, k):
    """ops/op_reservoir_sample.c: deterministic reservoir (xorshift64 on the count)."""
    m = (1 << 64) - 1
    res, seen = [], 0
    for x in xs:
        seen += 1
        if len(res) < k:
            res.append(x)
            continue
        s = seen ^ 0xA0B1C2D3E4F50617 ^ 0x9E3779B97F4A7C15
        if s == 0:
            s = 0xD2B74E4572D7C2B0
        s ^= (s << 13) & m
        s ^= s >> 7
        s ^= (s << 17) & m
        j = s % seen
        if j < k:
            res[j] = x
    return res


def streaks(matches):
    cur = best = neg = 0
    for ok in matches:
        if ok:
            cur += 1
            best = max(best, cur)
            neg = 0
        else:
            cur = 0
            neg += 1
    return cur, best, neg


def _sqrt(x):
    return math.sqrt(x) if x >= 0 else float("nan")


def haversine(lat1, lon1, lat2, lon2):
    r = math.pi / 180.0
    p1, p2 = lat1 * r, lat2 * r
    sdp, sdl = math.sin((lat2 - lat1) * r / 2), math.sin((lon2 - lon1) * r / 2)
    a = sdp * sdp + math.cos(p1) * math.cos(p2) * sdl * sdl
    return 2 * 6371.0 * math.atan2(_sqrt(a), _sqrt(1 - a))


def nan_to_none(x):
    return None if x is None or math.isnan(x) or math.isinf(x) else x


def geo_spread(pts):
    if len(pts) < 2:
        return None
    n = len(pts)
    lats, lons = [p[0] for p in pts], [p[1] for p in pts]
    mlat, mlon = sum(lats) / n, sum(lons) / n
    vlat = sum((x - mlat) ** 2 for x in lats) / n
    vlon = sum((x - mlon) ** 2 for x in lons) / n
    klon = 111.32 * math.cos(mlat * math.pi / 180.0)
    return math.sqrt(vlat * 111.32 * 111.32 + vlon * klon * klon)


def dist_from_home(pts, samples):
    ring = pts[-samples:]
    if not ring:
        return None
    mlat = sum(p[0] for p in ring) / len(ring)
    mlon = sum(p[1] for p in ring) / len(ring)
    return nan_to_none(haversine(ring[-1][0], ring[-1][1], mlat, mlon))


def quadkey(lat, lon, zoom):
    n = 1 << zoom
    lat = max(-85.05112878, min(85.05112878, lat))
    row = math.floor((math.sin(lat * math.pi / 180.0) + 1) / 2 * n)
    row = max(0, min(n - 1, row))
    col = math.floor((lon + 180) / 360 * n)
    return col * n + row


class Checker:
    """Collects feature comparisons for one row; failures are reported together."""

    def __init__(self, tc, table, key, row):
        self.tc, self.table, self.key, self.row = tc, table, key, row
        self.failures = []
        self.checked = collections.Counter()

    def _fail(self, feat, got, want):
        self.failures.append("%s[%s].%s: got %r, want %s" % (self.table, self.key, feat, got, want))

    def _get(self, feat):
        self.tc.assertIn(feat, self.row, "%s[%s] lacks feature %s: %r" % (self.table, self.key, feat, self.row))
        return self.row[feat]

    def eq(self, feat, want):
        got = self._get(feat)
        self.checked["exact"] += 1
        if got != want:
            self._fail(feat, got, repr(want))

    def near(self, feat, want, rel=REL, abs_=1e-9):
        got = self._get(feat)
        self.checked["exact"] += 1
        if not close(got, want, rel, abs_):
            self._fail(feat, got, "%r (rel %g)" % (want, rel))

    def near_map(self, feat, want):
        got = self._get(feat)
        self.checked["exact"] += 1
        if not isinstance(got, dict) or set(got) != set(want) or any(not close(got[k], want[k]) for k in want):
            self._fail(feat, got, repr(want))

    def holds(self, feat, pred, what):
        got = self._get(feat)
        self.checked["plausible"] += 1
        if not pred(got):
            self._fail(feat, got, what)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def num_or_none(v):
    return v is None or is_num(v)


# -- 1. derivation chains ------------------------------------------------------------
E_NODE = {"kind": "event", "name": "E",
          "schema": {"fields": {"u": "str", "x": "f64", "n": "i64"}, "optional_fields": ["n"]}}
D2_NODE = {"kind": "derivation", "name": "D2", "output_kind": "event", "upstreams": ["E"],
           "ops": [{"op": "filter", "expr": "(x > 10.0)"}]}
D1_NODE = {"kind": "derivation", "name": "D1", "output_kind": "event", "upstreams": ["D2"],
           "ops": [{"op": "with_columns", "exprs": {"k": "cast(n, str)", "x2": "(x * 2.0)"}},
                   {"op": "select", "fields": ["k", "x", "x2"]}]}
T_NODE = {"kind": "derivation", "name": "T", "output_kind": "table", "upstreams": ["D1"],
          "ops": [{"op": "filter", "expr": "(x2 < 1000.0)"},
                  {"op": "group_by", "keys": ["k"], "agg": {
                      "t_n": {"op": "count"},
                      "t_x2": {"op": "sum", "params": {"field": "x2"}},
                      "t_x_last": {"op": "last", "params": {"field": "x"}}}}],
          "table_primary_key": ["k"]}
DIRECT = {"kind": "derivation", "name": "Direct", "output_kind": "table", "upstreams": ["E"],
          "ops": [{"op": "group_by", "keys": ["u"], "agg": {"direct_n": {"op": "count"}}}],
          "table_primary_key": ["u"]}


class DerivationChains(unittest.TestCase):
    def test_table_over_chain_of_event_derivations(self):
        with Beava() as b:
            st, body = b.register({"nodes": [E_NODE, D2_NODE, D1_NODE, T_NODE, DIRECT]})
            self.assertEqual(st, 200, body)
            rng = random.Random(6)
            ok = []
            for i in range(600):
                body = {"u": "u%d" % (i % 7), "x": round(rng.uniform(0, 700), 3), "n": rng.randrange(5)}
                if i % 50 == 0:
                    del body["n"]               # optional: k = cast(null, str) is null, no entity
                st, r = b.push("E", body)
                self.assertEqual(st, 200, r)
                ok.append(body)
            # brute force: D2 keeps x > 10, D1 makes k and x2, T keeps x2 < 1000
            want = collections.defaultdict(list)
            for e in ok:
                if "n" in e and e["x"] > 10.0 and e["x"] * 2.0 < 1000.0:
                    want[str(e["n"])].append(e)
            self.assertTrue(0 < sum(map(len, want.values())) < len(ok))
            for k in map(str, range(5)):
                st, row = b.get("T", k)
                self.assertEqual(st, 200)
                evs = want[k]
                self.assertEqual(row["t_n"], len(evs), k)
                self.assertTrue(close(row["t_x2"], sum(e["x"] * 2.0 for e in evs)), (row, k))
                self.assertEqual(row["t_x_last"], evs[-1]["x"])
            st, row = b.get("Direct", "u0")
            self.assertEqual(row["direct_n"], sum(1 for e in ok if e["u"] == "u0"))
            log("derivation chain: %d of %d pushes reached T through D2 -> D1 -> T" % (
                sum(map(len, want.values())), len(ok)))
            # a derivation is not an event
            st, r = b.push("D1", {"k": "1", "x": 20.0, "x2": 40.0})
            self.assertEqual((st, r["error"]["code"]), (404, "event_not_found"))
            st, r = b.push("D2", {"u": "a", "x": 20.0, "n": 1})
            self.assertEqual((st, r["error"]["code"]), (404, "event_not_found"))

            # widening E keeps T's state; the widened field flows through the chain
            e2 = json.loads(json.dumps(E_NODE))
            e2["schema"]["fields"]["tag"] = "str"     # a new field is additive (optional_fields
                                                      # changes are descriptor changes)
            st, body = b.register({"nodes": [e2, D2_NODE, D1_NODE, T_NODE, DIRECT]})
            self.assertEqual(st, 200, body)
            self.assertEqual(body["added"], ["E"])
            st, row = b.get("T", "1")
            self.assertEqual(row["t_n"], len(want["1"]))
            st, r = b.push("E", {"u": "a", "x": 50.0, "n": 1, "tag": "t"})
            self.assertEqual(st, 200, r)
            self.assertEqual(b.get("T", "1")[1]["t_n"], len(want["1"]) + 1)

            # changing a derivation in the chain is destructive and replaces T
            d2b = dict(D2_NODE, ops=[{"op": "filter", "expr": "(x > 400.0)"}])
            st, body = b.register({"nodes": [e2, d2b, D1_NODE, T_NODE, DIRECT]})
            self.assertEqual(st, 409, body)
            self.assertEqual(body["error"]["diff"]["destructive"], [{"kind": "descriptor_change", "name": "D2"}])
            st, body = b.register({"nodes": [e2, d2b, D1_NODE, T_NODE, DIRECT]}, force=True)
            self.assertEqual(st, 200, body)
            self.assertEqual(b.get("T", "1"), (200, {}))            # fresh state
            self.assertEqual(b.get("Direct", "u0")[1]["direct_n"],  # not downstream of D2
                             sum(1 for e in ok if e["u"] == "u0"))
            for x in (100.0, 450.0, 499.0, 600.0):
                self.assertEqual(b.push("E", {"u": "a", "x": x, "n": 1, "tag": "t"})[0], 200)
            self.assertEqual(b.get("T", "1")[1], {"t_n": 2, "t_x2": 1898.0, "t_x_last": 499.0})


# -- 2. fraud-team.json ------------------------------------------------------------
N_EVENTS = 100000
N_USERS = 2000
N_STR = 1000


def gen_fraud_events(cfg, seed=20260607):
    """tests/bench/gen.h: key "k%08u", event_time counter, extras by type."""
    rng = random.Random(seed)
    extras = list(cfg["extra_fields"].items())
    out = []
    for i in range(N_EVENTS):
        body = {cfg["key_field"]: "k%08u" % rng.randrange(N_USERS), "event_time": i}
        for f, t in extras:
            if t == "f64":
                body[f] = rng.random() * 1000.0
            elif t == "i64":
                body[f] = rng.randrange(1000000)
            else:
                body[f] = "s%d" % rng.randrange(N_STR)
        out.append(body)
    return out


class FraudTeamReplay(unittest.TestCase):
    def test_replay_100k_txn_matches_brute_force(self):
        with open(shared_path("data", "bench", "fraud-team.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg["event_name"], "Txn")
        tables = {}
        for n in cfg["register"]["nodes"]:
            if n["kind"] == "derivation" and n["upstreams"] == ["Txn"]:
                gb = [o for o in n["ops"] if o["op"] == "group_by"][0]
                tables[n["name"]] = (gb["keys"][0], gb["agg"])
        self.assertEqual(sorted(tables), ["TxnByCard", "TxnByDevice", "TxnByIp", "TxnByMerchant", "TxnByUser"])
        events = gen_fraud_events(cfg)
        with Beava() as b:
            st, body = b.register(cfg["register"])
            self.assertEqual(st, 200, body)
            t0 = time.time() * 1000
            pushed = push_many(b, [("Txn", e) for e in events])
            t1 = time.time() * 1000
            self.assertEqual(rejected(pushed), [])
            events = pushed.applied(events)       # the order the server applied them in
            self.assertEqual(len(events), N_EVENTS)
            log("fraud-team: %d Txn events pushed over TCP PUSH_MANY in %.1f s, none rejected "
                "(%d overloaded answers retried)" % (N_EVENTS, (t1 - t0) / 1000, pushed.retries))

            rng = random.Random(7)
            samples = {"TxnByUser": rng.sample(sorted({e["user_id"] for e in events}), 50)}
            for t in ("TxnByCard", "TxnByDevice", "TxnByIp", "TxnByMerchant"):
                keyf = tables[t][0]
                samples[t] = rng.sample(sorted({e[keyf] for e in events}), 20)
            per = {t: {k: [] for k in ks} for t, ks in samples.items()}
            for e in events:
                for t, (keyf, _) in tables.items():
                    lst = per[t].get(e[keyf])
                    if lst is not None:
                        lst.append(e)
            reqs = [(t, k) for t in samples for k in samples[t]]
            rows = batch_get(b, reqs)
            tq = time.time() * 1000
            fresh_5m = tq - t0 < 5 * 60 * 1000 - 5000 - 10000   # window minus one bucket, slack
            if not fresh_5m:
                log("replay took too long: 5-minute windows are only checked for plausibility")
            failures, checked = [], collections.Counter()
            covered = set()
            expr_mode = set()
            for (t, k), row in zip(reqs, rows):
                self.assertIsInstance(row, dict)
                self.assertNotIn("error", row, (t, k))
                evs = per[t][k]
                c = Checker(self, t, k, row)
                self.check_fraud_row(c, t, tables[t][1], evs, t0, t1, tq, fresh_5m, expr_mode)
                self.assertEqual(set(row), set(tables[t][1]), (t, k))
                failures += c.failures
                checked += c.checked
                covered |= set(row)
            self.assertEqual(failures, [], "\n".join(failures[:40]))
            log("fraud-team: %d rows (5 tables), %d exact comparisons, %d plausibility checks, "
                "%d features covered; expr-valued n_unique/entropy: %s" % (
                    len(rows), checked["exact"], checked["plausible"], len(covered), "/".join(sorted(expr_mode))))

    def check_fraud_row(self, c, table, agg, evs, t0, t1, tq, fresh_5m, expr_mode):
        n = len(evs)
        self.assertGreater(n, 0)
        lo_ms, hi_ms = t0 - 2000, t1 + 2000
        in_time = lambda v: isinstance(v, int) and lo_ms <= v <= hi_ms
        for feat, spec in sorted(agg.items()):
            op, p = spec["op"], spec.get("params", {})
            field = p.get("field")
            vals = [e[field] for e in evs] if field else []
            win = p.get("window")
            time_sensitive_window = win == "5m" and not fresh_5m
            if op == "count":
                if time_sensitive_window:
                    c.holds(feat, lambda v: isinstance(v, int) and 0 <= v <= n, "0..n")
                else:
                    c.eq(feat, n)
            elif op == "sum":
                c.near(feat, sum(vals))
            elif op == "mean":
                c.near(feat, sum(vals) / n)
            elif op == "min":
                c.eq(feat, min(vals))
            elif op == "max":
                c.eq(feat, max(vals))
            elif op == "var":
                c.near(feat, sample_var(vals), rel=1e-8)
            elif op == "std":
                v = sample_var(vals)
                c.near(feat, None if v is None else math.sqrt(v), rel=1e-8)
            elif op == "quantile":
                self.assertLessEqual(n, 256)      # exact below 257 values
                c.near(feat, quantile(vals, p.get("q", 0.5)))
            elif op == "n_unique":
                if field:
                    c.eq(feat, len(set(vals)))
                else:   # expr quadkey(lat, lon, 7): the reference ignores expr (0)
                    want = len({quadkey(e["lat"], e["lon"], 7) for e in evs})
                    got = c.row.get(feat)
                    expr_mode.add("ignored" if got == 0 else "evaluated")
                    c.eq(feat, 0 if got == 0 else want)
            elif op == "entropy":
                if field:
                    c.near(feat, entropy(vals))
                else:
                    want = entropy([quadkey(e["lat"], e["lon"], 7) for e in evs])
                    got = c.row.get(feat)
                    c.near(feat, 0.0 if got == 0.0 else want)
            elif op == "top_k":
                c.eq(feat, top_k(vals, p.get("k", 10)))
            elif op == "first":
                c.eq(feat, vals[0])
            elif op == "last":
                c.eq(feat, vals[-1])
            elif op == "first_n":
                c.eq(feat, vals[:p["n"]])
            elif op in ("last_n", "most_recent_n"):
                c.eq(feat, vals[-p.get("n", 10):])
            elif op == "lag":
                c.eq(feat, vals[-1 - p["n"]] if n > p["n"] else None)
            elif op == "delta_from_prev":
                c.near(feat, vals[-1] - vals[-2] if n >= 2 else None)
            elif op == "z_score":
                c.near(feat, z_score(vals), rel=1e-7, abs_=1e-7)
            elif op == "outlier_count":
                if time_sensitive_window:
                    c.holds(feat, lambda v: isinstance(v, int) and v >= 0, "int >= 0")
                else:
                    c.eq(feat, outliers(vals, p.get("sigma", 3.0)))
            elif op == "value_change_count":
                if time_sensitive_window:
                    c.holds(feat, lambda v: isinstance(v, int) and 0 <= v < n, "0..n-1")
                else:
                    c.eq(feat, changes(vals))
            elif op == "bloom_member":     # latest value seen before (op_bloom_member.c)
                c.eq(feat, vals[-1] in vals[:-1])
            elif op == "negative_streak":  # field ignored, no where: every event matches
                c.eq(feat, 0)
            elif op in ("streak", "max_streak"):
                c.eq(feat, n)
            elif op == "has_seen":
                c.eq(feat, True)
            elif op == "first_seen_in_window":
                c.eq(feat, True)
            elif op == "event_type_mix":
                cnt = collections.Counter(vals)
                self.assertLessEqual(len(cnt), p.get("max_categories", 256))
                c.near_map(feat, {k: m / n for k, m in cnt.items()})
            elif op == "reservoir_sample":
                c.eq(feat, reservoir(vals, p.get("samples", p.get("k", 10))))
            elif op == "hour_of_day_histogram":
                c.holds(feat, lambda v: isinstance(v, list) and len(v) == 24 and sum(v) == n, "24 cells summing to n")
            elif op == "dow_hour_histogram":
                c.holds(feat, lambda v: isinstance(v, dict) and len(v) == 168 and sum(v.values()) == n,
                        "168 cells summing to n")
            elif op in ("first_seen", "last_seen"):
                c.holds(feat, in_time, "an arrival ms within the replay")
            elif op in ("age", "time_since"):
                c.holds(feat, lambda v: isinstance(v, int) and 0 <= v <= tq - t0 + 2000, "0..elapsed")
            elif op == "time_since_last_n":
                if n < p["n"]:
                    c.eq(feat, None)
                else:
                    c.holds(feat, lambda v: isinstance(v, int) and 0 <= v <= tq - t0 + 2000, "0..elapsed")
            elif op == "burst_count":
                c.holds(feat, lambda v: isinstance(v, int) and 1 <= v <= n, "1..n")
            elif op == "inter_arrival_stats":
                c.holds(feat, lambda v: (v is None and n < 2) or (is_num(v) and 0 <= v <= tq - t0 + 2000),
                        "mean gap within the replay")
            elif op == "decayed_count":    # half-lives of hours, replay of minutes
                c.holds(feat, lambda v: is_num(v) and 0.98 * n <= v <= n * (1 + 1e-9), "~n")
            elif op == "decayed_sum":
                s = sum(vals)
                c.holds(feat, lambda v: is_num(v) and 0.98 * s <= v <= s * (1 + 1e-9), "~sum")
            elif op in ("ewma", "twa"):
                lo, hi = min(vals), max(vals)
                c.holds(feat, lambda v: is_num(v) and lo - 1e-9 <= v <= hi + 1e-9, "within [min, max]")
            elif op == "ewvar":
                c.holds(feat, lambda v: is_num(v) and v >= 0, "float >= 0")
            elif op in ("ew_zscore", "rate_of_change", "trend", "trend_residual", "seasonal_deviation"):
                c.holds(feat, num_or_none, "float or null")
            elif op == "geo_velocity":
                c.holds(feat, lambda v: v is None or (is_num(v) and v >= 0), "km/h >= 0 or null")
            elif op == "geo_distance":
                pts = [(e[p.get("lat_field", p.get("lat", "lat"))], e[p.get("lon_field", p.get("lon", "lon"))]) for e in evs]
                want = nan_to_none(sum(haversine(*a, *b) for a, b in zip(pts, pts[1:])))
                c.near(feat, want, rel=1e-6, abs_=1e-6)
            elif op == "geo_spread":
                pts = [(e["lat"], e["lon"]) for e in evs]
                c.near(feat, nan_to_none(geo_spread(pts)), rel=1e-6, abs_=1e-6)
            elif op == "distance_from_home":
                pts = [(e["lat"], e["lon"]) for e in evs]
                c.near(feat, dist_from_home(pts, p.get("samples", 100)), rel=1e-6, abs_=1e-6)
            else:
                self.fail("no check for op %s (%s.%s)" % (op, table, feat))


# -- 3. demo manifests ----------------------------------------------------------------
# The ecommerce demo's PageView is ShopPageView on the server (21-demo-ecommerce.yaml):
# PageView is the site's own beacon with another schema.
DEMO_EVENT_NAMES = {"ecommerce": {"PageView": "ShopPageView"}}


def render_manifests():
    out = subprocess.run([CONTROL_BIN, "manifests", "render", MANIFEST_DIR], capture_output=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError("beava-control manifests render failed: %s" % out.stderr.decode())
    return json.loads(out.stdout)


def load_demo(name):
    with open(shared_path("data", "demos", name, "schema.json")) as f:
        schema = json.load(f)
    events = []
    with open(shared_path("data", "demos", name, "events.jsonl")) as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                ev = e.pop("_event")
                events.append((DEMO_EVENT_NAMES.get(name, {}).get(ev, ev), e))
    return schema, events


def by_key(events, name, *keys):
    out = collections.defaultdict(list)
    for ev, body in events:
        if ev == name:
            out["|".join(str(body[k]) for k in keys)].append(body)
    return out


class DemoManifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(CONTROL_BIN):
            raise AssertionError("beava-control not found at %s (build it, or set BEAVA_CONTROL_BIN)" % CONTROL_BIN)
        cls.payload = render_manifests()
        cls.demos = {d: load_demo(d) for d in ("fraud", "ecommerce", "adtech")}

    def test_manifests_cover_the_demo_schemas_and_20_kinds(self):
        nodes = self.payload["nodes"]
        events = {n["name"]: n for n in nodes if n["kind"] == "event"}
        tmap = {"str": "str", "int": "i64", "float": "f64", "bool": "bool"}
        for demo, (schema, _) in self.demos.items():
            for ev in schema:
                name = DEMO_EVENT_NAMES.get(demo, {}).get(ev["name"], ev["name"])
                self.assertIn(name, events, demo)
                want = {f["name"]: tmap[f["type"]] for f in ev["fields"]}
                self.assertEqual(events[name]["schema"]["fields"], want, (demo, name))
        kinds, features, where, composite, chained = set(), [], 0, 0, []
        derived = {n["name"]: n for n in nodes if n["kind"] == "derivation" and n["output_kind"] == "event"}
        windowed = lifetime = 0
        for n in nodes:
            for o in n.get("ops", []):
                if o["op"] != "group_by":
                    continue
                composite += len(o["keys"]) > 1
                if n["upstreams"][0] in derived:
                    chained.append(n["name"])
                for f, s in o["agg"].items():
                    kinds.add(s["op"])
                    features.append(f)
                    where += "where" in s.get("params", {})
                    if s.get("params", {}).get("window", "forever") != "forever":
                        windowed += 1
                    else:
                        lifetime += 1
        self.assertEqual(len(features), len(set(features)), "feature names must be globally unique")
        self.assertGreaterEqual(len(kinds), 20)
        self.assertGreater(where, 0)
        self.assertGreater(composite, 0)
        self.assertTrue(chained, "no table over an event derivation")
        self.assertTrue(any(derived[n]["upstreams"][0] in derived for n in derived),
                        "no event derivation of an event derivation")
        self.assertGreater(windowed, 0)
        self.assertGreater(lifetime, 0)
        log("manifests: %d nodes, %d features, %d operator kinds (%d windowed, %d lifetime features, "
            "%d with where, %d composite-key tables, tables over event derivations: %s)" % (
                len(nodes), len(features), len(kinds), windowed, lifetime, where, composite, ", ".join(chained)))

    def test_register_replay_and_spot_check(self):
        with Beava() as b:
            st, body = b.register(self.payload)
            self.assertEqual(st, 200, body)
            applied = {}
            for demo, (_, events) in self.demos.items():
                t = time.time()
                pushed = push_many(b, events)
                bad = rejected(pushed)
                self.assertEqual(bad, [], "%s: %d rejected, first: %r" % (demo, len(bad), bad[:3]))
                applied[demo] = pushed.applied(events)
                self.assertEqual(len(applied[demo]), len(events))
                log("demo %s: all %d events accepted (%.1f s, %d overloaded answers retried)" % (
                    demo, len(events), time.time() - t, pushed.retries))
            checks = collections.Counter()
            self.spot_fraud(b, applied["fraud"], checks)
            self.spot_ecommerce(b, applied["ecommerce"], checks)
            self.spot_adtech(b, applied["adtech"], checks)
            log("demo spot checks: " + ", ".join("%s %d" % kv for kv in sorted(checks.items())))

    def rows(self, b, table, groups, keys):
        got = batch_get(b, [(table, k) for k in keys])
        for k, row in zip(keys, got):
            self.assertIsInstance(row, dict)
            self.assertNotIn("error", row, (table, k))
            yield k, groups[k], row

    def spot_fraud(self, b, events, checks):
        txn = by_key(events, "Txn", "user_id")
        for k, evs, r in self.rows(b, "FraudUserTxn", txn, sorted(txn)[:12]):
            a = [e["amount"] for e in evs]
            self.assertEqual(r["fr_txn_count_total"], len(a))
            self.assertEqual(r["fr_txn_count_1h"], len(a))
            self.assertTrue(close(r["fr_amount_sum_24h"], sum(a)))
            self.assertTrue(close(r["fr_amount_mean_24h"], sum(a) / len(a)))
            self.assertEqual((r["fr_amount_min_24h"], r["fr_amount_max_24h"]), (min(a), max(a)))
            self.assertTrue(close(r["fr_amount_p95_24h"], quantile(a, 0.95)))
            self.assertEqual(r["fr_merchants_24h"], len({e["merchant"] for e in evs}))
            self.assertEqual(r["fr_top_merchants_24h"], top_k([e["merchant"] for e in evs], 3))
            self.assertTrue(close(r["fr_big_share_24h"], sum(x >= 100.0 for x in a) / len(a)))
            self.assertEqual((r["fr_last_amount"], r["fr_prev_amount"]), (a[-1], a[-2] if len(a) > 1 else None))
            self.assertTrue(close(r["fr_amount_zscore"], z_score(a), 1e-7, 1e-7))
            pts = [(e["lat"], e["lon"]) for e in evs]
            self.assertTrue(close(r["fr_geo_km_total"], sum(haversine(*p, *q) for p, q in zip(pts, pts[1:])), 1e-6))
            self.assertTrue(close(r["fr_geo_spread"], geo_spread(pts), 1e-6))
            self.assertTrue(close(r["fr_dist_from_home"], dist_from_home(pts, 20), 1e-6))
            checks["fraud users"] += 1
        um = by_key(events, "Txn", "user_id", "merchant")
        for k, evs, r in self.rows(b, "FraudUserMerchant", um, sorted(um, key=lambda k: -len(um[k]))[:10]):
            self.assertEqual(r["fr_um_count"], len(evs))
            self.assertTrue(close(r["fr_um_amount_sum"], sum(e["amount"] for e in evs)))
            checks["fraud user|merchant"] += 1
        band = collections.defaultdict(list)
        for ev, e in events:
            if ev == "Txn" and e["amount"] >= 100.0:
                band[str(int(e["amount"] / 100.0))].append(e)
        self.assertIn("1", band)
        self.assertNotIn("0", band)
        for k, evs, r in self.rows(b, "FraudBigTxnByBand", band, sorted(band) + ["0"]):
            if k == "0":
                self.assertEqual(r, {})       # filtered out by FraudBigTxn: no entity
                continue
            self.assertEqual(r["fr_band_count"], len(evs))
            self.assertTrue(close(r["fr_band_amount_sum"], sum(e["amount"] for e in evs)))
            self.assertEqual(r["fr_band_users_24h"], len({e["user_id"] for e in evs}))
            checks["fraud bands (derivation chain)"] += 1
        login = by_key(events, "Login", "user_id")
        for k, evs, r in self.rows(b, "FraudUserLogin", login, sorted(login)[:12]):
            d = [e["device_id"] for e in evs]
            self.assertEqual(r["fr_login_count_24h"], len(d))
            self.assertEqual(r["fr_devices_7d"], len(set(d)))
            self.assertEqual(r["fr_device_changes"], changes(d))
            self.assertEqual(r["fr_last_devices"], d[-3:])
            self.assertEqual(r["fr_device_known"], d[-1] in d[:-1])
            self.assertEqual(r["fr_login_ips_24h"], len({e["ip"] for e in evs}))
            checks["fraud logins"] += 1

    def spot_ecommerce(self, b, events, checks):
        views = by_key(events, "ShopPageView", "user_id")
        for k, evs, r in self.rows(b, "ShopUserViews", views, sorted(views)[:12]):
            pages = [e["page"] for e in evs]
            self.assertEqual((r["ec_views_1h"], r["ec_views_total"]), (len(pages), len(pages)))
            self.assertEqual(r["ec_pages_24h"], len(set(pages)))
            self.assertTrue(close(r["ec_page_entropy_24h"], entropy(pages)))
            self.assertEqual(r["ec_recent_pages"], pages[-5:])
            self.assertEqual(r["ec_first_pages"], pages[:3])
            self.assertEqual(sum(r["ec_view_hours"]), len(pages))
            checks["shop viewers"] += 1
        pages = by_key(events, "ShopPageView", "page")
        for k, evs, r in self.rows(b, "ShopPageStats", pages, sorted(pages)[:8]):
            self.assertEqual(r["ec_page_views_24h"], len(evs))
            self.assertEqual(r["ec_page_visitors_24h"], len({e["user_id"] for e in evs}))
            checks["shop pages"] += 1
        cart = by_key(events, "AddToCart", "user_id")
        edges = [25, 50, 100, 200]
        labels = ["<25", "25-50", "50-100", "100-200", ">=200"]
        for k, evs, r in self.rows(b, "ShopUserCart", cart, sorted(cart, key=lambda k: -len(cart[k]))[:12]):
            pr = [e["price"] for e in evs]
            self.assertEqual(r["ec_cart_adds_24h"], len(pr))
            self.assertTrue(close(r["ec_cart_value_24h"], sum(pr)))
            self.assertTrue(close(r["ec_cart_price_var"], sample_var(pr), 1e-8))
            hist = dict.fromkeys(labels, 0)
            for x in pr:
                i = next((j for j, e in enumerate(edges) if x < e), len(edges))
                hist[labels[i]] += 1
            self.assertEqual(r["ec_cart_price_hist"], hist)
            self.assertEqual(r["ec_cart_skus_7d"], len({e["sku"] for e in evs}))
            self.assertEqual(r["ec_cart_first_price"], pr[0])
            self.assertTrue(0.5 * sum(pr) <= r["ec_cart_value_decay"] <= sum(pr) * (1 + 1e-9))
            checks["shop carts"] += 1
        sku = by_key(events, "AddToCart", "sku")
        for k, evs, r in self.rows(b, "ShopSkuCart", sku, sorted(sku)[:8]):
            self.assertEqual(r["ec_sku_adds_24h"], len(evs))
            self.assertEqual(r["ec_sku_last_price"], evs[-1]["price"])
            self.assertEqual(r["ec_sku_buyers_24h"], len({e["user_id"] for e in evs}))
            checks["shop skus"] += 1
        buy = by_key(events, "Purchase", "user_id")
        for k, evs, r in self.rows(b, "ShopUserPurchase", buy, sorted(buy, key=lambda k: -len(buy[k]))[:12]):
            tot = [e["total"] for e in evs]
            self.assertEqual(r["ec_purchases"], len(tot))
            self.assertTrue(close(r["ec_revenue"], sum(tot)))
            self.assertTrue(close(r["ec_order_value_mean"], sum(tot) / len(tot)))
            self.assertEqual(r["ec_order_value_max"], max(tot))
            mix = collections.Counter(str(e["n_items"]) for e in evs)
            want = {c: m / len(evs) for c, m in mix.items()}
            self.assertEqual(set(r["ec_items_mix"]), set(want))
            self.assertTrue(all(close(r["ec_items_mix"][c], want[c]) for c in want))
            cur, best, neg = streaks([x >= 300.0 for x in tot])
            self.assertEqual((r["ec_big_order_streak"], r["ec_big_order_best_streak"], r["ec_small_order_run"]),
                             (cur, best, neg))
            self.assertIs(r["ec_has_purchased"], True)
            checks["shop purchases"] += 1

    def spot_adtech(self, b, events, checks):
        imp = by_key(events, "Impression", "campaign_id")
        for k, evs, r in self.rows(b, "AdCampaignDelivery", imp, sorted(imp)[:8]):
            pages = [e["page"] for e in evs]
            self.assertEqual((r["ad_impressions_1h"], r["ad_impressions"]), (len(evs), len(evs)))
            self.assertEqual(r["ad_reach_24h"], len({e["user_id"] for e in evs}))
            self.assertEqual(r["ad_top_pages_24h"], top_k(pages, 3))
            self.assertTrue(close(r["ad_home_share_24h"], pages.count("/home") / len(pages)))
            cnt = collections.Counter(pages)
            self.assertEqual(set(r["ad_page_mix"]), set(cnt))
            self.assertTrue(all(close(r["ad_page_mix"][p], cnt[p] / len(pages)) for p in cnt))
            checks["ad campaigns (impressions)"] += 1
        uc = by_key(events, "Impression", "user_id", "campaign_id")
        for k, evs, r in self.rows(b, "AdUserCampaignFreq", uc, sorted(uc, key=lambda k: -len(uc[k]))[:10]):
            self.assertEqual(r["ad_uc_impressions"], len(evs))
            self.assertIs(r["ad_uc_recent_24h"], True)
            checks["ad user|campaign"] += 1
        clk = by_key(events, "Click", "campaign_id")
        for k, evs, r in self.rows(b, "AdCampaignClicks", clk, sorted(clk)[:8]):
            self.assertEqual(r["ad_clicks_1h"], len(evs))
            self.assertEqual(r["ad_clickers_24h"], len({e["user_id"] for e in evs}))
            self.assertTrue(1 <= r["ad_click_burst"] <= len(evs))
            self.assertEqual(sum(r["ad_clicks_by_dow_hour"].values()), len(evs))
            checks["ad campaigns (clicks)"] += 1
        conv = by_key(events, "Conversion", "campaign_id")
        for k, evs, r in self.rows(b, "AdCampaignValue", conv, sorted(conv)[:8]):
            v = [e["value"] for e in evs]
            self.assertEqual(r["ad_conversions"], len(v))
            self.assertTrue(close(r["ad_value_sum_24h"], sum(v)))
            self.assertTrue(close(r["ad_value_p50_24h"], quantile(v, 0.5)))
            self.assertEqual(r["ad_value_sample"], reservoir(v, 10))
            self.assertEqual(r["ad_value_outliers"], outliers(v, 3.0))
            self.assertGreaterEqual(r["ad_value_ewvar"], 0)
            self.assertTrue(min(v) - 1e-9 <= r["ad_value_twa"] <= max(v) + 1e-9)
            checks["ad campaigns (conversions)"] += 1
        cu = by_key(events, "Conversion", "user_id")
        for k, evs, r in self.rows(b, "AdUserConversions", cu, sorted(cu, key=lambda k: -len(cu[k]))[:10]):
            self.assertEqual(r["ad_user_conversions"], len(evs))
            self.assertEqual(r["ad_user_value_min"], min(e["value"] for e in evs))
            checks["ad users (conversions)"] += 1



class ExprParam(unittest.TestCase):
    """An `expr` param the reference ignored is evaluated (here as the value
    of n_unique/entropy/sum when no `field` is given)."""

    def test_expr_is_evaluated(self):
        pipe = {"nodes": [
            {"kind": "event", "name": "Geo", "schema": {"fields": {"u": "str", "lat": "f64", "lon": "f64", "n": "i64"}}},
            {"kind": "derivation", "name": "GeoStats", "output_kind": "table", "upstreams": ["Geo"],
             "ops": [{"op": "group_by", "keys": ["u"], "agg": {
                 "cells": {"op": "n_unique", "params": {"expr": "quadkey(lat, lon, 7)"}},
                 "twice": {"op": "sum", "params": {"expr": "n * 2"}}}}],
             "table_primary_key": ["u"]}]}
        with Beava() as b:
            self.assertEqual(b.register(pipe)[0], 200)
            for lat, lon, n in ((48.85, 2.35, 1), (48.86, 2.35, 2), (40.71, -74.0, 3)):
                self.assertEqual(b.push("Geo", {"u": "a", "lat": lat, "lon": lon, "n": n})[0], 200)
            self.assertEqual(b.get("GeoStats", "a")[1], {"cells": 2, "twice": 12.0})
            bad = json.loads(json.dumps(pipe))
            bad["nodes"][1]["ops"][0]["agg"]["cells"]["params"]["expr"] = "quadkey(nope, lon, 7)"
            st, body = b.register(bad, force=True)
            self.assertEqual((st, body["error"]["code"]), (400, "invalid_expression"))

if __name__ == "__main__":
    main()
