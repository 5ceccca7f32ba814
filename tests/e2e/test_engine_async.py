"""The rebuilt engine through the real binary: asynchronous acks on the TCP listener.

- a paused shard (test-mode hook) delays neither pings, gets nor pushes for other shards
  on the same I/O thread, and its own keys get `overloaded` at once once its ring is full;
- FIFO reply order with pipelined frames spread over every shard, gets interleaved;
- the listener's limits: connection cap, idle timeout, frame deadline, partial-frame budget;
- the admin token guards OP_REGISTER / OP_RESET on TCP as on HTTP (OP_AUTH);
- a WAL written by the new engine replays to exactly the live state;
- registry changes never wait for a shard: a change that adds, widens or removes a table
  is applied beside a paused shard, and pushes, gets and pings on the other shard go on; pushes racing registers of every kind are judged on
  exactly the version their LSN follows (batch and sync durability), and the WAL of the
  race replays to the live state; a register whose record the log voids (full disk, sync)
  is refused and changes nothing, in memory or after a restart;
- a costly batch (its inline part on one shard, the rest on the shard threads) keeps the
  order of every key's updates and answers in FIFO order;
- a burst of connections is spread over the I/O threads (handed over between them) and
  every one is served, in order, while two I/O threads meet on the same shards (the work
  queued behind an inline application is applied by its holder);
- a push still waiting for its shard when the server is stopped (SIGTERM), past the HTTP
  listener's drain, is answered before the server exits, and the exit is clean (the stop
  waits for it instead of freeing the listener under it);
- sync durability from many connections at once (TCP pipelined and HTTP): every key's
  updates are applied in LSN order, exactly once per acknowledged push (one fsync covers
  many parked batches); on a full disk the
  pushes whose records are voided answer 503 wal_unavailable and are not applied, the
  others keep that order, and a restart replays to the live state.
"""
import json
import os
import signal
import socket
import struct
import tempfile
import time
import unittest

from harness import Beava, fill_disk, main, small_tmpfs_data_dir
from test_tcp import PIPE, Conn, frame, mp_pack


def tcp_addr(b, timeout=10):
    """The TCP listener's address (its log line may come just after the HTTP one)."""
    deadline = time.time() + timeout
    while "server.tcp_bound" not in b.bound and time.time() < deadline:
        time.sleep(0.02)
    return b.bound["server.tcp_bound"]


def shard_of(b, table, key):
    st, _, body = b.raw("POST", "/debug/shard-of", {"table": table, "key": key}, which="admin")
    assert st == 200, body
    return json.loads(body)["shard"]


def keys_on(b, shard, n, prefix="k"):
    out, i = [], 0
    while len(out) < n:
        k = "%s%d" % (prefix, i)
        if shard_of(b, "PerUser", k) == shard:
            out.append(k)
        i += 1
    return out


def push_frame(user, n=1, op=0x0010):
    return frame(op, 1, json.dumps({"event": "Click", "body": {"user": user, "n": n}}).encode())


def admin_metrics(b):
    """The admin /metrics as {name (with labels): value text}."""
    text = b.raw("GET", "/metrics", which="admin")[2].decode()
    return dict(l.split(" ", 1) for l in text.splitlines() if l and not l.startswith("#"))


def metric(b, name):
    """One /metrics value as a number, or None when absent."""
    v = admin_metrics(b).get(name)
    return None if v is None else float(v)


