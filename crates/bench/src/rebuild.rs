//! Rebuilding a session of `REPLAY_CELLS` cells through the service: the session is built
//! through the API, then the engine child is killed (`kill -9`) and the next job in that
//! session replays its whole history; normal jobs in it follow, for comparison.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::json;

use crate::api::Api;
use crate::server::{kill_engine_child, Server};
use crate::setup::Setup;
use crate::workloads::{run_metta_job, JobSample, Load, Route};
use crate::{progress, replay_cells, NORMAL_JOBS_PER_REPLAY_RUN, REPLAY_CELLS, REPLAY_RUNS};

pub(crate) struct RebuildFigures {
    pub(crate) cells: usize,
    /// The first job in the big session after each engine kill (it replays the history).
    pub(crate) rebuild_jobs: Vec<JobSample>,
    pub(crate) normal_jobs: Load,
    pub(crate) build_session: Duration,
}

const REPLAY_SESSION: &str = "bench-rebuild";
const OTHER_SESSION: &str = "bench-rebuild-other";

/// Builds a session of `REPLAY_CELLS` cells through the API, then `REPLAY_RUNS` times: kill -9
/// the engine child, let a job in another session absorb the engine's respawn, and time the
/// next job in the big session (which replays its whole history); normal jobs follow.
pub(crate) async fn measure_rebuild(setup: &Setup) -> Result<RebuildFigures> {
    progress(&format!("rebuild: a session of {REPLAY_CELLS} cells"));
    let server = Server::start(setup, &setup.database("rebuild")?).await?;
    let api = Api::new(&server);
    let building = Instant::now();
    for cell in replay_cells(REPLAY_CELLS) {
        let job = json!({"language": "metta", "code": cell, "sessionId": REPLAY_SESSION});
        let (status, body) = api.post("/api/v1/jobs?wait=30", &job, &[]).await?;
        ensure!(
            status == 200 && body["status"] == "succeeded",
            "cell {cell} answered {status}: {body}"
        );
    }
    let build_session = building.elapsed();

    progress(&format!("rebuild: {REPLAY_RUNS} engine kills and rebuilds"));
    let mut rebuild_jobs = Vec::new();
    let mut normal = Vec::new();
    for _ in 0..REPLAY_RUNS {
        kill_engine_child(server.pid()?).await?;
        run_metta_job(&api, Route::V1, OTHER_SESSION).await?;
        rebuild_jobs.push(run_metta_job(&api, Route::V1, REPLAY_SESSION).await?);
        for _ in 0..NORMAL_JOBS_PER_REPLAY_RUN {
            normal.push(run_metta_job(&api, Route::V1, REPLAY_SESSION).await?);
        }
    }
    server.stop().await?;
    Ok(RebuildFigures {
        cells: REPLAY_CELLS,
        rebuild_jobs,
        normal_jobs: Load::back_to_back(normal),
        build_session,
    })
}
