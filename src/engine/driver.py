"""The engine child's MeTTa driver, run by the embedded interpreter of `metta-learner-backend engine`.

It owns the live atomspaces (one hyperon `MeTTa()` per session, least recently used evicted) and
runs code step by step against a deadline. It never touches the database and never decides
policy: the supervisor sends the session's generation and, when the engine lacks it, its history.

`handle(request_json) -> response_json | None` is the only entry point the Rust side calls.
"""

import collections
import json
import os
import sys
import time

import hyperon
import hyperonpy as _hp
from hyperon import Environment, MeTTa, RunnerState

_sessions = collections.OrderedDict()  # session id -> (generation, MeTTa)
_max_live_sessions = 64
_work_dir = os.getcwd()
_RESPONSE_FD = 3  # set by configure(): the child moves it out of reach first


# A run whose process grows past this many bytes is stopped (hyperon's evaluation of an
# endless loop grows by ~100 MB/s); past the second, the engine asks to be replaced after the
# job, so memory a run left fragmented is given back.
_memory_budget = 4 << 30
_recycle_above = 1 << 30
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Steps between two looks at the clock, and at the process's memory (about 0.1 s of
# `(loop)`; a multiple of the first).
_DEADLINE_CHECK_STEPS = 16
_MEMORY_CHECK_STEPS = 1 << 16
# Steps run since the process's size was last compared with `_recycle_above`: memory grows
# only with work, so a short job does not pay for reading /proc.
_steps_since_memory_check = 0


