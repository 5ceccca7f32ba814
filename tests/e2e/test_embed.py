"""The SDK's embed mode (README "Configuration", "Where the files go"): the SDK starts
`beava --config /dev/null` with BEAVA_LISTEN_ADDR/BEAVA_ADMIN_ADDR=127.0.0.1:0,
BEAVA_TCP_PORT=0, BEAVA_DEV_ENDPOINTS=1, BEAVA_WAL_DIR/BEAVA_SNAPSHOT_DIR under a fresh
<tmp>/beava-embed-<unique>/, BEAVA_TEST_MODE=1, in the application's working directory,
stderr to /dev/null, and waits at most 5 s for the server.http_bound and server.tcp_bound
lines on stdout. Any number of such spawns from one directory must work, also while an
earlier one is still shutting down, and none may create anything in that directory.

Also: every environment variable of the reference's configuration table is accepted
(read with its meaning, or accepted and documented as having no effect) and listed by
--help."""
import json
import os
import select
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request
import uuid

from harness import BEAVA_BIN, Beava, main

BIND_TIMEOUT_S = 5.0     # the SDK's own limit

# Every variable of the reference's configuration table (server configuration surface).
REFERENCE_ENV = [
    "BEAVA_LISTEN_ADDR", "BEAVA_ADMIN_ADDR", "BEAVA_LOG_LEVEL", "BEAVA_TCP_HOST", "BEAVA_TCP_PORT",
    "BEAVA_TCP_MAX_FRAME_BYTES", "BEAVA_TCP_ENABLED", "BEAVA_WAL_DIR", "BEAVA_SNAPSHOT_DIR",
    "BEAVA_WAL_BUFFERS", "BEAVA_WAL_BUFFER_SIZE_MB", "BEAVA_WAL_TICK_MS", "BEAVA_IO_THREADS",
    "BEAVA_TEST_MODE", "BEAVA_MEMORY_GOV_ENFORCE", "BEAVA_SNAPSHOT_MIN_EVENTS", "BEAVA_SNAPSHOT_FORK",
    "BEAVA_SNAPSHOT_FORK_WAIT_TIMEOUT_SECS", "BEAVA_SNAPSHOT_INTERVAL_MS", "BEAVA_SNAPSHOT_RETAIN_COUNT",
    "BEAVA_WAL_FSYNC_INTERVAL_MS", "BEAVA_WAL_FSYNC_BYTES", "BEAVA_WAL_SEGMENT_BYTES",
    "BEAVA_WAL_SYNC_MODE", "BEAVA_DEDUPE_SWEEP_SECS", "BEAVA_TRACE_APPLY_TIMING",
    "BEAVA_TRACE_AGG_TIMING", "BEAVA_CRASH_AT", "BEAVA_IO_BACKEND",
]

PIPE = {"nodes": [
    {"kind": "event", "name": "Click", "schema": {"fields": {"user": "str", "n": "i64"}}},
    {"kind": "derivation", "name": "Clicks", "output_kind": "table", "upstreams": ["Click"],
     "ops": [{"op": "group_by", "keys": ["user"],
              "agg": {"clicks": {"op": "count", "params": {"window": "1h"}}}}],
     "table_primary_key": ["user"]},
]}


