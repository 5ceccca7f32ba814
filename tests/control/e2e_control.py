#!/usr/bin/env python3
"""End-to-end test of beava-control (issue 7's acceptance list), all real parts on loopback.

Shared: a docker-registry with htpasswd (basic) auth, images of the server built with
packaging/oci/build-image and pushed with skopeo. Then, each with its own daemon, state dir,
data dir and ports:
  main     the bwrap runtime: deploys A/B on the same data, no-op, signed triggers (bad,
           missing, stale, replayed: 401), a tag pushed 5 s late, serialised deploys, revision
           label mismatch, a multi-platform image index (host platform picked; an index
           without it refused), a corrupted blob, a server that exits and one that stays up
           answering /ready 503 (both rolled back), malicious layers, conflicting and
           destructive manifests, the host lock, SIGKILL of the daemon mid-deploy.
  token    a second docker-registry with token auth and a token server written here (JWTs
           signed RS256 with `openssl dgst`, the cert in the registry's rootcertbundle):
           skopeo pushes through it, the daemon pulls and deploys through it, a wrong
           password is refused at once.
  systemd  the systemd runtime against a private dbus-daemon and tests/control/fake_systemd.c
           with --exec (it runs the transient unit under bubblewrap the way systemd would):
           deploy A, then B on the same data; the recorded unit properties are checked.
  process  the process runtime: deploy `local`, redeploy an upgraded binary, data intact,
           rollback to the previous binary copy.
  security issue 12's control-side holes: the readiness gate quotes the server's own error;
           the server gets soft NOFILE = hard; a signed trigger replayed under new delivery
           ids (and its body under a fresh signature) refused; a half-open flood of the control
           port during which a signed trigger is accepted, and a slow drip cut at the
           deadline; images built with build-image plus a crafted layer added with `umoci raw
           add-layer` (each escape of the issue, a device node) and a gzip bomb, refused with
           the victims next to the rootfs untouched.

Skips (exit 0, a SKIP line) only when the beava server binary does not exist yet. Any other
missing piece is a failure. BEAVA_BIN, BEAVA_CONTROL_BIN, BEAVA_SOURCE_DIR, FAKE_BEAVA_BIN
and FAKE_SYSTEMD_BIN are set by CTest. E2E_PHASES=main,token,... runs a subset.
"""
import base64, glob, hashlib, hmac, io, json, os, shutil, signal, socket, stat, subprocess, sys
import tarfile, tempfile, threading, time, traceback, urllib.error, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SRC = os.environ.get("BEAVA_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BEAVA = os.environ.get("BEAVA_BIN") or ""
CTL = os.environ.get("BEAVA_CONTROL_BIN") or os.path.join(SRC, "build", "control", "beava-control")
FAKE_BEAVA = os.environ.get("FAKE_BEAVA_BIN") or ""
FAKE_SYSTEMD = os.environ.get("FAKE_SYSTEMD_BIN") or ""
BUILD_IMAGE = os.path.join(SRC, "packaging", "oci", "build-image")
SECRET = "e2e-secret-0123456789abcdef"
CREDS = "ci:ci-password"
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
results = {"passed": 0, "failed": 0}
procs = []        # every process we started, killed at the end
controls = []     # every Control, for cleanup and failure logs


def log(msg):
    print(msg, flush=True)


def check(cond, what, detail=""):
    if cond:
        results["passed"] += 1
        log(f"ok   - {what}")
    else:
        results["failed"] += 1
        log(f"FAIL - {what} {detail}")
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, body=None, headers=None, timeout=10):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            try:
                return r.status, (json.loads(raw) if raw.strip() else None)
            except ValueError:
                return r.status, raw
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except Exception:
            return e.code, raw
    except OSError as e:
        return 0, str(e)


def run(*args, check_rc=True, timeout=600, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("BEAVA_CONTROL_"):
            del env[k]
    return env


def start_registry(tmp, name, auth_yaml):
    """docker-registry on a free loopback port; returns "127.0.0.1:PORT"."""
    port = free_port()
    os.makedirs(f"{tmp}/{name}")
    with open(f"{tmp}/{name}.yml", "w") as f:
        f.write(f"""version: 0.1
log: {{level: error}}
storage: {{filesystem: {{rootdirectory: {tmp}/{name}}}, delete: {{enabled: true}}}}
http: {{addr: 127.0.0.1:{port}}}
auth: {auth_yaml}
""")
    rlog = open(f"{tmp}/{name}.log", "w")
    procs.append(subprocess.Popen(["docker-registry", "serve", f"{tmp}/{name}.yml"], stdout=rlog, stderr=rlog))
    st = 0
    for _ in range(100):
        st, _ = http("GET", f"http://127.0.0.1:{port}/v2/")
        if st == 401:
            break
        time.sleep(0.1)
    check(st == 401, f"registry '{name}' up and asking for credentials")
    return f"127.0.0.1:{port}"


def skopeo_copy(src, dst, src_creds=CREDS, dest_creds=CREDS, extra=()):
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", src_creds,
        "--dest-creds", dest_creds, *extra, src, dst)


