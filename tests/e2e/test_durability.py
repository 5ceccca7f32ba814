"""Durability of the real binary (README "Durability"): kill -9 crash cycles in sync and
batch mode with every acknowledged event accounted for, torn tails and bit flips in the
WAL, a foreign segment refused untouched, a corrupt newest snapshot falling back to the
previous one, a full disk answered with 503 wal_unavailable and recovered from (in batch
mode without losing an acknowledged event), registry
history (force replacement, reset) recovered exactly, the single-writer lock, graceful
shutdown, and /ready answering 503 while recovery runs.

BEAVA_CRASH_CYCLES sets the number of kill -9 cycles per mode (default 30)."""
import glob
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import BEAVA_BIN, Beava, fill_disk, main, small_tmpfs_data_dir

CYCLES = int(os.environ.get("BEAVA_CRASH_CYCLES", "30"))

PIPE = {"nodes": [
    {"kind": "event", "name": "E", "schema": {"fields": {"k": "str", "seq": "i64"}, "optional_fields": []}},
    {"kind": "derivation", "name": "T", "output_kind": "table", "upstreams": ["E"],
     "ops": [{"op": "group_by", "keys": ["k"], "agg": {"c": {"op": "count"},
                                                      "s": {"op": "sum", "params": {"field": "seq"}},
                                                      "w": {"op": "count", "params": {"window": "1h"}}}}],
     "table_primary_key": ["k"]},
]}


def server(data_dir, durability="sync", **kw):
    args = ["--durability", durability] + kw.pop("args", [])
    env = kw.pop("env", {})
    env.setdefault("BEAVA_SNAPSHOT_INTERVAL_S", "3600")
    b = Beava(memory_only=False, data_dir=data_dir, args=args, env=env, **kw)
    # the WAL and snapshots must live in the data dir, not in the harness's temp dirs
    b.env_extra.update({"BEAVA_WAL_DIR": os.path.join(data_dir, "wal"),
                        "BEAVA_SNAPSHOT_DIR": os.path.join(data_dir, "snapshots")})
    return b


class Pusher(threading.Thread):
    """Pushes E{k=key, seq} over one keep-alive connection until told to stop or the
    connection dies; counts attempted and acknowledged events and ack times."""

    def __init__(self, addr, key, state):
        super().__init__(daemon=True)
        self.addr, self.key, self.st = addr, key, state
        self.stop_flag = False

    def run(self):
        host, port = self.addr.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            while not self.stop_flag:
                seq = self.st["attempted"] + 1
                self.st["attempted"] = seq
                body = json.dumps({"event": "E", "data": {"k": self.key, "seq": 1}})
                c.request("POST", "/push", body)
                r = c.getresponse()
                data = r.read()
                if r.status != 200:
                    self.st["errors"].append((r.status, data[:200]))
                    break
                self.st["acked"] += 1
                self.st["ack_times"].append(time.monotonic())
        except Exception:
            pass
        finally:
            c.close()


