//! Where things are: the server binary to measure (`BENCH_SERVER`, or the one built beside
//! this benchmark), the project's Python and its `sys.path` (from the server's own start-up
//! probe), and the temporary folder everything the benchmark makes goes into.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use metta_learner_backend::probe_python;

/// Where things are, and the project Python's `sys.path`.
pub(crate) struct Setup {
    pub(crate) server_binary: PathBuf,
    pub(crate) python: PathBuf,
    pub(crate) sys_path: Vec<String>,
    /// Everything the benchmark creates (databases, working folders); removed at the end.
    pub(crate) work: tempfile::TempDir,
}

impl Setup {
    pub(crate) async fn discover() -> Result<Setup> {
        let own = std::env::current_exe().context("cannot find this benchmark's executable")?;
        // BENCH_SERVER measures another build of the server (e.g. an earlier commit's) with
        // this benchmark's workload, for a side-by-side comparison.
        let server_binary = std::env::var_os("BENCH_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| own.with_file_name("metta-learner-backend"));
        ensure!(
            server_binary.exists(),
            "{} is missing: build it first (scripts/bench.sh does)",
            server_binary.display()
        );
        let python =
            std::path::absolute(".venv/bin/python").context("cannot resolve .venv/bin/python")?;
        ensure!(
            python.exists(),
            "{} is missing: run from the repository root after scripts/setup.sh",
            python.display()
        );
        let sys_path = probe_python(&python)
            .await
            .map_err(anyhow::Error::msg)
            .context("run scripts/setup.sh")?;
        let work = tempfile::Builder::new()
            .prefix("mlb-bench-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        // The servers' children, which may run under an unprivileged uid, pass through it to
        // their scratch folders.
        set_mode(work.path(), 0o711)?;
        Ok(Setup {
            server_binary,
            python,
            sys_path,
            work,
        })
    }

    /// A path for a new SQLite file in its own folder (the server restricts its folder).
    pub(crate) fn database(&self, name: &str) -> Result<PathBuf> {
        let folder = self.work.path().join(name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        Ok(folder.join("bench.db"))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}
