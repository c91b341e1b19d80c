//! The CRD manifests committed in `charts/herald/crds/` and the reference in
//! `docs/reference.md` are exactly what the types generate.

use std::{fs, path::Path};

#[test]
fn the_committed_crd_manifests_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/herald/crds");
    let manifests = herald_api::crd_manifests().expect("the CRDs serialise");
    assert_eq!(manifests.len(), 9);
    for (file, yaml) in manifests {
        let committed = fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            committed == yaml,
            "charts/herald/crds/{file} is stale: run `cargo run -p herald-api --bin crdgen`"
        );
    }
}

#[test]
fn the_committed_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference.md");
    let committed = fs::read_to_string(&path).unwrap_or_default();
    let generated = herald_api::reference::reference().expect("the CRDs serialise");
    assert!(
        committed == generated,
        "docs/reference.md is stale: run `cargo run -p herald-api --bin crdgen`"
    );
    // Every kind and some fields of each, as a reader would look for them.
    for needle in [
        "## IPAddressPool",
        "`spec.serviceAllocation.priority`",
        "## BGPPeer",
        "`spec.passwordSecret.name`",
        "## BGPAdvertisement",
        "`spec.weightByLocalEndpoints`",
        "## BGPSessionStatus",
        "`spec.lastError`",
    ] {
        assert!(generated.contains(needle), "{needle} in the reference");
    }
}
