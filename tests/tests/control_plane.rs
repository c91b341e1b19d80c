//! The local control plane is a real Kubernetes: its API server serves CRDs and watches,
//! allocates node ports and health-check node ports, and its controller-manager publishes
//! EndpointSlices for ready Pods.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use herald_tests::{ControlPlane, TestNamespace, wait_for};
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_api_server_reports_kubernetes_1_37() -> anyhow::Result<()> {
    let client = ControlPlane::shared().client().await?;
    let version = client.apiserver_version().await?;
    assert!(
        version.git_version.starts_with("v1.37."),
        "built from k8s.io/kubernetes v1.37.x, /version says {}",
        version.git_version
    );
    let kubectl = ControlPlane::shared().kubectl(&["version", "--client", "-o", "json"])?;
    assert!(kubectl.contains("\"gitVersion\": \"v1.37."), "{kubectl}");
    Ok(())
}

#[tokio::test]
async fn a_crd_is_served_and_its_objects_are_created_listed_and_watched() -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "crd").await?;
    cp.kubectl_with_input(
        &["apply", "-f", "-"],
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.herald.dev}
spec:
  group: smoke.herald.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"#,
    )?;
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.smoke.herald.dev",
        "--timeout=30s",
    ])?;

    let gvk = GroupVersionKind::gvk("smoke.herald.dev", "v1", "Widget");
    let resource = ApiResource::from_gvk(&gvk);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    let widget = |name: &str, size: i64| -> anyhow::Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "smoke.herald.dev/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": size},
        }))?)
    };
    // Discovery can lag a moment behind Established.
    let first = widget("first", 1)?;
    let create = PostParams::default();
    wait_for("the first Widget to be accepted", TIMEOUT, || {
        widgets.create(&create, &first)
    })
    .await?;

    let mut events = watcher(widgets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first_seen = tokio::time::timeout(TIMEOUT, events.try_next()).await??;
    assert_eq!(first_seen.map(|w| w.name_any()).as_deref(), Some("first"));

    widgets
        .create(&PostParams::default(), &widget("second", 2)?)
        .await?;
    let second_seen = tokio::time::timeout(TIMEOUT, events.try_next()).await??;
    let second_seen = second_seen.expect("the watch stream goes on");
    assert_eq!(second_seen.name_any(), "second");
    assert_eq!(second_seen.data["spec"]["size"], 2);

    let names: Vec<String> = widgets
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|w| w.name_any())
        .collect();
    assert_eq!(names, ["first", "second"]);

    // The schema is enforced by the API server, with the field named.
    let rejected = widgets
        .create(&PostParams::default(), &widget("zero", 0)?)
        .await
        .expect_err("size must be at least 1");
    assert!(rejected.to_string().contains("spec.size"), "{rejected}");
    Ok(())
}

#[tokio::test]
async fn a_load_balancer_service_gets_node_ports_and_a_health_check_port_for_local_policy()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "lb").await?;
    cp.kubectl(&[
        "-n",
        ns.name(),
        "create",
        "service",
        "loadbalancer",
        "example-service",
        "--tcp=8765:9376",
    ])?;
    cp.kubectl(&[
        "-n",
        ns.name(),
        "patch",
        "service",
        "example-service",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ])?;

    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let spec = services
        .get("example-service")
        .await?
        .spec
        .expect("a Service has a spec");
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let node_port = spec.ports.as_deref().unwrap_or_default()[0]
        .node_port
        .expect("a LoadBalancer Service gets a nodePort");
    let health_port = spec
        .health_check_node_port
        .expect("a Local LoadBalancer Service gets a healthCheckNodePort");
    assert_ne!(node_port, health_port);

    let describe = cp.kubectl(&["-n", ns.name(), "describe", "services", "example-service"])?;
    assert!(
        describe.contains(&format!("{node_port}/TCP")),
        "kubectl describe shows the NodePort:\n{describe}"
    );
    assert!(
        describe.contains(&format!("HealthCheck NodePort:     {health_port}")),
        "kubectl describe shows the HealthCheck NodePort:\n{describe}"
    );
    assert!(
        describe.contains("External Traffic Policy:  Local"),
        "{describe}"
    );
    Ok(())
}

