#!/usr/bin/env python3
"""End-to-end test of beava-control for operators (issue 16), all real parts on loopback.

The shared set-up and helpers come from e2e_control.py: a docker-registry with htpasswd auth,
images of the real server built with packaging/oci/build-image (umoci) and pushed with skopeo,
the bwrap runtime, the real beava binary. Phases (E2E_PHASES=env,ready,... runs a subset), each
with its own daemon:
  env       BEAVA_* entries of the image config are honoured (BEAVA_DURABILITY=sync runs in sync
            mode); daemon-owned keys are overridden and each override logged; an image with an
            invalid value fails the gate quoting the server's own error.
  ready     /ready reports recovery progress; a never-ready image rolls back within 15 s with
            the default settings (stall); a slow but progressing recovery (large WAL) is not killed.
  releases  `releases` lists every release; `rollback --to` a tag, a deploy id, a digest prefix;
            retention removes old rootfs and blobs but never the running or previous release.
  backups   `backups` lists the data copies and snapshots; `restore` moves the data dir aside and
            installs the backup; a restore that fails puts the data back.
  manifests deploy without --manifests reapplies the set applied last; `manifests diff` (dry
            run, the tables a force would reset); taking over a hand-filled registry refused.
  nodrop    a client pushing (sync durability; new connections and keep-alive) through 20
            deploys and a rollback: zero connection errors, zero non-2xx, every ack counted;
            the listeners outlive every server (held by the daemon, taken back after its restart).
  notify    the deploy webhook: signed, retried, never blocking a deploy, rollbacks too.
  walkthrough  every `sh` block of control/README.md's operator walkthrough, run in order.
  history   a crashed server restarted by the supervisor is its own history entry (exit status,
            log tail, no phantom "queued" entry); status during a deploy; the daemon's JSON log
            (deploy steps, rejected triggers with remote address and delivery id, restarts);
            the host-lock message.
"""
import json, os, shutil, signal, socket, struct, subprocess, sys, threading, time, traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_control as E  # noqa: E402
from e2e_control import check, log, step, steps_of, Control, http, run  # noqa: E402


def daemon_log(c):
    out = []
    for line in open(c.log):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def server_log_text(c):
    inst = json.load(open(f"{c.state}/instance.json"))
    return open(inst["log"]).read()


def tcp_push(port, n, prefix="w"):
    """Push n PageView events over the framed TCP protocol, pipelined; returns the acks."""
    s = socket.create_connection(("127.0.0.1", port))
    acks = [0]

    def reader():
        buf = b""
        while acks[0] < n:
            d = s.recv(1 << 20)
            if not d:
                break
            buf += d
            while len(buf) >= 4:
                ln = struct.unpack(">I", buf[:4])[0]
                if len(buf) < 4 + ln:
                    break
                op = struct.unpack(">H", buf[4:6])[0]
                buf = buf[4 + ln:]
                if op == 0x10:
                    acks[0] += 1
                else:
                    acks[0] = n + 1  # an error frame: stop, reported by the caller
    t = threading.Thread(target=reader)
    t.start()
    chunk = []
    for i in range(n):
        p = json.dumps({"event": "PageView", "body": {"session_id": f"{prefix}{i % 997}", "path": f"/p{i % 31}",
                                                       "dwell_ms": i}}).encode()
        chunk.append(struct.pack(">IHB", len(p) + 3, 0x10, 1) + p)
        if len(chunk) == 2000:
            s.sendall(b"".join(chunk))
            chunk = []
    if chunk:
        s.sendall(b"".join(chunk))
    t.join(timeout=300)
    s.close()
    return acks[0]