class Control:
    """One beava-control daemon with its own state dir, data dir, ports and config."""

    def __init__(self, tmp, name, repo, runtime="bwrap", extra_yaml="", manifests=None, regpass="ci-password",
                 server_config=None):
        self.name = name
        self.dir = f"{tmp}/{name}"
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o711)  # the server runs as the image's user and must reach its rootfs
        self.cport, self.http_port, self.admin_port, self.tcp_port = free_port(), free_port(), free_port(), free_port()
        self.state = f"{self.dir}/state"
        self.data = f"{self.dir}/data"
        self.cfg = f"{self.dir}/control.yaml"
        self.log = f"{self.dir}/control.log"
        self.passfile = f"{self.dir}/regpass"
        with open(f"{self.dir}/secret", "w") as f:
            f.write(SECRET + "\n")
        with open(self.passfile, "w") as f:
            f.write(regpass + "\n")
        self.mdir = manifests
        with open(self.cfg, "w") as f:
            f.write(f"""state_dir: {self.state}
listen_addr: 127.0.0.1:{self.cport}
trigger: {{secret_file: {self.dir}/secret, replay_window_s: 300}}
registry: {{repository: {repo}, username: ci, password_file: {self.passfile}, wait_for_image_s: 30}}
runtime:
  kind: {runtime}
  data_dir: {self.data}
  http_addr: 127.0.0.1:{self.http_port}
  admin_addr: 127.0.0.1:{self.admin_port}
  tcp_port: {self.tcp_port}
  stop_grace_s: 15
  ready_timeout_s: 20
  config: '{server_config or ""}'
manifests: {{dir: {manifests}, root: {tmp}}}
{extra_yaml}""")
        self.env = clean_env()
        self.daemon = None
        controls.append(self)

    def start(self, *sets, preexec_fn=None):
        dlog = open(self.log, "a")
        args = [CTL, "--config", self.cfg]
        for s in sets:
            args += ["--set", s]
        self.daemon = subprocess.Popen(args + ["serve"], stdout=dlog, stderr=dlog, env=self.env, preexec_fn=preexec_fn)
        procs.append(self.daemon)
        for _ in range(200):
            if os.path.exists(f"{self.state}/control.sock") and \
                    http("GET", f"http://127.0.0.1:{self.cport}/v1/status")[0] == 401:
                return self.daemon
            if self.daemon.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"control daemon '{self.name}' did not start: " + open(self.log).read()[-3000:])

    def stop(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=30)

    def cli(self, *args, timeout=600):
        return subprocess.run([CTL, "--config", self.cfg, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def signed(self, method, path, body=b"", ts=None, delivery=None, secret=SECRET, timeout=10):
        ts = str(int(time.time())) if ts is None else str(ts)
        sig = sign(secret, method, path.split("?")[0], ts, delivery, body if method == "POST" else b"")
        h = {"X-Beava-Timestamp": ts, "X-Beava-Signature-256": sig, "Content-Type": "application/json"}
        if delivery:
            h["X-Beava-Delivery"] = delivery
        return http(method, f"http://127.0.0.1:{self.cport}{path}", body if method == "POST" else None, h,
                    timeout=timeout)

    def follow(self, dep_id, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            st, d = self.signed("GET", f"/v1/deploys/{dep_id}")
            if st == 200 and d["status"] not in ("queued", "running"):
                return d
            time.sleep(0.3)
        return None

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def last(self, n=1):
        return json.loads(self.cli("history", "--json", "-n", str(n)).stdout)["deploys"]

    def row(self):
        return http("POST", f"http://127.0.0.1:{self.http_port}/get", {"table": "SiteMetrics", "key": ""})

    def views(self):
        st, r = self.row()
        if not isinstance(r, dict):
            return None
        return r.get("page_views_24h", r.get("count"))

    def push_views(self, n, prefix="s"):
        for i in range(n):
            http("POST", f"http://127.0.0.1:{self.http_port}/push/PageView",
                 {"session_id": f"{prefix}{i}", "path": "/", "dwell_ms": 1000 + i})

    def registry_version(self):
        return http("GET", f"http://127.0.0.1:{self.admin_port}/registry")[1]

    def server_pid(self):
        try:
            return json.load(open(f"{self.state}/instance.json")).get("pid")
        except Exception:
            return None

    def kill_server(self):
        """The server runs in its own session: stop it through its recorded pids."""
        try:
            inst = json.load(open(f"{self.state}/instance.json"))
        except Exception:
            return
        for k in ("pid", "monitor_pid"):
            if inst.get(k):
                try:
                    os.kill(inst[k], signal.SIGKILL)
                except Exception:
                    pass


def sign(secret, method, path, ts, delivery, body):
    """The daemon's signing string (control/README.md): method, path, timestamp, delivery, each
    followed by a newline, then the raw body."""
    msg = f"{method}\n{path}\n{ts}\n{delivery or ''}\n".encode() + body
    return "sha256=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def steps_of(d):
    return [s["step"] for s in (d or {}).get("steps", [])]


def step(d, name):
    for s in (d or {}).get("steps", []):
        if s["step"] == name:
            return s
    return None


def main():
    if not BEAVA or not os.access(BEAVA, os.X_OK):
        log(f"SKIP: the beava server binary does not exist yet (BEAVA_BIN='{BEAVA}'); control e2e not run")
        return 0
    for tool in ("docker-registry", "skopeo", "umoci", "bwrap", "htpasswd", "dbus-daemon", "openssl"):
        if not shutil.which(tool):
            log(f"FAIL - required tool '{tool}' is not installed")
            return 1
    for what, path in (("beava-control", CTL), ("fake_beava (FAKE_BEAVA_BIN)", FAKE_BEAVA),
                       ("fake_systemd (FAKE_SYSTEMD_BIN)", FAKE_SYSTEMD)):
        if not path or not os.access(path, os.X_OK):
            log(f"FAIL - {what} binary not found at '{path}'")
            return 1
    tmp = tempfile.mkdtemp(prefix="ctl-e2e-")
    os.chmod(tmp, 0o711)
    try:
        return scenario(tmp)
    finally:
        for c in controls:
            if c.daemon and c.daemon.poll() is None:
                c.daemon.kill()
                c.daemon.wait()
        for c in controls:
            c.kill_server()
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        time.sleep(0.3)
        shutil.rmtree(tmp, ignore_errors=True)


def scenario(tmp):
    t_all = time.time()
    run("htpasswd", "-Bbc", f"{tmp}/htpasswd", "ci", "ci-password")
    reg = start_registry(tmp, "registry", f"{{htpasswd: {{realm: e2e, path: {tmp}/htpasswd}}}}")
    repo = f"{reg}/beava"
    mdir = f"{tmp}/manifests"
    shutil.copytree(os.path.join(SRC, "config", "manifests"), mdir)

    def build_push(tag, revision, binary=BEAVA, manifests=None, env=()):
        args = [BUILD_IMAGE, "--binary", binary, "--revision", revision, "--version", "0.0.1",
                "--layout", f"{tmp}/layout-{tag}", "--push", f"{repo}:{tag}", "--creds", CREDS]
        if manifests:
            args += ["--manifests", manifests]
        for e in env:
            args += ["--env", e]
        return run(*args).stdout.strip().splitlines()[-1]

    imgs = {"rev_a": "a" * 40, "rev_b": "b" * 40}
    imgs["a"] = build_push("sha-a", imgs["rev_a"])
    imgs["b"] = build_push("sha-b", imgs["rev_b"])
    check(imgs["a"].startswith("sha256:") and imgs["a"] != imgs["b"], "two revisions built with build-image and pushed",
          imgs["a"])
    ctx = {"tmp": tmp, "reg": reg, "repo": repo, "mdir": mdir, "imgs": imgs, "build_push": build_push}
    phases = [("main", phase_main), ("token", phase_token), ("systemd", phase_systemd), ("process", phase_process),
              ("security", phase_security)]
    only = [p for p in os.environ.get("E2E_PHASES", "").split(",") if p]
    for name, fn in phases:
        if only and name not in only:
            continue
        t0 = time.time()
        log(f"# phase {name}")
        try:
            fn(ctx)
        except Exception:
            traceback.print_exc()
            check(False, f"phase {name} crashed")
        log(f"# phase {name}: {time.time() - t0:.1f}s")
    return finish(controls, t_all)


def finish(daemons, t_all, tail=4000):
    """A scenario's closing lines: each daemon's control.log tail if anything failed, then the
    totals. Returns the exit code."""
    if results["failed"]:
        for c in daemons:
            log(f"# --- {c.name} control.log (tail)")
            try:
                log(open(c.log).read()[-tail:])
            except OSError:
                pass
    log(f"{results['passed']} passed, {results['failed']} failed ({time.time() - t_all:.0f}s)")
    return 0 if results["failed"] == 0 else 1


def entry():
    """The scripts' entry point: main(), a crash of the harness counted as a failure."""
    try:
        sys.exit(main())
    except Exception:  # a crash of the harness is a failure, with the reason
        traceback.print_exc()
        log(f"{results['passed']} passed, {results['failed'] + 1} failed")
        sys.exit(1)


# ---- main: the bwrap runtime and most of the acceptance list ---------------------------------

def phase_main(ctx):
    tmp, reg, repo, mdir, imgs, build_push = (ctx[k] for k in ("tmp", "reg", "repo", "mdir", "imgs", "build_push"))
    dig_a, dig_b, rev_a, rev_b = imgs["a"], imgs["b"], imgs["rev_a"], imgs["rev_b"]
    with open(f"{tmp}/beava.yaml", "w") as f:
        f.write("log_level: info\n")  # runtime.config: bound read-only at /etc/beava/beava.yaml
    c = Control(tmp, "main", repo, manifests=mdir, server_config=f"{tmp}/beava.yaml")
    c.start()
    sock = f"{c.state}/control.sock"
    check(stat.S_IMODE(os.stat(sock).st_mode) == 0o660, "CLI socket has mode 0660", oct(os.stat(sock).st_mode))

    # one daemon per host: a second serve on the same state dir is refused
    p = subprocess.run([CTL, "--config", c.cfg, "serve"], capture_output=True, text=True, env=c.env, timeout=30)
    check(p.returncode != 0 and "one daemon per host" in (p.stdout + p.stderr), "a second daemon is refused (host lock)",
          p.stdout + p.stderr)

    # 1. deploy A through the CLI
    p = c.cli("deploy", f"{repo}:sha-a", "--revision", rev_a, "--wait")
    check(p.returncode == 0, "deploy A: pulled, verified, started, ready, manifests applied", p.stdout + p.stderr)
    check("probe" in p.stdout and "verify" in p.stdout, "CLI shows the steps with timings", p.stdout)
    s = c.status()
    check(s["current"]["digest"] == dig_a and s["instance"]["ready"], "status: A runs and is ready")
    check(s["current"].get("revision") == rev_a and s["current"].get("since") and s["current"].get("manifests_hash"),
          "status says which revision and manifests hash run, and since when", s["current"])
    st, r = c.row()
    check(st == 200, "SiteMetrics answers /get", f"{st} {r}")
    c.push_views(3)
    check(c.views() == 3, "three page views counted", c.row())

    # 2. deploy B through a signed CI trigger
    body = json.dumps({"image": f"{repo}:sha-b", "revision": rev_b}).encode()
    st, r = c.signed("POST", "/v1/deploys", body, delivery="e2e-1")
    check(st == 202, "signed trigger accepted", f"{st} {r}")
    d = c.follow(r["id"]) if st == 202 else None
    check(d and d["status"] == "succeeded", "deploy B succeeded", d)
    check(c.views() == 3, "B recreated on the same data: events still counted", c.row())
    hist = c.last(50)
    check(sum(1 for h in hist if h.get("status") == "succeeded") >= 2, "journal shows both deploys")
    check(c.status()["current"]["previous"]["digest"] == dig_a, "A recorded as the previous release")

    # 3. the same deploy twice is a no-op
    p = c.cli("deploy", f"{repo}:sha-b", "--wait")
    check(p.returncode == 0 and "noop" in p.stdout, "same release again: no-op that says so", p.stdout)

    # 4. authentication of triggers: 401 and nothing happens
    n_hist = len(c.last(1000))
    st, _ = http("POST", f"http://127.0.0.1:{c.cport}/v1/deploys", body)
    check(st == 401, "unsigned trigger: 401")
    st, _ = c.signed("POST", "/v1/deploys", body, delivery="e2e-2", secret="wrong-secret-000000")
    check(st == 401, "badly signed trigger: 401")
    st, _ = c.signed("POST", "/v1/deploys", body, ts=int(time.time()) - 3600, delivery="e2e-3")
    check(st == 401, "stale trigger: 401")
    st, _ = c.signed("POST", "/v1/deploys", body, delivery="e2e-1")
    check(st == 401, "replayed delivery id: 401")
    st, _ = http("GET", f"http://127.0.0.1:{c.cport}/v1/status")
    check(st == 401, "unsigned GET: 401")
    st, _ = c.signed("POST", "/v1/deploys", json.dumps({"image": f"{reg}/other:x"}).encode(), delivery="e2e-4")
    check(st == 403, "image outside the repository: refused")
    check(c.status()["current"]["digest"] == dig_b and len(c.last(1000)) == n_hist,
          "nothing happened on refused triggers (no deploy journalled)")

    # 5. a tag pushed 5 s after the trigger is waited for
    body = json.dumps({"image": f"{repo}:sha-late", "revision": rev_a}).encode()
    st, r = c.signed("POST", "/v1/deploys", body, delivery="e2e-5")
    time.sleep(5)
    skopeo_copy(f"docker://{repo}:sha-a", f"docker://{repo}:sha-late")
    d = c.follow(r["id"])
    waited = step(d, "resolve")
    check(d and d["status"] == "succeeded" and waited and waited["detail"]["waited_ms"] >= 3000,
          "trigger for a tag pushed 5 s later waited, then deployed", d and d.get("message"))
    check(c.status()["current"]["digest"] == dig_a, "A (via the late tag) runs")

    # 6. two deploys at once are serialised (queued in order)
    p1 = subprocess.Popen([CTL, "--config", c.cfg, "deploy", f"{repo}:sha-b"], stdout=subprocess.PIPE, text=True, env=c.env)
    p2 = subprocess.Popen([CTL, "--config", c.cfg, "deploy", f"{repo}:sha-a"], stdout=subprocess.PIPE, text=True, env=c.env)
    ids = [p1.communicate()[0].split()[0], p2.communicate()[0].split()[0]]
    ds = [c.follow(i) for i in ids]
    check(all(x and x["status"] in ("succeeded", "noop") for x in ds), "both concurrent deploys finished", ds)
    if all(ds):
        first, second = sorted(ds, key=lambda x: x["started"])
        check(first["ended"] <= second["started"], "the second started only after the first ended")
    last = sorted(ds, key=lambda x: x["started"])[-1] if all(ds) else None
    check(last and c.status()["current"]["digest"] == (dig_a if last["image"].endswith("sha-a") else dig_b),
          "the later deploy is what runs")
    check(c.cli("deploy", f"{repo}:sha-b", "--wait").returncode == 0, "back on B")

    # 7. the image's revision label must match the trigger's revision
    p = c.cli("deploy", f"{repo}:sha-a", "--revision", rev_b[:12], "--wait")
    check(p.returncode != 0 and "revision label" in p.stdout, "revision label mismatch: refused", p.stdout)
    check(c.status()["current"]["digest"] == dig_b, "B keeps running after the refused revision")

    # 8. a multi-platform image index: the host's platform is picked; without it: refused
    def put_index(tag, entries):
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dg, "size": sz,
             "platform": {"os": "linux", "architecture": arch}} for dg, sz, arch in entries]}
        raw = json.dumps(idx).encode()
        auth = "Basic " + base64.b64encode(CREDS.encode()).decode()
        st, _ = http("PUT", f"http://{reg}/v2/beava/manifests/{tag}", raw,
                     {"Content-Type": "application/vnd.oci.image.index.v1+json", "Authorization": auth})
        return st, "sha256:" + hashlib.sha256(raw).hexdigest()

    def msize(tag):
        man = json.load(open(f"{tmp}/layout-{tag}/index.json"))["manifests"][0]
        return man["size"]

    other = "arm64" if HOST_ARCH != "arm64" else "amd64"
    # the host's entry is A; B is listed first under another architecture
    st, dig_idx = put_index("multi", [(dig_b, msize("sha-b"), other), (dig_a, msize("sha-a"), HOST_ARCH)])
    check(st == 201, "image index with two platforms pushed", st)
    p = c.cli("deploy", f"{repo}:multi", "--revision", rev_a, "--wait")
    d = c.last(1)[0]
    check(p.returncode == 0 and d["status"] == "succeeded", f"index deployed (linux/{HOST_ARCH} picked)", p.stdout)
    pull = step(d, "pull")
    check(pull and pull["detail"]["manifest"] == dig_a and c.status()["current"]["digest"] == dig_idx,
          "the index digest is the release; the host platform's manifest (A) was pulled", pull)
    st, dig_idx2 = put_index("foreign", [(dig_b, msize("sha-b"), other), (dig_a, msize("sha-a"), "s390x")])
    p = c.cli("deploy", f"{repo}:foreign", "--wait")
    check(p.returncode != 0 and f"has no manifest for linux/{HOST_ARCH}" in p.stdout and "linux/s390x" in p.stdout,
          "an index without the host's platform: refused with a clear error", p.stdout)
    check(c.status()["current"]["digest"] == dig_idx and c.status()["instance"]["ready"],
          "the index release keeps running")
    check(c.cli("deploy", f"{repo}:sha-b", "--wait").returncode == 0, "back on B")

    # 9. a corrupted blob in the registry's storage: digest mismatch, refused, B keeps running
    extra = f"{tmp}/manifests-c"
    shutil.copytree(mdir, extra)
    with open(f"{extra}/README.txt", "w") as f:
        f.write("makes image C's layer differ\n")
    build_push("sha-c", "c" * 40, manifests=extra)
    idx = json.load(open(f"{tmp}/layout-sha-c/index.json"))
    man_digest = idx["manifests"][0]["digest"]
    man = json.load(open(f"{tmp}/layout-sha-c/blobs/sha256/{man_digest[7:]}"))
    layer = man["layers"][-1]["digest"][7:]
    blob = f"{tmp}/registry/docker/registry/v2/blobs/sha256/{layer[:2]}/{layer}/data"
    with open(blob, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    p = c.cli("deploy", f"{repo}:sha-c", "--wait")
    check(p.returncode != 0 and "digest mismatch" in p.stdout, "corrupted blob: digest mismatch, refused", p.stdout)
    s = c.status()
    check(s["current"]["digest"] == dig_b and s["instance"]["ready"], "B keeps running after the refused pull")
    check(not glob.glob(f"{c.state}/blobs/sha256/{layer}*"), "the corrupted blob is not in the blob store")

    # 10. an image whose server exits at once: automatic rollback, data intact
    build_push("sha-bad", "d" * 40, binary=shutil.which("sleep"))
    p = c.cli("deploy", f"{repo}:sha-bad", "--wait")
    check(p.returncode != 0 and "rolled_back" in p.stdout, "server exits during startup: rolled back", p.stdout)
    s = c.status()
    check(s["current"]["digest"] == dig_b and s["instance"]["ready"], "previous digest running again")
    check(c.views() == 3, "data intact after the rollback", c.row())
    check(c.last(1)[0]["status"] == "rolled_back", "journal says rolled back")

    # 11. a server that stays up but never becomes ready (/ready 503): rollback after the deadline
    c.stop()
    c.start("runtime.ready_timeout_s=5")
    build_push("sha-never", "e" * 40, binary=FAKE_BEAVA, env=["FAKE_BEAVA_READY_AFTER_MS=1000000000"])
    t0 = time.time()
    p = c.cli("deploy", f"{repo}:sha-never", "--wait")
    took = time.time() - t0
    d = c.last(1)[0]
    pr = step(d, "probe")
    check(p.returncode != 0 and d["status"] == "rolled_back" and pr and not pr["ok"] and "not ready within 5s" in pr.get("message", ""),
          "never-ready server (up, /ready 503): rolled back after the deadline", p.stdout)
    check(took >= 5 and pr and pr["ms"] >= 4900, "the full readiness deadline was waited", f"{took:.1f}s")
    check(pr and "log_tail" in pr.get("detail", {}), "the server's log tail is in the journal")
    check([x for x in steps_of(d) if x.startswith("rollback.")] ==
          ["rollback.stop", "rollback.restore-data", "rollback.start", "rollback.probe"]
          and d.get("rolled_back_to") == dig_b, "journal: stopped, data restored, previous digest started and ready",
          steps_of(d))
    s = c.status()
    check(s["current"]["digest"] == dig_b and s["instance"]["ready"] and c.views() == 3,
          "previous digest running again, data intact")
    c.stop()
    c.start()

    # 12. a layer with ../ paths or an absolute symlink: refused
    for name, member in (("dotdot", "../escape"), ("abslink", None)):
        lay = f"{tmp}/layout-{name}"
        make_evil_layout(lay, member)
        run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", CREDS, f"oci:{lay}:evil",
            f"docker://{repo}:{name}")
        p = c.cli("deploy", f"{repo}:{name}", "--wait")
        want = "escapes the rootfs" if member else "absolute symlink"
        check(p.returncode != 0 and want in p.stdout, f"malicious layer ({name}) refused", p.stdout)
    check(not os.path.exists(f"{tmp}/escape") and not os.path.exists(f"{c.state}/escape") and
          not os.path.exists(f"{c.state}/images/escape"), "nothing was written outside the rootfs")
    check(c.status()["current"]["digest"] == dig_b, "B still running after the malicious images")

    # 13. manifests: conflicts refused before any call; destructive needs allow_destructive
    v0 = c.registry_version()
    conf = f"{tmp}/m-conflict"
    shutil.copytree(mdir, conf)
    with open(f"{conf}/20-other.yaml", "w") as f:
        f.write("tables:\n  SiteMetrics:\n    source: PageView\n    features:\n"
                "      page_views_24h: {op: count, window: 12h}\n")
    p = c.cli("apply", conf)
    check(p.returncode != 0 and "conflicting definitions of 'SiteMetrics'" in p.stdout, "conflicting manifests refused",
          p.stdout)
    d = c.last(1)[0]
    check(not [x for x in steps_of(d) if x.startswith("apply")] and c.registry_version() == v0,
          "refused before any call to the server (no dry run, no register)", steps_of(d))
    des = f"{tmp}/m-destructive"
    os.makedirs(des)
    text = open(f"{mdir}/10-sitemetrics.yaml").read().replace("{op: count, window: 24h}", "{op: count, window: 12h}")
    with open(f"{des}/10-sitemetrics.yaml", "w") as f:
        f.write(text)
    p = c.cli("apply", des)
    check(p.returncode != 0 and "allow_destructive" in p.stdout, "destructive change without allow_destructive refused",
          p.stdout)
    check(c.registry_version() == v0 and c.views() == 3, "registry and data unchanged after the refusal")
    with open(f"{des}/10-sitemetrics.yaml", "w") as f:
        f.write(text.replace("allow_destructive: false", "allow_destructive: true"))
    p = c.cli("apply", des)
    check(p.returncode == 0 and "apply.backup" in p.stdout, "with allow_destructive: snapshot backed up, applied", p.stdout)
    d = c.last(1)[0]
    bk = step(d, "apply.backup")
    bpath = bk and bk.get("detail", {}).get("backup")
    check(bpath and bpath.startswith(f"{c.state}/backups/{d['id']}/") and os.path.exists(bpath) and
          bk["detail"]["bytes"] > 0, "the snapshot was copied into state_dir/backups/<deploy id>/", bk)
    names = steps_of(d)
    check("apply.destructive" in names and names.index("apply.backup") < names.index("apply.destructive"),
          "the backup was taken before the destructive register", names)
    check(c.registry_version()["version"] > v0["version"], "registry version moved")

    # 14. the daemon killed with SIGKILL mid-deploy, restarted: consistent state. The kill
    # must land after the new server started and before the deploy ended; a fast deploy can
    # end first (nothing to recover then), so the scenario is tried again, other image.
    jpath = f"{c.state}/journal"
    for attempt in range(4):
        cur = c.status()["current"]["digest"]
        tag, tgt = ("sha-b", dig_b) if cur == dig_a else ("sha-a", dig_a)
        p = subprocess.Popen([CTL, "--config", c.cfg, "deploy", f"{repo}:{tag}"], stdout=subprocess.PIPE, text=True,
                             env=c.env)
        dep = p.communicate()[0].split()[0]
        end = time.time() + 60
        while time.time() < end:
            if '"step":"start"' in open(jpath).read().split(dep, 1)[-1]:
                break
            time.sleep(0.005)
        c.daemon.kill()
        c.daemon.wait()
        ended = any('"deploy.end"' in l and dep in l for l in open(jpath))
        c.start()
        d = c.follow(dep, 120)
        if not ended:
            break
    check(not ended, f"the daemon was killed mid-deploy (attempt {attempt + 1})")
    check(d and d["status"] in ("succeeded", "rolled_back"), "after SIGKILL + restart the deploy is finished or rolled back", d)
    recov = [json.loads(l) for l in open(jpath) if '"recovery"' in l and dep in l]
    check(recov and recov[-1].get("interrupted_at"), "the journal records the recovery and where it was interrupted", recov)
    s = c.status()
    want = tgt if d and d["status"] == "succeeded" else cur
    check(s["current"]["digest"] == want and s["instance"]["ready"], "status consistent with the journal", s)
    st, r = c.row()
    check(st == 200, "SiteMetrics answers after recovery", r)
    c.stop()
    c.kill_server()


