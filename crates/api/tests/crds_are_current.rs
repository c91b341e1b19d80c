//! The CRD manifests committed in `charts/herald/crds/` are exactly what the types generate.

use std::{fs, path::Path};

#[test]
fn the_committed_crd_manifests_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/herald/crds");
    let manifests = herald_api::crd_manifests().expect("the CRDs serialise");
    assert_eq!(manifests.len(), 7);
    for (file, yaml) in manifests {
        let committed = fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            committed == yaml,
            "charts/herald/crds/{file} is stale: run `cargo run -p herald-api --bin crdgen`"
        );
    }
}