#[tokio::test]
async fn a_require_dual_stack_service_gets_an_ipv4_and_an_ipv6_cluster_ip() -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "dual").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "dual"},
        "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
                 "ipFamilies": ["IPv4", "IPv6"], "selector": {"app": "dual"},
                 "ports": [{"port": 80}]},
    }))?;
    let created = services.create(&PostParams::default(), &service).await?;
    let ips = created.spec.and_then(|s| s.cluster_ips).unwrap_or_default();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips[0].starts_with("198.51.100."), "{ips:?}");
    assert!(ips[1].starts_with("2001:db8:5e::"), "{ips:?}");
    Ok(())
}

#[tokio::test]
async fn an_exposed_deployment_gets_an_endpoint_slice_once_its_pods_are_ready() -> anyhow::Result<()>
{
    let cp = ControlPlane::shared();
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "eps").await?;
    // The kubelet's part, played by the test: a Node for the Pods to run on.
    let nodes: Api<Node> = Api::all(client.clone());
    let node_name = format!("{}-node", ns.name());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node_name}}))?,
        )
        .await?;

    cp.kubectl(&[
        "-n",
        ns.name(),
        "create",
        "deployment",
        "example",
        "--image=registry.invalid/example:1",
        "--port=9376",
    ])?;
    cp.kubectl(&[
        "-n",
        ns.name(),
        "expose",
        "deployment",
        "example",
        "--port=8765",
        "--target-port=9376",
        "--name=example-service",
        "--type=LoadBalancer",
    ])?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    for (i, ip) in ["192.0.2.11", "192.0.2.12"].into_iter().enumerate() {
        let name = format!("example-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "example"}},
            "spec": {"nodeName": node_name, "containers": [{"name": "app",
                     "image": "registry.invalid/example:1", "ports": [{"containerPort": 9376}]}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        // Only the first Pod becomes ready.
        let ready = if i == 0 { "True" } else { "False" };
        cp.kubectl(&[
            "-n",
            ns.name(),
            "patch",
            "pod",
            &name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": ready}]}})
            .to_string(),
        ])?;
    }

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    let by_service = ListParams::default().labels("kubernetes.io/service-name=example-service");
    let endpoints = wait_for("an EndpointSlice with both Pods", TIMEOUT, || async {
        let list = slices.list(&by_service).await.map_err(|e| e.to_string())?;
        let endpoints: Vec<_> = list
            .items
            .into_iter()
            .flat_map(|s| s.endpoints.unwrap_or_default())
            .collect();
        if endpoints.len() == 2 {
            Ok(endpoints)
        } else {
            Err(format!("{} endpoints so far", endpoints.len()))
        }
    })
    .await?;
    for endpoint in endpoints {
        let ready = endpoint.conditions.and_then(|c| c.ready);
        let expected = endpoint.addresses == ["192.0.2.11"];
        assert_eq!(ready, Some(expected), "{:?}", endpoint.addresses);
        assert_eq!(endpoint.node_name.as_deref(), Some(node_name.as_str()));
    }
    // No kubelet confirms a Pod's end, and a LoadBalancer Service left behind would hold an
    // address once some test's herald-controller runs: remove both now.
    cp.kubectl(&[
        "-n",
        ns.name(),
        "delete",
        "service",
        "example-service",
        "--wait=false",
    ])?;
    cp.kubectl(&[
        "-n",
        ns.name(),
        "delete",
        "pods",
        "--all",
        "--force",
        "--grace-period=0",
    ])?;
    nodes.delete(&node_name, &DeleteParams::default()).await?;
    Ok(())
}