def configure(max_live_sessions, work_dir, memory_budget_mb=4096, response_fd=3):
    global _max_live_sessions, _work_dir, _memory_budget, _recycle_above, _RESPONSE_FD
    _RESPONSE_FD = int(response_fd)
    _max_live_sessions = max(1, int(max_live_sessions))
    _work_dir = work_dir
    _memory_budget = int(memory_budget_mb) << 20
    _recycle_above = min(1 << 30, _memory_budget // 2)
    return hyperon.__version__ if hasattr(hyperon, "__version__") else "unknown"


def _fresh_metta():
    # The same environment as hyperon's own `metta-py` command, so results match it.
    return MeTTa(env_builder=Environment.custom_env(working_dir=_work_dir, config_dir=""))


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _mark(marker):
    _flush()
    for fd in (1, 2):
        try:
            os.write(fd, marker)
        except OSError:
            pass


def _use_stdin(text):
    """Makes fd 0 (and `sys.stdin`) read `text`, or nothing when it is None: a job reads its
    own stdin, and everything else (replays, the time between jobs) reads an empty one."""
    if text:
        fd = os.memfd_create("stdin", os.MFD_CLOEXEC)
        data = text.encode("utf-8", "surrogateescape")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    else:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    os.dup2(fd, 0)
    os.close(fd)
    sys.stdin = open(0, "r", encoding="utf-8", errors="surrogateescape", closefd=False)


class _Deadline(Exception):
    pass


def _resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


# Runner states of stopped runs, kept alive on purpose: hyperon frees a long evaluation
# slowly (seconds for a 30 s loop) and recursively, so instead of freeing it the engine asks
# to be replaced once the job's answer is out. Killing the process frees it at once.
_abandoned = []


def _run_stepwise(metta, program, deadline):
    """Runs `program` step by step until it completes, fails, passes `deadline` or outgrows
    the memory budget; returns (results, error, stop) with stop None, "deadline" or "memory".
    Results are lists of atoms.

    The loop calls hyperon's C API directly (`RunnerState.run_step` adds a Python frame and an
    error check per step, about a third of a short job's time): an error ends the run, so it
    is read once at the end. The clock is read every `_DEADLINE_CHECK_STEPS` steps; a single
    step that never returns meets the supervisor's hard deadline."""
    global _steps_since_memory_check
    state = RunnerState(metta, program)
    cstate = state.cstate
    step, complete = _hp.runner_state_step, _hp.runner_state_is_complete
    steps = 0
    stop = None
    try:
        while not complete(cstate):
            step(cstate)
            steps += 1
            if steps % _DEADLINE_CHECK_STEPS == 0:
                if time.monotonic() >= deadline:
                    stop = "deadline"
                    break
                if steps % _MEMORY_CHECK_STEPS == 0 and _resident_bytes() > _memory_budget:
                    stop = "memory"
                    break
    except RuntimeError as err:
        return state.current_results(), str(err), None
    finally:
        _steps_since_memory_check += steps
    if stop is not None:
        _abandoned.append(state)
        return state.current_results(), None, stop
    return state.current_results(), _hp.runner_state_err_str(cstate), None


def _replay(metta, cells, deadline):
    """Runs history cells, which all ran within their deadlines before, at full speed
    (`metta.run`, not step by step); the deadline is checked between cells, and a cell that
    never returns is ended by the supervisor's hard deadline for the replay phase."""
    for index, cell in enumerate(cells):
        if time.monotonic() >= deadline:
            return "replaying the history took longer than the replay limit (at cell %d)" % (index + 1)
        try:
            metta.run(cell)
        except RuntimeError as error:
            return "history cell %d no longer runs: %s" % (index + 1, error)
        if index % 32 == 31 and _resident_bytes() > _memory_budget:
            return "replaying the history outgrew the engine's memory (at cell %d)" % (index + 1)
    return None


def _progress(req, phase):
    """Tells the supervisor a new phase began, so it can move its hard deadline."""
    line = json.dumps({"id": req.get("id"), "outcome": "progress", "phase": phase}) + "\n"
    os.write(_RESPONSE_FD, line.encode())


def _remember(session, generation, metta):
    _sessions[session] = (generation, metta)
    _sessions.move_to_end(session)
    while len(_sessions) > _max_live_sessions:
        _sessions.popitem(last=False)


def _run(req):
    """Runs one job of a batch; returns its answer (without `id` and `recycle`)."""
    session = req["session"]
    history = req.get("history")
    now = time.monotonic()
    replay_deadline = now + req["replayTimeoutMs"] / 1000.0
    if history is None:
        live = _sessions.get(session)
        if live is None or live[0] != req["generation"]:
            return {"outcome": "needHistory"}
        metta = live[1]
        _sessions.move_to_end(session)
    else:
        _sessions.pop(session, None)
        metta = _fresh_metta()
        error = _replay(metta, history, replay_deadline)
        if error is not None:
            return {"outcome": "replayFailed", "error": error}

    start, end = req["markerStart"].encode(), req["markerEnd"].encode()
    if history is not None:
        _progress(req, "code")
    deadline = time.monotonic() + req["timeoutMs"] / 1000.0
    _use_stdin(req.get("stdin"))
    _mark(start)
    try:
        results, error, stop = _run_stepwise(metta, req["code"], deadline)
    finally:
        _mark(end)
        _use_stdin(None)
    response = {
        "results": [[str(atom) for atom in result] for result in results],
        # Exactly what `metta-py` prints for each `!` expression.
        "lines": [str(result) for result in results],
    }
    if stop is not None:
        _sessions.pop(session, None)
        response["outcome"] = "timedOut" if stop == "deadline" else "memoryExceeded"
        return response
    if error is not None:
        # A partial run may have changed the space: forget it, so the next job replays history.
        _sessions.pop(session, None)
        response["outcome"] = "failed"
        response["error"] = error
        return response

    after = req.get("after") or []
    if after:
        _progress(req, "after")
        error = _replay(metta, after, time.monotonic() + req["replayTimeoutMs"] / 1000.0)
        if error is not None:
            _sessions.pop(session, None)
            return {"outcome": "replayFailed", "error": error}
    _remember(session, req["successGeneration"], metta)
    response["outcome"] = "succeeded"
    return response


def _answer(req, response):
    """Completes a run's answer with its id and, when the engine should be replaced after
    it, `recycle`; returns the JSON line."""
    global _steps_since_memory_check
    if _abandoned:
        response["recycle"] = True
    elif (
        _steps_since_memory_check >= _MEMORY_CHECK_STEPS
        or req.get("history")
        or req.get("after")
    ):
        _steps_since_memory_check = 0
        if _resident_bytes() > _recycle_above:
            response["recycle"] = True
    response["id"] = req.get("id")
    return json.dumps(response)


def _batch(req):
    """Runs a batch's jobs one after another, writing each answer as soon as it is known (so
    the supervisor stores results while the next job runs, and knows which job is running).
    Stops after an answer that asks for history or for the engine's replacement: the
    supervisor sends the rest again."""
    # Tells the supervisor the batch reached the engine: a death before this line is not the
    # jobs' doing (the batch is sent again to a new engine), a death after it is the running
    # job's.
    _progress(req, "received")
    for run in req["runs"]:
        response = _run(run)
        line = _answer(run, response)
        os.write(_RESPONSE_FD, (line + "\n").encode())
        if response["outcome"] == "needHistory" or response.get("recycle"):
            break


def handle(request_json):
    """Answers one request line; returns the answer line, or None when the answers were
    written already (a batch)."""
    req = json.loads(request_json)
    op = req.get("op")
    if op == "batch":
        _batch(req)
        return None
    if op == "drop":
        _sessions.pop(req["session"], None)
        response = {"outcome": "dropped"}
    elif op == "ping":
        response = {"outcome": "pong", "liveSessions": len(_sessions)}
    else:
        response = {"outcome": "failed", "error": "unknown engine op %r" % (op,)}
    response["id"] = req.get("id")
    return json.dumps(response)