def phase_env(ctx):
    tmp, repo, mdir, imgs, build_push = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs", "build_push"))
    dig_sync = build_push("sha-sync", "5" * 40, env=["BEAVA_DURABILITY=sync", "BEAVA_LISTEN_ADDR=0.0.0.0:1"])
    build_push("sha-badenv", "6" * 40, env=["BEAVA_DURABILITY=bogus"])
    c = Control(tmp, "env", repo, manifests=mdir)
    c.start()
    check(c.cli("deploy", f"{repo}:sha-a", "--wait").returncode == 0, "env: deploy A")
    c.push_views(2)
    p = c.cli("deploy", f"{repo}:sha-sync", "--wait")
    check(p.returncode == 0 and c.status()["current"]["digest"] == dig_sync, "image with BEAVA_DURABILITY=sync deployed",
          p.stdout)
    cfgline = [json.loads(l) for l in server_log_text(c).splitlines() if '"server.config"' in l]
    check(cfgline and cfgline[-1].get("durability") == "sync", "the server runs in sync mode (its own config log line)",
          cfgline[-1:])
    check(c.views() == 2 and c.row()[0] == 200, "the data plane answers on the daemon's address, not the image's",
          c.row())
    d = c.last(1)[0]
    ov = (step(d, "start") or {}).get("detail", {}).get("env_overrides", [])
    check(any(o["key"] == "BEAVA_LISTEN_ADDR" and o["image_value"] == "0.0.0.0:1" and o["by"] == "daemon" for o in ov),
          "the image's BEAVA_LISTEN_ADDR was overridden by the daemon, recorded in the start step", ov)
    check(not any(o["key"] == "BEAVA_DURABILITY" for o in ov), "BEAVA_DURABILITY is not overridden", ov)
    lines = [x for x in daemon_log(c) if x.get("kind") == "server.env_override"]
    check(any(x.get("key") == "BEAVA_LISTEN_ADDR" and x.get("digest") == dig_sync for x in lines),
          "each override has its line in the daemon's log", lines)
    p = c.cli("deploy", f"{repo}:sha-badenv", "--wait")
    d = c.last(1)[0]
    pr = step(d, "probe") or {}
    check(p.returncode != 0 and d["status"] == "rolled_back", "an image with BEAVA_DURABILITY=bogus is rolled back",
          p.stdout)
    check("'bogus' is not one of batch, sync" in pr.get("message", "") and pr.get("detail", {}).get("reason") == "exited",
          "the gate failure quotes the server's own error", pr.get("message"))
    check("'bogus' is not one of batch, sync" in p.stdout, "the CLI shows the server's error", p.stdout)
    check(c.status()["current"]["digest"] == dig_sync and c.views() == 2, "the sync release runs again, data intact")
    p = subprocess.run([E.CTL, "--config", c.cfg, "--set", "runtime.env.BEAVA_LISTEN_ADDR=1.2.3.4:5", "config"],
                       capture_output=True, text=True, env=c.env)
    check(p.returncode == 2 and "runtime.env.BEAVA_LISTEN_ADDR: the daemon sets this itself" in p.stderr,
          "runtime.env cannot set a daemon-owned key", p.stderr)
    c.stop()
    c.kill_server()


def ensure_never(ctx):
    """An image whose server stays up answering /ready 503 without progress."""
    if not ctx.get("never"):
        ctx["never"] = ctx["build_push"]("sha-never", "e" * 40, binary=E.FAKE_BEAVA,
                                         env=["FAKE_BEAVA_READY_AFTER_MS=1000000000"])
    return ctx["never"]


def phase_ready(ctx):
    tmp, repo, mdir, imgs, build_push = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs", "build_push"))
    ensure_never(ctx)
    c = Control(tmp, "ready", repo, manifests=mdir)
    # the default gate: ready_timeout_s 60, ready_stall_s 10
    c.start("runtime.ready_timeout_s=60")
    check(c.cli("deploy", f"{repo}:sha-a", "--wait").returncode == 0, "ready: deploy A")
    c.push_views(3)
    t0 = time.time()
    p = c.cli("deploy", f"{repo}:sha-never", "--wait")
    took = time.time() - t0
    d = c.last(1)[0]
    pr = step(d, "probe") or {}
    down = sum(s["ms"] for s in d["steps"] if s["step"] in ("stop", "backup", "start", "probe") or
               s["step"].startswith("rollback."))
    check(p.returncode != 0 and d["status"] == "rolled_back" and pr.get("detail", {}).get("reason") == "stalled",
          "never-ready server: the gate fails on stalled recovery",
          [(x["id"], x.get("kind"), x.get("status"), x.get("message")) for x in c.last(3)])
    check("no progress for 10s" in pr.get("message", ""), "the failure says which limit (stall, 10 s)", pr.get("message"))
    check(down <= 15000, f"rolled back within 15 s with the defaults ({down / 1000:.1f}s down, CLI {took:.1f}s)", down)
    check(c.status()["current"]["digest"] == imgs["a"] and c.views() == 3, "A runs again with its data")
    c.stop()
    # a slow but progressing recovery: a large WAL, the server SIGKILLed (no final snapshot)
    c.start("runtime.ready_stall_s=1", "runtime.stop_grace_s=0", "runtime.env.BEAVA_SNAPSHOT_INTERVAL_S=86400")
    check(c.cli("deploy", f"{repo}:sha-b", "--wait").returncode == 0, "B runs with no periodic snapshot")
    # The scenario needs a recovery that outlasts the stall limit; how long replaying N events
    # takes depends on the machine, so the WAL grows (no snapshot is ever taken) until the
    # recovery took more than twice the limit, alternating the two images.
    n, total, rounds, pr, prog, ok, to = 600000, 0, 0, {}, {}, True, "sha-a"
    while rounds < 4:
        rounds += 1
        acks = tcp_push(c.tcp_port, n)
        total += acks
        ok = ok and acks == n
        time.sleep(0.5)
        p = c.cli("deploy", f"{repo}:{to}", "--wait")
        d = c.last(1)[0]
        pr = step(d, "probe") or {}
        prog = pr.get("detail", {}).get("progress") or {}
        ok = ok and p.returncode == 0 and d["status"] == "succeeded"
        if not ok or pr.get("ms", 0) > 2000:
            break
        n *= 2
        to = "sha-b" if to == "sha-a" else "sha-a"
    check(ok and total > 0, f"{total} events pushed over TCP and acknowledged in {rounds} round(s)", total)
    check(ok, "slow recovery with a 1 s stall limit: not killed", p.stdout)
    check(prog.get("phase") in ("wal", "starting") and prog.get("records", 0) > 0 and prog.get("wal_bytes_total", 0) > 0,
          "/ready reported WAL replay progress (records, bytes of the total)", prog)
    check(pr.get("ms", 0) > 2000, "recovery took more than twice the stall limit (it kept progressing)", pr.get("ms"))
    check(c.views() == 3 + total, "every acknowledged event recovered from the WAL", c.views())
    c.stop()
    c.kill_server()


