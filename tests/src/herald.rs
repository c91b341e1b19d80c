//! Herald's own binaries, started the way the tests need them: the path of a built binary,
//! and a herald-controller process that is killed (and its log shown on failure) on drop; and
//! [`object`], a `herald.dev` object built from its spec for unit tests.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{ControlPlane, Error, Result};

/// The path of a binary of this workspace (`herald-controller`, `herald-speaker`), built
/// into the same target directory as the running test: `cargo test --workspace` builds
/// every binary; `cargo build -p NAME` builds one when iterating on another crate.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("finding the test executable"))?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .ok_or_else(|| Error::Parse {
            what: "the test executable's path".into(),
            detail: exe.display().to_string(),
        })?;
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Command {
            what: format!("{name} at {}", path.display()),
            detail: format!("not built; run `cargo build -p {name}` first"),
        })
    }
}

/// A herald-controller process; killed when dropped.
#[derive(Debug)]
pub struct Controller {
    child: Child,
    log: std::path::PathBuf,
    metrics_port: u16,
}

/// The tests' Lease times, in seconds: a killed leader is replaced within seconds.
const SHORT_LEASE: (u64, u64) = (4, 1);

impl Controller {
    /// Starts a replica named `instance` with `namespace` as Herald's (its Lease, and the
    /// password Secrets it judges BGPPeers by), with short Lease times so that a killed
    /// leader is replaced within seconds.
    pub fn start(cp: &ControlPlane, namespace: &str, instance: &str) -> Result<Controller> {
        Self::start_as(&cp.kubeconfig, namespace, "herald-controller", instance)
    }

    /// [`Controller::start`] with the credentials of `kubeconfig` (e.g. a ServiceAccount's
    /// token), in `namespace` and competing for Lease `lease` there.
    pub fn start_as(
        kubeconfig: &std::path::Path,
        namespace: &str,
        lease: &str,
        instance: &str,
    ) -> Result<Controller> {
        Self::start_leasing(kubeconfig, namespace, lease, instance, SHORT_LEASE, &[])
    }

    /// [`Controller::start_as`] with `extra` flags.
    pub fn start_as_with(
        kubeconfig: &std::path::Path,
        namespace: &str,
        lease: &str,
        instance: &str,
        extra: &[&str],
    ) -> Result<Controller> {
        Self::start_leasing(kubeconfig, namespace, lease, instance, SHORT_LEASE, extra)
    }

    /// [`Controller::start`] with Lease times `(duration, grace)` in seconds.
    pub fn start_with_lease(
        cp: &ControlPlane,
        namespace: &str,
        instance: &str,
        times: (u64, u64),
    ) -> Result<Controller> {
        Self::start_leasing(
            &cp.kubeconfig,
            namespace,
            "herald-controller",
            instance,
            times,
            &[],
        )
    }

    fn start_leasing(
        kubeconfig: &std::path::Path,
        namespace: &str,
        lease: &str,
        instance: &str,
        (duration, grace): (u64, u64),
        extra: &[&str],
    ) -> Result<Controller> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let log = std::env::temp_dir().join(format!(
            "herald-controller-{}-{started}.log",
            std::process::id(),
        ));
        let file = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(Error::io("finding a free port"))?
            .port();
        let stdout = file
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let child = Command::new(binary("herald-controller")?)
            .args([
                "--namespace",
                namespace,
                "--lease-name",
                lease,
                "--instance",
                instance,
            ])
            .arg(format!("--lease-duration-seconds={duration}"))
            .arg(format!("--lease-grace-seconds={grace}"))
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                "info,herald_controller=debug,herald_shell=debug",
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .map_err(Error::io("starting herald-controller"))?;
        Ok(Controller {
            child,
            log,
            metrics_port,
        })
    }

    /// `GET path` on the metrics and probes port: the status line and the body.
    pub fn http_get(&self, path: &str) -> std::io::Result<(String, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        ))
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. SIGTERM, as the kubelet does to stop a Pod).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id()).map_err(|e| Error::Parse {
            what: "the controller's pid".into(),
            detail: e.to_string(),
        })?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
            Error::Command {
                what: format!("kill -{signal} herald-controller"),
                detail: e.to_string(),
            }
        })
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process at once (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "herald-controller log ({}):\n{}",
                self.log.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A `herald.dev/v1alpha1` object of `kind` named `name` with `spec`, as a unit test builds
/// it (panics if the spec does not fit the type).
pub fn object<K: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) -> K {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "generation": 1}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{kind} {name} does not fit its type: {e}"))
}