# ---- token: bearer-token auth against a real token server ------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def start_token_server(tmp, issuer, service, users):
    """A Docker token server (the distribution token spec): GET /token?service=&scope= with
    Basic credentials -> {"token": JWT}; RS256 signature made with `openssl dgst -sign`,
    the signing cert in the JWT's x5c header and in the registry's rootcertbundle."""
    key, cert = f"{tmp}/token.key", f"{tmp}/token.crt"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
        "-subj", "/CN=e2e-token-issuer")
    der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True).stdout
    x5c = base64.b64encode(der).decode()
    seen = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(u.query)
            auth = self.headers.get("Authorization", "")
            user = None
            if auth.startswith("Basic "):
                name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                if users.get(name) == pw:
                    user = name
            seen.append({"path": u.path, "service": q.get("service", [""])[0], "scope": q.get("scope", []),
                         "user": user, "basic": auth.startswith("Basic ")})
            if u.path != "/token":
                self.send_error(404)
                return
            if user is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="e2e-token"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            access = []
            for sc in q.get("scope", []):
                parts = sc.split(":")
                if len(parts) == 3 and parts[0] == "repository":
                    access.append({"type": "repository", "name": parts[1],
                                   "actions": [a for a in parts[2].split(",") if a in ("pull", "push")]})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
            claims = {"iss": issuer, "sub": user, "aud": q.get("service", [""])[0], "exp": now + 600,
                      "nbf": now - 30, "iat": now, "jti": os.urandom(8).hex(), "access": access}
            signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                                 capture_output=True, check=True).stdout
            token = signing_input + "." + b64url(sig)
            body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, cert, seen