def phase_releases(ctx):
    tmp, repo, mdir, imgs, build_push = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs", "build_push"))
    dig_c = build_push("sha-c2", "c" * 40)
    c = Control(tmp, "releases", repo, manifests=mdir, extra_yaml="deploy: {keep_images: 2}\n")
    c.start()
    ids = {}
    for tag in ("sha-a", "sha-b", "sha-c2"):
        p = c.cli("deploy", f"{repo}:{tag}", "--wait")
        check(p.returncode == 0, f"deploy {tag}", p.stdout)
        ids[tag] = c.last(1)[0]["id"]
    rel = json.loads(c.cli("releases", "--json").stdout)["releases"]
    by = {r["digest"]: r for r in rel}
    check(set(by) == {imgs["a"], imgs["b"], dig_c}, "releases lists the three releases", list(by))
    check(by[dig_c]["running"] and by[imgs["b"]]["previous"] and by[imgs["b"]]["revision"] == "b" * 40 and
          by[imgs["b"]]["version"] == "0.0.1" and by[imgs["b"]]["image"].endswith(":sha-b"),
          "with labels, image, running and previous", by.get(imgs["b"]))
    check(not by[imgs["a"]]["in_store"] and by[imgs["b"]]["in_store"] and by[dig_c]["in_store"],
          "retention (keep_images 2) removed A, kept the running and previous releases", rel)
    stores = os.listdir(f"{c.state}/images")
    check(sorted(stores) == sorted([imgs["b"][7:], dig_c[7:]]), "only the running and previous rootfs remain", stores)
    man_a = json.load(open(f"{tmp}/layout-sha-a/index.json"))["manifests"][0]["digest"]
    cfg_a = json.load(open(f"{tmp}/layout-sha-a/blobs/sha256/{man_a[7:]}"))["config"]["digest"]
    check(not os.path.exists(f"{c.state}/blobs/sha256/{cfg_a[7:]}"), "A's config blob was garbage-collected")
    check(os.path.exists(f"{c.state}/blobs/sha256/" + json.load(open(f"{c.state}/images/{dig_c[7:]}/image.json"))["blobs"][0][7:]),
          "the running release's blobs are kept")
    text = c.cli("releases").stdout
    check("removed by retention" in text and "sha-b" in text, "releases text says what is still in the store", text)
    p = c.cli("rollback", "--to", "sha-a")
    check(p.returncode != 0 and "no longer in the image store" in p.stdout and c.status()["current"]["digest"] == dig_c,
          "rollback --to a release removed by retention: refused, nothing changed", p.stdout)
    p = c.cli("rollback", "--to", "sha-b")
    s = c.status()
    check(p.returncode == 0 and s["current"]["digest"] == imgs["b"] and s["instance"]["ready"], "rollback --to a tag",
          p.stdout)
    check(s["current"]["previous"]["digest"] == dig_c and s["current"].get("image", "").endswith(":sha-b"),
          "current.json records the rolled-to release and the one before", s["current"])
    p = c.cli("rollback", "--to", ids["sha-c2"])
    check(p.returncode == 0 and c.status()["current"]["digest"] == dig_c, "rollback --to a deploy id", p.stdout)
    p = c.cli("rollback", "--to", imgs["b"][:19])
    check(p.returncode == 0 and c.status()["current"]["digest"] == imgs["b"], "rollback --to a digest prefix", p.stdout)
    p = c.cli("rollback", "--to", "sha256:00")
    check(p.returncode == 2 and "at least 7 hex digits" in p.stderr, "a too short digest prefix: refused", p.stderr)
    p = c.cli("rollback", "--to", "nonesuch")
    check(p.returncode == 2 and "no release matches 'nonesuch'" in p.stderr, "an unknown release: refused", p.stderr)
    stores = os.listdir(f"{c.state}/images")
    check(imgs["b"][7:] in stores and dig_c[7:] in stores, "running and previous both still in the store", stores)
    check(c.row()[0] == 200, "the data plane answers after the rollbacks", c.row())
    c.stop()
    c.kill_server()


