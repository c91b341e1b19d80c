//! What the controller's end-to-end tests share: the real control plane with Herald's CRDs, a
//! herald-controller process per test (one at a time, so each test sees only its own), and
//! helpers to read what the controller wrote.

#![allow(dead_code, reason = "each test binary uses a part of it")]

use std::time::Duration;

pub(crate) use herald_tests::herald::Controller;
use herald_tests::{ControlPlane, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use tokio::sync::{Mutex, MutexGuard};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// One test's world: a namespace, a client, and a running controller.
pub(crate) struct World {
    pub(crate) cp: &'static ControlPlane,
    pub(crate) client: Client,
    pub(crate) ns: TestNamespace,
    pub(crate) controller: Controller,
    pools: std::sync::Mutex<Vec<String>>,
    _turn: MutexGuard<'static, ()>,
}

static TURN: Mutex<()> = Mutex::const_new(());

impl World {
    /// Waits for its turn, installs the CRDs (once), creates a namespace and starts a
    /// controller serving Services without a class.
    pub(crate) async fn new(prefix: &str) -> anyhow::Result<World> {
        let turn = TURN.lock().await;
        let cp = ControlPlane::shared();
        cp.install_herald_crds()?;
        let client = cp.client().await?;
        let ns = TestNamespace::create(cp, &client, prefix).await?;
        let controller = Controller::start(cp, ns.name(), "only")?;
        Ok(World {
            cp,
            client,
            ns,
            controller,
            pools: std::sync::Mutex::default(),
            _turn: turn,
        })
    }

    pub(crate) fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    /// `kubectl -n <namespace> ARGS...`
    pub(crate) fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.ns.name()];
        full.extend_from_slice(args);
        Ok(self.cp.kubectl(&full)?)
    }

    /// `kubectl apply` of `manifest` in the test's namespace.
    pub(crate) fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        Ok(self
            .cp
            .kubectl_with_input(&["-n", self.ns.name(), "apply", "-f", "-"], manifest)?)
    }

    /// Creates (or replaces) pool `name` with `addresses`, open to this test's namespace
    /// only, so that tests never draw from each other's pools. Deleted with the world.
    pub(crate) fn pool(
        &self,
        name: &str,
        addresses: &[&str],
        extra_spec: &str,
    ) -> anyhow::Result<String> {
        let full = format!("{}-{name}", self.ns.name());
        let list = addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.cp.kubectl_with_input(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: herald.dev/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {full}}}\n\
                 spec:\n  addresses: [{list}]\n  serviceAllocation: {{namespaces: [{ns}]}}\n{extra_spec}",
                ns = self.ns.name()
            ),
        )?;
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if !pools.contains(&full) {
            pools.push(full.clone());
        }
        Ok(full)
    }

    /// Waits until Service `name` has addresses in its status, and returns them.
    pub(crate) async fn ingress(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let services = self.services();
        Ok(wait_for(
            &format!("an address in the status of {name}"),
            TIMEOUT,
            || async {
                let service = services.get(name).await.map_err(|e| e.to_string())?;
                let ips = ingress_ips(&service);
                if ips.is_empty() {
                    Err("no ingress yet".to_owned())
                } else {
                    Ok(ips)
                }
            },
        )
        .await?)
    }

    /// Who holds the controllers' Lease (in the test's namespace).
    pub(crate) fn lease_holder(&self) -> anyhow::Result<String> {
        self.kubectl(&[
            "get",
            "lease",
            "herald-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    }

    /// Waits until an Event of `name` contains `text`.
    pub(crate) async fn event(&self, name: &str, text: &str) -> anyhow::Result<String> {
        Ok(self.ns.event(name, text).await?)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // While the controller still runs, so that it releases every finalizer: nothing is
        // left stuck in deletion, holding node ports, after the test.
        let _ = self.kubectl(&["delete", "services", "--all", "--timeout=30s"]);
        for pool in self
            .pools
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = self.cp.kubectl(&[
                "delete",
                "ipaddresspool",
                pool,
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
    }
}

/// The addresses in a Service's status, as text.
pub(crate) fn ingress_ips(service: &Service) -> Vec<String> {
    herald_api::service::ingress_ips(service)
        .iter()
        .map(ToString::to_string)
        .collect()
}
