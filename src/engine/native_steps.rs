//! hyperon's step loop in Rust, for `driver.py` (Python module `mlb_native_steps`).
//!
//! A session process runs a job step by step, so that it can stop at its deadline with the
//! results so far. hyperon has no "run N steps" call: stepped from Python, each step is two
//! calls through pybind11 (`runner_state_step`, `runner_state_is_complete`), which cost a
//! `!(fib 6)` about a third more than `metta.run` and, in a session process whose caches went
//! cold while other sessions ran, most of a short job's step time. This module calls the same
//! two functions of hyperon's C API (exported by `hyperonpy`'s shared object) in a loop, and
//! reads the clock every `DEADLINE_CHECK_STEPS` steps, as the Python loop did.
//!
//! The runner state's C pointer is read out of the pybind11 object that wraps it (the value
//! pointer of a pybind11 instance of simple layout, right after the Python object header).
//! That layout is pybind11's, not a public API: `driver.py` uses this module only with the
//! hyperon version it was checked against, and only after a forked process ran a known program
//! through it and got the right results (see `_check_native_steps`). Otherwise it steps from
//! Python, as before.

use std::ffi::{c_void, CString};
use std::sync::OnceLock;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

/// Steps between two looks at the clock (the Python loop's `_DEADLINE_CHECK_STEPS`).
const DEADLINE_CHECK_STEPS: u64 = 16;

/// The two functions of hyperon's C API the loop calls.
struct RunnerApi {
    step: unsafe extern "C" fn(*mut c_void),
    is_complete: unsafe extern "C" fn(*const c_void) -> bool,
}

static RUNNER_API: OnceLock<RunnerApi> = OnceLock::new();

/// Finds hyperon's C API in `hyperonpy`'s shared object at `path`, which Python has already
/// loaded (never loads a library).
#[pyfunction]
fn bind(path: &str) -> PyResult<()> {
    let path = CString::new(path)?;
    // SAFETY: dlopen with RTLD_NOLOAD only returns a handle to a library already loaded;
    // dlsym reads its symbol table. The symbols have the C signatures declared above
    // (hyperon-c: `runner_state_step(*mut runner_state_t)`,
    // `runner_state_is_complete(*const runner_state_t) -> bool`).
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return Err(PyRuntimeError::new_err("hyperonpy is not loaded"));
        }
        let step = libc::dlsym(handle, c"runner_state_step".as_ptr());
        let is_complete = libc::dlsym(handle, c"runner_state_is_complete".as_ptr());
        if step.is_null() || is_complete.is_null() {
            return Err(PyRuntimeError::new_err(
                "hyperonpy exports no runner_state_step or runner_state_is_complete",
            ));
        }
        let _ = RUNNER_API.set(RunnerApi {
            step: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(step),
            is_complete: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*const c_void) -> bool,
            >(is_complete),
        });
    }
    Ok(())
}

fn monotonic_seconds() -> f64 {
    // The clock of Python's `time.monotonic()`.
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// Steps the runner state `cstate` (a `hyperonpy.CRunnerState`) until it completes, the
/// clock passes `deadline` (`time.monotonic()` seconds) or `max_steps` steps ran; returns
/// whether it is complete and the steps run.
#[pyfunction]
fn run_steps(cstate: &Bound<'_, PyAny>, deadline: f64, max_steps: u64) -> PyResult<(bool, u64)> {
    let kind = cstate.get_type();
    if kind.qualname()? != "CRunnerState" || kind.module()? != "hyperonpy" {
        return Err(PyTypeError::new_err(
            "run_steps takes a hyperonpy.CRunnerState",
        ));
    }
    let api = RUNNER_API
        .get()
        .ok_or_else(|| PyRuntimeError::new_err("bind() was not called"))?;
    // SAFETY: `cstate` is a pybind11 instance of CRunnerState (checked above), whose value
    // pointer (the `CStruct<runner_state_t>`, whose first member is the `runner_state_t`)
    // follows the object header; `driver.py` checked this layout in a forked process first.
    // The object (and so the state) stays alive while this call borrows it.
    let state = unsafe {
        *(cstate.as_ptr() as *const u8)
            .add(std::mem::size_of::<pyo3::ffi::PyObject>())
            .cast::<*mut c_void>()
    };
    if state.is_null() {
        return Err(PyRuntimeError::new_err("the runner state is gone"));
    }
    let mut steps = 0;
    // SAFETY: `state` is a live runner_state_t (above); the GIL is held, as pybind11's
    // wrappers hold it, so grounded Python atoms may run during a step.
    unsafe {
        while steps < max_steps {
            if (api.is_complete)(state) {
                return Ok((true, steps));
            }
            (api.step)(state);
            steps += 1;
            if steps % DEADLINE_CHECK_STEPS == 0 && monotonic_seconds() >= deadline {
                break;
            }
        }
        Ok(((api.is_complete)(state), steps))
    }
}

/// Makes the module importable as `mlb_native_steps` (before `driver.py` is loaded).
pub fn register(py: Python<'_>) -> PyResult<()> {
    let module = PyModule::new(py, "mlb_native_steps")?;
    module.add_function(wrap_pyfunction!(bind, &module)?)?;
    module.add_function(wrap_pyfunction!(run_steps, &module)?)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("mlb_native_steps", module)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `code` with the module registered; returns the exception's text, if one was raised.
    fn raised_by(code: &str) -> Option<String> {
        Python::attach(|py| {
            register(py).expect("the module registers");
            let code = CString::new(code).expect("no NUL");
            py.run(code.as_c_str(), None, None)
                .err()
                .map(|err| err.to_string())
        })
    }

    #[test]
    fn bind_never_loads_a_library_and_run_steps_takes_only_a_runner_state() {
        // Arrange: a library this process has not loaded (the test binary loads no hyperon).
        let not_loaded = "import mlb_native_steps\nmlb_native_steps.bind('/usr/lib/x86_64-linux-gnu/libm.so.6.not-there')";
        let not_a_state = "import mlb_native_steps\nmlb_native_steps.run_steps(object(), 0.0, 1)";

        // Act
        let bind_error = raised_by(not_loaded);
        let steps_error = raised_by(not_a_state);

        // Assert
        assert!(
            bind_error
                .as_deref()
                .is_some_and(|e| e.contains("hyperonpy is not loaded")),
            "{bind_error:?}"
        );
        assert!(
            steps_error
                .as_deref()
                .is_some_and(|e| e.contains("bind() was not called")
                    || e.contains("takes a hyperonpy.CRunnerState")),
            "{steps_error:?}"
        );
    }
}
