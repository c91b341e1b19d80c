//! A fresh Kubernetes namespace per test, so tests run in parallel without seeing each other.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{Api, api::PostParams};

use crate::{ControlPlane, Result, wait_for};

/// A namespace created for one test and deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    control_plane: ControlPlane,
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>` and waits until its `default` ServiceAccount exists,
    /// so Pods can be created in it at once.
    pub async fn create(
        control_plane: &ControlPlane,
        client: &kube::Client,
        prefix: &str,
    ) -> Result<Self> {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        namespaces.create(&PostParams::default(), &ns).await?;
        let this = TestNamespace {
            name,
            control_plane: control_plane.clone(),
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &this.name);
        wait_for(
            "the default ServiceAccount of a new namespace",
            Duration::from_secs(30),
            || accounts.get("default"),
        )
        .await?;
        Ok(this)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Events of object `name` in this namespace, as `reason: message` lines.
    pub fn events(&self, name: &str) -> Result<String> {
        self.control_plane.kubectl(&[
            "-n",
            &self.name,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
    }

    /// Waits until an Event of object `name` contains `text`; returns all its Events.
    pub async fn event(&self, name: &str, text: &str) -> Result<String> {
        wait_for(
            &format!("an Event of {name} saying {text:?}"),
            Duration::from_secs(30),
            || async {
                let events = self.events(name).map_err(|e| e.to_string())?;
                if events.contains(text) {
                    Ok(events)
                } else {
                    Err(events)
                }
            },
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous and without the test's runtime, which may be shutting down.
        let _ = self.control_plane.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// `<prefix>-<pid>-<n>`: unique across the tests of one binary and across binaries.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
