"""The engine child's MeTTa driver, run by the embedded interpreter of `metta-learner-backend engine`.

The engine is a process tree, one contained process per live session:

    engine (router: reads requests on the control pipe, answers on it; never runs MeTTa)
      └─ zygote (forked right after `import hyperon`, before any request: it holds no
         │        learner's code or data, so nothing of another learner is in what it forks)
         ├─ session process  (one live session: its own uid, mount namespace with a private
         ├─ session process   /tmp, /dev/shm and working folder, non-dumpable; runs only
         └─ spare             that session's code)  — one forked ahead with a fresh MeTTa()

The router sends each run to its session's process (taking the spare when the session becomes
live, ending the least recently used beyond the limit) and relays its answer; a session
process that dies or asks to be recycled is ended alone, and the router says how it died.

A session process owns its atomspace (one hyperon `MeTTa()`) and runs code step by step against
a deadline. Nothing here touches the database or decides policy: the supervisor sends the
session's generation and, when the session's process lacks it, its history.

`handle(request_json) -> response_json | None` is the only entry point the Rust side calls.
"""

import collections
import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
import time

import hyperon
import hyperonpy as _hp
from hyperon import Environment, MeTTa, RunnerState

try:
    # The engine's native step loop (src/engine/native_steps.rs); absent when this file is
    # loaded by anything but the engine's own interpreter.
    import mlb_native_steps as _native_steps
except ImportError:
    _native_steps = None

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
# What the router keeps of one output stream of a run sent ahead while it waits for its turn;
# past it the run's process waits on its full pipe (its output is cut to MAX_OUTPUT_BYTES
# anyway, 64 KiB by default).
_HELD_BYTES = 1 << 20
# The niceness of a session process (see `_contain_session`).
_SESSION_NICENESS = 10
# Steps run since the process's size was last compared with `_recycle_above`: memory grows
# only with work, so a short job does not pay for reading /proc.
_steps_since_memory_check = 0