class CrashCycles(unittest.TestCase):
    def run_cycles(self, durability, cycles, slack_s):
        d = tempfile.mkdtemp(prefix="beava-crash-")
        self.addCleanup(shutil.rmtree, d, True)
        keys = ["c%d" % i for i in range(4)]
        states = {k: {"attempted": 0, "acked": 0, "ack_times": [], "errors": []} for k in keys}
        rng = random.Random(1234 if durability == "sync" else 4321)
        b = server(d, durability).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        for cycle in range(cycles):
            pushers = [Pusher(b.http_addr_bound, k, states[k]) for k in keys]
            for p in pushers:
                p.start()
            time.sleep(rng.uniform(0.05, 0.5))
            kill_at = time.monotonic()
            b.stop(signal.SIGKILL)
            for p in pushers:
                p.stop_flag = True
                p.join(10)
            b = server(d, durability).start()
            for k in keys:
                st = states[k]
                self.assertEqual(st["errors"], [], "push errors in cycle %d" % cycle)
                row = b.get("T", k)[1]
                count = row.get("c", 0)
                # never more than was sent: nothing unacknowledged-and-unlogged, no double replay
                self.assertLessEqual(count, st["attempted"], "cycle %d key %s: %r" % (cycle, k, st))
                if durability == "sync":
                    # every acknowledged event survives, exactly once
                    self.assertGreaterEqual(count, st["acked"], "cycle %d key %s lost acked events" % (cycle, k))
                else:
                    # batch: only events acknowledged within the last tick (+ the fsync in flight) may be lost
                    safe = sum(1 for t in st["ack_times"] if t < kill_at - slack_s)
                    self.assertGreaterEqual(count, safe, "cycle %d key %s lost events older than the bound" % (cycle, k))
                self.assertEqual(row.get("s"), float(count) if count else row.get("s"))
                self.assertEqual(row.get("w", 0), count)
                # resynchronise the accounting with what the server holds now
                st["attempted"] = st["acked"] = count
                st["ack_times"] = []
        b.stop()

    def test_sync_mode_loses_nothing_acknowledged(self):
        self.run_cycles("sync", CYCLES, 0)

    def test_batch_mode_loses_at_most_the_last_tick(self):
        self.run_cycles("batch", max(5, CYCLES // 3), 0.25)



class GroupCommit(unittest.TestCase):
    def sync_batches(self, b):
        for line in b.admin("GET", "/metrics")[2].decode().splitlines():
            if line.startswith("beava_wal_sync_batches_total "):
                return int(line.split()[1])
        self.fail("beava_wal_sync_batches_total missing from /metrics")

    def pushes_written_early(self, durability, n=20):
        """n sequential pushes with the longest tick there is: how many batches the writer
        wrote before their tick for a sync waiter meanwhile."""
        d = tempfile.mkdtemp(prefix="beava-gc-")
        self.addCleanup(shutil.rmtree, d, True)
        with server(d, durability, env={"BEAVA_WAL_FSYNC_INTERVAL_MS": "1000"}) as b:
            self.assertEqual(b.register(PIPE)[0], 200)
            before = self.sync_batches(b)
            for i in range(n):
                self.assertEqual(b.push("E", {"k": "g", "seq": i})[0], 200)
            self.assertEqual(b.get("T", "g")[1]["c"], n)
            return self.sync_batches(b) - before

    def test_a_sync_waiter_does_not_wait_for_the_tick(self):
        # each sequential sync push finds the writer idle: it is written at once, not at the tick
        self.assertGreaterEqual(self.pushes_written_early("sync"), 20)

    def test_batch_mode_leaves_writes_to_the_tick(self):
        self.assertEqual(self.pushes_written_early("batch"), 0)

class Corruption(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="beava-corrupt-")
        self.addCleanup(shutil.rmtree, self.d, True)

    def fill(self, n=200, durability="sync", key="a"):
        b = server(self.d, durability).start()
        if b.call("POST", "/ping")[1]["registry_version"] == 0:
            self.assertEqual(b.register(PIPE)[0], 200)
        for i in range(n):
            self.assertEqual(b.push("E", {"k": key, "seq": 1})[0], 200)
        b.stop(signal.SIGKILL)

    def segments(self):
        return sorted(glob.glob(os.path.join(self.d, "wal", "*.seg")))

    def count(self, key="a"):
        b = server(self.d).start()
        try:
            return b.get("T", key)[1].get("c", 0), b.admin("GET", "/metrics")[2].decode()
        finally:
            b.stop()

    def test_torn_tail_at_random_offsets(self):
        rng = random.Random(7)
        self.fill(300)
        total = 300
        for _ in range(5):
            seg = [p for p in self.segments() if os.path.getsize(p) > 200][-1]   # newest with records
            size = os.path.getsize(seg)
            cut = rng.randint(64 + 1, size - 1)
            with open(seg, "r+b") as f:
                f.truncate(cut)
            c, metrics = self.count()
            self.assertLessEqual(c, total)
            self.assertGreater(c, 0)
            total = c
            self.assertTrue(os.listdir(os.path.join(self.d, "quarantine")), "torn bytes not quarantined")
            self.fill(20)
            total += 20
            self.assertEqual(self.count()[0], total)

    def test_bit_flip_mid_segment_quarantined_and_replay_resumes(self):
        self.fill(400)
        seg = self.segments()[-1]
        size = os.path.getsize(seg)
        with open(seg, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x5A]))
        c, metrics = self.count()
        self.assertGreaterEqual(c, 398)    # one record (or two, if the flip straddles) quarantined
        self.assertLess(c, 400)
        self.assertIn("beava_recovery_quarantined_records 1", metrics)
        self.assertTrue(os.listdir(os.path.join(self.d, "quarantine")))

    def test_foreign_segment_refused_untouched(self):
        self.fill(10)
        bad = os.path.join(self.d, "wal", "00000000000000ff.seg")
        with open(bad, "wb") as f:
            f.write(b"NOTAWAL!" + os.urandom(200))
        with open(bad, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        r = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "--data-dir", self.d, "--http-addr", "127.0.0.1:0",
                            "--admin-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=30,
                           env={k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("00000000000000ff.seg", r.stderr)
        with open(bad, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)

    def test_corrupt_newest_snapshot_falls_back(self):
        b = server(self.d).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        for i in range(50):
            b.push("E", {"k": "a", "seq": 1})
        st, _, body = b.raw("POST", "/snapshot", which="admin")
        self.assertEqual(st, 200, body)
        for i in range(50):
            b.push("E", {"k": "a", "seq": 1})
        st, _, body = b.raw("POST", "/snapshot", which="admin")
        self.assertEqual(st, 200, body)
        newest = json.loads(body)["path"]
        for i in range(50):
            b.push("E", {"k": "a", "seq": 1})
        b.stop(signal.SIGKILL)
        with open(newest, "r+b") as f:
            f.seek(os.path.getsize(newest) - 10)
            f.write(b"\xff" * 4)
        c, metrics = self.count()
        self.assertEqual(c, 150)
        self.assertIn("beava_recovery_snapshots_rejected 1", metrics)

    def test_second_server_on_same_dir_refused(self):
        b = server(self.d).start()
        r = subprocess.run([BEAVA_BIN, "--config", "/dev/null", "--data-dir", self.d, "--http-addr", "127.0.0.1:0",
                            "--admin-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=30,
                           env={k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")})
        b.stop()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LOCK", r.stderr)
        self.assertIn(str(b.proc.pid), r.stderr)


class FullDisk(unittest.TestCase):
    """A real full disk: the data dir on a small tmpfs (needs root to mount)."""

    def test_enospc_answers_503_and_recovers(self):
        mnt, d = small_tmpfs_data_dir(self, "beava-full-", "; the WAL unit tests cover ENOSPC with an I/O hook")
        b = server(d, "sync").start()
        self.assertEqual(b.register(PIPE)[0], 200)
        for i in range(20):
            self.assertEqual(b.push("E", {"k": "a", "seq": 1})[0], 200)
        # fill the disk
        filler = fill_disk(mnt)
        # the segment's last page may still have room: push until the WAL hits ENOSPC
        statuses = []
        for i in range(5000):
            st, body = b.push("E", {"k": "a", "seq": 1})
            statuses.append(st)
            if st != 200:
                self.assertEqual((st, body["error"]["code"]), (503, "wal_unavailable"))
                if statuses.count(503) >= 5:
                    break
        self.assertIn(503, statuses)
        accepted = statuses.count(200)
        self.assertEqual(b.get("T", "a")[1]["c"], 20 + accepted)   # nothing half-applied
        os.unlink(filler)
        deadline = time.time() + 30
        while time.time() < deadline:
            st, body = b.push("E", {"k": "a", "seq": 1})
            if st == 200:
                accepted += 1
                break
            time.sleep(0.1)
        self.assertEqual(st, 200, "the server did not recover after space returned")
        self.assertEqual(b.get("T", "a")[1]["c"], 20 + accepted)
        b.stop(signal.SIGKILL)
        b = server(d, "sync").start()
        self.assertEqual(b.get("T", "a")[1]["c"], 20 + accepted)
        b.stop()


class FullDiskBatch(unittest.TestCase):
    """Batch mode acknowledges a push once applied, before its WAL write: when that write
    hits a full disk the record must be kept and written again when space returns, never
    voided (issue 12 item 5). A kill -9 after space returned loses no acknowledged event."""

    def metric(self, b, name):
        for line in b.admin("GET", "/metrics")[2].decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError("no metric " + name)

    def test_enospc_in_batch_mode_keeps_acknowledged_events(self):
        mnt, d = small_tmpfs_data_dir(self, "beava-fullb-", "; the WAL unit tests cover ENOSPC with an I/O hook")
        b = server(d, "batch").start()
        self.assertEqual(b.register(PIPE)[0], 200)
        acked = 0
        for i in range(20):
            self.assertEqual(b.push("E", {"k": "a", "seq": 1})[0], 200)
            acked += 1
        filler = fill_disk(mnt)
        # push (acknowledged at once in batch mode) until the WAL's write fails and the
        # server answers 503 wal_unavailable
        refused = 0
        for i in range(20000):
            st, body = b.push("E", {"k": "a", "seq": 1})
            if st == 200:
                acked += 1
                continue
            self.assertEqual((st, body["error"]["code"]), (503, "wal_unavailable"), body)
            refused += 1
            if refused >= 5:
                break
        self.assertEqual(refused, 5, "the WAL never hit the full disk")
        self.assertEqual(self.metric(b, "beava_wal_degraded"), 1)
        self.assertGreaterEqual(self.metric(b, "beava_wal_retained_records"), 1,
                                "the acknowledged records of the failed batch were not kept")
        self.assertEqual(self.metric(b, "beava_wal_failed_records_total"), 0)
        self.assertEqual(b.get("T", "a")[1]["c"], acked)
        os.unlink(filler)
        deadline = time.time() + 30
        while time.time() < deadline:
            st, body = b.push("E", {"k": "a", "seq": 1})
            if st == 200:
                acked += 1
                break
            time.sleep(0.1)
        self.assertEqual(st, 200, "the server did not recover after space returned")
        last = body["ack_lsn"]
        # the kept records were written before the WAL took new ones; wait for the last
        # push's own batch too, then crash
        while time.time() < deadline and self.metric(b, "beava_wal_durable_lsn") < last:
            time.sleep(0.02)
        self.assertEqual(self.metric(b, "beava_wal_retained_records"), 0)
        self.assertEqual(self.metric(b, "beava_wal_failed_records_total"), 0)
        self.assertEqual(b.get("T", "a")[1]["c"], acked)
        b.stop(signal.SIGKILL)
        b = server(d, "batch").start()
        self.assertEqual(b.get("T", "a")[1]["c"], acked, "acknowledged events lost across the full disk")
        metrics = b.admin("GET", "/metrics")[2].decode()
        self.assertIn("beava_recovery_lost_lsns 0", metrics)
        b.stop()


class RegistryRecovery(unittest.TestCase):
    def test_force_replace_and_reset_recover_exactly(self):
        d = tempfile.mkdtemp(prefix="beava-reg-")
        self.addCleanup(shutil.rmtree, d, True)
        b = server(d, test_mode=True).start()
        self.assertEqual(b.register(PIPE)[0], 200)
        for i in range(5):
            b.push("E", {"k": "a", "seq": 2})
        v2 = json.loads(json.dumps(PIPE))
        v2["nodes"][1]["ops"][0]["agg"]["m"] = {"op": "max", "params": {"field": "seq"}}
        v2["nodes"][0]["schema"]["fields"]["extra"] = "str"
        st, body = b.register(v2, force=True)
        self.assertEqual(st, 200, body)
        for i in range(3):
            b.push("E", {"k": "a", "seq": 4, "extra": "x"})
        before = (b.get("T", "a")[1], b.admin("GET", "/registry")[2])
        b.stop(signal.SIGKILL)
        b = server(d, test_mode=True).start()
        self.assertEqual((b.get("T", "a")[1], b.admin("GET", "/registry")[2]), before)
        self.assertEqual(before[0]["c"], 3)
        # snapshot, then reset, then crash: the reset is replayed too
        self.assertEqual(b.raw("POST", "/snapshot", which="admin")[0], 200)
        self.assertEqual(b.call("POST", "/reset", {})[0], 200)
        self.assertEqual(b.register(PIPE)[0], 200)
        b.push("E", {"k": "z", "seq": 1})
        before = (b.get("T", "a")[1], b.get("T", "z")[1], b.admin("GET", "/registry")[2])
        b.stop(signal.SIGKILL)
        b = server(d, test_mode=True).start()
        self.assertEqual((b.get("T", "a")[1], b.get("T", "z")[1], b.admin("GET", "/registry")[2]), before)
        self.assertEqual(before[2], b'{"node_count":2,"version":4}')
        b.stop()


class Lifecycle(unittest.TestCase):
    def test_graceful_shutdown_writes_final_snapshot_and_restarts(self):
        d = tempfile.mkdtemp(prefix="beava-life-")
        self.addCleanup(shutil.rmtree, d, True)
        b = server(d, "batch").start()
        b.register(PIPE)
        for i in range(100):
            b.push("E", {"k": "a", "seq": 1})
        self.assertEqual(b.stop(), 0)
        self.assertTrue(glob.glob(os.path.join(d, "snapshots", "snapshot-*.bvs")))
        b = server(d, "batch").start()
        self.assertEqual(b.get("T", "a")[1]["c"], 100)
        b.stop()

    def test_ready_is_503_while_recovering(self):
        d = tempfile.mkdtemp(prefix="beava-ready-")
        self.addCleanup(shutil.rmtree, d, True)
        b = server(d, "batch").start()
        b.register(PIPE)
        host, port = b.bound["server.tcp_bound"].rsplit(":", 1)
        import socket
        import struct
        s = socket.create_connection((host, int(port)))
        events = [{"event": "E", "body": {"k": "k%d" % (i % 5000), "seq": 1}} for i in range(5000)]
        payload = json.dumps({"events": events}).encode()
        frame = struct.pack(">IHB", len(payload) + 3, 0x0012, 1) + payload
        for _ in range(40):                       # 200,000 events to replay
            s.sendall(frame)
            hdr = b""
            while len(hdr) < 4:
                hdr += s.recv(4 - len(hdr))
            n = struct.unpack(">I", hdr)[0]
            left = n
            while left:
                left -= len(s.recv(min(left, 65536)))
        s.close()
        b.stop(signal.SIGKILL)
        r = server(d, "batch", wait_ready=False)
        r.start()
        # admin binds before recovery: poll /ready from the first moment
        seen = set()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                st = r.admin("GET", "/ready")[0]
            except Exception:
                continue
            seen.add(st)
            if st == 200:
                break
        r.stop()
        self.assertIn(503, seen, "never saw /ready answer 503 during recovery")
        self.assertIn(200, seen)


if __name__ == "__main__":
    main()
