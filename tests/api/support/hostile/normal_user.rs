//! Servers run as a normal (non-root) user, `mlb-server`, made when missing: on this host, and
//! on a host that refuses it user namespaces (a launcher that sets such a host up).

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::support::TestServer;

/// The normal user the server runs as in this suite.
pub const SERVER_USER: &str = "mlb-server";

/// The uid and gid of `SERVER_USER`, created (a system user without a home) when missing.
pub fn server_user() -> (u32, u32) {
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "this suite starts the server as another user, which needs root (CI runs as root)"
        );
        let id = |flag: &str| {
            std::process::Command::new("id")
                .args([flag, SERVER_USER])
                .output()
                .ok()
                .filter(|output| output.status.success())
                .and_then(|output| String::from_utf8(output.stdout).ok())
                .and_then(|text| text.trim().parse::<u32>().ok())
        };
        if id("-u").is_none() {
            let status = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(SERVER_USER)
                .status()
                .expect("run useradd");
            assert!(status.success(), "useradd {SERVER_USER} failed: {status}");
        }
        (
            id("-u").expect("the server user's uid"),
            id("-g").expect("the server user's gid"),
        )
    })
}

/// A server run as `SERVER_USER`, with its database in a folder that user owns.
pub async fn normal_user_server(env: &[(&str, &str)]) -> TestServer {
    let server = TestServer::start_as(Some(server_user()), env).await;
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health["status"],
        "ok",
        "this host allows the namespaces, so the server must not be degraded: {health}\n{}",
        server.logs()
    );
    server
}

pub async fn python(server: &TestServer, code: &str) -> Value {
    server
        .run(json!({"language": "python", "code": code}))
        .await
}

pub async fn metta(server: &TestServer, code: &str) -> Value {
    server
        .run(json!({"language": "metta", "code": code, "sessionId": "hostile"}))
        .await
}

pub async fn assert_still_serving(server: &TestServer) {
    let next = python(server, "print('still here')").await;
    assert_eq!(next["status"], "succeeded", "{next}");
    assert_eq!(next["output"], "still here\n", "{next}");
}

/// Runs its arguments (from the fourth on) as uid `argv[1]`, gid `argv[2]`, inside a user
/// namespace whose kernel refuses any further user namespace (`user.max_user_namespaces` is
/// 0 there), as a host that forbids unprivileged user namespaces does. The command dies with
/// this wrapper.
const REFUSING_HOST: &str = r#"
import ctypes, os, sys
CLONE_NEWUSER = 0x10000000
libc = ctypes.CDLL(None, use_errno=True)
uid, gid, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ready_r, ready_w = os.pipe()
mapped_r, mapped_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(ready_r); os.close(mapped_w)
    if libc.unshare(CLONE_NEWUSER) != 0:
        os._exit(90)
    os.write(ready_w, b"u")
    os.read(mapped_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    libc.prctl(1, 9)
    os.execv(argv[0], argv)
os.close(ready_w); os.close(mapped_r)
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open("/proc/%d/%s" % (pid, name), "w") as f:
        f.write("0 0 4294967295")
os.write(mapped_w, b"m")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
"#;

/// A server run as `SERVER_USER` on a host that refuses it user namespaces.
pub async fn server_on_a_refusing_host(env: &[(&str, &str)]) -> (TestServer, tempfile::TempDir) {
    let (uid, gid) = server_user();
    let wrapper_dir = tempfile::tempdir().expect("wrapper folder");
    let wrapper = wrapper_dir.path().join("refusing_host.py");
    std::fs::write(&wrapper, REFUSING_HOST).expect("write the wrapper");
    let launcher = vec![
        "python3".to_string(),
        wrapper.display().to_string(),
        uid.to_string(),
        gid.to_string(),
    ];
    let server = TestServer::start_via(Some((uid, gid)), launcher, env).await;
    (server, wrapper_dir)
}

pub async fn assert_fails_closed(server: &TestServer, naming: &[&str]) {
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}\n{}", server.logs());
    let reason = health["reason"].as_str().unwrap_or_default();
    for word in naming {
        assert!(
            reason.contains(word),
            "the reason must say {word:?}: {reason}"
        );
    }
    let python_job = python(server, "print('ran')").await;
    let metta_job = metta(server, "!(+ 1 2)").await;
    for job in [&python_job, &metta_job] {
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["errorKind"], "service", "{job}");
        assert!(
            !job["output"].as_str().unwrap_or_default().contains("ran"),
            "{job}"
        );
        assert!(
            job["error"]
                .as_str()
                .unwrap_or_default()
                .contains(naming[0]),
            "the job says why: {job}"
        );
    }
}
