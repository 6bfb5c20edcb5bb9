//! The v1 jobs API: submit, poll, long-wait, idempotency, cancel, FIFO order.

use serde_json::json;

use crate::support::TestServer;

#[tokio::test]
async fn python_job_runs_and_its_output_is_stored() {
    let server = TestServer::start().await;
    let job = server
        .run(json!({"language": "python", "code": "print(6 * 7)"}))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "42\n");
}