def wait_wal_durable(b, timeout=30):
    """Until every WAL record the server wrote is durable (its /metrics say so), at most timeout s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = admin_metrics(b)
        if m.get("beava_wal_durable_lsn") == m.get("beava_wal_records_total"):
            return
        time.sleep(0.05)


def versions_retained(b, timeout=10):
    """beava_registry_versions_retained once it is 1 (the replaced registry versions freed
    by the sweeper), or its value after timeout s."""
    deadline = time.time() + timeout
    while True:
        v = admin_metrics(b).get("beava_registry_versions_retained")
        if v == "1" or time.time() >= deadline:
            return v
        time.sleep(0.05)


class PausedShard(unittest.TestCase):
    def test_other_shards_unaffected_and_overload_is_prompt(self):
        # one I/O thread, so every connection below shares it; a small ring
        with Beava(test_mode=True, args=["--io-threads", "1", "--shards", "2"],
                   env={"BEAVA_SHARD_QUEUE": "16"}) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            k0 = keys_on(b, 0, 1, "a")[0]
            k1 = keys_on(b, 1, 1, "b")[0]
            st, _, _ = b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": True}, which="admin")
            self.assertEqual(st, 200)
            try:
                addr = tcp_addr(b)
                stuck = Conn(addr)
                stuck.send(b"".join(push_frame(k0, i) for i in range(40)))   # 16 fit, 24 overloaded
                time.sleep(0.3)
                other = Conn(addr)
                t0 = time.monotonic()
                self.assertEqual(other.call(0x0000, {})[0], 0x0000)
                op, _, ack = other.call(0x0010, {"event": "Click", "body": {"user": k1, "n": 5}})
                self.assertEqual(op, 0x0010, ack)
                op, _, row = other.call(0x0020, {"table": "PerUser", "key": k1})
                self.assertEqual((op, row["clicks"]), (0x0023, 1))
                # the paused shard's own keys: its ring is full, so overloaded at once
                op, _, err = other.call(0x0010, {"event": "Click", "body": {"user": k0, "n": 1}})
                self.assertEqual((op, err["error"]["code"]), (0xFFFF, "overloaded"))
                self.assertLess(time.monotonic() - t0, 5.0)     # generous: not a timing claim, a liveness one
                # the stuck connection has had no answer yet
                stuck.s.settimeout(0.2)
                with self.assertRaises(socket.timeout):
                    stuck.s.recv(1)
                stuck.s.settimeout(10)
            finally:
                b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            codes = []
            for i in range(40):
                op, _, body = stuck.recv_frame()
                codes.append("ack" if op == 0x0010 else body["error"]["code"])
            self.assertEqual(codes, ["ack"] * 16 + ["overloaded"] * 24)
            self.assertEqual(b.get("PerUser", k0)[1]["clicks"], 16)


    def pause_under_a_push(self, b):
        """Register, pause shard 0 and leave one push to it waiting: (tcp address, the
        pushing connection, its key)."""
        self.assertEqual(b.register(PIPE)[0], 200)
        k0 = keys_on(b, 0, 1, "a")[0]
        self.assertEqual(b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": True}, which="admin")[0], 200)
        addr = tcp_addr(b)
        stuck = Conn(addr)
        stuck.send(push_frame(k0, 1))
        time.sleep(0.2)
        return addr, stuck, k0

    def assert_unanswered(self, conn):
        conn.s.settimeout(0.2)
        with self.assertRaises(socket.timeout):
            conn.s.recv(1)
        conn.s.settimeout(10)

    def test_registers_that_change_nothing_do_not_wait_for_a_paused_shard(self):
        # judged beside pushes: an invalid body, a dry run, a 409 and a no-op are answered
        # while a push waits on the paused shard (a change would wait for it: the barrier)
        with Beava(test_mode=True, args=["--io-threads", "1", "--shards", "2"]) as b:
            addr, stuck, k0 = self.pause_under_a_push(b)
            try:
                c = Conn(addr)
                op, _, body = c.call(0x0001, {"nodes": [{"kind": "bogus", "name": "X"}]})
                self.assertEqual(op, 0xFFFF, body)
                op, _, body = c.call(0x0001, {"nodes": PIPE["nodes"], "dry_run": True})
                self.assertEqual((op, body["would_apply"]), (0x0001, False), body)
                op, _, body = c.call(0x0001, {"nodes": [PIPE["nodes"][0]]})
                self.assertEqual((op, body["error"]["code"]), (0xFFFF, "force_required"), body)
                op, _, body = c.call(0x0001, dict(PIPE))
                self.assertEqual((op, body["registry_version"]), (0x0001, 1), body)
                st, hb = b.register({"nodes": [{"kind": "bogus", "name": "X"}]})
                self.assertEqual(st, 400, hb)
                self.assert_unanswered(stuck)      # the push is still waiting
            finally:
                b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            self.assertEqual(stuck.recv_frame()[0], 0x0010)
            self.assertEqual(b.get("PerUser", k0)[1]["clicks"], 1)

    def test_additive_register_does_not_wait_for_a_paused_shard(self):
        # a change that only adds descriptors and tables touches nothing a shard reads: it
        # is applied while shard 0 sits paused under a queued push, and pushes and gets on
        # the other shard, on other connections of the only I/O thread, go on around it
        with Beava(test_mode=True, args=["--io-threads", "1", "--shards", "2"]) as b:
            addr, stuck, k0 = self.pause_under_a_push(b)
            try:
                reg = Conn(addr)
                grown = {"nodes": PIPE["nodes"] + [
                    {"kind": "event", "name": "Extra", "schema": {"fields": {"x": "i64"}, "optional_fields": []}},
                    {"kind": "derivation", "name": "Seen", "output_kind": "table", "upstreams": ["Click"],
                     "ops": [{"op": "group_by", "keys": ["user"], "agg": {"seen": {"op": "count"}}}],
                     "table_primary_key": ["user"]}]}
                op, _, body = reg.call(0x0001, grown)
                self.assertEqual((op, body["registry_version"]), (0x0001, 2), body)
                # a key whose parts (PerUser and the new Seen) both live on shard 1
                k1 = next(k for k in ("b%d" % i for i in range(1000))
                          if shard_of(b, "PerUser", k) == 1 and shard_of(b, "Seen", k) == 1)
                other = Conn(addr)
                op, _, ack = other.call(0x0010, {"event": "Click", "body": {"user": k1, "n": 5}})
                self.assertEqual((op, ack["registry_version"]), (0x0010, 2), ack)
                self.assertEqual(other.call(0x0010, {"event": "Extra", "body": {"x": 1}})[0], 0x0010)
                op, _, row = other.call(0x0020, {"table": "Seen", "key": k1})
                self.assertEqual((op, row), (0x0023, {"seen": 1}))
                self.assertEqual(other.call(0x0000, {})[2]["registry_version"], 2)
                self.assert_unanswered(stuck)      # the push queued before it still waits
            finally:
                b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            op, _, ack = stuck.recv_frame()
            # sequenced before the register: judged on version 1, and it feeds no table of version 2
            self.assertEqual((op, ack["registry_version"]), (0x0010, 1), ack)
            self.assertEqual(b.get("PerUser", k0)[1]["clicks"], 1)
            self.assertEqual(b.get("Seen", k0)[1], {})

    def test_widening_register_does_not_wait_for_a_paused_shard(self):
        # a widened table gets new arrays; the push queued before the change applies with
        # the ones it was judged with, so the change need not wait for the paused shard
        with Beava(test_mode=True, args=["--io-threads", "1", "--shards", "2"]) as b:
            addr, stuck, k0 = self.pause_under_a_push(b)
            k1 = keys_on(b, 1, 1, "b")[0]
            self.assertEqual(b.push("Click", {"user": k1, "n": 2})[0], 200)
            wide = json.loads(json.dumps(PIPE))
            wide["nodes"][1]["ops"][0]["agg"]["n_max"] = {"op": "max", "params": {"field": "n"}}
            try:
                reg = Conn(addr)
                op, _, body = reg.call(0x0001, wide)
                self.assertEqual((op, body["registry_version"]), (0x0001, 2), body)
                other = Conn(addr)
                op, _, ack = other.call(0x0010, {"event": "Click", "body": {"user": k1, "n": 7}})
                self.assertEqual((op, ack["registry_version"]), (0x0010, 2), ack)
                op, _, row = other.call(0x0020, {"table": "PerUser", "key": k1})
                self.assertEqual((op, row), (0x0023, {"clicks": 2, "n_sum": 9, "n_max": 7}))
                op, _, row = other.call(0x0020, {"table": "PerUser", "key": k0})   # the paused shard reads too
                self.assertEqual((op, row), (0x0023, {}))
                self.assert_unanswered(stuck)
            finally:
                b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            op, _, ack = stuck.recv_frame()
            self.assertEqual((op, ack["registry_version"]), (0x0010, 1), ack)
            # the new slot starts with the register: the push sequenced before it is not in it
            self.assertEqual(b.get("PerUser", k0)[1], {"clicks": 1, "n_sum": 1, "n_max": None})

    def test_removing_register_does_not_wait_for_a_paused_shard(self):
        # a removed table is retired, not freed, while parts judged before the removal may
        # still be queued: the push waiting on the paused shard applies to it later, and
        # nobody can read it; the new registry serves at once
        with Beava(test_mode=True, args=["--io-threads", "1", "--shards", "2"]) as b:
            addr, stuck, k0 = self.pause_under_a_push(b)
            sums = {"kind": "derivation", "name": "Sums", "output_kind": "table", "upstreams": ["Click"],
                    "ops": [{"op": "group_by", "keys": ["user"], "agg": {"s": {"op": "sum", "params": {"field": "n"}}}}],
                    "table_primary_key": ["user"]}
            shrunk = {"nodes": [PIPE["nodes"][0], sums], "force": True}
            try:
                reg = Conn(addr)
                op, _, body = reg.call(0x0001, shrunk)
                self.assertEqual((op, body["registry_version"]), (0x0001, 2), body)
                k1 = next(k for k in ("b%d" % i for i in range(1000)) if shard_of(b, "Sums", k) == 1)
                other = Conn(addr)
                op, _, ack = other.call(0x0010, {"event": "Click", "body": {"user": k1, "n": 7}})
                self.assertEqual((op, ack["registry_version"]), (0x0010, 2), ack)
                self.assertEqual(other.call(0x0020, {"table": "Sums", "key": k1}), (0x0023, 1, {"s": 7}))
                op, _, err = other.call(0x0020, {"table": "PerUser", "key": k0})
                self.assertEqual((op, err["error"]["code"]), (0xFFFF, "unknown_table"))
                self.assert_unanswered(stuck)
            finally:
                b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
            op, _, ack = stuck.recv_frame()
            self.assertEqual((op, ack["registry_version"]), (0x0010, 1), ack)
            self.assertEqual(b.get("PerUser", k0)[0], 404)
            self.assertEqual(b.get("Sums", k0)[1], {})      # judged before Sums existed
            # the retired table is released once the shards are idle (the sweeper), and a
            # table of the same name starts empty
            time.sleep(0.5)
            st, body = b.register({"nodes": PIPE["nodes"] + [sums]})
            self.assertEqual((st, body["registry_version"]), (200, 3), body)
            self.assertEqual(b.get("PerUser", k0)[1], {})


class Fifo(unittest.TestCase):
    def test_pipelined_frames_over_all_shards_answer_in_order(self):
        with Beava(test_mode=True, args=["--shards", "2"]) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            c = Conn(tcp_addr(b))
            users = ["u%d" % i for i in range(37)]
            seq, expect, counts = [], [], {}
            for i in range(1500):
                u = users[(i * 7) % len(users)]
                if i % 5 == 4:
                    seq.append(frame(0x0020, 1, json.dumps({"table": "PerUser", "key": u}).encode()))
                    expect.append(("get", u, counts.get(u, 0)))
                else:
                    seq.append(push_frame(u, i, 0x0011 if i % 50 == 0 else 0x0010))
                    counts[u] = counts.get(u, 0) + 1
                    expect.append(("push", u, 0x0011 if i % 50 == 0 else 0x0010))
            c.send(b"".join(seq))
            last = 0
            for kind, u, want in expect:
                op, _, body = c.recv_frame()
                if kind == "get":
                    self.assertEqual(op, 0x0023)
                    self.assertEqual(body.get("clicks", 0), want, (u, body))
                else:
                    self.assertEqual(op, want, body)
                    self.assertGreater(body["ack_lsn"], last)
                    last = body["ack_lsn"]
            # read-your-writes from another connection
            c2 = Conn(tcp_addr(b))
            for u in users:
                op, _, row = c2.call(0x0020, {"table": "PerUser", "key": u})
                self.assertEqual(row.get("clicks", 0), counts.get(u, 0))


class Limits(unittest.TestCase):
    def test_connection_cap(self):
        with Beava(env={"BEAVA_TCP_MAX_CONNECTIONS": "4"}) as b:
            addr = tcp_addr(b)
            held = [Conn(addr) for _ in range(4)]
            for c in held:
                self.assertEqual(c.call(0x0000, {})[0], 0x0000)
            extra = Conn(addr)
            self.assertTrue(extra.closed())
            held[0].close()
            time.sleep(0.3)
            again = Conn(addr)
            self.assertEqual(again.call(0x0000, {})[0], 0x0000)
            st, _, text = b.raw("GET", "/metrics", which="admin")
            self.assertIn("beava_tcp_connections_refused_total 1", text.decode())

    def test_idle_timeout_and_frame_deadline(self):
        with Beava(env={"BEAVA_TCP_IDLE_TIMEOUT_S": "2", "BEAVA_TCP_FRAME_TIMEOUT_MS": "500"}) as b:
            addr = tcp_addr(b)
            idle = Conn(addr)
            self.assertEqual(idle.call(0x0000, {})[0], 0x0000)
            slow = Conn(addr)
            slow.send(struct.pack(">IHB", 100, 0x0000, 1) + b"{")     # 97 more bytes never come
            op, _, body = slow.recv_frame()
            self.assertEqual((op, body["error"]["code"]), (0xFFFF, "frame_timeout"))
            self.assertTrue(slow.closed())
            self.assertTrue(idle.closed())
            busy = Conn(addr)
            for _ in range(8):           # a connection in use is not idle
                time.sleep(0.3)
                self.assertEqual(busy.call(0x0000, {})[0], 0x0000)

    def test_slow_connections_do_not_lock_out_a_normal_client(self):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 4096)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < 1700:
            self.skipTest("RLIMIT_NOFILE too small for 1,500 connections")
        with Beava(test_mode=True) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            addr = tcp_addr(b)
            host, port = addr.rsplit(":", 1)
            slow = []
            try:
                for i in range(1500):
                    s = socket.create_connection((host, int(port)), timeout=10)
                    s.send(struct.pack(">IHB", 64, 0x0010, 1)[: 1 + i % 6])   # a frame that never completes
                    slow.append(s)
                c = Conn(addr)
                for i in range(50):
                    op, _, ack = c.call(0x0010, {"event": "Click", "body": {"user": "normal", "n": i}})
                    self.assertEqual(op, 0x0010, ack)
                self.assertEqual(c.call(0x0020, {"table": "PerUser", "key": "normal"})[2]["clicks"], 50)
                text = b.raw("GET", "/metrics", which="admin")[2].decode()
                self.assertIn("beava_tcp_connections_open 15", text)   # 1,501 or so: the slow ones are held, not refused
            finally:
                for s in slow:
                    s.close()

    def test_partial_frame_budget(self):
        with Beava(env={"BEAVA_PARTIAL_BODY_BUDGET_BYTES": str(7 << 19), "BEAVA_TCP_MAX_FRAME_BYTES": str(4 << 20)}) as b:
            addr = tcp_addr(b)
            conns = []
            refused = 0
            for i in range(4):
                c = Conn(addr)
                conns.append(c)
                c.send(struct.pack(">IHB", (1 << 20) + 3, 0x0010, 1) + b" " * (64 << 10))
                time.sleep(0.2)
            for c in conns[3:]:
                op, _, body = c.recv_frame()
                self.assertEqual((op, body["error"]["code"]), (0xFFFF, "overloaded"))
                self.assertTrue(c.closed())
                refused += 1
            self.assertEqual(refused, 1)
            # the held budget comes back when those connections go
            for c in conns[:3]:
                c.close()
            time.sleep(0.5)
            fresh = Conn(addr)
            fresh.send(struct.pack(">IHB", (1 << 20) + 3, 0x0010, 1) + b" " * (64 << 10))
            fresh.s.settimeout(0.5)
            with self.assertRaises(socket.timeout):
                fresh.s.recv(1)


class Utf8(unittest.TestCase):
    def test_msgpack_strings_are_checked_like_json(self):
        with Beava(test_mode=True) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            c = Conn(tcp_addr(b))
            # {"event":"Click","body":{"\xff\xfe":1}} with a raw, invalid UTF-8 key
            bad_key = b"\x82\xa5event\xa5Click\xa4body\x81\xa2\xff\xfe\x01"
            c.send(frame(0x0010, 2, bad_key))
            op, ct, body = c.recv_frame()           # recv_frame json-decodes: the body is valid JSON
            self.assertEqual((op, body["error"]["code"]), (0xFFFF, "invalid_utf8"))
            self.assertIn("body", body["error"]["message"])
            bad_value = b"\x82\xa5event\xa5Click\xa4body\x82\xa4user\xa2\xc3\x28\xa1n\x01"
            c.send(frame(0x0010, 2, bad_value))
            op, ct, body = c.recv_frame()
            self.assertEqual((op, body["error"]["code"]), (0xFFFF, "invalid_utf8"))
            # nothing was applied, and the connection goes on
            self.assertEqual(c.call(0x0020, {"table": "PerUser", "key": "x"})[0], 0x0023)
            self.assertEqual(c.call(0x0000, {})[0], 0x0000)


class Auth(unittest.TestCase):
    def test_register_and_reset_need_the_token_on_tcp(self):
        with tempfile.TemporaryDirectory() as d:
            tok = os.path.join(d, "token")
            with open(tok, "w") as f:
                f.write("s3cret-token-0123456789\n")
            with Beava(test_mode=True, env={"BEAVA_ADMIN_TOKEN_FILE": tok}) as b:
                c = Conn(tcp_addr(b))
                evil = {"nodes": [{"kind": "event", "name": "Evil", "schema": {"fields": {"a": "str"}}}], "force": True}
                op, _, body = c.call(0x0001, evil)
                self.assertEqual((op, body["error"]["code"]), (0xFFFF, "unauthorized"))
                op, _, body = c.call(0x0040, {})
                self.assertEqual((op, body["error"]["code"]), (0xFFFF, "unauthorized"))
                self.assertEqual(c.call(0x0000, {})[2]["registry_version"], 0)
                op, _, body = c.call(0x0050, {"token": "wrong-token-000000000"})
                self.assertEqual((op, body["error"]["code"]), (0xFFFF, "unauthorized"))
                op, _, body = c.call(0x0001, evil)
                self.assertEqual(body["error"]["code"], "unauthorized")
                op, _, body = c.call(0x0050, {"token": "s3cret-token-0123456789"})
                self.assertEqual((op, body), (0x0050, {"authenticated": True}))
                op, _, body = c.call(0x0001, PIPE)
                self.assertEqual((op, body["registry_version"]), (0x0001, 1))
                # another connection has not authenticated
                c2 = Conn(tcp_addr(b))
                self.assertEqual(c2.call(0x0040, {})[2]["error"]["code"], "unauthorized")
                # pushes and reads stay open
                self.assertEqual(c2.call(0x0010, {"event": "Click", "body": {"user": "x", "n": 1}})[0], 0x0010)


class Replay(unittest.TestCase):
    def test_wal_of_the_new_engine_replays_to_the_live_state(self):
        with tempfile.TemporaryDirectory() as d:
            env = {"BEAVA_WAL_DIR": os.path.join(d, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(d, "snapshots")}
            b = Beava(memory_only=False, data_dir=d, test_mode=True, env=env).start()
            try:
                self.assertEqual(b.register(PIPE)[0], 200)
                c = Conn(tcp_addr(b))
                c.send(b"".join(push_frame("r%d" % (i % 53), i) for i in range(3000)))
                for _ in range(3000):
                    self.assertEqual(c.recv_frame()[0], 0x0010)
                for i in range(200):
                    self.assertEqual(b.push("Click", {"user": "h%d" % (i % 7), "n": i})[0], 200)
                many = {"events": [{"event": "Click", "body": {"user": "m%d" % (i % 11), "n": i}} for i in range(500)]}
                op, _, body = c.call(0x0012, many, ct=2)
                self.assertEqual(len(body["acks"]), 500)
                users = ["r%d" % i for i in range(53)] + ["h%d" % i for i in range(7)] + ["m%d" % i for i in range(11)]
                live = {u: b.get("PerUser", u)[1] for u in users}
                version = c.call(0x0000, {})[2]["registry_version"]
                # batch durability: wait until every record is on disk, then kill -9
                wait_wal_durable(b)
                b.stop(sig=9)
            finally:
                if b.proc and b.proc.poll() is None:
                    b.stop()
            b2 = Beava(memory_only=False, data_dir=d, test_mode=True, env=env).start()
            try:
                again = {u: b2.get("PerUser", u)[1] for u in users}
                self.assertEqual(again, live)
                c = Conn(b2.bound["server.tcp_bound"])
                self.assertEqual(c.call(0x0000, {})[2]["registry_version"], version)
            finally:
                b2.stop()


def evolving_pipes():
    """Registry version 1 and the changes 2..5, one of each kind: a new field (w, required
    from then on), a widened live table (PerUser gains w_sum; its prefix chain, which
    queued parts' chained rows point into, is replaced), a new table (Seen), a removed
    table (Seen, forced) beside a new one (ByW)."""
    click = {"kind": "event", "name": "Click",
             "schema": {"fields": {"user": "str", "n": "i64", "w": "i64"}, "optional_fields": []}}
    def table(name, agg, pre=()):
        return {"kind": "derivation", "name": name, "output_kind": "table", "upstreams": ["Click"],
                "ops": list(pre) + [{"op": "group_by", "keys": ["user"], "agg": agg}], "table_primary_key": ["user"]}
    pre = [{"op": "with_columns", "exprs": {"n2": "(n * 2)"}}]
    agg = {"clicks": {"op": "count"}, "n_sum": {"op": "sum", "params": {"field": "n"}},
           "n2_sum": {"op": "sum", "params": {"field": "n2"}}}
    per_user = table("PerUser", agg, pre)
    wide = table("PerUser", dict(agg, w_sum={"op": "sum", "params": {"field": "w"}}), pre)
    seen = table("Seen", {"seen": {"op": "count"}})
    by_w = table("ByW", {"bw": {"op": "sum", "params": {"field": "w"}}})
    return [{"nodes": [PIPE["nodes"][0], per_user]}, {"nodes": [click, per_user]}, {"nodes": [click, wide]},
            {"nodes": [click, wide, seen]}, {"nodes": [click, wide, by_w], "force": True}]


class RegisterRace(unittest.TestCase):
    """Pushes on several connections race registers of every kind; each push is judged on
    exactly the registry its LSN follows, and a WAL of it all replays to the live state."""
    USERS = 23

    def pusher(self, addr, tag, stop, log, errors):
        try:
            c = Conn(addr)
            i = 0
            while not stop.is_set():
                burst, sent = [], []
                for _ in range(16):
                    u = "%s%d" % (tag, i % self.USERS)
                    body = {"user": u, "n": 1}
                    if i % 2:
                        body["w"] = i % 7 + 1
                    op = 0x0011 if i % 13 == 0 else 0x0010
                    burst.append(frame(op, 1, json.dumps({"event": "Click", "body": body}).encode()))
                    sent.append(body)
                    i += 1
                c.send(b"".join(burst))
                for body in sent:
                    op, _, reply = c.recv_frame()
                    log.append((body, op, reply))
            c.s.close()
        except Exception as ex:    # reported by the test: assertions in threads do not fail it
            errors.append(ex)

    def test_pushes_racing_registers_are_judged_on_their_version_and_replay_to_the_live_state(self):
        # batch durability: a change is applied at its append; sync: behind the gate (the
        # pushes that meet it are held and judged again); the removal drains either way
        for mode in ("batch", "sync"):
            with self.subTest(durability=mode):
                self.race_and_replay(mode)

    def race_and_replay(self, mode):
        import threading
        with tempfile.TemporaryDirectory() as d:
            env = {"BEAVA_WAL_DIR": os.path.join(d, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(d, "snapshots")}
            b = Beava(memory_only=False, data_dir=d, test_mode=True, args=["--shards", "2", "--durability", mode], env=env).start()
            try:
                pipes = evolving_pipes()
                self.assertEqual(b.register(pipes[0])[0], 200)
                addr = tcp_addr(b)
                stop, errors = threading.Event(), []
                logs = [[] for _ in range(3)]
                ts = [threading.Thread(target=self.pusher, args=(addr, "p%d_" % k, stop, logs[k], errors))
                      for k in range(3)]
                for t in ts:
                    t.start()
                for pipe in pipes[1:]:
                    time.sleep(0.15)
                    st, body = b.register(pipe)
                    self.assertEqual(st, 200, body)
                time.sleep(0.15)
                stop.set()
                for t in ts:
                    t.join()
                self.assertEqual(errors, [])
                want = {}
                seen_versions = set()
                for body, op, reply in (x for log in logs for x in log):
                    if op == 0xFFFF:
                        # w before it existed, or no w once it is required: nothing else fails
                        code, v = reply["error"]["code"], reply["registry_version"]
                        if "w" in body:
                            self.assertEqual((code, v < 2), ("unknown_field_v0", True), (body, reply))
                        else:
                            self.assertEqual((code, v >= 2), ("invalid_event", True), (body, reply))
                        continue
                    v = reply["registry_version"]
                    seen_versions.add(v)
                    self.assertEqual("w" in body, v >= 2, (body, reply))
                    row = want.setdefault(body["user"], {"clicks": 0, "w_sum": 0, "bw": 0})
                    row["clicks"] += 1
                    row["w_sum"] += body.get("w", 0) if v >= 3 else 0
                    row["bw"] += body.get("w", 0) if v >= 5 else 0
                self.assertGreaterEqual(len(seen_versions), 3, seen_versions)   # the race did happen
                live = {}
                for u, w in want.items():
                    st, row = b.get("PerUser", u)
                    self.assertEqual(st, 200)
                    self.assertEqual((row["clicks"], row["n_sum"], row["n2_sum"], row["w_sum"] or 0),
                                     (w["clicks"], w["clicks"], 2 * w["clicks"], w["w_sum"]), (u, row, w))
                    st, bw = b.get("ByW", u)
                    self.assertEqual((st, (bw or {}).get("bw") or 0), (200, w["bw"]), (u, bw, w))
                    live[u] = (row, bw)
                self.assertEqual(b.get("Seen", "p0_0")[0], 404)
                version = Conn(addr).call(0x0000, {})[2]["registry_version"]
                self.assertEqual(version, 5)
                # every version the changes replaced is freed once nothing reads it
                self.assertEqual(versions_retained(b), "1")
                wait_wal_durable(b)
                b.stop(sig=9)
            finally:
                if b.proc and b.proc.poll() is None:
                    b.stop()
            b2 = Beava(memory_only=False, data_dir=d, test_mode=True, args=["--shards", "2", "--durability", mode], env=env).start()
            try:
                again = {u: (b2.get("PerUser", u)[1], b2.get("ByW", u)[1]) for u in live}
                self.assertEqual(again, live)
                c = Conn(b2.bound["server.tcp_bound"])
                self.assertEqual(c.call(0x0000, {})[2]["registry_version"], version)
            finally:
                b2.stop()


class RegisterNotDurable(unittest.TestCase):
    """Sync durability on a real full disk (a small tmpfs; needs root to mount): a register
    whose record cannot be made durable is refused and changes nothing, in memory or on
    disk, and pushes go on against the unchanged registry."""

    def test_register_whose_record_fails_changes_nothing(self):
        mnt, d = small_tmpfs_data_dir(self, "beava-regfull-")
        env = {"BEAVA_WAL_DIR": os.path.join(d, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(d, "snapshots"),
               "BEAVA_SNAPSHOT_INTERVAL_S": "3600"}
        args = ["--durability", "sync", "--shards", "2"]
        # a body far larger than whatever room the last page of the segment has left
        big = {"nodes": PIPE["nodes"] + [
            {"kind": "event", "name": "Big%d" % i,
             "schema": {"fields": {"field_%d_%d" % (i, k): "i64" for k in range(12)}, "optional_fields": []}}
            for i in range(200)]}
        b = Beava(memory_only=False, data_dir=d, test_mode=True, args=args, env=env).start()
        try:
            self.assertEqual(b.register(PIPE)[0], 200)
            for i in range(10):
                self.assertEqual(b.push("Click", {"user": "u", "n": i})[0], 200)
            filler = fill_disk(mnt)
            # the register's own record is the first write to meet the full disk: appended
            # (gate raised), then voided by the log, so nothing is applied
            st, body = b.register(big)
            self.assertEqual((st, body["error"]["code"]), (503, "wal_unavailable"), body)
            self.assertIn("registry not mutated", body["error"]["reason"])
            text = b.raw("GET", "/metrics", which="admin")[2].decode()
            self.assertIn("beava_wal_failed_records_total 1\n", text)     # it was appended, then voided
            c = Conn(tcp_addr(b))
            self.assertEqual(c.call(0x0000, {})[2]["registry_version"], 1)
            self.assertEqual(b.push("Big0", {"field_0_%d" % k: k for k in range(12)})[0], 404)
            # pushes go on against the unchanged registry (refused while the log is degraded)
            acked = 0
            for i in range(20):
                op, _, a = c.call(0x0010, {"event": "Click", "body": {"user": "v", "n": i}})
                if op == 0x0010:
                    self.assertEqual(a["registry_version"], 1, a)
                    acked += 1
                else:
                    self.assertEqual(a["error"]["code"], "wal_unavailable", a)
            self.assertEqual(b.get("PerUser", "v")[1].get("clicks", 0), acked)
            # space returns: the same register goes through, and survives a kill -9
            os.unlink(filler)
            deadline = time.time() + 30
            while time.time() < deadline:
                st, body = b.register(big)
                if st == 200:
                    break
                time.sleep(0.1)
            self.assertEqual((st, body["registry_version"]), (200, 2), body)
            self.assertEqual(b.push("Big0", {"field_0_%d" % k: k for k in range(12)})[0], 200)
            live = (b.get("PerUser", "u")[1], b.get("PerUser", "v")[1])
            b.stop(sig=9)
        finally:
            if b.proc and b.proc.poll() is None:
                b.stop()
        b2 = Beava(memory_only=False, data_dir=d, test_mode=True, args=args, env=env).start()
        try:
            self.assertEqual((b2.get("PerUser", "u")[1], b2.get("PerUser", "v")[1]), live)
            self.assertEqual(Conn(b2.bound["server.tcp_bound"]).call(0x0000, {})[2]["registry_version"], 2)
        finally:
            b2.stop()


def wide_pipe(nsums):
    """Two tables fed by one event, each wide enough that a pipelined run of pushes is a
    costly batch (more than 1024 feature updates) split across the shards."""
    def agg(tag):
        a = {tag + "_cnt": {"op": "count"}, tag + "_last": {"op": "last", "params": {"field": "v"}},
             tag + "_first": {"op": "first", "params": {"field": "v"}},
             tag + "_recent": {"op": "last_n", "params": {"field": "v", "n": 5}}}
        for i in range(nsums):
            a["%s_s%d" % (tag, i)] = {"op": "sum", "params": {"field": "v"}}
        return a
    return {"nodes": [
        {"kind": "event", "name": "Wide", "schema": {"fields": {"user": "str", "item": "str", "v": "i64"},
                                                    "optional_fields": []}},
        {"kind": "derivation", "name": "ByUser", "output_kind": "table", "upstreams": ["Wide"],
         "ops": [{"op": "group_by", "keys": ["user"], "agg": agg("u")}], "table_primary_key": ["user"]},
        {"kind": "derivation", "name": "ByItem", "output_kind": "table", "upstreams": ["Wide"],
         "ops": [{"op": "group_by", "keys": ["item"], "agg": agg("i")}], "table_primary_key": ["item"]},
    ]}


class CostlyBatch(unittest.TestCase):
    NSUMS = 40

    def check_rows(self, b, table, seen):
        c = Conn(tcp_addr(b))
        tag = table[2].lower()
        for key, vs in seen.items():
            op, _, row = c.call(0x0020, {"table": table, "key": key})
            self.assertEqual(op, 0x0023, row)
            self.assertEqual(row[tag + "_cnt"], len(vs), (table, key))
            self.assertEqual(row[tag + "_first"], vs[0], (table, key))
            self.assertEqual(row[tag + "_last"], vs[-1], (table, key))
            self.assertEqual(row[tag + "_recent"], vs[-5:], (table, key))
            if tag + "_s7" in row:
                self.assertEqual(row[tag + "_s7"], sum(vs), (table, key))
        c.s.close()

    def run_concurrent(self, b, addr, nconn, prefix, n, users, items):
        """run_conn on nconn connections at once, then every row checked."""
        import threading
        seen = [({}, {}) for _ in range(nconn)]
        errors = []

        def worker(k):
            try:
                self.run_conn(addr, "%sc%d" % (prefix, k), n, users, items, seen[k][0], seen[k][1])
            except Exception as ex:   # reported below: assertions in threads do not fail the test
                errors.append(ex)
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(nconn)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        for su, si in seen:
            self.check_rows(b, "ByUser", su)
            self.check_rows(b, "ByItem", si)

    def run_conn(self, addr, prefix, n, users, items, seen_u, seen_i):
        """Pipeline n pushes (gets interleaved) on one connection; check FIFO replies."""
        c = Conn(addr)
        seq, expect = [], []
        for i in range(n):
            u, it = "%su%d" % (prefix, (i * 7) % users), "%si%d" % (prefix, (i * 5) % items)
            if i % 97 == 96:
                seq.append(frame(0x0020, 1, json.dumps({"table": "ByUser", "key": u}).encode()))
                expect.append(("get", u, len(seen_u.get(u, []))))
                continue
            seq.append(frame(0x0010, 1, json.dumps({"event": "Wide", "body": {"user": u, "item": it, "v": i}}).encode()))
            seen_u.setdefault(u, []).append(i)
            seen_i.setdefault(it, []).append(i)
            expect.append(("push", u, None))
        c.send(b"".join(seq))
        last = 0
        for kind, u, want in expect:
            op, _, body = c.recv_frame()
            if kind == "get":
                self.assertEqual(op, 0x0023, body)
                self.assertEqual(body.get("u_cnt", 0), want, (u, body))
            else:
                self.assertEqual(op, 0x0010, body)
                self.assertGreater(body["ack_lsn"], last)
                last = body["ack_lsn"]
        c.s.close()

    def test_costly_batches_keep_key_order_and_fifo_replies(self):
        for shards in ("2", "3"):
            with self.subTest(shards=shards), Beava(test_mode=True, args=["--shards", shards]) as b:
                self.assertEqual(b.register(wide_pipe(self.NSUMS))[0], 200)
                addr = tcp_addr(b)
                seen_u, seen_i = {}, {}
                self.run_conn(addr, "a", 3000, 29, 13, seen_u, seen_i)
                self.check_rows(b, "ByUser", seen_u)
                self.check_rows(b, "ByItem", seen_i)

    def test_concurrent_connections_with_costly_batches(self):
        with Beava(test_mode=True, args=["--shards", "2"]) as b:
            self.assertEqual(b.register(wide_pipe(self.NSUMS))[0], 200)
            addr = tcp_addr(b)
            self.run_concurrent(b, addr, 4, "", 1500, 17, 11)


class ManyConnections(unittest.TestCase):
    def test_burst_of_connections_spread_over_io_threads_all_served_in_order(self):
        with Beava(test_mode=True, args=["--io-threads", "2", "--shards", "2"]) as b:
            self.assertEqual(b.register(wide_pipe(0))[0], 200)
            addr = tcp_addr(b)
            cheap = CostlyBatch()          # its helpers; pushes of 8 feature updates: never costly
            for rnd in range(2):
                cheap.run_concurrent(b, addr, 12, "r%d" % rnd, 2000, 13, 7)
            # every connection was closed by its client: none is left counted
            deadline = time.time() + 10
            while metric(b, "beava_tcp_connections_open") != 0 and time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(metric(b, "beava_tcp_connections_open"), 0)


def pipelined_both_ways(c, event, cases):
    """Send every (body, expected) case as one pipelined run of push frames, first as JSON,
    then as msgpack; yield (op, reply body, body, expected) for each answer, in order."""
    for ct in (1, 2):
        payloads = [mp_pack({"event": event, "body": d}) if ct == 2 else
                    json.dumps({"event": event, "body": d}).encode() for d, _ in cases]
        c.send(b"".join(frame(0x0010, ct, p) for p in payloads))
        for d, err in cases:
            op, _, body = c.recv_frame()
            yield op, body, d, err


class Validation(unittest.TestCase):
    def test_pipelined_rows_in_any_field_order_validate_alike(self):
        """One pass over each row, schema positions guessed from the row before: rows of
        one batch in different field orders, with unknown, missing and fractional fields,
        each get exactly their own answer."""
        pipe = {"nodes": [
            {"kind": "event", "name": "Ev", "schema": {"fields": {"user": "str", "n": "i64", "x": "f64"},
                                                      "optional_fields": []}},
            {"kind": "derivation", "name": "PerEvUser", "output_kind": "table", "upstreams": ["Ev"],
             "ops": [{"op": "group_by", "keys": ["user"], "agg": {"ev_n": {"op": "sum", "params": {"field": "n"}},
                                                                 "ev_x": {"op": "sum", "params": {"field": "x"}}}}],
             "table_primary_key": ["user"]},
        ]}
        cases = [
            ({"user": "a", "n": 1, "x": 0.5}, None),
            ({"x": 0.5, "n": 2, "user": "a"}, None),
            ({"n": 3.0, "user": "a", "x": 1}, None),               # 3.0 in an i64 field is 3
            ({"user": "a", "n": 1.5, "x": 0.5}, "invalid_event"),  # a fraction is not
            ({"user": "a", "n": 1, "x": 0.5, "y": 1}, "unknown_field_v0"),
            ({"y": 1, "user": "a"}, "unknown_field_v0"),           # unknown wins over missing
            ({"user": "a", "x": 0.5}, "invalid_event"),            # n missing
            ({"n": 1, "x": 0.5, "user": None}, "invalid_event"),   # user null
            ({"user": "a", "n": "1", "x": 0.5}, "invalid_event"),  # type
            ({"x": 2.0, "user": "a", "n": 4}, None),
            ({"user": "a", "n": 5, "x": 0.5}, None),
        ]
        with Beava(test_mode=True, args=["--shards", "2"]) as b:
            self.assertEqual(b.register(pipe)[0], 200)
            c = Conn(tcp_addr(b))
            for op, body, d, err in pipelined_both_ways(c, "Ev", cases):
                if err is None:
                    self.assertEqual(op, 0x0010, (d, body))
                else:
                    self.assertEqual(body["error"]["code"], err, (d, body))
            op, _, row = c.call(0x0020, {"table": "PerEvUser", "key": "a"})
            self.assertEqual(row["ev_n"], 2 * (1 + 2 + 3 + 4 + 5))
            self.assertEqual(row["ev_x"], 2 * (0.5 + 0.5 + 1 + 2.0 + 0.5))
            c.s.close()

    def test_rows_of_one_shape_then_a_different_value_or_order_get_their_own_answer(self):
        """The shape memo (a row naming the fields of the last fully checked row at the
        same positions is only value-checked) and the group-key positions guessed from the
        row before: each row in a pipelined run of one shape, broken by a null, a type, a
        fraction, a long key, a missing field, an absent optional key or a new order, gets
        exactly its own answer and feeds exactly its own keys."""
        pipe = {"nodes": [
            {"kind": "event", "name": "Ev", "schema": {"fields": {"user": "str", "n": "i64", "tag": "str"},
                                                      "optional_fields": ["tag"]}},
            {"kind": "derivation", "name": "ByUser", "output_kind": "table", "upstreams": ["Ev"],
             "ops": [{"op": "group_by", "keys": ["user"], "agg": {"n_sum": {"op": "sum", "params": {"field": "n"}}}}],
             "table_primary_key": ["user"]},
            {"kind": "derivation", "name": "ByTag", "output_kind": "table", "upstreams": ["Ev"],
             "ops": [{"op": "group_by", "keys": ["tag"], "agg": {"tag_cnt": {"op": "count"}}}],
             "table_primary_key": ["tag"]},
        ]}
        long_user = "u" * 4097            # STORE_MAX_KEY + 1
        cases = [
            ({"user": "a", "n": 1, "tag": "t1"}, None),
            ({"user": "a", "n": 2, "tag": "t1"}, None),
            ({"user": "a", "n": 3, "tag": None}, None),            # optional null: no ByTag part
            ({"user": None, "n": 9, "tag": "t1"}, "required field 'user' of event 'Ev' is missing or null"),
            ({"user": "a", "n": "9", "tag": "t1"}, "field 'n' of event 'Ev' must be i64, got string"),
            ({"user": "a", "n": 9.5, "tag": "t1"}, "field 'n' of event 'Ev' must be i64 (an integer), got 9.5"),
            ({"user": long_user, "n": 9, "tag": "t1"}, "key field 'user' is 4097 bytes long (max 4096)"),
            ({"user": "a", "n": 4.0, "tag": "t2"}, None),         # 4.0 is stored as 4
            ({"tag": "t2", "user": "a", "n": 5}, None),             # key off its schema position
            ({"tag": "t2", "user": "b", "n": 6}, None),
            ({"tag": "t2", "n": 9}, "required field 'user' of event 'Ev' is missing or null"),
            ({"tag": "t2", "n": 9, "user": "a"}, None),             # same names, other positions
            ({"n": 7, "user": "b"}, None),                          # tag absent: no ByTag part
            ({"tag": "t1", "user": "b"}, "required field 'n' of event 'Ev' is missing or null"),
            ({"tag": "t1", "user": "b", "n": 8, "x": 1}, "field 'x' is not declared by event 'Ev'"),
            ({"tag": "t1", "user": "b", "n": 8}, None),
        ]
        with Beava(test_mode=True, args=["--shards", "2"]) as b:
            self.assertEqual(b.register(pipe)[0], 200)
            c = Conn(tcp_addr(b))
            for op, body, d, err in pipelined_both_ways(c, "Ev", cases):
                if err is None:
                    self.assertEqual(op, 0x0010, (d, body))
                else:
                    self.assertEqual((op, body["error"]["reason"]), (0xFFFF, err), d)
            sums = {"a": 1 + 2 + 3 + 4 + 5 + 9, "b": 6 + 7 + 8}
            for user, want in sums.items():
                self.assertEqual(c.call(0x0020, {"table": "ByUser", "key": user})[2]["n_sum"], 2 * want, user)
            for tag, want in {"t1": 3, "t2": 4}.items():
                self.assertEqual(c.call(0x0020, {"table": "ByTag", "key": tag})[2]["tag_cnt"], 2 * want, tag)
            c.s.close()

    def test_a_new_required_field_between_pushes_of_one_shape_is_enforced(self):
        """Rows of one shape on one connection, then (pipelined behind them on the same
        connection) a register that makes a new field required: the same shape is now
        missing it, and rows with it are accepted."""
        v1 = {"nodes": [{"kind": "event", "name": "Click",
                         "schema": {"fields": {"user": "str", "n": "i64"}, "optional_fields": []}},
                        {"kind": "derivation", "name": "PerUser", "output_kind": "table", "upstreams": ["Click"],
                         "ops": [{"op": "group_by", "keys": ["user"], "agg": {"n_sum": {"op": "sum", "params": {"field": "n"}}}}],
                         "table_primary_key": ["user"]}]}
        v2 = json.loads(json.dumps(v1))
        v2["nodes"][0]["schema"]["fields"]["w"] = "i64"
        with Beava(test_mode=True, args=["--shards", "2"]) as b:
            self.assertEqual(b.register(v1)[0], 200)
            c = Conn(tcp_addr(b))
            push = lambda d: frame(0x0010, 1, json.dumps({"event": "Click", "body": d}).encode())
            c.send(push({"user": "a", "n": 1}) + push({"user": "a", "n": 2}) +
                   frame(0x0001, 1, json.dumps(v2).encode()) +
                   push({"user": "a", "n": 4}) + push({"user": "a", "n": 8, "w": 1}) + push({"n": 16, "w": 1, "user": "a"}))
            self.assertEqual(c.recv_frame()[0], 0x0010)
            self.assertEqual(c.recv_frame()[0], 0x0010)
            op, _, body = c.recv_frame()
            self.assertEqual(op, 0x0001, body)
            op, _, body = c.recv_frame()
            self.assertEqual((op, body["error"]["reason"]),
                             (0xFFFF, "required field 'w' of event 'Click' is missing or null"))
            self.assertEqual(c.recv_frame()[0], 0x0010)
            self.assertEqual(c.recv_frame()[0], 0x0010)
            self.assertEqual(c.call(0x0020, {"table": "PerUser", "key": "a"})[2]["n_sum"], 1 + 2 + 8 + 16)
            c.s.close()


ORDER_PIPE = {"nodes": [
    {"kind": "event", "name": "Click", "schema": {"fields": {"user": "str", "n": "i64"}, "optional_fields": []}},
    {"kind": "derivation", "name": "PerUser", "output_kind": "table", "upstreams": ["Click"],
     "ops": [{"op": "group_by", "keys": ["user"], "agg": {
         "clicks": {"op": "count"}, "recent": {"op": "last_n", "params": {"field": "n", "n": 1024}}}}],
     "table_primary_key": ["user"]},
]}


# the HTTP listener's drain at stop (beava/src/net/http.c HTTP_DRAIN_MS)
HTTP_DRAIN_S = 3.0


class StopWithPushInFlight(unittest.TestCase):
    def test_push_waiting_for_its_shard_at_stop_is_answered(self):
        with Beava(test_mode=True, args=["--shards", "2"]) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            k0 = keys_on(b, 0, 1, "a")[0]
            st, _, body = b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": True}, which="admin")
            self.assertEqual(st, 200, body)
            host, port = b.http_addr_bound.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=30)
            try:
                data = json.dumps({"event": "Click", "data": {"user": k0, "n": 7}}).encode()
                s.sendall(b"POST /push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
                deadline = time.time() + 10
                while metric(b, "beava_http_requests_suspended") != 1 and time.time() < deadline:
                    time.sleep(0.02)
                self.assertEqual(metric(b, "beava_http_requests_suspended"), 1)
                b.proc.send_signal(signal.SIGTERM)
                # past the drain (the push's own connection keeps it going to the end): the
                # stop must still be waiting for this push, not have freed the listener
                time.sleep(HTTP_DRAIN_S + 1.0)
                self.assertIsNone(b.proc.poll(), "the server exited with a push unanswered")
                st, _, body = b.raw("POST", "/debug/pause-shard", {"shard": 0, "paused": False}, which="admin")
                self.assertEqual(st, 200, body)
                reply = b""
                while b"\r\n\r\n" not in reply:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:200])
            finally:
                s.close()
            # the harness's stop checks the exit status (0) and that no sanitizer reported
            self.assertEqual(b.proc.wait(30), 0)


class SyncGroupCommit(unittest.TestCase):
    """Sync durability with many clients at once: one fsync covers many parked batches, which
    the durability thread routes to the shards in LSN order. Each
    key's `recent` (last_n) must list the acknowledged values in ack_lsn order, and its
    count must equal the acknowledged pushes: applied in LSN order, exactly once, and
    only when acknowledged."""

    ARGS = ["--durability", "sync", "--shards", "2", "--io-threads", "2"]

    def start(self, d):
        env = {"BEAVA_WAL_DIR": os.path.join(d, "wal"), "BEAVA_SNAPSHOT_DIR": os.path.join(d, "snapshots"),
               "BEAVA_SNAPSHOT_INTERVAL_S": "3600"}
        return Beava(memory_only=False, data_dir=d, test_mode=True, args=self.ARGS, env=env).start()

    def load(self, b, users, tcp_conns, tcp_runs, run_len, http_conns, http_pushes, stop_after_503=None):
        """TCP connections pipelining runs of pushes and HTTP connections pushing one at a
        time, all at once, over `users`. Returns ({user: [(ack_lsn, n)]}, [error bodies])."""
        import http.client
        import threading
        acked = {u: [] for u in users}
        errors, failures = [], []
        lock = threading.Lock()

        def note(u, n, ok, body):
            with lock:
                if ok:
                    acked[u].append((body["ack_lsn"], n))
                else:
                    errors.append(body)

        def enough():
            return stop_after_503 is not None and len(errors) >= stop_after_503

        def tcp_worker(k):
            try:
                c = Conn(tcp_addr(b))
                for r in range(tcp_runs):
                    if enough():
                        break
                    ns = [(users[(k + i) % len(users)], 1000000 * (k + 1) + r * run_len + i) for i in range(run_len)]
                    c.send(b"".join(push_frame(u, n) for u, n in ns))
                    for u, n in ns:
                        op, _, body = c.recv_frame()
                        note(u, n, op == 0x0010, body)
                c.close()
            except Exception as ex:   # reported below: assertions in threads do not fail the test
                failures.append(ex)

        def http_worker(k):
            try:
                host, port = b.bound["server.http_bound"].rsplit(":", 1)
                c = http.client.HTTPConnection(host, int(port), timeout=30)
                for i in range(http_pushes):
                    if enough():
                        break
                    u, n = users[(k + i) % len(users)], -(1000000 * (k + 1) + i)
                    c.request("POST", "/push", json.dumps({"event": "Click", "data": {"user": u, "n": n}}),
                              {"Content-Type": "application/json"})
                    r = c.getresponse()
                    body = json.loads(r.read())
                    note(u, n, r.status == 200, dict(body, status=r.status))
                c.close()
            except Exception as ex:
                failures.append(ex)
        ts = [threading.Thread(target=tcp_worker, args=(k,)) for k in range(tcp_conns)]
        ts += [threading.Thread(target=http_worker, args=(k,)) for k in range(http_conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(failures, [])
        return acked, errors

    def rows(self, b, users):
        return {u: b.get("PerUser", u)[1] for u in users}

    def check(self, live, acked):
        for u, acks in acked.items():
            lsns = [l for l, _ in acks]
            self.assertEqual(len(set(lsns)), len(lsns), u)                    # one LSN per push
            want = [n for _, n in sorted(acks)]
            self.assertEqual(live[u].get("clicks", 0), len(acks), u)         # exactly the acknowledged
            self.assertEqual(live[u].get("recent", []), want[-1024:], u)      # ... in LSN order

    def test_sync_pushes_from_many_connections_apply_in_lsn_order(self):
        with tempfile.TemporaryDirectory() as d:
            b = self.start(d)
            try:
                self.assertEqual(b.register(ORDER_PIPE)[0], 200)
                users = keys_on(b, 0, 2, "a") + keys_on(b, 1, 2, "b")         # both shards
                acked, errors = self.load(b, users, tcp_conns=12, tcp_runs=6, run_len=8, http_conns=6,
                                          http_pushes=25)
                self.assertEqual(errors, [])
                self.assertEqual(sum(len(a) for a in acked.values()), 12 * 6 * 8 + 6 * 25)
                live = self.rows(b, users)
                self.check(live, acked)
                b.stop(sig=9)                  # every acknowledged push is durable: replayed alike
            finally:
                if b.proc and b.proc.poll() is None:
                    b.stop()
            b2 = self.start(d)
            try:
                self.assertEqual(self.rows(b2, users), live)
            finally:
                b2.stop()

    def test_voided_sync_pushes_are_refused_and_not_applied(self):
        import threading
        mnt, d = small_tmpfs_data_dir(self, "beava-syncfull-")
        b = self.start(d)
        try:
            self.assertEqual(b.register(ORDER_PIPE)[0], 200)
            users = keys_on(b, 0, 2, "a") + keys_on(b, 1, 2, "b")
            # the disk fills while 8 TCP and 4 HTTP connections push: whole groups of parked
            # batches meet the failed write; every connection goes on until 503s are seen
            def fill():
                time.sleep(0.3)
                try:
                    fill_disk(mnt)
                except OSError:        # the file's closing flush may meet the full disk too
                    pass
            filler = threading.Thread(target=fill)
            filler.start()
            acked, errors = self.load(b, users, tcp_conns=8, tcp_runs=400, run_len=4, http_conns=4,
                                      http_pushes=1500, stop_after_503=40)
            filler.join()
            self.assertGreaterEqual(len(errors), 1, "the disk never filled")
            for e in errors:
                self.assertEqual(e["error"]["code"], "wal_unavailable", e)
                self.assertEqual(e.get("status", 503), 503, e)
            live = self.rows(b, users)
            self.check(live, acked)
            text = b.raw("GET", "/metrics", which="admin")[2].decode()
            voided = [l for l in text.splitlines() if l.startswith("beava_wal_failed_records_total ")]
            self.assertTrue(voided and int(float(voided[0].split()[1])) >= 1, voided)
            # space returns: pushes are accepted again, in order after the void ones
            os.unlink(os.path.join(mnt, "filler"))
            deadline = time.time() + 30
            while time.time() < deadline:
                st, body = b.push("Click", {"user": users[0], "n": 7})
                if st == 200:
                    acked[users[0]].append((body["ack_lsn"], 7))
                    break
                time.sleep(0.1)
            self.assertEqual(st, 200, "the WAL did not recover after space returned")
            live = self.rows(b, users)
            self.check(live, acked)
            b.stop(sig=9)
        finally:
            if b.proc and b.proc.poll() is None:
                b.stop()
        b2 = self.start(d)
        try:
            self.assertEqual(self.rows(b2, users), live)
        finally:
            b2.stop()


if __name__ == "__main__":
    main()
