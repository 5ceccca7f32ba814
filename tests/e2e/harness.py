"""Shared harness for the end-to-end tests: starts the real `beava` binary on loopback
with OS-assigned ports, discovers the ports from its JSON log lines (exactly as the SDK's
embed mode does), and talks HTTP to it with the standard library.

Each test module is a plain unittest program; ctest runs them one by one with BEAVA_BIN
and BEAVA_SHARED_DIR set.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BEAVA_BIN = os.environ.get("BEAVA_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "beava"))
SHARED = os.environ.get("BEAVA_SHARED_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
SOURCE = os.environ.get("BEAVA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def shared_path(*parts):
    return os.path.join(SHARED, *parts)


class Beava:
    """One beava process. Use as a context manager or call start()/stop()."""

    def __init__(self, args=None, env=None, config_text=None, memory_only=True, test_mode=False,
                 http_addr="127.0.0.1:0", wait_ready=True, data_dir=None):
        self.args = list(args or [])
        self.env_extra = dict(env or {})
        self.config_text = config_text
        self.memory_only = memory_only
        self.test_mode = test_mode
        self.http_addr = http_addr
        self.wait_ready = wait_ready
        self.data_dir = data_dir
        self.proc = None
        self.lines = []
        self.bound = {}
        self.logged_ready = False
        self._cond = threading.Condition()
        self._tmp = None
        self._conns = {}
        self.check_clean_exit = True

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout=30):
        self._tmp = tempfile.TemporaryDirectory(prefix="beava-e2e-")
        cfg = "/dev/null"
        if self.config_text is not None:
            cfg = os.path.join(self._tmp.name, "beava.yaml")
            with open(cfg, "w") as f:
                f.write(self.config_text)
        env = dict(os.environ)
        env.update({
            "BEAVA_LISTEN_ADDR": self.http_addr,
            "BEAVA_TCP_PORT": "0",
            "BEAVA_ADMIN_ADDR": "127.0.0.1:0",
            "BEAVA_WAL_DIR": os.path.join(self._tmp.name, "wal"),
            "BEAVA_SNAPSHOT_DIR": os.path.join(self._tmp.name, "snapshots"),
        })
        if self.test_mode:
            env["BEAVA_TEST_MODE"] = "1"
        env.update(self.env_extra)
        argv = [BEAVA_BIN, "--config", cfg]
        if self.memory_only:
            argv.append("--memory-only")
        if self.data_dir:
            argv += ["--data-dir", self.data_dir]
        argv += self.args
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._drain_err, args=(self.proc.stderr,), daemon=True).start()
        deadline = time.time() + timeout
        with self._cond:
            need = ("server.http_bound", "server.admin_bound") if self.wait_ready else ("server.admin_bound",)
            while any(k not in self.bound for k in need):
                if self.proc.poll() is not None:
                    raise RuntimeError("beava exited with %s; output:\n%s" % (self.proc.returncode, self.output()))
                left = deadline - time.time()
                if left <= 0:
                    raise RuntimeError("beava did not bind in time; output:\n" + self.output())
                self._cond.wait(min(left, 0.2))
        if self.wait_ready:
            while time.time() < deadline:
                st, _, _ = self.admin("GET", "/ready")
                if st == 200:
                    break
                time.sleep(0.05)
            # every *_bound line precedes server.ready: once it is read, tcp_bound is known
            with self._cond:
                while not self.logged_ready and self.proc.poll() is None and time.time() < deadline:
                    self._cond.wait(min(max(deadline - time.time(), 0.01), 0.2))
        return self

    def _drain(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                try:
                    obj = json.loads(line)
                    if isinstance(obj, dict) and obj.get("kind", "").endswith("_bound"):
                        self.bound[obj["kind"]] = obj["addr"]
                    if isinstance(obj, dict) and obj.get("kind") == "server.ready":
                        self.logged_ready = True
                except ValueError:
                    pass
                self._cond.notify_all()

    def _drain_err(self, stream):
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.lines.append("[stderr] " + raw.decode("utf-8", "replace").rstrip("\n"))

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        for c in self._conns.values():
            c.close()
        self._conns = {}
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc:
            rc = self.proc.returncode
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None
        if sig == signal.SIGTERM and self.check_clean_exit:
            out = self.output()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in out:
                    raise AssertionError("sanitizer report from beava:\n" + out[-6000:])
            if rc != 0:
                raise AssertionError("beava exited with %s after SIGTERM:\n%s" % (rc, out[-6000:]))
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- HTTP ------------------------------------------------------------------------
    @property
    def http_addr_bound(self):
        return self.bound["server.http_bound"]

    @property
    def admin_addr_bound(self):
        return self.bound["server.admin_bound"]

    def _conn(self, which):
        addr = self.bound["server.http_bound" if which == "http" else "server.admin_bound"]
        host, port = addr.rsplit(":", 1)
        c = self._conns.get(which)
        if c is None:
            c = http.client.HTTPConnection(host, int(port), timeout=30)
            self._conns[which] = c
        return c

    def raw(self, method, path, body=None, headers=None, which="http"):
        """Returns (status, headers dict (lowercased names), body bytes)."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        hdrs = dict(headers or {})
        for attempt in range(2):
            c = self._conn(which)
            try:
                c.request(method, path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                h = {k.lower(): v for k, v in r.getheaders()}
                if h.get("connection", "").lower() == "close":
                    c.close()
                    self._conns.pop(which, None)
                return r.status, h, data
            except (ConnectionError, http.client.HTTPException, socket.timeout):
                c.close()
                self._conns.pop(which, None)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method, path, body=None, headers=None, which="http"):
        st, h, data = self.raw(method, path, body, headers, which)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return st, parsed

    def admin(self, method, path):
        return self.raw(method, path, which="admin")

    def register(self, payload, **flags):
        body = dict(payload)
        body.update(flags)
        return self.call("POST", "/register", body, {"Content-Type": "application/json"})

    def push(self, event, data):
        return self.call("POST", "/push", {"event": event, "data": data})

    def get(self, table, key, features=None):
        body = {"table": table, "key": key}
        if features is not None:
            body["features"] = features
        return self.call("POST", "/get", body)


def small_tmpfs_data_dir(test, prefix, why=""):
    """Mount an 8 MiB tmpfs (a disk that fills up for real; needs root) for the test, cleaned
    up after it, and return an empty data dir on it. Skips the test when it cannot mount;
    `why` says what covers the case instead. Returns (mount point, data dir)."""
    import shutil
    mnt = tempfile.mkdtemp(prefix=prefix)
    test.addCleanup(shutil.rmtree, mnt, True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        test.skipTest("cannot mount a tmpfs here (%s)%s" % (r.stderr.strip(), why))
    test.addCleanup(subprocess.run, ["umount", "-l", mnt])
    d = os.path.join(mnt, "data")
    os.mkdir(d)
    return mnt, d


def fill_disk(mnt):
    """Write zeros to <mnt>/filler until the file system refuses (ENOSPC); returns the
    filler's path (unlink it to give the space back)."""
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    if not os.path.exists(BEAVA_BIN):
        print("beava binary not found at %s" % BEAVA_BIN, file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
