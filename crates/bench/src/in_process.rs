//! The engine in this process, before any server starts: hyperon's own `metta.run` (the
//! physical limit of the service), the driver's step loop, and a session's cells run directly
//! or replayed by the driver, all through the server's `driver.py` (`load_engine_driver`).
//! Never measures anything across a process boundary.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use metta_learner_backend::load_engine_driver;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

use crate::setup::Setup;
use crate::stats::{time_each, Timed};
use crate::{progress, replay_cells, PROGRAM, RAW_RUNS, REPLAY_CELLS, REPLAY_RUNS};

/// What the in-process measurements found.
pub(crate) struct InProcess {
    pub(crate) hyperon: String,
    pub(crate) raw: Timed,
    pub(crate) driver_step_loop: Timed,
    /// One fresh `MeTTa()` plus `metta.run` of each replay cell, per repetition.
    pub(crate) direct_cells: Vec<Duration>,
    /// The driver's own `_replay` of the same cells into a fresh `MeTTa()`, per repetition.
    pub(crate) driver_replay: Vec<Duration>,
}

pub(crate) fn measure_in_process(setup: &Setup) -> Result<InProcess> {
    Python::attach(|py| {
        let driver = load_driver(py, setup)?;
        let hyperon = driver
            .call_method1(
                "configure",
                (64, setup.work.path().display().to_string(), 4096),
            )?
            .extract::<String>()?;
        progress(&format!("raw engine in-process ({RAW_RUNS} runs)"));
        let raw = time_raw_engine(&driver, RAW_RUNS)?;
        progress(&format!("driver step loop in-process ({RAW_RUNS} runs)"));
        let driver_step_loop = time_driver_step_loop(&driver, RAW_RUNS)?;
        progress(&format!("{REPLAY_CELLS} cells in-process"));
        let cells = replay_cells(REPLAY_CELLS);
        let mut direct_cells = Vec::new();
        let mut driver_replay = Vec::new();
        for _ in 0..REPLAY_RUNS {
            direct_cells.push(time_direct_cells(&driver, &cells)?);
            driver_replay.push(time_driver_replay(&driver, &cells)?);
        }
        Ok(InProcess {
            hyperon,
            raw,
            driver_step_loop,
            direct_cells,
            driver_replay,
        })
    })
}

/// `--engine-loop MS` (a child of `--scaling`): `definition` once, then `program` in one
/// `MeTTa()` as often as it runs in `window`, with no service around it. Prints `ready` when
/// warm, starts when a line arrives on stdin (so every copy loops over the same window), and
/// prints how many runs it did and in how many seconds.
pub(crate) fn engine_loop(
    setup: &Setup,
    definition: &str,
    program: &str,
    answer: &str,
    window: Duration,
) -> Result<()> {
    Python::attach(|py| {
        let driver = load_driver(py, setup)?;
        let metta = fresh_metta(&driver)?;
        metta.call_method1("run", (definition,))?;
        for _ in 0..3 {
            let got = metta.call_method1("run", (program,))?.str()?.to_string();
            ensure!(
                got == answer,
                "hyperon ran {program} to {got}, not {answer}"
            );
        }
        println!("ready");
        let mut go = String::new();
        std::io::stdin()
            .read_line(&mut go)
            .context("no start signal")?;
        let started = Instant::now();
        let mut runs = 0usize;
        while started.elapsed() < window {
            metta.call_method1("run", (program,))?;
            runs += 1;
        }
        println!("{runs} {}", started.elapsed().as_secs_f64());
        Ok(())
    })
}

/// The service's `driver.py` (which imports hyperon), loaded as the engine child loads it.
fn load_driver<'py>(py: Python<'py>, setup: &Setup) -> Result<Bound<'py, PyModule>> {
    load_engine_driver(py, &setup.sys_path)
        .context("cannot load driver.py (is hyperon installed in .venv?)")
}

/// A fresh `MeTTa()`, built as the service builds one (hyperon's `metta-py` environment, no
/// config folder, so nothing is written to the home folder).
fn fresh_metta<'py>(driver: &Bound<'py, PyModule>) -> Result<Bound<'py, PyAny>> {
    Ok(driver.call_method0("_fresh_metta")?)
}

/// `metta.run("!(+ 2 3)")` in one `MeTTa()`, after a short warm-up.
fn time_raw_engine(driver: &Bound<'_, PyModule>, runs: usize) -> Result<Timed> {
    let metta = fresh_metta(driver)?;
    let first = metta.call_method1("run", (PROGRAM,))?.str()?.to_string();
    ensure!(
        first == "[[5]]",
        "hyperon ran {PROGRAM} to {first}, not [[5]]"
    );
    let run_once = || -> Result<()> {
        metta.call_method1("run", (PROGRAM,))?;
        Ok(())
    };
    time_each(runs / 10, run_once)?;
    time_each(runs, run_once)
}

/// The driver's `_run_stepwise` (the engine's step loop with its deadline and memory checks)
/// on the same program, in one `MeTTa()`, with the loop the engine would use (the native one
/// once the driver's own check of it passes, as at an engine's start).
fn time_driver_step_loop(driver: &Bound<'_, PyModule>, runs: usize) -> Result<Timed> {
    let native = driver.call_method0("_check_native_steps")?;
    driver.setattr("_native_steps_checked", native)?;
    let metta = fresh_metta(driver)?;
    let run_once = || -> Result<()> {
        let (_, error, stop): (Bound<'_, PyAny>, Option<String>, Option<String>) = driver
            .call_method1("_run_stepwise", (&metta, PROGRAM, f64::INFINITY))?
            .extract()?;
        ensure!(
            error.is_none() && stop.is_none(),
            "the driver's step loop failed: {error:?} {stop:?}"
        );
        Ok(())
    };
    time_each(runs / 10, run_once)?;
    time_each(runs, run_once)
}

/// One fresh `MeTTa()` and `metta.run` of each cell in turn.
fn time_direct_cells(driver: &Bound<'_, PyModule>, cells: &[String]) -> Result<Duration> {
    let started = Instant::now();
    let metta = fresh_metta(driver)?;
    for cell in cells {
        metta.call_method1("run", (cell.as_str(),))?;
    }
    Ok(started.elapsed())
}

/// One fresh `MeTTa()` and the driver's `_replay` of the cells (what the engine does on a
/// rebuild, without the process boundary).
fn time_driver_replay(driver: &Bound<'_, PyModule>, cells: &[String]) -> Result<Duration> {
    let py = driver.py();
    let cells = PyList::new(py, cells)?;
    let started = Instant::now();
    let metta = fresh_metta(driver)?;
    let error: Option<String> = driver
        .call_method1("_replay", (&metta, cells, f64::INFINITY))?
        .extract()?;
    let took = started.elapsed();
    if let Some(error) = error {
        bail!("the driver could not replay the cells: {error}");
    }
    Ok(took)
}
