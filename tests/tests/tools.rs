//! The tools the tests and the demo use are built for the control plane's Kubernetes version.

use std::{fs, process::Command};

use herald_tests::ControlPlane;

#[test]
fn helm_template_assumes_the_control_planes_kubernetes_version() -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let chart = std::env::temp_dir().join(format!("herald-helm-smoke-{}", std::process::id()));
    fs::create_dir_all(chart.join("templates"))?;
    fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\nkubeVersion: \">=1.37.0-0\"\n",
    )?;
    fs::write(
        chart.join("templates/version.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: version}\n\
         data: {kube: \"{{ .Capabilities.KubeVersion.Version }}\"}\n",
    )?;
    let out = Command::new(cp.tool("helm"))
        .arg("template")
        .arg(&chart)
        .output()?;
    fs::remove_dir_all(&chart)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm template accepts a chart that needs Kubernetes 1.37: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("kube: \"v1.37."), "{stdout}");
    Ok(())
}

#[test]
fn helm_is_version_3() -> anyhow::Result<()> {
    let out = Command::new(ControlPlane::shared().tool("helm"))
        .args(["version", "--short"])
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with("v3."), "{version}");
    Ok(())
}
