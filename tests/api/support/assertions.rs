//! What the tests compare answers with: a job's status and that it says why, and hyperon's
//! own output for a program run outside the service (the reference results must equal).

use std::process::{Command, Stdio};

use serde_json::Value;

use super::project_python;

pub fn text(job: &Value, field: &str) -> String {
    job[field].as_str().unwrap_or_default().to_string()
}

pub fn assert_status(job: &Value, status: &str, what: &str) {
    assert_eq!(job["status"], status, "{what}: {job}");
    if status != "succeeded" {
        assert!(
            !text(job, "error").trim().is_empty(),
            "{what}: a {status} job must say why: {job}"
        );
        assert_eq!(
            job["errorKind"], "code",
            "{what}: the learner's code is at fault: {job}"
        );
    }
}

/// Runs MeTTa code directly in hyperon (`metta-py`'s way) with the project's Python, outside
/// the service: the reference the service's results must equal.
pub fn direct_hyperon_run(program: &str) -> String {
    let script = r#"
import sys, hyperon
program = sys.stdin.read()
metta = hyperon.MeTTa(env_builder=hyperon.Environment.custom_env(working_dir='.', config_dir=''))
for result in metta.run(program):
    print(result)
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(project_python())
        .arg("-I")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(program.as_bytes()).expect("write program");
    }
    let output = child.wait_with_output().expect("python output");
    assert!(
        output.status.success(),
        "direct hyperon run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The last `count` lines of `output`, each ending with a newline.
pub fn last_lines(output: &str, count: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}