def phase_backups(ctx):
    tmp, repo, mdir, imgs = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs"))
    c = Control(tmp, "backups", repo, manifests=mdir)
    c.start()
    check(c.cli("deploy", f"{repo}:sha-a", "--wait").returncode == 0, "backups: deploy A")
    c.push_views(3)
    check(c.cli("deploy", f"{repo}:sha-b", "--wait").returncode == 0, "deploy B (data dir copied first)")
    bid = c.last(1)[0]["id"]
    c.push_views(2, prefix="later")
    check(c.views() == 5, "5 views after B")
    bl = json.loads(c.cli("backups", "--json").stdout)["backups"]
    b = [x for x in bl if x["id"] == bid]
    check(b and b[0]["kind"] == "data" and b[0]["release"] == imgs["a"] and b[0]["bytes"] > 0 and b[0]["exists"] and
          "sha-b" in b[0]["why"], "backups lists the copy B's deploy took (when, why, release, size)", b)
    text = c.cli("backups").stdout
    check(bid in text and "data" in text, "backups text", text)
    p = c.cli("restore", bid)
    d = c.last(1)[0]
    aside = f"{c.data}.before-restore-{d['id']}"
    check(p.returncode == 0 and d["status"] == "succeeded", "restore of B's pre-deploy copy", p.stdout)
    check(steps_of(d)[:7] == ["restore.select", "stop", "restore.backup", "restore.install", "start", "probe", "verify"],
          "restore: stop, move aside, install, start, gate, verify — journalled", steps_of(d))
    check(c.views() == 3, "the data is as it was before B (3 views)", c.row())
    check(os.path.isdir(aside) and os.path.isdir(f"{aside}/wal"), "the data dir before the restore is kept aside", aside)
    bl = json.loads(c.cli("backups", "--json").stdout)["backups"]
    check(any(x["id"] == d["id"] and x["path"] == aside for x in bl), "the moved-aside data dir is itself a backup")
    # a restore that fails: the backup holds no usable data (the registry is gone), verify fails
    broken = f"{c.state}/backups/{bid}/data"
    shutil.rmtree(broken)
    os.makedirs(broken)
    before = sorted(os.listdir(c.data))
    p = c.cli("restore", bid)
    d = c.last(1)[0]
    check(p.returncode != 0 and d["status"] == "rolled_back" and "restore.put-back" in steps_of(d),
          "a restore that fails puts the data back", p.stdout)
    check(c.views() == 3 and sorted(os.listdir(c.data)) == before and c.status()["instance"]["ready"],
          "the server runs on the data as it was before the failed restore", c.row())
    check(os.path.isdir(f"{c.data}.failed-restore-{d['id']}"), "the failed copy is kept for diagnosis")
    p = c.cli("restore", "d-nonesuch")
    check(p.returncode == 2 and "no backup 'd-nonesuch'" in p.stderr, "an unknown backup: refused", p.stderr)
    # the daemon killed in the middle of a restore: its restart puts the data back
    first_restore = [x for x in json.loads(c.cli("backups", "--json").stdout)["backups"] if x["path"] == aside]
    jpath = f"{c.state}/journal"
    mark = os.path.getsize(jpath)
    bg = subprocess.Popen([E.CTL, "--config", c.cfg, "restore", first_restore[0]["id"]], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=c.env)
    for _ in range(500):
        with open(jpath) as f:
            f.seek(mark)
            if '"restore.backup"' in f.read():
                break
        time.sleep(0.01)
    c.daemon.kill()
    c.daemon.wait()
    bg.communicate(timeout=60)
    ended = '"deploy.end"' in open(jpath).read()[mark:]
    c.start()
    d = c.last(1)[0]
    for _ in range(100):
        if c.status()["instance"] and c.status()["instance"]["ready"]:
            break
        time.sleep(0.2)
    if not ended:
        check(d["status"] == "rolled_back" and "restore.put-back" in steps_of(d),
              "the daemon killed mid-restore: on restart the moved data dir is put back",
              (d["status"], steps_of(d), d.get("message"), [(x["step"], x.get("message")) for x in d["steps"]][-4:]))
    check(c.views() == (5 if ended else 3), "the server runs on the data it should", (ended, c.row()))
    c.stop()
    c.kill_server()


