//! Writes the CRD manifests generated from `herald-api`'s types into a directory (by default
//! `charts/herald/crds/`) and the configuration reference into `docs/reference.md`, or with
//! `--check` fails when the committed files differ.
//!
//! `cargo run -p herald-api --bin crdgen [-- --check] [DIR]`

use std::{fs, path::PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/herald/crds");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            other if other.starts_with('-') => {
                bail!("unknown flag {other}; usage: crdgen [--check] [DIR]")
            }
            other => dir = PathBuf::from(other),
        }
    }
    let manifests = herald_api::crd_manifests().context("serialising the CRDs")?;
    let reference = herald_api::reference::reference().context("writing the reference")?;
    let reference_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference.md");
    let mut stale = Vec::new();
    let files = manifests
        .iter()
        .map(|(file, yaml)| (dir.join(file), yaml))
        .chain([(reference_path, &reference)]);
    for (path, yaml) in files {
        let current = fs::read_to_string(&path).unwrap_or_default();
        if current == *yaml {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale generated files (run `cargo run -p herald-api --bin crdgen`): {}",
            stale.join(", ")
        );
    }
    Ok(())
}