def phase_token(ctx):
    tmp, repo, mdir, imgs = ctx["tmp"], ctx["repo"], ctx["mdir"], ctx["imgs"]
    srv, cert, seen = start_token_server(tmp, "e2e-issuer", "e2e-registry", {"ci": "ci-password"})
    try:
        realm = f"http://127.0.0.1:{srv.server_address[1]}/token"
        treg = start_registry(tmp, "registry-token", f"{{token: {{realm: '{realm}', service: e2e-registry, "
                                                     f"issuer: e2e-issuer, rootcertbundle: {cert}}}}}")
        st, _ = http("GET", f"http://{treg}/v2/")
        skopeo_copy(f"docker://{repo}:sha-a", f"docker://{treg}/beava:sha-a")
        check(any(x["user"] == "ci" and any("push" in s for s in x["scope"]) for x in seen),
              "skopeo pushed through the token server (push scope granted to ci)", seen)
        c = Control(tmp, "token", f"{treg}/beava", manifests=mdir)
        c.start()
        n0 = len(seen)
        p = c.cli("deploy", f"{treg}/beava:sha-a", "--revision", imgs["rev_a"], "--wait")
        check(p.returncode == 0, "deploy pulled through bearer-token auth", p.stdout + p.stderr)
        mine = seen[n0:]
        check(mine and all(x["user"] == "ci" and x["service"] == "e2e-registry" for x in mine) and
              any("repository:beava:pull" in x["scope"] for x in mine),
              "the daemon fetched a token for repository:beava:pull with its credentials", mine)
        s = c.status()
        check(s["current"]["digest"] == imgs["a"] and s["instance"]["ready"] and c.row()[0] == 200,
              "A runs from the token-auth registry and SiteMetrics answers")
        # a wrong password: the token server says 401, refused at once (not waited out)
        with open(c.passfile, "w") as f:
            f.write("wrong\n")
        t0 = time.time()
        p = c.cli("deploy", f"{treg}/beava:sha-b", "--wait")
        check(p.returncode != 0 and "unauthorized" in p.stdout and time.time() - t0 < 10,
              "a wrong registry password: refused at once, naming the token endpoint", p.stdout)
        check(c.status()["current"]["digest"] == imgs["a"], "A keeps running")
        c.stop()
        c.kill_server()
    finally:
        srv.shutdown()


