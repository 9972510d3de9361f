//! Runs the real `portcullis` binary for a test and stops it when the test ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::path::{base_url, listener_yaml};

/// A running gateway; killed (by its own process id) when dropped.
pub struct Gateway {
    child: Child,
    /// Gateway listener port on 127.0.0.1.
    pub port: u16,
    /// Admin listener port on 127.0.0.1.
    pub admin_port: u16,
    /// Folder holding the config and the captured log.
    pub dir: tempfile::TempDir,
}

/// Path of the gateway binary built by cargo for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Makes the child die with the test process, even when the test runner is killed.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Gateway {
    /// Starts a gateway whose config is `servers_yaml` (the `servers:` list and anything else
    /// after it) under generated `listen`, `public_url` and `admin` sections. Unless the text sets
    /// a top-level `agent_auth`, servers default to no authentication.
    pub fn start(servers_yaml: &str) -> Self {
        let port = free_port();
        let admin_port = free_port();
        let default_auth =
            if servers_yaml.starts_with("agent_auth:") || servers_yaml.contains("\nagent_auth:") {
                ""
            } else {
                "agent_auth: {mode: none, allow_unauthenticated: true}\n"
            };
        let yaml = format!("{}{default_auth}{servers_yaml}", listener_yaml(port, admin_port));
        Self::start_with_config(&yaml, port, admin_port, &[])
    }

    /// Like [`Gateway::start`], with extra environment variables (e.g. `PORTCULLIS_LOG=debug`).
    pub fn start_with_env(servers_yaml: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let admin_port = free_port();
        let yaml = format!("{}{servers_yaml}", listener_yaml(port, admin_port));
        Self::start_with_config(&yaml, port, admin_port, env)
    }

    /// Starts a gateway on a complete config text; `port` and `admin_port` must match it. The
    /// text decides the listener, whatever the current test path.
    pub fn start_with_config(yaml: &str, port: u16, admin_port: u16, env: &[(&str, &str)]) -> Self {
        Self::spawn(yaml, port, admin_port, env, None)
    }

    /// Like [`Gateway::start`], run with the Pingora server configuration `pingora_yaml` (`-s`;
    /// its pid file and upgrade socket are put in the gateway's folder).
    pub fn start_with_pingora_conf(servers_yaml: &str, pingora_yaml: &str) -> Self {
        let port = free_port();
        let admin_port = free_port();
        let yaml = format!(
            "{}agent_auth: {{mode: none, allow_unauthenticated: true}}\n{servers_yaml}",
            listener_yaml(port, admin_port)
        );
        Self::spawn(&yaml, port, admin_port, &[], Some(pingora_yaml))
    }

    fn spawn(yaml: &str, port: u16, admin_port: u16, env: &[(&str, &str)], pingora: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("portcullis.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let mut command = Command::new(binary());
        command.args(["run", "-c"]).arg(&config);
        if let Some(pingora) = pingora {
            let folder = dir.path().display();
            let conf = dir.path().join("pingora.yaml");
            let text = format!(
                "{pingora}\npid_file: {folder}/portcullis.pid\nupgrade_sock: {folder}/upgrade.sock\n"
            );
            std::fs::write(&conf, text).expect("write pingora conf");
            command.arg("-s").arg(conf);
        }
        command.env("PORTCULLIS_LOG", "info").envs(env.iter().copied()).stdout(Stdio::null()).stderr(log);
        die_with_parent(&mut command);
        let child = command.spawn().expect("spawn portcullis");
        let mut gateway = Self { child, port, admin_port, dir };
        gateway.wait_ready();
        gateway
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited early ({status}):\n{}", self.log());
            }
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(self.port) && up(self.admin_port) {
                return;
            }
            assert!(Instant::now() < deadline, "gateway did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gateway's URL for `path` on the current test path: `http://127.0.0.1:<port><path>`,
    /// or `https://localhost:<port><path>` on h2 (it is also the config's `public_url`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", base_url(self.port))
    }

    /// `http://127.0.0.1:<admin_port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the gateway process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(sent, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` while it still runs.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.yaml")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `portcullis check -c <path>`.
pub fn check(path: &Path) -> Output {
    Command::new(binary()).args(["check", "-c"]).arg(path).output().expect("run portcullis check")
}

/// Runs `portcullis run -c <path>` and expects it to refuse to start; returns its output.
pub fn run_expecting_refusal(path: &Path) -> Output {
    let mut command = Command::new(binary());
    command.args(["run", "-c"]).arg(path).stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(&mut command);
    let child = command.spawn().expect("spawn portcullis");
    child.wait_with_output().expect("portcullis output")
}