class EmbedSpawn:
    """One server started exactly as the SDK starts it."""

    def __init__(self, cwd, tmp):
        self.root = os.path.join(tmp, "beava-embed-" + uuid.uuid4().hex[:12])
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")}
        env.update({
            "BEAVA_LISTEN_ADDR": "127.0.0.1:0",
            "BEAVA_TCP_PORT": "0",
            "BEAVA_ADMIN_ADDR": "127.0.0.1:0",
            "BEAVA_DEV_ENDPOINTS": "1",
            "BEAVA_WAL_DIR": os.path.join(self.root, "wal"),
            "BEAVA_SNAPSHOT_DIR": os.path.join(self.root, "snapshots"),
            "BEAVA_TEST_MODE": "1",
        })
        self.started = time.monotonic()
        self.proc = subprocess.Popen([BEAVA_BIN, "--config", "/dev/null"], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.bound = {}
        self._buf = b""

    def wait_bound(self, deadline):
        """Read stdout until both bind lines are seen or the deadline passes."""
        fd = self.proc.stdout.fileno()
        while not ("server.http_bound" in self.bound and "server.tcp_bound" in self.bound):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
                return False
            r, _, _ = select.select([fd], [], [], min(left, 0.2))
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            self._buf += chunk
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and obj.get("kind", "").endswith("_bound"):
                    self.bound[obj["kind"]] = obj["addr"]
        return True

    def http(self, path, body):
        req = urllib.request.Request("http://%s%s" % (self.bound["server.http_bound"], path),
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())

    def round_trip(self, user):
        st, body = self.http("/register", PIPE)
        assert st == 200, body
        for n in range(3):
            st, body = self.http("/push", {"event": "Click", "data": {"user": user, "n": n}})
            assert st == 200, body
        return self.http("/get", {"table": "Clicks", "key": user})

    def drain(self):
        """Keep reading stdout so the server never blocks on a full pipe."""
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            if not os.read(fd, 65536):
                break

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.stdout.read()
        finally:
            self.proc.stdout.close()
        return self.proc.wait(30)


class Embed(unittest.TestCase):
    def setUp(self):
        self.cwd = tempfile.mkdtemp(prefix="beava-app-")      # the application's directory
        self.tmp = tempfile.mkdtemp(prefix="beava-sdk-tmp-")  # the SDK's tempfile.gettempdir()
        self.spawns = []

    def tearDown(self):
        for s in self.spawns:
            if s.proc.poll() is None:
                s.stop(signal.SIGKILL)
        subprocess.run(["rm", "-rf", self.cwd, self.tmp])

    def spawn(self):
        s = EmbedSpawn(self.cwd, self.tmp)
        self.spawns.append(s)
        return s

    def test_four_at_once_and_a_fifth_during_shutdown(self):
        four = [self.spawn() for _ in range(4)]
        for i, s in enumerate(four):
            ok = s.wait_bound(s.started + BIND_TIMEOUT_S)
            self.assertTrue(ok, "spawn %d did not print both bind lines within %.1f s (exit %s, saw %s)"
                            % (i, BIND_TIMEOUT_S, s.proc.poll(), s.bound))
        for i, s in enumerate(four):
            st, row = s.round_trip("u%d" % i)
            self.assertEqual((st, row), (200, {"clicks": 3}))
        # the first one starts shutting down; a fifth starts at the same moment
        four[0].proc.send_signal(signal.SIGTERM)
        fifth = self.spawn()
        self.assertTrue(fifth.wait_bound(fifth.started + BIND_TIMEOUT_S),
                        "the fifth spawn did not bind within %.1f s (exit %s)" % (BIND_TIMEOUT_S, fifth.proc.poll()))
        self.assertEqual(fifth.round_trip("u5"), (200, {"clicks": 3}))
        self.assertEqual(four[0].stop(), 0)
        for s in four[1:] + [fifth]:
            s.drain()
            self.assertEqual(s.stop(), 0)
        # nothing in the application's directory; each spawn's files under its own root
        self.assertEqual(os.listdir(self.cwd), [])
        for s in four + [fifth]:
            self.assertTrue(os.path.exists(os.path.join(s.root, "wal", "LOCK")), os.listdir(s.root))

    def test_nothing_created_in_the_working_directory(self):
        s = self.spawn()
        self.assertTrue(s.wait_bound(s.started + BIND_TIMEOUT_S))
        self.assertEqual(s.round_trip("a"), (200, {"clicks": 3}))
        st, _ = s.http("/push", {"event": "Click", "data": {"user": "a", "n": 9}})
        self.assertEqual(st, 200)
        self.assertEqual(os.listdir(self.cwd), [])
        self.assertEqual(s.stop(), 0)
        self.assertEqual(os.listdir(self.cwd), [])
        # the lock and the quarantine area live with the WAL; snapshots where they were asked
        self.assertIn("LOCK", os.listdir(os.path.join(s.root, "wal")))
        self.assertEqual(sorted(os.listdir(s.root)), ["snapshots", "wal"])

    def test_only_a_snapshot_dir_given(self):
        # no WAL dir: the data dir is the snapshot directory, still nothing in the cwd
        snap = os.path.join(self.tmp, "only-snapshots")
        with Beava(memory_only=False, env={"BEAVA_WAL_DIR": "", "BEAVA_SNAPSHOT_DIR": snap},
                   args=[]) as b:
            b.register(PIPE)
        self.assertIn("LOCK", os.listdir(snap))
        self.assertIn("wal", os.listdir(snap))

    def test_a_data_dir_wins(self):
        # --data-dir given: the lock is there, the WAL where BEAVA_WAL_DIR says
        data = os.path.join(self.tmp, "data")
        wal = os.path.join(self.tmp, "elsewhere-wal")
        with Beava(memory_only=False, data_dir=data, env={"BEAVA_WAL_DIR": wal}):
            pass
        self.assertIn("LOCK", os.listdir(data))
        self.assertNotIn("LOCK", os.listdir(wal))
        self.assertTrue(any(n.endswith(".seg") for n in os.listdir(wal)))


def run(args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("BEAVA_")}
    e.update(env or {})
    return subprocess.run([BEAVA_BIN] + args, capture_output=True, text=True, env=e, timeout=30)


class ReferenceEnvironment(unittest.TestCase):
    def test_help_lists_every_reference_variable(self):
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        for name in REFERENCE_ENV + ["BEAVA_DATA_DIR", "BEAVA_DURABILITY"]:
            self.assertIn(name, r.stdout)

    def test_no_effect_variables_are_accepted(self):
        env = {"BEAVA_WAL_BUFFERS": "8", "BEAVA_WAL_BUFFER_SIZE_MB": "64", "BEAVA_SNAPSHOT_MIN_EVENTS": "100",
               "BEAVA_SNAPSHOT_FORK": "0", "BEAVA_SNAPSHOT_FORK_WAIT_TIMEOUT_SECS": "60",
               "BEAVA_WAL_FSYNC_BYTES": "1048576", "BEAVA_DEDUPE_SWEEP_SECS": "60",
               "BEAVA_TRACE_APPLY_TIMING": "1", "BEAVA_TRACE_AGG_TIMING": "1",
               "BEAVA_CRASH_AT": "before-snapshot", "BEAVA_IO_BACKEND": "io_uring",
               "BEAVA_DEV_ENDPOINTS": "1"}
        with Beava(env=env) as b:
            st, _ = b.register(PIPE)
            self.assertEqual(st, 200)
            self.assertEqual(b.push("Click", {"user": "x", "n": 1})[0], 200)

    def test_integer_variables_are_validated_like_the_reference(self):
        for name in ("BEAVA_WAL_FSYNC_BYTES", "BEAVA_DEDUPE_SWEEP_SECS", "BEAVA_SNAPSHOT_FORK_WAIT_TIMEOUT_SECS"):
            r = run(["--memory-only"], env={name: "lots"})
            self.assertEqual(r.returncode, 2, (name, r.stderr))
            self.assertIn(name, r.stderr)
        r = run(["--memory-only"], env={"BEAVA_SNAPSHOT_FORK_WAIT_TIMEOUT_SECS": "0"})
        self.assertIn("BEAVA_SNAPSHOT_FORK_WAIT_TIMEOUT_SECS", r.stderr)

    def test_wal_sync_mode_is_the_durability(self):
        r = run(["--memory-only"], env={"BEAVA_WAL_SYNC_MODE": "sometimes"})
        self.assertEqual(r.returncode, 2)
        self.assertIn("BEAVA_WAL_SYNC_MODE", r.stderr)
        for mode, want in (("per-event", "sync"), ("per_event", "sync"), ("periodic", "batch")):
            with Beava(env={"BEAVA_WAL_SYNC_MODE": mode}) as b:
                cfg = [json.loads(l) for l in b.lines if l.startswith("{") and '"server.config"' in l]
                self.assertTrue(cfg, b.output())
                self.assertEqual(cfg[0]["durability"], want, cfg[0])
        # BEAVA_DURABILITY wins over the reference's name
        with Beava(env={"BEAVA_WAL_SYNC_MODE": "per-event", "BEAVA_DURABILITY": "batch"}) as b:
            cfg = [json.loads(l) for l in b.lines if l.startswith("{") and '"server.config"' in l]
            self.assertEqual(cfg[0]["durability"], "batch")


if __name__ == "__main__":
    main()