# ---- systemd: the systemd runtime over a private D-Bus with a fake systemd1 -------------------

def phase_systemd(ctx):
    tmp, repo, mdir, imgs = ctx["tmp"], ctx["repo"], ctx["mdir"], ctx["imgs"]
    bdir = f"{tmp}/dbus"
    os.makedirs(bdir)
    with open(f"{bdir}/bus.conf", "w") as f:
        f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={bdir}/system_bus_socket</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>
""")
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={bdir}/bus.conf", "--nofork", "--print-address=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(bus)
    addr = bus.stdout.readline().strip()
    check(addr.startswith("unix:"), "private dbus-daemon up", addr)
    rec = f"{bdir}/systemd-calls.jsonl"
    flog = open(f"{bdir}/fake_systemd.log", "w")
    fake = subprocess.Popen([FAKE_SYSTEMD, "--address", addr, "--record", rec, "--exec"], stdout=subprocess.PIPE,
                            stderr=flog, text=True)
    procs.append(fake)
    check(fake.stdout.readline().strip() == "ready", "fake org.freedesktop.systemd1 owns its name")
    with open(f"{tmp}/beava-systemd.yaml", "w") as f:
        f.write("log_level: info\n")
    c = Control(tmp, "systemd", repo, runtime="systemd", manifests=mdir, server_config=f"{tmp}/beava-systemd.yaml",
                extra_yaml=f"systemd: {{bus: '{addr}', unit: beava-e2e.service}}\n")
    c.start()
    p = c.cli("deploy", f"{repo}:sha-a", "--revision", imgs["rev_a"], "--wait")
    check(p.returncode == 0, "systemd runtime: deploy A (transient unit started, ready, manifests applied)",
          p.stdout + p.stderr)
    s = c.status()
    check(s["instance"] and s["instance"].get("runtime") == "systemd" and s["instance"].get("unit") == "beava-e2e.service"
          and s["instance"]["ready"], "status: the unit runs and is ready", s)
    c.push_views(2)
    check(c.views() == 2, "events counted by the server in the unit")
    p = c.cli("deploy", f"{repo}:sha-b", "--revision", imgs["rev_b"], "--wait")
    check(p.returncode == 0 and c.status()["current"]["digest"] == imgs["b"], "systemd runtime: deploy B", p.stdout)
    check(c.views() == 2, "B in a new unit on the same data: events still counted", c.row())
    calls = [json.loads(l) for l in open(rec)]
    starts = [x for x in calls if x["method"] == "StartTransientUnit"]
    check(len(starts) == 2, "two StartTransientUnit calls", [x["method"] for x in calls])
    if starts:
        pb = starts[-1]["properties"]
        ex = pb.get("ExecStart", [[None, []]])[0]
        env = pb.get("Environment", [])
        check(pb.get("RootDirectory") == f"{c.state}/images/{imgs['b'][7:]}/rootfs", "RootDirectory= B's unpacked rootfs",
              pb.get("RootDirectory"))
        check(pb.get("BindPaths") == [[c.data, "/data", False, 0]], "BindPaths= the data dir at /data", pb.get("BindPaths"))
        check(ex[0] == "/usr/bin/beava" and
              ex[1] == ["/usr/bin/beava", "--data-dir", "/data", "--config", "/etc/beava/beava.yaml"],
              "ExecStart= the image's entrypoint on /data with the config", ex)
        check(pb.get("BindReadOnlyPaths") == [[f"{tmp}/beava-systemd.yaml", "/etc/beava/beava.yaml", False, 0]],
              "BindReadOnlyPaths= runtime.config at /etc/beava/beava.yaml", pb.get("BindReadOnlyPaths"))
        check(f"BEAVA_LISTEN_ADDR=127.0.0.1:{c.http_port}" in env and f"BEAVA_ADMIN_ADDR=127.0.0.1:{c.admin_port}" in env
              and "PATH=/usr/bin:/bin" in env, "Environment= the listen addresses and the image's PATH", env)
        check(pb.get("User") == "65532" and pb.get("Group") == "65532", "User=/Group= the image's user, numeric",
              (pb.get("User"), pb.get("Group")))
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        check(pb.get("LimitNOFILE") == hard and pb.get("LimitNOFILESoft") == hard,
              "LimitNOFILE=/LimitNOFILESoft= the daemon's hard descriptor limit", (pb.get("LimitNOFILE"),
                                                                                    pb.get("LimitNOFILESoft")))
        check(pb.get("Type") == "exec" and pb.get("ProtectSystem") == "strict" and
              pb.get("StandardOutputFileToAppend", "").startswith(f"{c.state}/logs/"),
              "Type=exec, read-only image, log appended under state_dir/logs", pb)
    # the old unit was stopped (its stop job awaited) before the new one started
    seq = [x["method"] for x in calls]
    i_stop = seq.index("StopUnit") if "StopUnit" in seq else -1
    i_start2 = max(i for i, m in enumerate(seq) if m == "StartTransientUnit")
    check(0 <= i_stop < i_start2 and any(m == "JobRemoved(signal)" for m in seq[i_stop:i_start2]) and
          any(m == "UnitDown(event)" for m in seq[i_stop:i_start2]),
          "StopUnit, the old server down and its job removed, then StartTransientUnit", seq)
    c.stop()
    fake.terminate()
    fake.wait(timeout=10)
    bus.terminate()
    bus.wait(timeout=10)


# ---- process: the installed binary ---------------------------------------------------------

def phase_process(ctx):
    tmp, repo, mdir = ctx["tmp"], ctx["repo"], ctx["mdir"]
    c = Control(tmp, "process", repo, runtime="process", manifests=mdir)
    binary = f"{c.dir}/bin/beava"  # stands for the installed /usr/bin/beava
    os.makedirs(os.path.dirname(binary))
    shutil.copy2(BEAVA, binary)
    c.start(f"runtime.binary={binary}")
    p = c.cli("deploy", f"{repo}:sha-a", "--wait")
    check(p.returncode != 0 and "use the image name 'local'" in p.stdout, "process runtime: an image name is refused",
          p.stdout)
    p = c.cli("deploy", "local", "--wait")
    check(p.returncode == 0, "process runtime: deploy of the installed binary", p.stdout + p.stderr)
    d1 = c.status()["current"]["digest"]
    check(d1 == "sha256:" + hashlib.sha256(open(binary, "rb").read()).hexdigest(), "the release is the binary's sha256")
    check(c.row()[0] == 200, "manifests registered: SiteMetrics answers")
    c.push_views(2)
    check(c.views() == 2, "events counted")
    p = c.cli("deploy", "local", "--wait")
    check(p.returncode == 0 and "noop" in p.stdout, "same binary again: no-op", p.stdout)
    # a package upgrade replaces the binary
    data = open(BEAVA, "rb").read() + b"\0beava-control e2e: upgraded\n"
    with open(binary + ".new", "wb") as f:
        f.write(data)
    os.chmod(binary + ".new", 0o755)
    os.rename(binary + ".new", binary)
    p = c.cli("deploy", "local", "--wait")
    s = c.status()
    d2 = s["current"]["digest"]
    check(p.returncode == 0 and d2 == "sha256:" + hashlib.sha256(data).hexdigest() and d2 != d1,
          "redeploy after the upgrade: the new binary runs", p.stdout)
    check(s["current"]["previous"]["digest"] == d1, "the previous binary is recorded as the previous release")
    check(os.readlink(f"/proc/{c.server_pid()}/exe") == f"{c.state}/images/{d2[7:]}/beava",
          "the server runs from its copy in the image store")
    check(c.views() == 2, "data intact across the upgrade", c.row())
    p = c.cli("rollback")
    s = c.status()
    check(p.returncode == 0 and s["current"]["digest"] == d1 and s["instance"]["ready"],
          "rollback: the previous binary runs again", p.stdout)
    check(os.readlink(f"/proc/{c.server_pid()}/exe") == f"{c.state}/images/{d1[7:]}/beava",
          "rolled back to the kept copy of the previous binary (the installed one is newer)")
    check(c.views() == 2, "data intact after the rollback", c.row())
    c.stop()
    c.kill_server()


# ---- security: issue 12's control-side holes ---------------------------------------------------

def tar_bytes(members):
    """An uncompressed tar of (name, kind, data) members: d dir, f file, l symlink, c char device."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o755 if kind == "d" else 0o644
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif kind == "l":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                t.addfile(ti)
            elif kind == "c":
                ti.type = tarfile.CHRTYPE
                ti.devmajor, ti.devminor = 1, 3
                t.addfile(ti)
            else:
                raw = data.encode()
                ti.size = len(raw)
                t.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


class Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def add_layer_and_push(tmp, base_layout, name, layer_tar, repo):
    """The build-image layout of A plus one crafted layer (umoci raw add-layer), pushed with
    skopeo; returns the pushed manifest digest (the release digest)."""
    lay = f"{tmp}/layout-evil-{name}"
    shutil.copytree(base_layout, lay)
    tarp = f"{tmp}/evil-{name}.tar"
    with open(tarp, "wb") as f:
        f.write(layer_tar)
    tag = json.load(open(f"{lay}/index.json"))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    run("umoci", "raw", "add-layer", "--image", f"{lay}:{tag}", "--tag", "evil", tarp)
    dfile = f"{tmp}/evil-{name}.digest"
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", CREDS, "--digestfile", dfile,
        f"oci:{lay}:evil", f"docker://{repo}:evil-{name}")
    return open(dfile).read().strip()


def gzip_bomb_layout(path, nbytes):
    """A layout whose only layer is one file of nbytes zeros, gzip'd (a few hundred KiB)."""
    os.makedirs(f"{path}/blobs/sha256")

    def put(data):
        h = hashlib.sha256(data).hexdigest()
        open(f"{path}/blobs/sha256/{h}", "wb").write(data)
        return "sha256:" + h, len(data)

    raw, gz = io.BytesIO(), io.BytesIO()
    import gzip
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=9, mtime=0) as g:
        with tarfile.open(fileobj=g, mode="w|") as t:
            for d in ("data", "usr"):
                ti = tarfile.TarInfo(d)
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            ti = tarfile.TarInfo("usr/zeros")
            ti.size = nbytes
            t.addfile(ti, io.BufferedReader(Zeros(nbytes), 1 << 20))
    del raw
    layer, lsize = put(gz.getvalue())
    cfg = json.dumps({"architecture": HOST_ARCH, "os": "linux", "config": {"Entrypoint": ["/usr/bin/beava"]},
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cd, cs = put(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer,
                                  "size": lsize}]}).encode()
    md, ms = put(man)
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
               "size": ms, "annotations": {"org.opencontainers.image.ref.name": "bomb"}}]}, open(f"{path}/index.json", "w"))
    json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{path}/oci-layout", "w"))
    return lsize


