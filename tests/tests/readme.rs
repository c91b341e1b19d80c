//! The README's commands do what it says: each block of commands is run as written (the
//! demo and the test suite are run by `tests/run` itself; `images/build` by `images.rs`).

use std::{path::PathBuf, process::Command};

use herald_tests::ControlPlane;

/// Both blocks create the pool `lan`: one at a time.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first fenced block after the heading `## {section}`.
fn block(section: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("no section {section:?} in the README"));
    let rest = &readme[start..];
    let open = rest.find("\n```\n").expect("a fenced block") + 5;
    let close = open + rest[open..].find("\n```\n").expect("its end");
    rest[open..close].to_owned()
}

/// Runs `script` with bash from the repository's root, as a user would type it (with the
/// control plane's tools on `PATH`, as the README sets them up), with `cleanup` run at the
/// end whatever happens (then background jobs are stopped); returns its output.
fn run(cp: &ControlPlane, script: &str, cleanup: &str) -> String {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let wrapped = format!(
        "set -euo pipefail\n\
         # Run from a test, cargo's variables for the test would reach build scripts.\n\
         for v in $(compgen -e); do case $v in CARGO_HOME) ;; CARGO_*) unset $v ;; esac; done\n\
         trap '{cleanup}; kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}\n"
    );
    let path = format!(
        "{}:{}",
        cp.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&wrapped)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("PATH", path)
        .current_dir(root())
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the README's commands failed:\n{wrapped}\n{text}"
    );
    text
}

#[test]
fn trying_the_controller_gives_the_example_service_its_address() {
    let cp = ControlPlane::shared();
    let commands = block("Trying the controller");
    let out = run(
        cp,
        &commands,
        "kubectl delete service example-service --ignore-not-found --timeout=60s; \
         kubectl delete deployment example --ignore-not-found; \
         kubectl delete ipaddresspool lan --ignore-not-found",
    );
    // 192.0.2.64 on a fresh cluster; another address of the pool when Services of other
    // tests' namespaces, still being deleted, hold the first ones.
    let ingress = out
        .lines()
        .find(|l| l.starts_with("LoadBalancer Ingress:"))
        .unwrap_or_else(|| panic!("kubectl describe shows the address:\n{out}"));
    assert!(
        ingress.contains(" 192.0.2.") && ingress.ends_with("(VIP)"),
        "an address of the pool 192.0.2.64/26: {ingress}"
    );
    assert!(out.contains("IPAllocated"), "and the Event:\n{out}");
}

/// On a cluster of its own, as a user's: without Herald's CRDs, which the chart installs (the
/// shared control plane has them from the test harness, not from a release).
#[test]
fn the_helm_install_of_the_readme_installs_herald_with_its_pool() {
    let private = ControlPlane::private("readme", 53790).expect("a control plane of its own");
    let commands = block("The Helm chart");
    let out = run(
        &private.control_plane,
        &format!(
            "{commands}\n\
             kubectl get crd ipaddresspools.herald.dev speakerstatuses.herald.dev\n\
             kubectl get ipaddresspool/lan l2advertisement/lan\n\
             kubectl -n herald-system get deployment/herald-controller daemonset/herald-speaker"
        ),
        // No kubelet runs the pre-delete hook's Job here.
        "helm uninstall herald -n herald-system --no-hooks >/dev/null 2>&1 || true",
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
}
