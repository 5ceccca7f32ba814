#!/usr/bin/env python3
"""End-to-end test of beava-control (issue 7's acceptance list), all real parts on loopback:
a docker-registry with htpasswd auth, images built with packaging/oci/build-image and pushed
with skopeo, `beava-control serve` with the bwrap runtime and the beava server inside.

Skips (exit 0, a SKIP line) only when the beava server binary does not exist yet. Any other
missing piece is a failure. BEAVA_BIN, BEAVA_CONTROL_BIN and BEAVA_SOURCE_DIR are set by CTest.
"""
import base64, hashlib, hmac, io, json, os, shutil, signal, socket, subprocess, sys, tarfile
import tempfile, threading, time, urllib.request, urllib.error

SRC = os.environ.get("BEAVA_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BEAVA = os.environ.get("BEAVA_BIN") or ""
CTL = os.environ.get("BEAVA_CONTROL_BIN") or os.path.join(SRC, "build", "control", "beava-control")
BUILD_IMAGE = os.path.join(SRC, "packaging", "oci", "build-image")
SECRET = "e2e-secret-0123456789abcdef"
results = {"passed": 0, "failed": 0}
procs = []


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
            return r.status, (json.loads(raw) if raw.strip() else None)
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


def main():
    if not BEAVA or not os.access(BEAVA, os.X_OK):
        log(f"SKIP: the beava server binary does not exist yet (BEAVA_BIN='{BEAVA}'); control e2e not run")
        return 0
    for tool in ("docker-registry", "skopeo", "umoci", "bwrap", "htpasswd"):
        if not shutil.which(tool):
            log(f"FAIL - required tool '{tool}' is not installed")
            return 1
    if not os.access(CTL, os.X_OK):
        log(f"FAIL - beava-control binary not found at {CTL}")
        return 1
    tmp = tempfile.mkdtemp(prefix="ctl-e2e-")
    os.chmod(tmp, 0o711)  # the server runs as the image's user and must reach its rootfs
    try:
        return scenario(tmp)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        # the server runs in its own session: stop it through its recorded pid
        inst = os.path.join(tmp, "state", "instance.json")
        if os.path.exists(inst):
            try:
                pid = json.load(open(inst))["pid"]
                os.kill(pid, signal.SIGKILL)
            except Exception:
                pass
        time.sleep(0.3)
        shutil.rmtree(tmp, ignore_errors=True)


def scenario(tmp):
    rport, cport = free_port(), free_port()
    http_port, admin_port, tcp_port = free_port(), free_port(), free_port()
    reg = f"127.0.0.1:{rport}"
    repo = f"{reg}/beava"
    # ---- registry with htpasswd auth
    os.makedirs(f"{tmp}/registry")
    run("htpasswd", "-Bbc", f"{tmp}/htpasswd", "ci", "ci-password")
    with open(f"{tmp}/registry.yml", "w") as f:
        f.write(f"""version: 0.1
log: {{level: error}}
storage: {{filesystem: {{rootdirectory: {tmp}/registry}}, delete: {{enabled: true}}}}
http: {{addr: 127.0.0.1:{rport}}}
auth: {{htpasswd: {{realm: e2e, path: {tmp}/htpasswd}}}}
""")
    rlog = open(f"{tmp}/registry.log", "w")
    procs.append(subprocess.Popen(["docker-registry", "serve", f"{tmp}/registry.yml"], stdout=rlog, stderr=rlog))
    for _ in range(100):
        st, _ = http("GET", f"http://{reg}/v2/")
        if st == 401:
            break
        time.sleep(0.1)
    check(st == 401, "registry up and asking for credentials")
    creds = "ci:ci-password"

    def build_push(tag, revision, binary=BEAVA, manifests=None):
        args = [BUILD_IMAGE, "--binary", binary, "--revision", revision, "--version", "0.0.1",
                "--layout", f"{tmp}/layout-{tag}", "--push", f"{repo}:{tag}", "--creds", creds]
        if manifests:
            args += ["--manifests", manifests]
        out = run(*args).stdout.strip().splitlines()
        return out[-1]

    rev_a, rev_b = "a" * 40, "b" * 40
    dig_a = build_push("sha-a", rev_a)
    dig_b = build_push("sha-b", rev_b)
    check(dig_a.startswith("sha256:") and dig_a != dig_b, "two revisions built with build-image and pushed", dig_a)

    # ---- control daemon with the bwrap runtime
    mdir = f"{tmp}/manifests"
    shutil.copytree(os.path.join(SRC, "config", "manifests"), mdir)
    with open(f"{tmp}/secret", "w") as f:
        f.write(SECRET + "\n")
    with open(f"{tmp}/regpass", "w") as f:
        f.write("ci-password\n")
    cfg = f"{tmp}/control.yaml"
    with open(cfg, "w") as f:
        f.write(f"""state_dir: {tmp}/state
listen_addr: 127.0.0.1:{cport}
trigger: {{secret_file: {tmp}/secret, replay_window_s: 300}}
registry: {{repository: {repo}, username: ci, password_file: {tmp}/regpass, wait_for_image_s: 30}}
runtime:
  kind: bwrap
  data_dir: {tmp}/data
  http_addr: 127.0.0.1:{http_port}
  admin_addr: 127.0.0.1:{admin_port}
  tcp_port: {tcp_port}
  stop_grace_s: 15
  ready_timeout_s: 20
manifests: {{dir: {mdir}, root: {tmp}}}
""")
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("BEAVA_CONTROL_"):
            del env[k]

    def start_daemon():
        dlog = open(f"{tmp}/control.log", "a")
        p = subprocess.Popen([CTL, "--config", cfg, "serve"], stdout=dlog, stderr=dlog, env=env)
        procs.append(p)
        for _ in range(200):
            if os.path.exists(f"{tmp}/state/control.sock") and http("GET", f"http://127.0.0.1:{cport}/v1/status")[0] == 401:
                return p
            time.sleep(0.1)
        raise RuntimeError("control daemon did not start: " + open(f"{tmp}/control.log").read())

    daemon = start_daemon()

    def cli(*args, timeout=600):
        return subprocess.run([CTL, "--config", cfg, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def signed(method, path, body=b"", ts=None, delivery=None, secret=SECRET):
        ts = str(int(time.time())) if ts is None else str(ts)
        sig = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        h = {"X-Beava-Timestamp": ts, "X-Beava-Signature-256": sig, "Content-Type": "application/json"}
        if delivery:
            h["X-Beava-Delivery"] = delivery
        return http(method, f"http://127.0.0.1:{cport}{path}", body if method == "POST" else None, h)

    def follow(dep_id, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            st, d = signed("GET", f"/v1/deploys/{dep_id}")
            if st == 200 and d["status"] not in ("queued", "running"):
                return d
            time.sleep(0.3)
        return None

    def status():
        return json.loads(cli("status", "--json").stdout)

    def row():
        st, r = http("POST", f"http://127.0.0.1:{http_port}/get", {"table": "SiteMetrics", "key": ""})
        return st, r

    def views(r):
        if not isinstance(r, dict):
            return None
        return r.get("page_views_24h", r.get("count"))

    def registry_version():
        return http("GET", f"http://127.0.0.1:{admin_port}/registry")[1]

    # 1. deploy A through the CLI
    p = cli("deploy", f"{repo}:sha-a", "--revision", rev_a, "--wait")
    check(p.returncode == 0, "deploy A: pulled, verified, started, ready, manifests applied", p.stdout + p.stderr)
    check("probe" in p.stdout and "verify" in p.stdout, "CLI shows the steps with timings", p.stdout)
    s = status()
    check(s["current"]["digest"] == dig_a and s["instance"]["ready"], "status: A runs and is ready")
    st, r = row()
    check(st == 200, "SiteMetrics answers /get", f"{st} {r}")
    for i in range(3):
        st, _ = http("POST", f"http://127.0.0.1:{http_port}/push/PageView",
                     {"session_id": f"s{i}", "path": "/", "dwell_ms": 1000 + i})
    st, r = row()
    check(views(r) == 3, "three page views counted", r)

    # 2. deploy B through a signed CI trigger
    body = json.dumps({"image": f"{repo}:sha-b", "revision": rev_b}).encode()
    st, r = signed("POST", "/v1/deploys", body, delivery="e2e-1")
    check(st == 202, "signed trigger accepted", f"{st} {r}")
    d = follow(r["id"]) if st == 202 else None
    check(d and d["status"] == "succeeded", "deploy B succeeded", d)
    st, r = row()
    check(views(r) == 3, "B recreated on the same data: events still counted", r)
    hist = json.loads(cli("history", "--json").stdout)["deploys"]
    check(sum(1 for h in hist if h.get("status") == "succeeded") >= 2, "journal shows both deploys")
    check(status()["current"]["previous"]["digest"] == dig_a, "A recorded as the previous release")

    # 3. the same deploy twice is a no-op
    p = cli("deploy", f"{repo}:sha-b", "--wait")
    check(p.returncode == 0 and "noop" in p.stdout, "same release again: no-op that says so", p.stdout)

    # 4. authentication of triggers
    st, _ = http("POST", f"http://127.0.0.1:{cport}/v1/deploys", body)
    check(st == 401, "unsigned trigger: 401")
    st, _ = signed("POST", "/v1/deploys", body, delivery="e2e-2", secret="wrong-secret-000000")
    check(st == 401, "badly signed trigger: 401")
    st, _ = signed("POST", "/v1/deploys", body, ts=int(time.time()) - 3600, delivery="e2e-3")
    check(st == 401, "stale trigger: 401")
    st, _ = signed("POST", "/v1/deploys", body, delivery="e2e-1")
    check(st == 401, "replayed delivery id: 401")
    st, _ = signed("POST", "/v1/deploys", json.dumps({"image": f"{reg}/other:x"}).encode(), delivery="e2e-4")
    check(st == 403, "image outside the repository: refused")
    check(status()["current"]["digest"] == dig_b, "nothing happened on refused triggers")

    # 5. a tag pushed 5 s after the trigger is waited for
    body = json.dumps({"image": f"{repo}:sha-late", "revision": rev_a}).encode()
    st, r = signed("POST", "/v1/deploys", body, delivery="e2e-5")
    time.sleep(5)
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--src-tls-verify=false", "--src-creds", creds,
        "--dest-creds", creds, f"docker://{repo}:sha-a", f"docker://{repo}:sha-late")
    d = follow(r["id"])
    waited = [x for x in (d or {}).get("steps", []) if x["step"] == "resolve"]
    check(d and d["status"] == "succeeded" and waited and waited[0]["detail"]["waited_ms"] >= 3000,
          "trigger for a tag pushed 5 s later waited, then deployed", d and d.get("message"))
    check(status()["current"]["digest"] == dig_a, "A (via the late tag) runs")

    # 6. two deploys at once are serialised (queued in order)
    p1 = subprocess.Popen([CTL, "--config", cfg, "deploy", f"{repo}:sha-b"], stdout=subprocess.PIPE, text=True, env=env)
    p2 = subprocess.Popen([CTL, "--config", cfg, "deploy", f"{repo}:sha-a"], stdout=subprocess.PIPE, text=True, env=env)
    ids = [p1.communicate()[0].split()[0], p2.communicate()[0].split()[0]]
    ds = [follow(i) for i in ids]
    check(all(x and x["status"] in ("succeeded", "noop") for x in ds), "both concurrent deploys finished", ds)
    if all(ds):
        first, second = sorted(ds, key=lambda x: x["started"])
        check(first["ended"] <= second["started"], "the second started only after the first ended")
    last = sorted(ds, key=lambda x: x["started"])[-1] if all(ds) else None
    check(last and status()["current"]["digest"] == (dig_a if last["image"].endswith("sha-a") else dig_b),
          "the later deploy is what runs")
    # settle on B for what follows
    check(cli("deploy", f"{repo}:sha-b", "--wait").returncode == 0, "back on B")

    # 7. a corrupted blob in the registry's storage: digest mismatch, refused, B keeps running
    extra = f"{tmp}/manifests-c"
    shutil.copytree(mdir, extra)
    with open(f"{extra}/README.txt", "w") as f:
        f.write("makes image C's layer differ\n")
    dig_c = build_push("sha-c", "c" * 40, manifests=extra)
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
    p = cli("deploy", f"{repo}:sha-c", "--wait")
    check(p.returncode != 0 and "digest mismatch" in p.stdout, "corrupted blob: digest mismatch, refused", p.stdout)
    s = status()
    check(s["current"]["digest"] == dig_b and s["instance"]["ready"], "B keeps running after the refused pull")

    # 8. an image whose server never becomes ready: automatic rollback, data intact
    dig_bad = build_push("sha-bad", "d" * 40, binary=shutil.which("sleep"))
    p = cli("deploy", f"{repo}:sha-bad", "--wait")
    check(p.returncode != 0 and "rolled_back" in p.stdout, "never-ready image: rolled back", p.stdout)
    s = status()
    check(s["current"]["digest"] == dig_b and s["instance"]["ready"], "previous digest running again")
    st, r = row()
    check(views(r) == 3, "data intact after the rollback", r)
    hist = json.loads(cli("history", "--json", "-n", "1").stdout)["deploys"]
    check(hist and hist[0]["status"] == "rolled_back", "journal says rolled back")

    # 9. a layer with ../ paths or an absolute symlink: refused
    for name, member in (("dotdot", "../escape"), ("abslink", None)):
        lay = f"{tmp}/layout-{name}"
        make_evil_layout(lay, member)
        run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{lay}:evil",
            f"docker://{repo}:{name}")
        p = cli("deploy", f"{repo}:{name}", "--wait")
        want = "escapes the rootfs" if member else "absolute symlink"
        check(p.returncode != 0 and want in p.stdout, f"malicious layer ({name}) refused", p.stdout)
    check(status()["current"]["digest"] == dig_b, "B still running after the malicious images")

    # 10. manifests: conflicts refused before any call; destructive needs allow_destructive
    v0 = registry_version()
    conf = f"{tmp}/m-conflict"
    shutil.copytree(mdir, conf)
    with open(f"{conf}/20-other.yaml", "w") as f:
        f.write("tables:\n  SiteMetrics:\n    source: PageView\n    features:\n"
                "      page_views_24h: {op: count, window: 12h}\n")
    p = cli("apply", conf)
    check(p.returncode != 0 and "conflicting definitions of 'SiteMetrics'" in p.stdout, "conflicting manifests refused", p.stdout)
    check(registry_version() == v0, "nothing sent for the conflicting manifests")
    des = f"{tmp}/m-destructive"
    os.makedirs(des)
    text = open(f"{mdir}/10-sitemetrics.yaml").read().replace("{op: count, window: 24h}", "{op: count, window: 12h}")
    with open(f"{des}/10-sitemetrics.yaml", "w") as f:
        f.write(text)
    p = cli("apply", des)
    check(p.returncode != 0 and "allow_destructive" in p.stdout, "destructive change without allow_destructive refused", p.stdout)
    check(registry_version() == v0, "registry unchanged after the refusal")
    with open(f"{des}/10-sitemetrics.yaml", "w") as f:
        f.write(text.replace("allow_destructive: false", "allow_destructive: true"))
    p = cli("apply", des)
    check(p.returncode == 0 and "apply.backup" in p.stdout, "with allow_destructive: snapshot backed up, applied", p.stdout)
    backups = [os.path.join(dp, fn) for dp, _, fns in os.walk(f"{tmp}/state/backups") for fn in fns]
    check(any("snap" in b for b in backups) or len(backups) > 0, "backup present in state_dir/backups")
    check(registry_version()["version"] > v0["version"], "registry version moved")

    # 11. the daemon killed with SIGKILL mid-deploy, restarted: consistent state
    p = subprocess.Popen([CTL, "--config", cfg, "deploy", f"{repo}:sha-a"], stdout=subprocess.PIPE, text=True, env=env)
    dep = p.communicate()[0].split()[0]
    jpath = f"{tmp}/state/journal"
    end = time.time() + 60
    while time.time() < end:
        if '"step":"start"' in open(jpath).read().split(dep, 1)[-1]:
            break
        time.sleep(0.05)
    daemon.kill()
    daemon.wait()
    daemon = start_daemon()
    d = follow(dep, 120)
    check(d and d["status"] in ("succeeded", "rolled_back"), "after SIGKILL + restart the deploy is finished or rolled back", d)
    s = status()
    want = dig_a if d and d["status"] == "succeeded" else dig_b
    check(s["current"]["digest"] == want and s["instance"]["ready"], "status consistent with the journal", s)
    st, r = row()
    check(st == 200, "SiteMetrics answers after recovery", r)

    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    log(f"{results['passed']} passed, {results['failed']} failed")
    return 0 if results["failed"] == 0 else 1


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
    cfg = json.dumps({"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
                      "os": "linux", "config": {"Entrypoint": ["/usr/bin/beava"]},
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
    try:
        sys.exit(main())
    except Exception as e:  # a crash of the harness is a failure, with the reason
        import traceback
        traceback.print_exc()
        log(f"{results['passed']} passed, {results['failed'] + 1} failed")
        sys.exit(1)
