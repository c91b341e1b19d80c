//! `helm upgrade` from the previous chart version, on a control plane of this test's own (the
//! shared one has the CRDs applied by the test harness). The previous chart (0.1.0,
//! `tests/fixtures/herald-0.1.0.tgz`, packaged from the chart as it was at `a253d53`)
//! installed its CRDs from `crds/`, which Helm never upgrades: the upgraded controller
//! (`--manage-crds`, the chart's default) brings them to its release's when it starts, with
//! the chart's own ServiceAccount. `helm upgrade` is the whole upgrade, as the guide says.

use std::path::PathBuf;

use herald_tests::{ControlPlane, herald::Controller, wait_for, world::TIMEOUT};

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

/// A field of `crd`, by JSONPath.
fn crd_field(cp: &ControlPlane, crd: &str, path: &str) -> String {
    cp.kubectl(&["get", "crd", crd, "-o", &format!("jsonpath={{{path}}}")])
        .expect("the CRD")
}

const SPEAKER_STATUS: &str = "speakerstatuses.herald.dev";
const SPEC_PROPERTIES: &str = ".spec.versions[0].schema.openAPIV3Schema.properties.spec.properties";
const VERSION: &str = ".metadata.annotations.herald\\.dev/version";

#[tokio::test]
async fn upgrading_from_the_previous_chart_brings_the_changed_crds_and_keeps_every_object()
-> anyhow::Result<()> {
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
    let before = columns(cp, SPEAKER_STATUS);
    assert!(!before.contains("Members"), "the old CRD: {before}");
    let key_before = gossip_key(cp, namespace).expect("the old chart's gossip key");
    cp.kubectl_with_input(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "herald.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "kept"}, "spec": {"addresses": ["192.0.2.64/26"]}}"#,
    )
    .expect("a pool");
    // What else an upgrade meets: a schema field this release does not have (an older
    // release's, or a hand edit), which must go; a CRD deleted by hand, which comes back; and
    // a CRD a newer release installed, which an older controller (one replica of a rollout)
    // must leave alone.
    cp.kubectl(&[
        "patch",
        "crd",
        SPEAKER_STATUS,
        "--type=json",
        "--patch",
        r#"[{"op": "add", "value": {"type": "string"},
            "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/legacy"}]"#,
    ])
    .expect("a field added by hand");
    assert!(crd_field(cp, SPEAKER_STATUS, SPEC_PROPERTIES).contains("legacy"));
    cp.kubectl(&["delete", "crd", "bfdprofiles.herald.dev"])
        .expect("a CRD deleted");
    let newer = "servicel2statuses.herald.dev";
    cp.kubectl(&["annotate", "crd", newer, "herald.dev/version=99.0.0"])
        .expect("a newer release's CRD");
    let newer_before = crd_field(cp, newer, ".metadata.resourceVersion");

    let chart = chart();
    let chart = chart.to_str().expect("UTF-8");
    helm(cp, &["upgrade", "herald", chart, "-n", namespace]).expect("the upgrade");
    assert!(
        !columns(cp, SPEAKER_STATUS).contains("Members"),
        "Helm itself never upgrades crds/"
    );
    // The upgraded controller, with the chart's arguments and its account's token.
    let dir = tempdir();
    let config = dir.join("controller.kubeconfig");
    cp.service_account_kubeconfig(namespace, "herald-controller", &config)
        .expect("the controller's credentials");
    let rendered = helm(cp, &["get", "manifest", "herald", "-n", namespace]).expect("the manifest");
    assert!(
        rendered.contains("- --manage-crds"),
        "the chart asks for it"
    );
    let controller = Controller::start_as_with(
        &config,
        namespace,
        "herald-controller",
        "upgraded",
        &["--manage-crds"],
    )?;
    wait_for("the CRDs brought to this release's", TIMEOUT, || async {
        let after = columns(cp, SPEAKER_STATUS);
        if after.contains("Members") && after.contains("Nodes") {
            Ok(())
        } else {
            Err(format!("columns {after}; log:\n{}", controller.log()))
        }
    })
    .await?;
    let properties = crd_field(cp, SPEAKER_STATUS, SPEC_PROPERTIES);
    assert!(properties.contains("unauthenticated"), "{properties}");
    assert!(
        !properties.contains("legacy"),
        "exactly this release's schema: {properties}"
    );
    let release = env!("CARGO_PKG_VERSION");
    assert_eq!(crd_field(cp, SPEAKER_STATUS, VERSION), release);
    assert_eq!(
        crd_field(cp, "bfdprofiles.herald.dev", VERSION),
        release,
        "the deleted CRD is back"
    );
    assert_eq!(crd_field(cp, newer, VERSION), "99.0.0");
    assert_eq!(
        crd_field(cp, newer, ".metadata.resourceVersion"),
        newer_before,
        "a newer release's CRD is left alone"
    );
    let log = controller.log();
    assert!(log.contains("a newer Herald's CRD is installed"), "{log}");
    assert!(!log.contains("forbidden"), "{log}");

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
    drop(controller);

    // Uninstalling keeps the CRDs, and so every pool and peer. (No kubelet runs the
    // pre-delete hook's Job here, and no controller runs to answer it: `chart_rbac` tests the
    // hook.)
    helm(cp, &["uninstall", "herald", "-n", namespace, "--no-hooks"]).expect("the uninstall");
    let crds = cp.kubectl(&["get", "crd", "-o", "name"]).expect("the CRDs");
    assert_eq!(crds.matches(".herald.dev").count(), 9, "{crds}");
    cp.kubectl(&["get", "ipaddresspool", "kept"])
        .expect("the pool outlives the release");
    Ok(())
}

/// A directory of this test's own, removed with the process's temporary files.
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