def phase_history(ctx):
    tmp, repo, mdir, imgs = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs"))
    c = Control(tmp, "history", repo, manifests=mdir)
    c.start()
    p = subprocess.run([E.CTL, "--config", c.cfg, "serve"], capture_output=True, text=True, env=c.env, timeout=30)
    err = p.stdout + p.stderr
    check("one daemon per host" in err and "\n)" not in err and f"(pid {c.daemon.pid})" in err,
          "host lock: the holder's pid on one line", err)
    check(c.cli("deploy", f"{repo}:sha-a", "--revision", imgs["rev_a"], "--wait").returncode == 0, "history: deploy A")
    old_pid = c.server_pid()
    os.kill(old_pid, signal.SIGKILL)
    h = None
    for _ in range(100):
        h = c.last(5)
        if h and h[0].get("kind") == "restart":
            break
        time.sleep(0.2)
    r = h[0] if h else {}
    check(r.get("kind") == "restart" and r.get("source") == "supervisor" and r.get("status") == "succeeded",
          "the supervisor's restart is its own history entry", {k: r.get(k) for k in ("id", "kind", "status", "message")})
    check("killed by signal 9" in r.get("exit", "") and r.get("old_pid") == old_pid and "log_tail" in r,
          "with the exit status, the old pid and the log tail", {k: r.get(k) for k in ("exit", "old_pid")})
    check(not any(x.get("status") == "queued" for x in c.last(50)), "no phantom queued entry",
          [x["id"] for x in c.last(50) if x.get("status") == "queued"])
    text = c.cli("history", "-n", "3").stdout
    check("supervisor" in text and "restart" in text and "killed by signal 9" in text, "history text shows the restart",
          text)
    check("cli" in text and "sha-a@sha256:" in text and "revision aaaaaaaaaaaa" in text and "version 0.0.1" in text,
          "history text: source, tag@digest, version and revision", text)
    for _ in range(50):
        if c.status()["instance"]["ready"]:
            break
        time.sleep(0.2)
    st = c.cli("status").stdout
    check("revision: " + imgs["rev_a"] in st and "version:   0.0.1" in st and "manifests:" in st and "deploying:   -" in st,
          "status text: release, labels, manifest set", st)
    # status during a deploy: a never-ready image keeps the deploy in its probe
    ensure_never(ctx)
    c.stop()
    c.start("runtime.ready_stall_s=4")
    bg = subprocess.Popen([E.CTL, "--config", c.cfg, "deploy", f"{repo}:sha-never", "--wait"], stdout=subprocess.PIPE,
                          text=True, env=c.env)
    seen = None
    for _ in range(100):
        s = c.status()
        if s.get("deploy_in_progress") and s["deploy_in_progress"].get("last_step") in ("start", "backup", "stop"):
            seen = s
            break
        time.sleep(0.1)
    check(seen and seen["deploy_in_progress"]["image"].endswith(":sha-never") and
          seen["current"]["digest"] == imgs["a"], "status --json: the deploy in progress is its own block", seen)
    st = c.cli("status").stdout
    check("deploy in progress:" in st and "elapsed" in st, "status text shows the deploy in progress", st)
    bg.communicate(timeout=120)
    # the daemon's log: rejected triggers with address and delivery id; steps; restarts
    body = json.dumps({"image": f"{repo}:sha-b"}).encode()
    st_, _ = c.signed("POST", "/v1/deploys", body, delivery="ops-bad-1", secret="wrong-secret-000000")
    check(st_ == 401, "a badly signed trigger: 401")
    st_, _ = http("POST", f"http://127.0.0.1:{c.cport}/v1/deploys", body, {"X-Beava-Delivery": "ops-unsigned"})
    st_, _ = c.signed("POST", "/v1/deploys", json.dumps({"image": "127.0.0.1:1/other:x"}).encode(), delivery="ops-403")
    time.sleep(0.3)
    lines = daemon_log(c)
    rej = [x for x in lines if x.get("kind") == "trigger.rejected"]
    check(any(x.get("status") == 401 and x.get("delivery") == "ops-bad-1" and x.get("remote_addr", "").startswith("127.0.0.1:")
              and "unauthorized" in x.get("reason", "") for x in rej), "rejected trigger (401) in the daemon log", rej)
    check(any(x.get("status") == 403 and x.get("delivery") == "ops-403" for x in rej), "refused image (403) logged", rej)
    check(any(x.get("kind") == "deploy.step" and x.get("step") == "probe" for x in lines) and
          any(x.get("kind") == "deploy.end" for x in lines), "one JSON line per deploy step and per deploy end")
    check(any(x.get("kind") == "supervisor.restart" and "killed by signal 9" in x.get("exit", "") for x in lines),
          "the supervisor's restart in the daemon log")
    check(all(isinstance(x.get("ts"), str) for x in lines), "every daemon log line has a timestamp")
    c.stop()
    c.kill_server()


