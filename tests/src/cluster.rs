//! The real control plane: started once per test binary through `tests/cluster up`, or reused
//! when one is already running (the script serialises concurrent starts with a lock).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{
    Error, Result,
    process::{run, run_with_input},
};

/// A running kube-apiserver (with etcd and kube-controller-manager) and the tools built for it.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Kubeconfig with cluster-admin credentials.
    pub kubeconfig: PathBuf,
    /// Directory holding kubectl, helm and the control-plane binaries.
    pub bin_dir: PathBuf,
    /// Where kube-apiserver listens (on loopback).
    pub api_address: SocketAddr,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary: started on first use, then shared.
    ///
    /// Panics when it cannot be started, with the script's own explanation: no test can run
    /// without it.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| {
            Self::up().unwrap_or_else(|e| panic!("the test control plane did not start: {e}"))
        })
    }

    /// Runs `tests/cluster up` and reads the environment it prints.
    pub fn up() -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster");
        let out = run(Command::new(&script).arg("up"))?;
        Self::from_env_lines(&out)
    }

    /// A control plane of the calling test's own, beside the shared one (its own state
    /// directory and ports from `port_base`: etcd `port_base`, its peer port + 1, the API
    /// server + 2, kube-controller-manager + 3), for a test that needs a cluster nobody else
    /// touches (e.g. one without Herald's CRDs). Stopped and removed when dropped.
    pub fn private(name: &str, port_base: u16) -> Result<PrivateControlPlane> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster");
        let env = vec![
            (
                "HERALD_CLUSTER_DIR".to_owned(),
                format!("/tmp/herald-{name}-{}", std::process::id()),
            ),
            ("HERALD_ETCD_PORT".to_owned(), port_base.to_string()),
            ("HERALD_API_PORT".to_owned(), (port_base + 2).to_string()),
            ("HERALD_KCM_PORT".to_owned(), (port_base + 3).to_string()),
        ];
        let out = run(Command::new(&script).arg("up").envs(env.clone()))?;
        Ok(PrivateControlPlane {
            control_plane: Self::from_env_lines(&out)?,
            script,
            env,
        })
    }

    fn from_env_lines(out: &str) -> Result<Self> {
        let vars: HashMap<&str, &str> = out
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let get = |key: &str| {
            vars.get(key).copied().ok_or_else(|| Error::Parse {
                what: "the output of tests/cluster up".into(),
                detail: format!("no {key}= line in {out:?}"),
            })
        };
        let api = get("HERALD_API_ADDRESS")?;
        Ok(ControlPlane {
            kubeconfig: get("KUBECONFIG")?.into(),
            bin_dir: get("HERALD_BIN")?.into(),
            api_address: api.parse().map_err(|e| Error::Parse {
                what: format!("HERALD_API_ADDRESS {api:?}"),
                detail: format!("{e}"),
            })?,
        })
    }

    /// A client with cluster-admin rights, bound to the calling test's runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        let unreadable = |e: kube::config::KubeconfigError| Error::Parse {
            what: format!("kubeconfig {}", self.kubeconfig.display()),
            detail: e.to_string(),
        };
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).map_err(unreadable)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(unreadable)?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `account` of `namespace` with
    /// a fresh token (an hour long), to `path`.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
        path: &Path,
    ) -> Result<()> {
        let token =
            self.kubectl(&["-n", namespace, "create", "token", account, "--duration=1h"])?;
        let admin = std::fs::read_to_string(&self.kubeconfig)
            .map_err(Error::io(format!("reading {}", self.kubeconfig.display())))?;
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
            .ok_or_else(|| Error::Parse {
                what: format!("kubeconfig {}", self.kubeconfig.display()),
                detail: "no certificate-authority".into(),
            })?;
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: herald-test\n  cluster:\n    server: https://{}\n    certificate-authority: {ca}\nusers:\n- name: {account}\n  user:\n    token: {}\ncontexts:\n- name: {account}\n  context: {{cluster: herald-test, user: {account}}}\ncurrent-context: {account}\n",
            self.api_address,
            token.trim()
        );
        std::fs::write(path, config).map_err(Error::io(format!("writing {}", path.display())))
    }

    /// The writes the API server recorded since it started (`tests/cluster` audits every
    /// create, update, patch and delete), oldest first.
    pub fn audited_writes(&self) -> Result<Vec<AuditedWrite>> {
        let path = self
            .kubeconfig
            .parent()
            .unwrap_or(Path::new("."))
            .join("audit.log");
        let text = std::fs::read_to_string(&path)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                AuditedWrite::parse(line).ok_or_else(|| Error::Parse {
                    what: format!("audit event in {}", path.display()),
                    detail: line.chars().take(300).collect(),
                })
            })
            .collect()
    }

    /// The path of a tool built for this control plane (`kubectl`, `helm`, ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A `kubectl` command talking to this control plane.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.tool("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs `kubectl ARGS...` and returns its standard output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl_command().args(args))
    }

    /// A `helm` command talking to this control plane.
    pub fn helm_command(&self) -> Command {
        let mut cmd = Command::new(self.tool("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs `helm ARGS...` and returns its standard output.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        run(self.helm_command().args(args))
    }

    /// Waits until the CRDs `crds` (`crd/<name>`) are served.
    pub fn wait_established(&self, crds: &[String]) -> Result<()> {
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        wait.extend(crds.iter().map(String::as_str));
        // A CRD created a moment ago may have no status yet, which `kubectl wait` reports as an
        // error ("status.conditions accessor error") instead of waiting: ask again.
        let mut attempt = 0;
        loop {
            match self.kubectl(&wait) {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 5 && e.to_string().contains("accessor error") => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies Herald's generated CRDs (`charts/herald/crds/`) and waits until they are
    /// served; once per control plane and test process, later calls return at once.
    pub fn install_herald_crds(&self) -> Result<()> {
        static INSTALLED: std::sync::Mutex<std::collections::BTreeSet<std::net::SocketAddr>> =
            std::sync::Mutex::new(std::collections::BTreeSet::new());
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if installed.contains(&self.api_address) {
            return Ok(());
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/herald/crds");
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &dir.to_string_lossy(),
        ])?;
        let mut crds = Vec::new();
        for entry in
            std::fs::read_dir(&dir).map_err(Error::io(format!("reading {}", dir.display())))?
        {
            let file = entry
                .map_err(Error::io(format!("reading {}", dir.display())))?
                .file_name();
            if let Some(name) = file.to_string_lossy().strip_suffix(".yaml") {
                crds.push(format!("crd/{name}"));
            }
        }
        self.wait_established(&crds)?;
        installed.insert(self.api_address);
        Ok(())
    }

    /// Runs `kubectl ARGS...` with `input` (a manifest, say) on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        run_with_input(self.kubectl_command().args(args), Some(input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_environment_that_cluster_up_prints() {
        let cp = ControlPlane::from_env_lines(
            "HERALD_BIN=/c/bin\nHERALD_API_ADDRESS=127.0.0.1:26443\nKUBECONFIG=/t/kubeconfig\n",
        )
        .expect("complete environment");
        assert_eq!(cp.kubeconfig, Path::new("/t/kubeconfig"));
        assert_eq!(cp.tool("kubectl"), Path::new("/c/bin/kubectl"));
        assert_eq!(cp.api_address.port(), 26443);
    }

    #[test]
    fn a_missing_line_is_named_in_the_error() {
        let err = ControlPlane::from_env_lines("KUBECONFIG=/k\n").expect_err("incomplete");
        assert!(err.to_string().contains("HERALD_API_ADDRESS"), "{err}");
    }
}

/// A control plane of one test's own ([`ControlPlane::private`]); `tests/cluster down` when
/// dropped.
#[derive(Debug)]
pub struct PrivateControlPlane {
    pub control_plane: ControlPlane,
    script: PathBuf,
    env: Vec<(String, String)>,
}

impl PrivateControlPlane {
    /// The process ID of `component` (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn pid(&self, component: &str) -> Result<nix::unistd::Pid> {
        let dir = self
            .env
            .iter()
            .find(|(key, _)| key == "HERALD_CLUSTER_DIR")
            .map(|(_, dir)| dir.clone())
            .unwrap_or_default();
        let path = Path::new(&dir).join(format!("{component}.pid"));
        let text = std::fs::read_to_string(&path)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        text.trim()
            .parse()
            .map(nix::unistd::Pid::from_raw)
            .map_err(|e| Error::Parse {
                what: path.display().to_string(),
                detail: format!("{e}"),
            })
    }

    /// Sends `signal` to `component`.
    pub fn signal(&self, component: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid(component)?;
        nix::sys::signal::kill(pid, signal).map_err(|e| Error::Command {
            what: format!("kill -{signal} {component}"),
            detail: e.to_string(),
        })
    }

    /// Starts kube-apiserver again over the running etcd (after a test killed it); returns
    /// once it is ready.
    pub fn restart_apiserver(&self) -> Result<()> {
        run(Command::new(&self.script)
            .arg("restart_apiserver")
            .envs(self.env.clone()))?;
        Ok(())
    }
}

impl PrivateControlPlane {
    /// Stops it and removes its state (what dropping it does; for one leaked to live as long
    /// as a test).
    pub fn down(&self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .envs(self.env.clone())
            .output();
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        self.down();
    }
}

/// One write the API server recorded in its audit log.
#[derive(Debug, Clone)]
pub struct AuditedWrite {
    /// Who made it (`system:serviceaccount:<namespace>:<name>` for a ServiceAccount).
    pub user: String,
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// The resource (`services`, `events`, `leases`, ...) and subresource (`status`), if any.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The HTTP status the API server answered with.
    pub code: Option<i64>,
    /// When the API server received it.
    pub received: k8s_openapi::jiff::Timestamp,
}

impl AuditedWrite {
    fn parse(line: &str) -> Option<AuditedWrite> {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let text = |pointer: &str| event.pointer(pointer)?.as_str().map(str::to_owned);
        Some(AuditedWrite {
            user: text("/user/username")?,
            verb: text("/verb")?,
            resource: text("/objectRef/resource").unwrap_or_default(),
            subresource: text("/objectRef/subresource"),
            namespace: text("/objectRef/namespace"),
            name: text("/objectRef/name"),
            code: event
                .pointer("/responseStatus/code")
                .and_then(serde_json::Value::as_i64),
            received: text("/requestReceivedTimestamp")?.parse().ok()?,
        })
    }
}