def configure(
    max_live_sessions,
    work_dir,
    memory_budget_mb=4096,
    response_fd=3,
    session_uid_base=-1,
    session_gid=-1,
    session_open_files=0,
):
    """Sets the engine up; returns hyperon's version. (The benchmark calls only this, to time
    the driver's functions in its own process.)"""
    global _max_live_sessions, _work_dir, _memory_budget, _recycle_above, _RESPONSE_FD
    global _session_gid, _free_uids, _session_open_files
    _RESPONSE_FD = int(response_fd)
    _max_live_sessions = max(1, int(max_live_sessions))
    _work_dir = work_dir
    _memory_budget = int(memory_budget_mb) << 20
    _recycle_above = min(1 << 30, _memory_budget // 2)
    _session_gid = int(session_gid)
    _session_open_files = int(session_open_files)
    if int(session_uid_base) >= 0:
        # Live sessions, the spare, and one being ended: never two processes under one uid.
        _free_uids = collections.deque(
            range(int(session_uid_base), int(session_uid_base) + _max_live_sessions + 2)
        )
    return hyperon.__version__ if hasattr(hyperon, "__version__") else "unknown"


# The hyperon version whose pybind11 objects `mlb_native_steps` was checked against; with any
# other, runs step from Python.
_NATIVE_STEPS_HYPERON = "0.2.10"
# Whether the native step loop gave the right results in a forked process (set once, by
# `start_session_processes`, before the zygote is forked).
_native_steps_checked = False
# A program that exercises definitions, several results and an error, with what the Python
# loop gives for it.
_NATIVE_STEPS_PROBE = '(= (f $x) (+ $x 1)) !(f 1) !(superpose (1 2)) !(+ 1 "a")'
_NATIVE_STEPS_EXPECTED = '[[2], [1, 2], [(Error (+ 1 "a") (BadArgType 2 Number String))]]'
# How long the check may take (a fresh MeTTa() and the probe: about 30 ms).
_NATIVE_STEPS_CHECK_SECS = 10


def _check_native_steps():
    """Whether the native step loop may run learners' code: only with the hyperon version it
    was checked against, and only if a forked process ran `_NATIVE_STEPS_PROBE` through it
    and got `_NATIVE_STEPS_EXPECTED` (a layout it misreads could crash that process, never
    this one)."""
    if _native_steps is None or getattr(hyperon, "__version__", None) != _NATIVE_STEPS_HYPERON:
        return False
    try:
        _native_steps.bind(_hp.__file__)
    except RuntimeError:
        return False
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            metta = _fresh_metta()  # kept: the runner state does not keep its MeTTa alive
            state = RunnerState(metta, _NATIVE_STEPS_PROBE)
            deadline = time.monotonic() + _NATIVE_STEPS_CHECK_SECS
            complete, _ = _native_steps.run_steps(state.cstate, deadline, 1 << 20)
            if complete and str(state.current_results()) == _NATIVE_STEPS_EXPECTED:
                code = 0
        finally:
            os._exit(code)
    # A check that hangs is a failed one (it runs the probe alone, within milliseconds).
    give_up = time.monotonic() + _NATIVE_STEPS_CHECK_SECS
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        if time.monotonic() >= give_up:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False
        time.sleep(0.005)


def step_loop():
    """How runs are stepped: "native" (`mlb_native_steps`) or "python"."""
    return "native" if _native_steps_checked else "python"


def start_session_processes():
    """Starts the zygote and the first spare session process (waiting until it is ready, so a
    wall the host refuses is known at start-up); returns the walls it got. Called by the
    engine child once, on its engine thread, before the first request."""
    global _native_steps_checked
    _native_steps_checked = _check_native_steps()
    _start_zygote()
    return _prepare_spare()


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


# The empty stdin a session process last gave itself: its `sys.stdin` and what fd 0 was then.
_empty_stdin = None


def _use_stdin(text):
    """Makes fd 0 (and `sys.stdin`) read `text`, or nothing when it is None: a job reads its
    own stdin, and everything else (replays, the time between jobs) reads an empty one. An
    empty one still in place (the common case: no job of this session had stdin, and its
    code left fd 0 and `sys.stdin` alone) is kept, which costs one `fstat`."""
    global _empty_stdin
    if not text and _empty_stdin is not None and sys.stdin is _empty_stdin[0] and not sys.stdin.closed:
        try:
            now = os.fstat(0)
            if (now.st_dev, now.st_ino) == _empty_stdin[1]:
                return
        except OSError:
            pass
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
    if text:
        _empty_stdin = None
    else:
        empty = os.fstat(0)
        _empty_stdin = (sys.stdin, (empty.st_dev, empty.st_ino))


class _Deadline(Exception):
    pass


def _resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


# Runner states of stopped runs, kept alive on purpose: hyperon frees a long evaluation
# slowly (seconds for a 30 s loop) and recursively, so instead of freeing it the engine asks
# to be replaced once the job's answer is out. Killing the process frees it at once.
_abandoned = []


def _python_steps(cstate, deadline, max_steps):
    """`mlb_native_steps.run_steps` in Python, for when the native loop is not checked: steps
    `cstate` through hyperon's C API directly (`RunnerState.run_step` adds a Python frame and
    an error check per step) until it completes, the clock (read every
    `_DEADLINE_CHECK_STEPS` steps) passes `deadline` or `max_steps` ran; returns whether it is
    complete and the steps run."""
    step, complete = _hp.runner_state_step, _hp.runner_state_is_complete
    steps = 0
    while steps < max_steps:
        if complete(cstate):
            return True, steps
        step(cstate)
        steps += 1
        if steps % _DEADLINE_CHECK_STEPS == 0 and time.monotonic() >= deadline:
            break
    return complete(cstate), steps


def _run_stepwise(metta, program, deadline):
    """Runs `program` step by step until it completes, fails, passes `deadline` or outgrows
    the memory budget; returns (results, error, stop) with stop None, "deadline" or "memory".
    Results are lists of atoms.

    The steps run in the engine's native loop (`mlb_native_steps`, when `_check_native_steps`
    found it right), else in `_python_steps`; both read the clock every
    `_DEADLINE_CHECK_STEPS` steps, and the process's size is read every `_MEMORY_CHECK_STEPS`.
    An error ends the run, so it is read once at the end. A single step that never returns
    meets the supervisor's hard deadline."""
    global _steps_since_memory_check
    state = RunnerState(metta, program)
    cstate = state.cstate
    run_steps = _native_steps.run_steps if _native_steps_checked else _python_steps
    steps = 0
    stop = None
    try:
        while True:
            complete, ran = run_steps(cstate, deadline, _MEMORY_CHECK_STEPS)
            steps += ran
            if complete:
                break
            if time.monotonic() >= deadline:
                stop = "deadline"
                break
            if _resident_bytes() > _memory_budget:
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


# A session process's request pipe (a buffered reader), while it serves runs.
_requests = None


def _await_go():
    """After a phase line, waits until the router has moved the output printed before it (so
    the replay's output is never taken for the job's, nor the job's for the replay's)."""
    if _requests is not None:
        _requests.readline()


def _progress(req, phase):
    """Tells the supervisor a new phase began, so it can move its hard deadline (and, from a
    session process, the router where the job's own output begins or ends: what was printed
    so far is flushed first)."""
    _flush()
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
        # The session process made one ahead, while it waited to be given a session.
        metta = _ready_metta.pop() if _ready_metta else _fresh_metta()
        error = _replay(metta, history, replay_deadline)
        if error is not None:
            return {"outcome": "replayFailed", "error": error}

    if history is not None:
        _progress(req, "code")
        _await_go()
    deadline = time.monotonic() + req["timeoutMs"] / 1000.0
    _use_stdin(req.get("stdin"))
    try:
        results, error, stop = _run_stepwise(metta, req["code"], deadline)
    finally:
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
        _await_go()
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


# ----- containment of a session process --------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_RDONLY = 1
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
# Each session's private /tmp, /dev/shm and working folder (memory, counted once written).
_TMPFS_SIZE = "64m"


def _checked(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))