def phase_manifests(ctx):
    tmp, repo, mdir, imgs = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs"))
    only_site = f"{tmp}/m-site-only"
    os.makedirs(only_site)
    shutil.copy(f"{mdir}/10-sitemetrics.yaml", only_site)
    c = Control(tmp, "mset", repo, manifests=mdir)
    c.start()
    check(c.cli("deploy", f"{repo}:sha-a", "--manifests", only_site, "--wait").returncode == 0,
          "deploy A with a set of one manifest")
    c.push_views(2)
    p = c.cli("deploy", f"{repo}:sha-b", "--wait")
    d = c.last(1)[0]
    ms = step(d, "manifests") or {}
    check(p.returncode == 0 and ms.get("detail", {}).get("dir") == only_site and "the set applied last" in ms.get("message", ""),
          "deploy without --manifests reapplies the set applied last, and says so", ms)
    check("the set applied last" in p.stdout, "the CLI output says which set", p.stdout)
    text = open(f"{only_site}/10-sitemetrics.yaml").read()
    des = f"{tmp}/m-des-ops"
    os.makedirs(des)
    with open(f"{des}/10-sitemetrics.yaml", "w") as f:
        f.write(text.replace("{op: count, window: 24h}", "{op: count, window: 12h}"))
    v0 = c.registry_version()
    p = c.cli("manifests", "diff", des)
    check(p.returncode == 1 and "! change" in p.stdout and "force will reset table SiteMetrics: 3 features" in p.stdout
          and "REFUSED" in p.stdout and "allow_destructive" in p.stdout,
          "manifests diff: destructive change, the table it resets, refused without allow_destructive", p.stdout)
    with open(f"{des}/10-sitemetrics.yaml", "w") as f:
        f.write(text.replace("{op: count, window: 24h}", "{op: count, window: 12h}")
                .replace("allow_destructive: false", "allow_destructive: true"))
    p = c.cli("manifests", "diff", des)
    check(p.returncode == 0 and "force will reset table SiteMetrics" in p.stdout and "apply would succeed" in p.stdout,
          "manifests diff with allow_destructive: would succeed", p.stdout)
    p = c.cli("manifests", "diff", mdir)
    check(p.returncode == 0 and "+ add" in p.stdout and "force will reset" not in p.stdout,
          "manifests diff of an additive set", p.stdout)
    check(c.registry_version() == v0 and c.views() == 2, "the dry runs changed nothing")
    c.stop()
    c.kill_server()
    # taking over a server whose registry was filled by hand
    empty = f"{tmp}/m-empty"
    os.makedirs(empty)
    h = Control(tmp, "takeover", repo, manifests=empty)
    h.start()
    check(h.cli("deploy", f"{repo}:sha-a", "--wait").returncode == 0, "takeover: a server with no manifests")
    st, _ = http("POST", f"http://127.0.0.1:{h.http_port}/register", {"nodes": [
        {"kind": "event", "name": "HandMade", "schema": {"fields": {"x": "str"}, "optional_fields": []}}]})
    check(st == 200, "a descriptor registered by hand", st)
    p = h.cli("apply", only_site)
    check(p.returncode != 0 and "no manifest declares" in p.stdout and "HandMade" in p.stdout and
          "taking over refused" in p.stdout and "Adopt them" in p.stdout,
          "taking over a hand-filled registry: refused, naming the descriptors and how to adopt them", p.stdout)
    check("apply --adopt" in p.stdout, "the refusal names `apply --adopt`", p.stdout)
    p = h.cli("apply", "--adopt", only_site)
    d = h.last(1)[0]
    ad = step(d, "apply.adopt") or {}
    check(p.returncode == 0 and ad.get("detail", {}).get("adopted") == ["HandMade"],
          "apply --adopt: the hand-made descriptor adopted as it is, the manifests applied", p.stdout)
    check(h.registry_version()["node_count"] == 3 and h.row()[0] == 200, "the server holds both, SiteMetrics answers",
          h.registry_version())
    p = h.cli("apply", only_site)
    check(p.returncode == 0, "a later apply keeps the adopted descriptor (mode merge)", p.stdout)
    h.stop()
    h.kill_server()


