#!/usr/bin/env python3
"""The cost of one contained process per live MeTTa session, measured on the engine itself (no
server): fork-to-ready time of a session process (the engine's own figures, from `ping`),
private memory per live session (/proc/PID/smaps_rollup, Private_Clean + Private_Dirty), and
rebuilding a 1,000-cell session against running the same cells directly in a fresh MeTTa(),
and the engine alone running a class's batches (the ceiling of the service's throughput).
Run by scripts/bench.sh after the benchmark; prints a markdown table. Root only (the session
processes get uids from a pool, as on a root server)."""
import json, os, subprocess, sys, time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target/release/metta-learner-backend")
PYTHON = os.path.join(ROOT, ".venv/bin/python")
sys_path = json.dumps(json.loads(subprocess.check_output([PYTHON, "-c", "import sys,json;print(json.dumps(sys.path))"])))
# Keep fds 3..10 taken, so the pipes land above the two the engine expects.
_hold = [os.open("/dev/null", os.O_RDONLY) for _ in range(8)]
req_r, req_w = os.pipe(); resp_r, resp_w = os.pipe()
import tempfile
wd = tempfile.mkdtemp(prefix="session-cost-"); os.chmod(wd, 0o755)
def child_fds():
    os.dup2(resp_w, 3); os.dup2(req_r, 4)
proc = subprocess.Popen([BINARY, "engine", "--sys-path", sys_path,
                         "--session-uid-base", "3000000", "--session-gid", "65534"],
                        preexec_fn=child_fds, cwd=wd, env={"HOME": wd, "PATH": "/usr/bin:/bin"},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False)
os.close(resp_w); os.close(req_r)
answers = os.fdopen(resp_r, "rb")
greeting = json.loads(answers.readline())
assert greeting["outcome"] == "ready", greeting
def send(obj): os.write(req_w, (json.dumps(obj) + "\n").encode())
def run(session, history, code, n):
    return {"id": "r%s" % n, "session": session, "generation": 1, "history": history, "code": code, "stdin": None,
            "after": [], "timeoutMs": 20000, "replayTimeoutMs": 60000, "successGeneration": 2,
            "markerStart": "\x01s%d\x01" % n, "markerEnd": "\x01e%d\x01" % n}
def batch(runs):
    send({"op": "batch", "id": "b", "runs": runs})
    got = 0; out = []
    while got < len(runs):
        line = json.loads(answers.readline())
        if line["outcome"] == "progress": continue
        got += 1; out.append(line)
    return out
small = ["(= (f %d) %d)" % (i, i) for i in range(10)]
for k in range(8):
    answer = batch([run("s%d" % k, small, "!(f 9)", k)])[0]
    assert answer["outcome"] == "succeeded" and answer["lines"] == ["[9]"], answer
    time.sleep(0.1)  # the next spare is ready before the next session becomes live
send({"op": "ping", "id": "p"}); pong = json.loads(answers.readline())
def private_mib(pid):
    total = 0
    for line in open("/proc/%d/smaps_rollup" % pid):
        parts = line.split()
        if parts[0] in ("Private_Clean:", "Private_Dirty:"):
            total += int(parts[1])
    return total / 1024
ready_ms = sorted(pong["forkToReadyMs"])
private = sorted(private_mib(pid) for pid in pong["sessionPids"])
big = ["(= (g %d) %d)" % (i, i) for i in range(1000)]
t = time.monotonic(); answer = batch([run("big", big, "!(g 999)", 100)])[0]; rebuild_ms = (time.monotonic() - t) * 1000
assert answer["lines"] == ["[999]"], answer
direct_ms = float(subprocess.check_output([PYTHON, "-c", """
import time, hyperon
cells = ["(= (g %d) %d)" % (i, i) for i in range(1000)]
m = hyperon.MeTTa(env_builder=hyperon.Environment.custom_env(working_dir='.', config_dir=''))
t = time.monotonic()
for c in cells: m.run(c)
m.run("!(g 999)")
print((time.monotonic() - t) * 1000)
"""], env={"HOME": wd, "PATH": "/usr/bin:/bin"}, cwd=wd).decode().strip())

# The engine alone at a class's pace (no server, no database, no HTTP): 64 live sessions, and
# batches of 32 runs of `!(+ 2 3)`, one per session, as the worker claims them for 32 clients;
# against the same program run by one hot MeTTa() in one process (the benchmark's raw engine).
def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
CLASS, BATCH, ROUNDS = 64, 32, 150
generation = {}
live = batch([run("c%d" % k, ["(= (who) c%d)" % k], "!(who)", 1000 + k) for k in range(CLASS)])
assert all(a["outcome"] == "succeeded" for a in live), live
generation = {"c%d" % k: 2 for k in range(CLASS)}
send({"op": "ping", "id": "p"}); pids = json.loads(answers.readline())["sessionPids"]
def cpu_now():
    return sum(cpu_seconds(pid) for pid in pids), cpu_seconds(proc.pid)
sessions_before, router_before = cpu_now()
t = time.monotonic()
n = 0
for r in range(ROUNDS):
    runs = []
    for k in range(BATCH):
        session = "c%d" % ((r * BATCH + k) % CLASS)
        one = run(session, None, "!(+ 2 3)", 2000 + n)
        one["generation"], one["successGeneration"] = generation[session], generation[session] + 1
        generation[session] += 1
        runs.append(one); n += 1
    for a in batch(runs):
        assert a["outcome"] == "succeeded" and a["lines"] == ["[5]"], a
engine_wall = time.monotonic() - t
sessions_after, router_after = cpu_now()
raw = subprocess.check_output([PYTHON, "-c", """
import time, resource, hyperon
m = hyperon.MeTTa(env_builder=hyperon.Environment.custom_env(working_dir='.', config_dir=''))
for _ in range(200): m.run("!(+ 2 3)")
c = time.process_time(); t = time.monotonic()
for _ in range(%d): m.run("!(+ 2 3)")
print(%d / (time.monotonic() - t), (time.process_time() - c) * 1000 / %d)
""" % (n, n, n)], env={"HOME": wd, "PATH": "/usr/bin:/bin"}, cwd=wd).decode().split()
raw_rate, raw_cpu_ms = float(raw[0]), float(raw[1])
engine_rate = n / engine_wall
os.close(req_w); proc.wait(timeout=10)
print("| session process cost | figure |")
print("|---|---|")
print("| fork-to-ready (fork by the zygote → fresh MeTTa() ready), %d processes | median %.1f ms, max %.1f ms |" % (len(ready_ms), ready_ms[len(ready_ms) // 2], ready_ms[-1]))
print("| private memory per live small session (10 cells), %d sessions | median %.1f MiB, max %.1f MiB |" % (len(private), private[len(private) // 2], private[-1]))
print("| rebuild a 1,000-cell session (spare taken, replay, run) vs the same cells in a fresh MeTTa() | %.1f ms vs %.1f ms = %.2fx |" % (rebuild_ms, direct_ms, rebuild_ms / direct_ms))
print("| the engine alone (no server, database or HTTP): batches of %d `!(+ 2 3)` runs over %d live sessions, %d runs | %.0f runs/s = %.0f%% of one hot MeTTa() in one process (%.0f runs/s) |" % (BATCH, CLASS, n, engine_rate, 100 * engine_rate / raw_rate, raw_rate))
print("| CPU per run there: the session processes · the router | %.3f ms · %.3f ms (one hot MeTTa(): %.3f ms) |" % ((sessions_after - sessions_before) * 1000 / n, (router_after - router_before) * 1000 / n, raw_cpu_ms))