def _die_with_parent():
    _checked(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")


def _needed_under(folder):
    """The folders this process needs that lie under `folder` (the Python environment and
    every `sys.path` entry: hyperon imports lazily), each opened (O_PATH) so it can be shown
    again once a private tmpfs hides `folder`; parents before children."""
    wanted = {sys.prefix, sys.exec_prefix, *sys.path}
    found = {}
    for path in wanted:
        if not path or not os.path.isabs(path) or not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        if real.startswith(folder.rstrip("/") + "/") and real not in found:
            found[real] = os.open(real, os.O_PATH | os.O_CLOEXEC)
    return sorted(found.items())


def _show_again(needed):
    """Binds each folder `_needed_under` kept back at its own path, read-only."""
    for path, fd in needed:
        os.makedirs(path, exist_ok=True)
        source = ("/proc/self/fd/%d" % fd).encode()
        _checked(_libc.mount(source, path.encode(), None, _MS_BIND | _MS_REC, None), "bind " + path)
        _checked(
            _libc.mount(b"none", path.encode(), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None),
            "make " + path + " read-only",
        )
        os.close(fd)


def _private_folders(owner_options):
    """In a new mount namespace: an empty tmpfs on /tmp, /dev/shm and the working folder, seen
    by this process (and what it starts) only. The working folder may lie under /tmp (the
    scratch folder's default): it is made again on the private /tmp first. So may the
    project's Python environment (a checkout in a temporary folder): it is shown again,
    read-only, at its own path."""
    _checked(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    # The folders made on the way must be enterable by the session's uid (the server's umask
    # is 077).
    os.umask(0o022)
    for path in ("/tmp", "/dev/shm", _work_dir):
        os.makedirs(path, exist_ok=True)
        needed = _needed_under(path)
        options = ("mode=0700,size=%s%s" % (_TMPFS_SIZE, owner_options)).encode()
        _checked(
            _libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
            "mount a private tmpfs on " + path,
        )
        _show_again(needed)
    os.chdir(_work_dir)


def _write(path, text):
    with open(path, "w") as file:
        file.write(text)


def _contain_session(uid, gid):
    """Walls this process off from every other session and from the engine before it runs any
    learner's code; returns their names. Fails (raises) when a wall the server counts on
    cannot be built: the process then runs nothing."""
    walls = []
    _die_with_parent()
    # Learners' code yields the CPU to the service (the server and this engine's router):
    # the router follows a batch's runs one by one while the runs sent ahead run, and a
    # router starved by them would make every run wait.
    os.setpriority(os.PRIO_PROCESS, 0, _SESSION_NICENESS)
    if _session_open_files > 0:
        # The engine's own limit counts its pipes to every session; a session gets the
        # children's (CHILD_OPEN_FILES).
        resource.setrlimit(resource.RLIMIT_NOFILE, (_session_open_files, _session_open_files))
    if uid >= 0:
        # A root server: its own uid (from a pool: no other live process has it), after a
        # mount namespace with private folders, made while still root.
        _checked(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _private_folders(",uid=%d,gid=%d" % (uid, gid))
        os.umask(0o077)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        walls += ["own uid", "private /tmp, /dev/shm and working folder"]
    else:
        # The server's uid for every session: a user namespace of its own gives the mount
        # namespace; where the host refuses it, the folders stay shared (said at start-up).
        outer_uid, outer_gid = os.getuid(), os.getgid()
        try:
            _checked(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", "%d %d 1" % (outer_uid, outer_uid))
            _write("/proc/self/gid_map", "%d %d 1" % (outer_gid, outer_gid))
            _private_folders("")
            os.umask(0o077)
            walls.append("private /tmp, /dev/shm and working folder")
        except OSError as error:
            walls.append("NO private /tmp and /dev/shm (%s)" % error)
    # Not dumpable: no process of the same uid may read this one's /proc files (environ,
    # mem, fds) or trace it. Set last: a change of uid resets it, and clears the death signal.
    _checked(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "PR_SET_DUMPABLE")
    _die_with_parent()
    walls.append("not dumpable")
    return walls


def _close_fds_except(keep):
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _describe_status(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "signal %d" % number
        return "the session's process was killed by %s" % name
    if os.WIFEXITED(status):
        return "the session's process exited with status %d" % os.WEXITSTATUS(status)
    return "the session's process ended"


# ----- session process -------------------------------------------------------------------------

# A fresh MeTTa() made while the process waited to be given a session (see `_run`).
_ready_metta = []


def _kill_own_children():
    """Ends what the last run started and left running (its orphans go to the server, the
    subreaper, which kills them after the batch). One `waitpid` when it started nothing."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return  # no child at all, in any of the process's threads
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % task) as children:
                pids = [int(pid) for pid in children.read().split()]
        except OSError:
            continue
        for pid in pids:
            for target in (-pid, pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass


def _session_main(requests_fd, answers_fd, uid, gid):
    """A session process: contains itself, makes a fresh MeTTa(), says it is ready, then runs
    the runs the router sends (all of one session) until the router closes the pipe."""
    global _RESPONSE_FD
    _RESPONSE_FD = answers_fd
    try:
        walls = _contain_session(uid, gid)
        _ready_metta.append(_fresh_metta())
    except Exception as error:
        refusal = {"outcome": "unavailable", "error": "a session's process cannot be contained: %s" % error}
        os.write(answers_fd, (json.dumps(refusal) + "\n").encode())
        return
    ready = {"outcome": "ready", "walls": walls, "readyAt": time.monotonic()}
    os.write(answers_fd, (json.dumps(ready) + "\n").encode())
    global _requests
    with open(requests_fd, "rb") as requests:
        _requests = requests
        for line in requests:
            req = json.loads(line)
            # For the router only: a death before this line is not the run's doing.
            _progress(req, "received")
            try:
                response = _run(req)
            except Exception as error:
                _sessions.clear()
                response = {"outcome": "failed", "error": "engine error: %s" % error}
            line = _answer(req, response) + "\n"
            _flush()  # the run's output reaches the router before its answer
            os.write(answers_fd, line.encode())
            _kill_own_children()


# ----- zygote ---------------------------------------------------------------------------------

def _zygote_main(control):
    """Forks session processes on the router's request and reaps them; runs no learner's code
    and holds no learner's data. Ignores the signals it can: where sessions share its uid (a
    normal user's server), a session's `kill(-1, SIGTERM)` must not end every session."""
    _die_with_parent()
    ignored = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
               signal.SIGUSR2, signal.SIGALRM)
    dispositions = {number: signal.signal(number, signal.SIG_IGN) for number in ignored}
    while True:
        message = control.recv(4096)
        if not message:
            return
        command = json.loads(message)
        if "fork" in command:
            request_r, request_w = os.pipe()
            answer_r, answer_w = os.pipe()
            # The session's own stdout and stderr, which only the router reads: no other
            # process (another learner's thread left printing) can write into a job's output.
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    for number, disposition in dispositions.items():
                        signal.signal(number, disposition)
                    control.close()
                    os.dup2(out_w, 1)
                    os.dup2(err_w, 2)
                    _close_fds_except({0, 1, 2, request_r, answer_w})
                    _session_main(request_r, answer_w, command["fork"], command["gid"])
                finally:
                    os._exit(0)
            theirs = (request_r, answer_w, out_w, err_w)
            ours = [request_w, answer_r, out_r, err_r]
            for fd in theirs:
                os.close(fd)
            socket.send_fds(control, [json.dumps({"pid": pid}).encode()], ours)
            for fd in ours:
                os.close(fd)
        elif "reap" in command:
            control.send(json.dumps({"status": _reap(command["reap"])}).encode())


def _reap(pid):
    """Waits for a session process the router killed or lost (killing it if it still runs
    after a moment: it may have closed its pipes itself); says how it ended."""
    for _ in range(50):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _describe_status(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return _describe_status(status)


# ----- router ---------------------------------------------------------------------------------

class _SessionProcess:
    """The router's side of a session process: its request pipe, and its answer, stdout and
    stderr pipes (non-blocking, read together with `poll`)."""

    __slots__ = ("pid", "requests", "answers", "out", "err", "pending", "poller", "open",
                 "uid", "forked_at", "ready", "generation", "ended", "held")

    def __init__(self, pid, requests, answers, out, err, uid):
        self.pid = pid
        self.requests = requests
        self.answers = answers
        self.out = out
        self.err = err
        self.pending = bytearray()  # answer bytes read past the last whole line
        self.poller = select.poll()
        self.open = {answers, out, err}
        for fd in self.open:
            os.set_blocking(fd, False)
            self.poller.register(fd, select.POLLIN)
        self.uid = uid
        self.forked_at = time.monotonic()
        self.ready = False
        self.generation = None  # of the session it holds, as its last run left it
        self.ended = None  # how it ended, once `_end` ended it
        # What it printed (fd -> bytes) while its run, sent ahead, waited for its turn.
        self.held = {out: bytearray(), err: bytearray()}

    def _read(self, fd):
        """One chunk from a readable pipe; b"" at its end (then no longer polled); None when
        there was nothing after all."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        if not chunk and fd in self.open:
            self.open.discard(fd)
            self.poller.unregister(fd)
        return chunk

    def _move(self, fd, chunk, relay):
        """Moves what the session printed on `fd` to the engine's own stdout or stderr (the
        job's captured output) when `relay`, else drops it (a replay's output, leftovers)."""
        if relay:
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(1 if fd == self.out else 2, view):]
                except OSError:
                    return

    def hold(self, fd):
        """Keeps what the session printed on `fd` while its run waits for its turn (so a run
        sent ahead never stops on a full pipe); False once it holds `_HELD_BYTES` there."""
        chunk = self._read(fd)
        if chunk is None:
            return True
        self.held[fd] += chunk
        return bool(chunk) and len(self.held[fd]) < _HELD_BYTES

    def drain(self, relay):
        """Moves everything the session printed so far (see `_move`): first what it held
        while it waited for its turn, then what is still in its pipes."""
        for fd in (self.out, self.err):
            if self.held[fd]:
                self._move(fd, bytes(self.held[fd]), relay)
                self.held[fd].clear()
            while fd in self.open:
                chunk = self._read(fd)
                if not chunk:
                    break
                self._move(fd, chunk, relay)

    def watch_with(self, waiting):
        """A poller for this process's pipes and the output pipes of the processes in
        `waiting` (runs sent ahead), and which of those each of their fds belongs to; None
        when none waits (this process's own poller serves)."""
        if not waiting:
            return None
        poller = select.poll()
        for fd in self.open:
            poller.register(fd, select.POLLIN)
        owners = {}
        for other in waiting:
            for fd in (other.out, other.err):
                if fd in other.open and len(other.held[fd]) < _HELD_BYTES:
                    poller.register(fd, select.POLLIN)
                    owners[fd] = other
        return poller, owners

    def next_line(self, relay, watch=None):
        """The session's next answer line (bytes), moving its output meanwhile (see
        `_move`) and, with a `watch` (see `watch_with`), keeping what the runs sent ahead
        print; None once its answer pipe ended (it died)."""
        poller, owners = watch if watch is not None else (self.poller, {})
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line = bytes(self.pending[: end + 1])
                del self.pending[: end + 1]
                return line
            if self.answers not in self.open:
                return None
            for fd, _ in poller.poll():
                other = owners.get(fd)
                if other is not None:
                    if not other.hold(fd):
                        poller.unregister(fd)  # ended, or holds enough: it waits its turn
                    continue
                if fd not in self.open:
                    continue
                chunk = self._read(fd)
                if chunk is None:
                    continue
                if not chunk:
                    if watch is not None:
                        poller.unregister(fd)  # its end (`_read` left it)
                elif fd == self.answers:
                    self.pending += chunk
                else:
                    self._move(fd, chunk, relay)


_zygote = None  # the router's end of the zygote's control socket
_live = collections.OrderedDict()  # session id -> _SessionProcess
_spare = None
_free_uids = None  # a root server's pool of session uids
_session_gid = -1
_session_open_files = 0  # the open-files limit of a session process (0: the engine's)
_fork_to_ready_ms = []  # the last few session processes' fork-to-ready times


def _start_zygote():
    global _zygote
    router_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            router_end.close()
            _close_fds_except({0, 1, 2, zygote_end.fileno()})
            _zygote_main(zygote_end)
        finally:
            os._exit(0)
    zygote_end.close()
    _zygote = router_end


def _zygote_lost(error):
    """The zygote is gone (a same-uid session killed it): this process has handled requests,
    so it may not fork a new one; it ends, and the supervisor starts a new engine."""
    os.write(2, ("the engine's zygote is gone (%s); the engine ends\n" % error).encode())
    os._exit(70)


def _fork_session_process():
    uid = -1
    if _free_uids is not None:
        if not _free_uids:
            raise RuntimeError("no free session uid")
        uid = _free_uids.popleft()
    try:
        _zygote.send(json.dumps({"fork": uid, "gid": _session_gid}).encode())
        message, fds, _, _ = socket.recv_fds(_zygote, 4096, 4)
    except OSError as error:
        _zygote_lost(error)
    if len(fds) != 4:
        _zygote_lost("it answered without a session process")
    pid = json.loads(message)["pid"]
    return _SessionProcess(pid, fds[0], fds[1], fds[2], fds[3], uid)


def _end(process):
    """Kills a session process, reaps it and frees its uid; returns how it ended. Once only:
    its pid and uid may belong to another process afterwards."""
    if process.ended is not None:
        return process.ended
    process.ended = "the session's process had been ended"
    try:
        os.kill(process.pid, signal.SIGKILL)
    except OSError:
        pass
    for fd in (process.requests, process.answers, process.out, process.err):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        _zygote.send(json.dumps({"reap": process.pid}).encode())
        status = json.loads(_zygote.recv(4096))["status"]
    except (OSError, ValueError) as error:
        _zygote_lost(error)
    if process.uid >= 0:
        _free_uids.append(process.uid)
    process.ended = status
    return status


def _await_ready(process):
    """Reads a new session process's greeting; returns the walls it got, or raises."""
    line = process.next_line(relay=False)
    greeting = json.loads(line) if line else {"outcome": "unavailable", "error": _end(process)}
    if greeting.get("outcome") != "ready":
        if line:
            _end(process)
        raise RuntimeError(greeting.get("error") or "a session's process did not start")
    process.ready = True
    _fork_to_ready_ms.append(round((greeting["readyAt"] - process.forked_at) * 1000, 2))
    del _fork_to_ready_ms[:-16]
    return greeting.get("walls", [])


def _prepare_spare():
    """Forks the next session process ahead (it makes its MeTTa() while the learner is not
    waiting); returns the walls the first one got (at start-up) or None."""
    global _spare
    if _spare is not None:
        return None
    _spare = _fork_session_process()
    if not _fork_to_ready_ms:
        # At start-up: wait for the first one, so a wall the host refuses is known at once.
        return _await_ready(_spare)
    return None


def _take_spare():
    global _spare
    if _spare is None:
        _prepare_spare()
    process, _spare = _spare, None
    if not process.ready:
        _await_ready(process)
    return process


def _relay(line):
    os.write(_RESPONSE_FD, line if line.endswith(b"\n") else line + b"\n")


def _route(run, retried=False):
    """Sends one run to its session's process and relays the answers; returns the outcome.
    A process that cannot be had, or dies before it read the run, is not the run's doing: the
    run goes to a fresh process once (`retried`), then is answered `unavailable`."""
    process = _process_for(run, retried)
    if isinstance(process, str):
        return process  # answered already
    _send(run, process)
    return _follow(run, process, retried)


def _process_for(run, retried):
    """The session process the run goes to (taking the spare when its session becomes live),
    or, when it cannot go to one, the outcome it was answered."""
    session = run["session"]
    process = _live.get(session)
    if process is not None and run.get("history") is not None:
        # A rebuild starts from a fresh process (the spare), not only a fresh MeTTa(): nothing
        # an earlier run left in the process's Python state survives into the replay.
        del _live[session]
        _end(process)
        process = None
    if process is None:
        if run.get("history") is None:
            _relay(json.dumps({"id": run.get("id"), "outcome": "needHistory"}).encode())
            return "needHistory"
        try:
            process = _take_spare()
        except Exception as error:
            if not retried:
                return _route(run, True)
            answer = {"id": run.get("id"), "outcome": "unavailable", "error": "engine error: %s" % error}
            _relay(json.dumps(answer).encode())
            return "unavailable"
        _live[session] = process
        while len(_live) > _max_live_sessions:
            _end(_live.popitem(last=False)[1])
    else:
        _live.move_to_end(session)
    return process


def _send(run, process):
    """Gives the run to its session's process (without its markers: see `_follow`)."""
    sent = {key: value for key, value in run.items() if not key.startswith("marker")}
    process.drain(relay=False)  # printed between runs: no job's output
    try:
        os.write(process.requests, (json.dumps(sent) + "\n").encode())
    except OSError:
        pass  # it died: `_follow` reads its end


def _follow(run, process, retried, waiting=()):
    """Follows a sent run to its answer, relaying it, and the run's output between its
    markers; returns the outcome. Meanwhile the processes in `waiting` (runs sent ahead) have
    what they print kept for their turn."""
    session = run["session"]
    # The router writes the job's output markers itself, around what it moves from the
    # session's own stdout and stderr: the session never learns them, and only the job's
    # code's output (not its history's replay) lies between them.
    start, end = run["markerStart"].encode(), run["markerEnd"].encode()
    capturing = run.get("history") is None
    if capturing:
        _mark(start)  # what it printed since it was sent is held, or still in its pipe
        process.drain(relay=True)
    watch = process.watch_with(waiting)
    marked_end = False
    received = False
    while True:
        line = process.next_line(relay=capturing, watch=watch)
        if line is None and not received:
            return _lost_before_reading(session, process, run, retried)
        if line is None:
            process.drain(relay=capturing)
            if not capturing:
                _mark(start)
            _mark(end)
            return _died(session, process, run)
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if answer.get("id") != run.get("id"):
            continue
        if answer.get("outcome") != "progress":
            break
        # At a phase line, the session waits for a go until its earlier output is moved.
        phase = answer.get("phase")
        if phase == "received":
            received = True  # for the router only: a death from here on is the run's
            continue
        if phase == "code" and not capturing and not marked_end:
            process.drain(relay=False)  # the replay's output
            _mark(start)
            capturing = True
        elif phase == "after" and not marked_end:
            process.drain(relay=capturing)
            if not capturing:
                _mark(start)
            _mark(end)
            capturing, marked_end = False, True
        if phase in ("code", "after"):
            try:
                os.write(process.requests, b"go\n")
            except OSError:
                pass  # it died: read the end above
        _relay(line)
    process.drain(relay=capturing)
    if not marked_end:
        if not capturing:
            _mark(start)  # it ended before its code ran: an empty output
        _mark(end)
    # What the session now holds, so a later run may be sent ahead to it (see `_batch`).
    succeeded = answer.get("outcome") == "succeeded"
    process.generation = run.get("successGeneration") if succeeded else None
    if answer.pop("recycle", False):
        # Its memory grew (or it holds a stopped run): end this session's process only; the
        # session is rebuilt by replay on its next run.
        del _live[session]
        _end(process)
        line = json.dumps(answer).encode()
    _relay(line)
    return answer.get("outcome")


def _died(session, process, run):
    del _live[session]
    cause = _end(process)
    _relay(json.dumps({"id": run.get("id"), "outcome": "died", "error": cause}).encode())
    return "died"


def _lost_before_reading(session, process, run, retried):
    """The session's process ended before it read the run (killed while idle, or ended by
    something an earlier run left behind): the run is not to blame. Without its history, the
    run asks for it (its session is rebuilt in a fresh process); with it, it is tried once
    more in a fresh process, then answered `unavailable`."""
    del _live[session]
    cause = "the session's process had ended before it read the job (%s)" % _end(process)
    if run.get("history") is None:
        _relay(json.dumps({"id": run.get("id"), "outcome": "needHistory", "error": cause}).encode())
        return "needHistory"
    if not retried:
        # Said as progress (the replay starts again), so the supervisor logs it.
        _relay(json.dumps({"id": run.get("id"), "outcome": "progress", "phase": "retry", "error": cause}).encode())
        return _route(run, True)
    _relay(json.dumps({"id": run.get("id"), "outcome": "unavailable", "error": cause}).encode())
    return "unavailable"


def _send_ahead(runs, index, sent):
    """Sends runs after `index` ahead to their processes while run `index` runs, so they run
    side by side on every core: each run of the unbroken stretch after `index` (and after the
    runs already sent) that cannot ask for history, that is, of a session live in its process
    at the generation the run needs, without a replay or cells after it, and not of a session
    with a run in flight. `sent` maps each such run's index to its process. A run's output
    and answer wait (held by the router, or in its pipes) until its turn, so the supervisor
    still sees the batch's runs one after another. The stretch stops at the first run that
    may ask for history, so a batch never stops (at that answer) with runs in flight."""
    busy = {runs[index]["session"]}
    busy.update(runs[ahead]["session"] for ahead in sent)
    for ahead in range(max(sent, default=index) + 1, len(runs)):
        following = runs[ahead]
        if following.get("history") is not None or following.get("after"):
            return
        session = following["session"]
        process = _live.get(session)
        if (
            session in busy
            or process is None
            or not process.ready
            or process.generation != following["generation"]
        ):
            return
        _live.move_to_end(session)
        busy.add(session)
        _send(following, process)
        sent[ahead] = process


def _batch(req):
    """Runs a batch's jobs in order, each in its session's process, writing each answer as
    soon as it is known (so the supervisor stores results while the next job runs, and knows
    which job is running); the runs after it may be sent ahead to their processes
    (`_send_ahead`). Stops after an answer that asks for history: the supervisor sends the
    rest again."""
    # Tells the supervisor the batch reached the engine: a death before this line is not the
    # jobs' doing (the batch is sent again to a new engine), a death after it is the running
    # job's.
    _progress(req, "received")
    runs = req["runs"]
    sent = {}  # index -> process: runs sent ahead, not yet followed
    try:
        for index, run in enumerate(runs):
            process = sent.pop(index, None)
            if process is not None and process.ended is not None:
                process = None  # ended since (made room for a session): the run starts afresh
            if process is None:
                process = _process_for(run, False)
                if isinstance(process, str):
                    if process == "needHistory":
                        break
                    continue
                _send(run, process)
            _send_ahead(runs, index, sent)
            if _follow(run, process, False, sent.values()) == "needHistory":
                break
    finally:
        for ahead in sent.values():
            # The batch stopped before a run sent ahead had its turn: it may have run, and the
            # supervisor sends it again, so its process (and what the run did there) is ended;
            # the session is rebuilt from its history.
            for session, live in list(_live.items()):
                if live is ahead:
                    del _live[session]
            _end(ahead)
        try:
            _prepare_spare()
        except Exception:
            pass  # the next session to become live says why


def handle(request_json):
    """Answers one request line; returns the answer line, or None when the answers were
    written already (a batch)."""
    req = json.loads(request_json)
    op = req.get("op")
    if op == "batch":
        _batch(req)
        return None
    if op == "drop":
        process = _live.pop(req["session"], None)
        if process is not None:
            _end(process)
        response = {"outcome": "dropped"}
    elif op == "ping":
        response = {
            "outcome": "pong",
            "liveSessions": len(_live),
            "sessionPids": [process.pid for process in _live.values()],
            "forkToReadyMs": list(_fork_to_ready_ms),
        }
    else:
        response = {"outcome": "failed", "error": "unknown engine op %r" % (op,)}
    response["id"] = req.get("id")
    return json.dumps(response)