def largest_layer_bytes(layout):
    """Uncompressed size of the biggest layer of a build-image layout."""
    import gzip
    idx = json.load(open(f"{layout}/index.json"))["manifests"][0]["digest"]
    man = json.load(open(f"{layout}/blobs/sha256/{idx[7:]}"))
    sizes = []
    for l in man["layers"]:
        with gzip.open(f"{layout}/blobs/sha256/{l['digest'][7:]}") as g:
            n = 0
            while True:
                b = g.read(1 << 20)
                if not b:
                    break
                n += len(b)
        sizes.append(n)
    return max(sizes)


def half_open(src_ip, port, first=b"POST /v1/deploys HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"):
    s = socket.socket()
    s.bind((src_ip, 0))
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(first)
    except OSError:
        pass
    return s


def closed_by_server(s, timeout):
    """True when the server ends the connection (EOF or reset) within timeout seconds."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


def phase_security(ctx):
    import resource
    tmp, repo, mdir, imgs = ctx["tmp"], ctx["repo"], ctx["mdir"], ctx["imgs"]
    fake = os.path.realpath(BEAVA) == os.path.realpath(FAKE_BEAVA)
    base_layout = f"{tmp}/layout-sha-a"
    biggest = largest_layer_bytes(base_layout)
    max_layer = max(2 * biggest, 64 << 20)
    c = Control(tmp, "security", repo, manifests=mdir,
                extra_yaml=f"unpack: {{max_layer_bytes: {max_layer}, max_image_bytes: {4 * max_layer}}}\n")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(512, hard)
    # the daemon must not hold the listeners here: the test takes the data port itself
    c.start("runtime.hold_sockets=false", preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    check(open(f"/proc/{c.daemon.pid}/limits").read().count(f"Max open files            {soft}") == 1,
          f"the daemon runs with a soft descriptor limit of {soft} (hard {hard})")

    # -- item 3: the gate quotes the server's own last error, verbatim
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", c.http_port))
    blocker.listen(1)
    p = c.cli("deploy", f"{repo}:sha-a", "--revision", imgs["rev_a"], "--wait")
    blocker.close()
    d = c.last(1)[0]
    logs = sorted(glob.glob(f"{c.state}/logs/*"), key=os.path.getmtime)
    said = None
    for line in (open(logs[-1]).read().splitlines() if logs else []):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if isinstance(j, dict) and j.get("level") == "error":
            said = line.rstrip()
    check(said is not None, "the server logged an error when its port was taken", logs and open(logs[-1]).read()[-2000:])
    pr = step(d, "probe")
    check(p.returncode != 0 and d["status"] == "failed" and said and pr and said in pr.get("message", ""),
          "the gate's failure quotes the server's last error line verbatim (journal step)", pr)
    check(said and said in (d.get("message") or ""), "... in the deploy's history message", d.get("message"))
    check(said and said in p.stdout, "... and in the CLI output", p.stdout)
    jl = open(f"{c.state}/journal").read()
    check(said and json.dumps(said)[1:-1] in jl, "... and in the journal file")

    # -- item 4: trigger replay. A real signed trigger deploys A.
    body = json.dumps({"image": f"{repo}:sha-a", "revision": imgs["rev_a"]}).encode()
    ts = str(int(time.time()))
    sig = sign(SECRET, "POST", "/v1/deploys", ts, "run-1", body)
    hdr = {"X-Beava-Timestamp": ts, "X-Beava-Signature-256": sig, "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{c.cport}/v1/deploys"
    st, r = http("POST", url, body, dict(hdr, **{"X-Beava-Delivery": "run-1"}))
    check(st == 202, "signed trigger (signature over method, path, timestamp, delivery, body) accepted", f"{st} {r}")
    d = c.follow(r["id"]) if st == 202 else None
    check(d and d["status"] == "succeeded", "A deployed by the trigger", d and d.get("message"))
    n_hist = len(c.last(1000))
    for other in ("RUN-1", "run-2", "run-1x"):
        st, r = http("POST", url, body, dict(hdr, **{"X-Beava-Delivery": other}))
        check(st == 401 and "bad signature" in json.dumps(r), f"the captured request replayed with delivery '{other}': 401",
              f"{st} {r}")
    st, r = http("POST", url, body, dict(hdr, **{"X-Beava-Delivery": "run-1"}))
    check(st == 401 and "replayed" in json.dumps(r), "the captured request replayed as is: 401", f"{st} {r}")
    st, r = http("POST", f"http://127.0.0.1:{c.cport}/v1/apply", body, dict(hdr, **{"X-Beava-Delivery": "run-1"}))
    check(st == 401, "the captured signature on another path: 401", f"{st} {r}")
    st, r = c.signed("POST", "/v1/deploys", body, delivery="run-3")
    check(st == 409 and "run-1" in json.dumps(r), "the same image + revision under a new, validly signed delivery "
          "within the window: 409 naming the first delivery", f"{st} {r}")
    check(len(c.last(1000)) == n_hist and c.status()["current"]["digest"] == imgs["a"],
          "nothing was queued by the replays")

    # -- item 11: the server got soft NOFILE = hard; the real server logs its limit
    pid = c.server_pid()
    lim = [l for l in open(f"/proc/{pid}/limits").read().splitlines() if l.startswith("Max open files")]
    fields = lim[0].split() if lim else []
    check(fields[3:5] == [str(hard), str(hard)], f"the server runs with soft = hard = {hard} open files", lim)
    if not fake:
        slog = open(json.load(open(f"{c.state}/instance.json"))["log"]).read()
        check(f'"nofile_limit":{hard}' in slog, "the server logs its descriptor limit at start", slog[-1500:])

    # -- item 9: a half-open flood of the control port; a signed trigger still gets through
    # more than trigger.max_connections (256): only the per-address limit keeps a slot free
    flood = [half_open("127.0.0.2", c.cport) for _ in range(300)]
    body_b = json.dumps({"image": f"{repo}:sha-b", "revision": imgs["rev_b"]}).encode()
    # answered while the flood still holds its slots: they are held for the 10 s deadline, so
    # a trigger that had to wait for one would time out after 5 s
    st, r = c.signed("POST", "/v1/deploys", body_b, delivery="flood-1", timeout=5)
    check(st == 202, "during a flood of 300 half-sent requests a signed trigger is accepted", f"{st} {r}")
    st2, _ = c.signed("GET", "/v1/status", timeout=5)
    check(st2 == 200, "... and a signed GET answered")
    d = c.follow(r["id"]) if st == 202 else None
    check(d and d["status"] == "succeeded", "the flood-time trigger deployed B", d and d.get("message"))
    drip = half_open("127.0.0.3", c.cport, b"G")
    cut = False
    end = time.time() + 40
    while time.time() < end:  # one byte every half second: never idle, never complete
        try:
            drip.sendall(b"E")
        except OSError:
            cut = True
            break
        if closed_by_server(drip, 0.5):
            cut = True
            break
    check(cut, "a request dripped one byte at a time is cut at the request deadline")
    check(all(closed_by_server(s, 20) for s in flood), "every half-open flood connection was closed by the server")
    for s in flood + [drip]:
        s.close()

    # -- item 2: crafted layers on top of A's build-image layout, and a gzip bomb
    cases = [
        ("chain", [("a", "d", ""), ("a/b", "l", ".."), ("up", "l", "a/b/.."), ("up/.wh.victim", "f", "")],
         "'up' -> 'a/b/..' points outside the rootfs"),
        ("opaque", [("a", "d", ""), ("a/b", "l", ".."), ("vd", "l", "a/b/../victim-dir"),
                    ("vd/.wh..wh..opq", "f", "")], "'vd' -> 'a/b/../victim-dir' points outside the rootfs"),
        ("mismatch", [("a", "d", ""), ("a/b", "l", ".."), ("up", "l", "a/b/.."), ("up/x", "f", "not a dir")],
         "points outside the rootfs"),
        ("link", [("a", "d", ""), ("a/b", "l", ".."), ("up", "l", "a/b/..")], "points outside the rootfs"),
        ("device", [("dev", "d", ""), ("dev/mem", "c", "")], "device node"),
    ]
    for name, members, want in cases:
        dig = add_layer_and_push(tmp, base_layout, name, tar_bytes(members), repo)
        outside = f"{c.state}/images/{dig[7:]}"  # the rootfs's parent: where the escapes lead
        os.makedirs(f"{outside}/victim-dir", exist_ok=True)
        os.makedirs(f"{outside}/x", exist_ok=True)
        for f in ("victim", "victim-dir/keep", "x/keep"):
            with open(f"{outside}/{f}", "w") as fh:
                fh.write("host\n")
        p = c.cli("deploy", f"{repo}:evil-{name}", "--wait")
        check(p.returncode != 0 and want in p.stdout, f"crafted layer '{name}' refused ({want})", p.stdout[-1500:])
        check(all(os.path.isfile(f"{outside}/{f}") for f in ("victim", "victim-dir/keep", "x/keep")) and
              os.path.isdir(f"{outside}/x") and not os.path.exists(f"{outside}/rootfs"),
              f"'{name}': the host files next to the rootfs are untouched, no rootfs kept", os.listdir(outside))
    lay = f"{tmp}/layout-bomb"
    gz = gzip_bomb_layout(lay, max_layer + (64 << 20))
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", CREDS, f"oci:{lay}:bomb",
        f"docker://{repo}:bomb")
    p = c.cli("deploy", f"{repo}:bomb", "--wait")
    check(p.returncode != 0 and "unpack.max_layer_bytes" in p.stdout and str(max_layer) in p.stdout,
          f"a {gz // 1024} KiB gzip layer expanding past unpack.max_layer_bytes refused, naming the limit", p.stdout[-1500:])
    check(not glob.glob(f"{c.state}/images/*/rootfs.tmp.*"), "no partial rootfs left behind")
    s = c.status()
    check(s["current"]["digest"] == imgs["b"] and s["instance"]["ready"], "B keeps running after the refused images")
    c.stop()
    c.kill_server()


def make_evil_layout(path, dotdot_member):
    """An OCI layout whose only layer has a ../ entry (or an absolute symlink)."""
    os.makedirs(f"{path}/blobs/sha256")

    def put(data):
        h = hashlib.sha256(data).hexdigest()
        open(f"{path}/blobs/sha256/{h}", "wb").write(data)
        return "sha256:" + h, len(data)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for d in ("data", "usr", "usr/bin"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        if dotdot_member:
            ti = tarfile.TarInfo(dotdot_member)
            ti.size = 4
            t.addfile(ti, io.BytesIO(b"evil"))
        else:
            ti = tarfile.TarInfo("usr/bin/beava")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "/bin/sh"
            t.addfile(ti)
    layer, lsize = put(buf.getvalue())
    cfg = json.dumps({"architecture": HOST_ARCH, "os": "linux", "config": {"Entrypoint": ["/usr/bin/beava"]},
                      "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
    cd, cs = put(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": lsize}]}).encode()
    md, ms = put(man)
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
               "size": ms, "annotations": {"org.opencontainers.image.ref.name": "evil"}}]}, open(f"{path}/index.json", "w"))
    json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{path}/oci-layout", "w"))


if __name__ == "__main__":
    entry()
