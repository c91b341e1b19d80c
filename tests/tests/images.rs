//! Herald's container images, built the way users get them: `images/build` makes one OCI
//! archive per binary, FROM scratch with the statically linked binary, with buildah and no
//! container daemon; each image, run, prints its binary's version; and the chart's default
//! images are these.

use std::{path::PathBuf, process::Command};

use herald_tests::ControlPlane;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn each_image_is_an_oci_archive_whose_binary_prints_its_version() {
    let out = Command::new(root().join("images/build"))
        .current_dir(root())
        .output()
        .expect("images/build runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "images/build failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    for binary in ["herald-controller", "herald-speaker"] {
        let image = format!("docker.io/herald/{}:{version}", &binary["herald-".len()..]);
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{image} ")))
            .unwrap_or_else(|| panic!("no line for {image} in:\n{stdout}"));
        assert!(
            line.ends_with(&format!(": {binary} {version}")),
            "the image ran its binary's --version: {line}"
        );
        // An OCI image layout in a tar file, one layer: the binary.
        let archive = root().join(format!("target/images/{binary}.tar"));
        let listing = Command::new("tar")
            .arg("-tf")
            .arg(&archive)
            .output()
            .expect("tar runs");
        let listing = String::from_utf8_lossy(&listing.stdout);
        for entry in ["oci-layout", "index.json"] {
            assert!(
                listing.lines().any(|l| l == entry),
                "{entry} in {}: {listing}",
                archive.display()
            );
        }
    }
}

#[test]
fn the_charts_default_images_are_the_ones_built() {
    let cp = ControlPlane::shared();
    let out = Command::new(cp.tool("helm"))
        .args(["template", "r"])
        .arg(root().join("charts/herald"))
        .output()
        .expect("helm runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = env!("CARGO_PKG_VERSION");
    for image in ["herald/controller", "herald/speaker"] {
        assert!(
            text.contains(&format!("image: \"{image}:{version}\"")),
            "{image}:{version} in the rendered chart"
        );
    }
}
