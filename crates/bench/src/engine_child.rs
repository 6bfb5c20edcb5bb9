//! Round trips to a real engine child (the server binary's `engine` subcommand) under the
//! server's own supervisor (`metta_learner_backend::SupervisedEngine`), as the worker drives
//! it: `!(+ 2 3)` in a live session, then sessions built from the replay cells (as after an
//! engine restart). No server, no database.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use metta_learner_backend::SupervisedEngine;

use crate::setup::Setup;
use crate::stats::Timed;
use crate::{replay_cells, PROGRAM, REPLAY_CELLS, REPLAY_RUNS};

pub(crate) struct EngineChildFigures {
    /// `!(+ 2 3)` in a live session.
    pub(crate) round_trip: Timed,
    /// A new session built from the replay cells, then `!(+ 2 3)`, per repetition.
    pub(crate) replay: Vec<Duration>,
}

/// `runs` round trips of `!(+ 2 3)` to one live session (after `runs / 10` untimed), then
/// `REPLAY_RUNS` sessions built from the replay cells.
pub(crate) async fn measure_engine_child(setup: &Setup, runs: usize) -> Result<EngineChildFigures> {
    let mut engine = SupervisedEngine::start(
        &setup.server_binary,
        setup.sys_path.clone(),
        setup.work.path(),
    )
    .await?;
    let expect_five = |lines: Vec<String>| {
        ensure!(
            lines.first().map(String::as_str) == Some("[5]"),
            "the engine child printed {lines:?} for {PROGRAM}"
        );
        Ok(())
    };
    expect_five(engine.build_session("bench", &[], PROGRAM).await?)?;
    for _ in 0..runs / 10 {
        expect_five(engine.run_in_live_session("bench", PROGRAM).await?)?;
    }
    let mut samples = Vec::with_capacity(runs);
    let started = Instant::now();
    for _ in 0..runs {
        let one = Instant::now();
        expect_five(engine.run_in_live_session("bench", PROGRAM).await?)?;
        samples.push(one.elapsed());
    }
    let round_trip = Timed {
        samples,
        wall: started.elapsed(),
    };
    let cells = replay_cells(REPLAY_CELLS);
    let mut replay = Vec::new();
    for repetition in 0..REPLAY_RUNS {
        let session = format!("replay-{repetition}");
        let started = Instant::now();
        expect_five(engine.build_session(&session, &cells, PROGRAM).await?)?;
        replay.push(started.elapsed());
    }
    Ok(EngineChildFigures { round_trip, replay })
}