class PushClient(threading.Thread):
    """Pushes PageView events to the data port until stopped: keepalive=False opens a new
    connection per push, True reuses one (reconnecting when an answer says Connection:
    close). Every exception and every non-2xx answer is an error; acks are counted."""

    def __init__(self, port, name, keepalive):
        super().__init__(daemon=True)
        self.port, self.name, self.keepalive = port, name, keepalive
        self.acks, self.errors, self.lat, self.stop = 0, [], [], False

    def run(self):
        import http.client
        conn = None
        i = 0
        nreq = 0
        while not self.stop:
            body = json.dumps({"session_id": f"{self.name}{i}", "path": "/", "dwell_ms": i})
            t0 = time.time()
            try:
                if conn is None or not self.keepalive:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    nreq = 0
                nreq += 1
                conn.request("POST", "/push/PageView", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if 200 <= r.status < 300:
                    self.acks += 1
                else:
                    self.errors.append(f"status {r.status}")
                if not self.keepalive or r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # a refused or reset connection: exactly what must not happen
                self.errors.append(f"{e!r} after {time.time() - t0:.3f}s at {time.time():.3f} request {nreq} of its connection")
                conn = None
            self.lat.append(time.time() - t0)
            i += 1


def phase_nodrop(ctx):
    tmp, repo, mdir, imgs = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs"))
    c = Control(tmp, "nodrop", repo, manifests=mdir)
    c.start("runtime.env.BEAVA_DURABILITY=sync", "deploy.keep_backups=2")
    check(c.cli("deploy", f"{repo}:sha-a", "--wait").returncode == 0, "nodrop: deploy A (sync durability)")
    rep = [x for x in daemon_log(c) if x.get("kind") == "server.listeners"]
    check(rep and all(str(rep[0].get(n, "")).startswith("bound") for n in ("http", "admin", "tcp")),
          "the daemon holds the three listeners", rep)
    inst = json.load(open(f"{c.state}/instance.json"))
    check(inst.get("listen_fds") == ["http", "admin", "tcp"], "the server got them as fds 3.. by name", inst)
    slog = server_log_text(c)
    check("inherited listening socket 'http'" in slog and "inherited listening socket 'admin'" in slog,
          "beava took the inherited listeners (its log says so)")
    clients = [PushClient(c.http_port, "new", False), PushClient(c.http_port, "keep", True)]
    for t in clients:
        t.start()
    time.sleep(1)
    ok = 0
    n_deploys = 20
    for k in range(n_deploys):
        tag = "sha-b" if k % 2 == 0 else "sha-a"
        p = c.cli("deploy", f"{repo}:{tag}", "--wait")
        ok += p.returncode == 0
    p = c.cli("rollback")
    ok += p.returncode == 0
    time.sleep(1)
    for t in clients:
        t.stop = True
    for t in clients:
        t.join(timeout=90)
    check(ok == n_deploys + 1, f"{n_deploys} deploys and a rollback succeeded under load", ok)
    for t in clients:
        lat = sorted(t.lat)
        p99 = lat[int(len(lat) * 0.99)] if lat else 0
        log(f"# client '{t.name}': {t.acks} acked pushes, {len(t.errors)} errors, latency max {lat[-1] if lat else 0:.3f}s "
            f"p99 {p99:.3f}s")
        check(t.acks > n_deploys and not t.errors, f"client '{t.name}': zero connection errors, zero non-2xx",
              t.errors[:5])
    acked = sum(t.acks for t in clients)
    check(c.views() == acked, "every acknowledged push is counted after the deploys", (c.views(), acked))
    # a server that died on its way out (an abort, a sanitizer report) drops what it had
    # taken: every replaced server's log must end without one
    fatal = []
    for name in sorted(os.listdir(f"{c.state}/logs")):
        lines = open(f"{c.state}/logs/{name}", errors="replace").read().splitlines()
        at = [i for i, line in enumerate(lines) if any(m in line for m in (
            "Fatal error in GNU libmicrohttpd", "ERROR: AddressSanitizer", "runtime error:"))]
        if at:
            fatal.append(f"{name}:\n" + "\n".join(lines[at[0]:at[0] + 40]))
    check(not fatal, "every replaced server shut down cleanly (no abort, no sanitizer report)",
          "\n".join(fatal[:2]))
    # a restarted daemon takes the listeners back from the running server
    c.stop()
    c.start("runtime.env.BEAVA_DURABILITY=sync")
    rep = [x for x in daemon_log(c) if x.get("kind") == "server.listeners"][-1]
    check(all(str(rep.get(n, "")).startswith("taken back from pid") for n in ("http", "admin", "tcp")),
          "a restarted daemon took the listeners back from the running server (pidfd_getfd)", rep)
    t = PushClient(c.http_port, "after", False)
    t.start()
    p = c.cli("deploy", f"{repo}:sha-b", "--wait")
    time.sleep(0.5)
    t.stop = True
    t.join(timeout=90)
    check(p.returncode == 0 and not t.errors and t.acks > 0, "and the next deploy drops nothing either", t.errors[:5])
    check(c.views() == acked + t.acks, "every push counted", (c.views(), acked + t.acks))
    c.stop()
    c.kill_server()


def phase_notify(ctx):
    import hashlib, hmac
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    tmp, repo, mdir, imgs, build_push = (ctx[k] for k in ("tmp", "repo", "mdir", "imgs", "build_push"))
    if not ctx.get("badenv"):
        ctx["badenv"] = build_push("sha-badenv", "6" * 40, env=["BEAVA_DURABILITY=bogus"])
    secret = "notify-secret-0123456789"
    got, state = [], {"calls": 0, "slow": 0.0}

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["calls"] += 1
            time.sleep(state["slow"])
            if state["calls"] == 1:  # the first call fails: the sender must retry
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            got.append({"headers": dict(self.headers), "body": body, "at": time.time()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with open(f"{tmp}/notify-secret", "w") as f:
        f.write(secret + "\n")
    c = Control(tmp, "notify", repo, manifests=mdir, extra_yaml=f"notify: {{url: 'http://127.0.0.1:{srv.server_address[1]}/hook', "
                                                           f"secret_file: {tmp}/notify-secret}}\n")
    try:
        c.start()
        p = c.cli("deploy", f"{repo}:sha-a", "--wait")
        dep = c.last(1)[0]["id"]
        for _ in range(100):
            if got:
                break
            time.sleep(0.1)
        check(p.returncode == 0 and got, "a successful deploy is notified (after a failed first call: retried)",
              state)
        if got:
            h, body = got[0]["headers"], got[0]["body"]
            want = "sha256=" + hmac.new(secret.encode(), h.get("X-Beava-Timestamp", "").encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
            j = json.loads(body)
            check(h.get("X-Beava-Signature-256") == want, "the body is signed (HMAC-SHA256 over timestamp.body)", h)
            check(j.get("event") == "deploy.succeeded" and j.get("deploy") == dep and j.get("digest") == imgs["a"] and
                  h.get("X-Beava-Delivery") == f"{dep}.succeeded", "with the deploy id, digest and a delivery id", j)
        lines = daemon_log(c)
        check(any(x.get("kind") == "notify.sent" and x.get("attempts") == 2 for x in lines),
              "the daemon log says it was sent on the second attempt")
        # a slow webhook never blocks a deploy; a rollback is notified too
        state["slow"] = 6.0
        t0 = time.time()
        p = c.cli("deploy", f"{repo}:sha-badenv", "--wait")
        took = time.time() - t0
        check(p.returncode != 0 and "rolled_back" in p.stdout, "the bad image is rolled back", p.stdout[-500:])
        t_end = time.time()
        for _ in range(150):
            if len(got) >= 2:
                break
            time.sleep(0.1)
        check(len(got) >= 2 and got[1]["at"] > t_end,
              "the deploy ended before the slow webhook (6 s) had answered: it never waits for it",
              (took, got[1]["at"] - t_end if len(got) >= 2 else None))
        j = json.loads(got[1]["body"]) if len(got) >= 2 else {}
        check(j.get("event") == "deploy.rolled_back" and j.get("rolled_back_to") == imgs["a"],
              "the rollback is notified", j)
    finally:
        c.stop()
        c.kill_server()
        srv.shutdown()


def walkthrough_blocks(readme):
    """The `sh` code blocks of control/README.md's operator walkthrough, in order."""
    text = open(readme).read()
    start = text.index("## Operator walkthrough")
    end = text.index("\n## ", start + 10)
    blocks, cur = [], None
    for line in text[start:end].splitlines():
        if cur is None and line.strip() == "```sh":
            cur = []
        elif cur is not None and line.strip() == "```":
            blocks.append("\n".join(cur))
            cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def phase_walkthrough(ctx):
    tmp, reg, repo, mdir, imgs = (ctx[k] for k in ("tmp", "reg", "repo", "mdir", "imgs"))
    blocks = walkthrough_blocks(os.path.join(E.SRC, "control", "README.md"))
    check(len(blocks) >= 9, "the walkthrough has its shell blocks", len(blocks))
    E.skopeo_copy(f"docker://{repo}:sha-a", f"docker://{repo}:v1")
    E.skopeo_copy(f"docker://{repo}:sha-b", f"docker://{repo}:v2")
    w = f"{tmp}/walk"
    os.makedirs(w)
    os.chmod(w, 0o711)
    env = E.clean_env()
    env.update(ETC=f"{w}/etc", STATE=f"{w}/state", DATA=f"{w}/data", MANIFESTS=mdir, REPO=repo,
               REGISTRY_USER="ci", REGISTRY_PASSWORD="ci-password",
               HTTP_ADDR=f"127.0.0.1:{E.free_port()}", ADMIN_ADDR=f"127.0.0.1:{E.free_port()}",
               TCP_PORT=str(E.free_port()), CONTROL_ADDR=f"127.0.0.1:{E.free_port()}",
               PATH=os.path.dirname(os.path.abspath(E.CTL)) + ":" + env.get("PATH", ""))
    script = "set -euo pipefail\n" + "\n".join(f"echo '### block {i + 1}'\n{b}" for i, b in enumerate(blocks))
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=900)
    out = p.stdout + p.stderr
    try:
        check(p.returncode == 0, "every command of the walkthrough ran (install to restore)", out[-3000:])
        check(f"{repo}:v1" in out and "succeeded" in out, "the first deploy succeeded", out[-2000:])
        check("rolled back to" in out and "restored backup" in out, "rollback and restore did what the text says",
              out[-2000:])
        check(glob_one(f"{w}/data.before-restore-*"), "the data dir before the restore is kept")
    finally:
        try:
            pid = int(open(f"{w}/state/lock").read().strip())
            os.kill(pid, signal.SIGTERM)
            time.sleep(1)
        except (OSError, ValueError):
            pass
        try:
            inst = json.load(open(f"{w}/state/instance.json"))
            for k in ("pid", "monitor_pid"):
                if inst.get(k):
                    os.kill(inst[k], signal.SIGKILL)
        except (OSError, ValueError):
            pass


def glob_one(pattern):
    import glob
    return bool(glob.glob(pattern))


PHASES = [("env", phase_env), ("ready", phase_ready), ("releases", phase_releases), ("backups", phase_backups),
          ("history", phase_history), ("manifests", phase_manifests), ("nodrop", phase_nodrop),
          ("notify", phase_notify), ("walkthrough", phase_walkthrough)]


def scenario(tmp):
    t_all = time.time()
    run("htpasswd", "-Bbc", f"{tmp}/htpasswd", "ci", "ci-password")
    reg = E.start_registry(tmp, "registry", f"{{htpasswd: {{realm: e2e, path: {tmp}/htpasswd}}}}")
    repo = f"{reg}/beava"
    mdir = f"{tmp}/manifests"
    shutil.copytree(os.path.join(E.SRC, "config", "manifests"), mdir)

    def build_push(tag, revision, binary=E.BEAVA, manifests=None, env=()):
        args = [E.BUILD_IMAGE, "--binary", binary, "--revision", revision, "--version", "0.0.1",
                "--layout", f"{tmp}/layout-{tag}", "--push", f"{repo}:{tag}", "--creds", E.CREDS]
        if manifests:
            args += ["--manifests", manifests]
        for e in env:
            args += ["--env", e]
        return run(*args).stdout.strip().splitlines()[-1]

    imgs = {"rev_a": "a" * 40, "rev_b": "b" * 40}
    imgs["a"] = build_push("sha-a", imgs["rev_a"])
    imgs["b"] = build_push("sha-b", imgs["rev_b"])
    ctx = {"tmp": tmp, "reg": reg, "repo": repo, "mdir": mdir, "imgs": imgs, "build_push": build_push}
    only = [p for p in os.environ.get("E2E_PHASES", "").split(",") if p]
    for name, fn in PHASES:
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
    return E.finish(E.controls, t_all)


if __name__ == "__main__":
    E.scenario = scenario  # e2e_control.main: tool checks, temp dir, cleanup; our phases
    E.entry()
