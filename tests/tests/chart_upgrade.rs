//! `helm upgrade` from the previous chart version, on a control plane of this test's own (the
//! shared one has the CRDs applied by the test harness). The previous chart (0.1.0,
//! `tests/fixtures/herald-0.1.0.tgz`, packaged from the chart as it was at `a253d53`)
//! installed its CRDs from `crds/`, which Helm never upgrades: the guide's upgrade section
//! has the CRDs applied first, then `helm upgrade`. This test follows it.

use std::path::PathBuf;

use herald_tests::ControlPlane;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/herald")
}

fn previous_chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/herald-0.1.0.tgz")
}

/// Runs helm against `cp`; the output, or the error with helm's words.
fn helm(cp: &ControlPlane, args: &[&str]) -> Result<String, String> {
    let out = cp.helm_command().args(args).output().expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The key in the gossip key Secret the chart made.
fn gossip_key(cp: &ControlPlane, namespace: &str) -> herald_tests::Result<String> {
    cp.kubectl(&[
        "get",
        "secret",
        "herald-gossip",
        "-n",
        namespace,
        "-o",
        "jsonpath={.data.key}",
    ])
}

/// The names of the printer columns of CRD `name`.
fn columns(cp: &ControlPlane, name: &str) -> String {
    cp.kubectl(&[
        "get",
        "crd",
        name,
        "-o",
        "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
    ])
    .expect("the CRD")
}

#[test]
fn upgrading_from_the_previous_chart_brings_the_changed_crds_and_keeps_every_object() {
    let private = ControlPlane::private("upgrade", 33790).expect("a control plane of its own");
    let cp = &private.control_plane;
    let namespace = "herald-system";
    helm(
        cp,
        &[
            "install",
            "herald",
            previous_chart().to_str().expect("UTF-8"),
            "-n",
            namespace,
            "--create-namespace",
        ],
    )
    .expect("the previous chart installs");
    let before = columns(cp, "speakerstatuses.herald.dev");
    assert!(!before.contains("Members"), "the old CRD: {before}");
    let key_before = gossip_key(cp, namespace).expect("the old chart's gossip key");
    cp.kubectl_with_input(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "herald.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "kept"}, "spec": {"addresses": ["192.0.2.64/26"]}}"#,
    )
    .expect("a pool");

    // The guide's steps: the CRDs first (Helm leaves crds/ alone on upgrade), then the chart.
    let chart = chart();
    let crds = chart.join("crds");
    cp.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().expect("UTF-8"),
    ])
    .expect("the CRDs applied");
    let chart = chart.to_str().expect("UTF-8");
    helm(cp, &["upgrade", "herald", chart, "-n", namespace]).expect("the upgrade");
    let after = columns(cp, "speakerstatuses.herald.dev");
    assert!(
        after.contains("Members") && after.contains("Nodes"),
        "the new CRD: {after}"
    );
    let schema = cp
        .kubectl(&[
            "get",
            "crd",
            "speakerstatuses.herald.dev",
            "-o",
            "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.gossip.properties}",
        ])
        .expect("the schema");
    assert!(schema.contains("unauthenticated"), "{schema}");
    let pool = cp
        .kubectl(&[
            "get",
            "ipaddresspool",
            "kept",
            "-o",
            "jsonpath={.spec.addresses}",
        ])
        .expect("the pool is still there");
    assert!(pool.contains("192.0.2.64/26"), "{pool}");
    let key_after = gossip_key(cp, namespace).expect("the gossip key");
    assert_eq!(key_after, key_before, "running speakers keep their key");

    // Uninstalling keeps the CRDs, and so every pool and peer. (No kubelet runs the
    // pre-delete hook's Job here, and no controller runs to answer it: `chart_rbac` tests the
    // hook.)
    helm(cp, &["uninstall", "herald", "-n", namespace, "--no-hooks"]).expect("the uninstall");
    let crds = cp.kubectl(&["get", "crd", "-o", "name"]).expect("the CRDs");
    assert_eq!(crds.matches(".herald.dev").count(), 9, "{crds}");
    cp.kubectl(&["get", "ipaddresspool", "kept"])
        .expect("the pool outlives the release");
}
