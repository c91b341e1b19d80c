//! `tests/cluster` as people and tests use it: a second `up` reuses the running control plane,
//! and a taken port is refused with a clear message and nothing left behind.

use std::{net::TcpListener, path::Path, process::Command};

use herald_tests::ControlPlane;

fn cluster_script() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster"))
}

#[test]
fn a_second_up_reuses_the_running_control_plane() -> anyhow::Result<()> {
    let first = ControlPlane::shared();
    let out = cluster_script().arg("up").output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(format!("KUBECONFIG={}", first.kubeconfig.display()).as_str()),
        "the last line names the same kubeconfig"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn up_refuses_a_taken_port_by_name_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let squatter = TcpListener::bind("127.0.0.1:0")?;
    let port = squatter.local_addr()?.port();
    let state = std::env::temp_dir().join(format!("herald-cluster-taken-{}", std::process::id()));
    let out = cluster_script()
        .arg("up")
        .env("HERALD_CLUSTER_DIR", &state)
        .env("HERALD_ETCD_PORT", port.to_string())
        .output()?;
    assert!(!out.status.success(), "up must fail when its port is taken");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port 127.0.0.1:{port} is already in use")),
        "{stderr}"
    );
    assert!(
        stderr.contains("HERALD_ETCD_PORT"),
        "says how to choose others: {stderr}"
    );
    assert!(!state.exists(), "no state is left in {}", state.display());
    let _ = std::fs::remove_file(state.with_extension("lock"));
    Ok(())
}
