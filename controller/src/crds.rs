//! Herald's CRDs kept at this release's (`--manage-crds`, the chart's default). Helm installs
//! the chart's `crds/` on the first install and never again, so without this an upgrade
//! leaves the old schemas: new fields are pruned from every write and new columns never
//! show. The controller carries the CRDs of its own types ([`herald_api::crds`]), each
//! annotated with its release ([`herald_api::CRD_VERSION_ANNOTATION`]), and applies them
//! at start, before it leads:
//!
//! ```text
//!   for each of the nine CRDs: get ── missing ──► create (by server-side apply)
//!                               ├─ older release, same release, unreadable annotation ──►
//!                               │  replace the spec with ours (exactly ours: what an older
//!                               │  release or a hand edit added goes), at the resource
//!                               │  version read (a concurrent change fails the pass)
//!                               └─ a newer release's ──► left alone, warned about (a replica
//!                                  of the old release during a rollout never downgrades)
//!   any failure ──► warn, try again (1 s doubling to 30 s) in the background; the controller
//!                   serves with the CRDs as they are meanwhile
//! ```
//!
//! RBAC: `get`, `update`, `patch` and `create` on the nine CRDs by name (an apply that
//! creates is authorised as `create` of its name), nothing else on CRDs.

use std::time::Duration;

use herald_api::{CRD_VERSION_ANNOTATION, VERSION};
use herald_shell::api::retry_until_done;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tracing::{info, warn};

/// The field manager of the controller's writes to CRDs.
const FIELD_MANAGER: &str = "herald-controller";

/// How long the start waits for the CRDs before serving with them as they are.
const START_WAIT: Duration = Duration::from_secs(15);

/// Brings every CRD to this release's; waits up to [`START_WAIT`] and leaves the rest (API
/// away, permission missing) retrying in the background.
pub(crate) async fn keep_current(client: Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut task = tokio::spawn(async move {
        retry_until_done("bringing Herald's CRDs to this release's", || {
            upgrade_all(&api)
        })
        .await;
    });
    if tokio::time::timeout(START_WAIT, &mut task).await.is_err() {
        warn!("the CRDs are not current yet: serving with them as they are, still trying");
    }
}

/// One pass over every CRD.
async fn upgrade_all(api: &Api<CustomResourceDefinition>) -> Result<(), kube::Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    for crd in herald_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let Some(installed) = api.get_opt(&name).await? else {
            // An apply, not a create: it is authorised as `create` of this name, which RBAC
            // can limit to the nine names (a plain create cannot be limited by name).
            let apply = PatchParams::apply(FIELD_MANAGER);
            api.patch(&name, &apply, &Patch::Apply(&crd)).await?;
            info!(crd = %name, to = VERSION, "CRD created");
            continue;
        };
        let installed_release = release_of(&installed);
        if verdict(installed_release, VERSION) == Verdict::KeepNewer {
            warn!(crd = %name, installed = installed_release.unwrap_or_default(), ours = VERSION,
                "a newer Herald's CRD is installed: leaving it");
            continue;
        }
        let replaced = api
            .replace(&name, &params, &replacing(&installed, crd))
            .await?;
        if replaced.metadata.resource_version != installed.metadata.resource_version {
            info!(crd = %name, from = installed_release.unwrap_or("none"), to = VERSION,
                "CRD brought to this release's");
        }
    }
    Ok(())
}

/// `ours` as a replacement of `installed`: exactly our spec (what an earlier release or a
/// hand edit added to the schema goes), our labels and annotations over the installed ones,
/// and the installed object's identity and resource version (a concurrent change makes the
/// replacement fail and the pass run again).
fn replacing(
    installed: &CustomResourceDefinition,
    ours: CustomResourceDefinition,
) -> CustomResourceDefinition {
    let mut metadata = installed.metadata.clone();
    metadata.managed_fields = None;
    for (into, from) in [
        (&mut metadata.labels, ours.metadata.labels),
        (&mut metadata.annotations, ours.metadata.annotations),
    ] {
        into.get_or_insert_with(Default::default)
            .extend(from.unwrap_or_default());
    }
    CustomResourceDefinition {
        metadata,
        spec: ours.spec,
        status: None,
    }
}

/// The release a CRD was installed by, as its annotation says.
fn release_of(crd: &CustomResourceDefinition) -> Option<&str> {
    crd.metadata
        .annotations
        .as_ref()?
        .get(CRD_VERSION_ANNOTATION)
        .map(String::as_str)
}

/// What to do with an installed CRD.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Apply,
    KeepNewer,
}

/// Apply unless the installed CRD is from a release newer than `ours`; a CRD without the
/// annotation (before 0.2.0, or applied by hand) or with one that does not read as a release
/// is applied.
fn verdict(installed: Option<&str>, ours: &str) -> Verdict {
    match (installed.and_then(release), release(ours)) {
        (Some(theirs), Some(ours)) if theirs > ours => Verdict::KeepNewer,
        _ => Verdict::Apply,
    }
}

/// `MAJOR.MINOR.PATCH` of a semantic version, pre-release and build metadata ignored.
fn release(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    let release = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_release_is_left_alone() {
        assert_eq!(verdict(None, "0.2.0"), Verdict::Apply);
        assert_eq!(verdict(Some("0.1.0"), "0.2.0"), Verdict::Apply);
        assert_eq!(verdict(Some("0.2.0"), "0.2.0"), Verdict::Apply);
        assert_eq!(verdict(Some("0.2.0-rc.1"), "0.2.0"), Verdict::Apply);
        assert_eq!(verdict(Some("0.3.0"), "0.2.0"), Verdict::KeepNewer);
        assert_eq!(verdict(Some("0.10.0"), "0.9.9"), Verdict::KeepNewer);
        assert_eq!(verdict(Some("1.0.0+build.7"), "0.9.0"), Verdict::KeepNewer);
        assert_eq!(verdict(Some("not a version"), "0.2.0"), Verdict::Apply);
        assert_eq!(verdict(Some("0.3"), "0.2.0"), Verdict::Apply);
        assert_eq!(verdict(Some("0.3.0.1"), "0.2.0"), Verdict::Apply);
    }

    #[test]
    fn every_crd_carries_this_release() {
        for crd in herald_api::crds() {
            assert_eq!(release_of(&crd), Some(VERSION), "{:?}", crd.metadata.name);
        }
    }
}
