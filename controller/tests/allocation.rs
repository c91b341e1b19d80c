//! herald-controller against the real API server: Services of type LoadBalancer get addresses
//! from pools, `kubectl describe` shows them, and every way a Service stops being served gives
//! its address back.

mod common;

use std::time::Duration;

use common::{TIMEOUT, World, ingress_ips};
use herald_tests::wait_for;
use kube::api::DeleteParams;

/// The manifest of the Kubernetes page "Create an External Load Balancer".
const EXAMPLE_SERVICE: &str = "
apiVersion: v1
kind: Service
metadata:
  name: example-service
spec:
  selector:
    app: example
  ports:
    - port: 8765
      targetPort: 9376
  type: LoadBalancer
";

#[tokio::test]
async fn the_pages_example_service_gets_an_ip_that_kubectl_describe_shows() -> anyhow::Result<()> {
    let w = World::new("example").await?;
    let pool = w.pool("lan", &["203.0.113.16/28"], "")?;
    w.apply(EXAMPLE_SERVICE)?;
    let ips = w.ingress("example-service").await?;
    assert_eq!(ips, ["203.0.113.16"]);

    let describe = w.kubectl(&["describe", "services", "example-service"])?;
    assert!(
        describe.contains("LoadBalancer Ingress:     203.0.113.16 (VIP)"),
        "kubectl describe shows the address:\n{describe}"
    );
    w.event("example-service", "IPAllocated: Assigned IP 203.0.113.16")
        .await?;
    let describe = w.kubectl(&["describe", "services", "example-service"])?;
    assert!(
        describe.contains("IPAllocated"),
        "the Event is shown:\n{describe}"
    );

    let annotation = w.kubectl(&[
        "get",
        "service",
        "example-service",
        "-o",
        "jsonpath={.metadata.annotations.herald\\.dev/ip-allocated-from-pool}",
    ])?;
    assert_eq!(annotation, pool);
    let finalizers = w.kubectl(&[
        "get",
        "service",
        "example-service",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ])?;
    assert!(
        finalizers.contains("service.kubernetes.io/load-balancer-cleanup"),
        "{finalizers}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_expose_deployment_gets_an_ip_too() -> anyhow::Result<()> {
    let w = World::new("expose").await?;
    w.pool("lan", &["203.0.113.32/28"], "")?;
    w.kubectl(&[
        "create",
        "deployment",
        "example",
        "--image=registry.invalid/example:1",
        "--port=9376",
    ])?;
    w.kubectl(&[
        "expose",
        "deployment",
        "example",
        "--port=8765",
        "--target-port=9376",
        "--name=example-service",
        "--type=LoadBalancer",
    ])?;
    assert_eq!(w.ingress("example-service").await?, ["203.0.113.32"]);
    let describe = w.kubectl(&["describe", "services", "example-service"])?;
    assert!(
        describe.contains("LoadBalancer Ingress:     203.0.113.32"),
        "{describe}"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_service_releases_its_ip_for_reuse_and_removes_the_finalizer()
-> anyhow::Result<()> {
    let w = World::new("delete").await?;
    w.pool("lan", &["203.0.113.48/31"], "")?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "first"))?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "second"))?;
    let first = w.ingress("first").await?;
    w.ingress("second").await?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "third"))?;
    w.event("third", "no free IPv4 address").await?;

    w.services()
        .delete("first", &DeleteParams::default())
        .await?;
    let services = w.services();
    wait_for("first to be gone (finalizer removed)", TIMEOUT, || async {
        match services.get_opt("first").await {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(format!(
                "still there, finalizers {:?}",
                s.metadata.finalizers
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    assert_eq!(
        w.ingress("third").await?,
        first,
        "the released address is reused"
    );
    Ok(())
}

#[tokio::test]
async fn changing_the_type_away_from_load_balancer_releases_the_ip() -> anyhow::Result<()> {
    let w = World::new("type").await?;
    w.pool("lan", &["203.0.113.64/32"], "")?;
    w.apply(EXAMPLE_SERVICE)?;
    let ip = w.ingress("example-service").await?;
    w.kubectl(&[
        "patch",
        "service",
        "example-service",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])?;
    let services = w.services();
    wait_for(
        "the status and finalizer to be cleared",
        TIMEOUT,
        || async {
            let s = services
                .get("example-service")
                .await
                .map_err(|e| e.to_string())?;
            let finalizers = s.metadata.finalizers.clone().unwrap_or_default();
            let marks: Vec<String> = s
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_keys()
                .filter(|k| k.starts_with("herald.dev/"))
                .collect();
            if ingress_ips(&s).is_empty() && finalizers.is_empty() && marks.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "ingress {:?}, finalizers {finalizers:?}, Herald's annotations {marks:?}",
                    ingress_ips(&s)
                ))
            }
        },
    )
    .await?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "next"))?;
    assert_eq!(w.ingress("next").await?, ip);
    Ok(())
}

#[tokio::test]
async fn a_service_of_another_load_balancer_class_keeps_what_its_controller_wrote()
-> anyhow::Result<()> {
    let w = World::new("class").await?;
    w.pool("lan", &["203.0.113.80/30"], "")?;
    let theirs = EXAMPLE_SERVICE.replace(
        "type: LoadBalancer",
        "type: LoadBalancer\n  loadBalancerClass: other.example/lb",
    );
    w.apply(&theirs)?;
    // The other controller's writes: merge patches, of the object or of its status.
    let other_controller = |status: bool, patch: &str| {
        let mut args = vec!["patch", "service", "example-service", "--type=merge"];
        if status {
            args.push("--subresource=status");
        }
        w.kubectl(&[&args[..], &["-p", patch]].concat())
    };
    // Another controller (a second Herald, serving another class) serves it: the shared
    // cleanup finalizer, its marks and an address of its own.
    other_controller(
        false,
        r#"{"metadata":{"finalizers":["service.kubernetes.io/load-balancer-cleanup"],
            "annotations":{"herald.dev/served":"other.example/lb",
                           "herald.dev/ip-allocated-from-pool":"theirs"}}}"#,
    )?;
    other_controller(
        true,
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"198.51.100.200"}]}}}"#,
    )?;
    let services = w.services();
    let left_alone = || async {
        let other = services.get("example-service").await?;
        anyhow::ensure!(
            ingress_ips(&other) == ["198.51.100.200"],
            "the other controller's address was changed: {:?}",
            ingress_ips(&other)
        );
        anyhow::ensure!(
            other.metadata.finalizers.as_deref()
                == Some(&["service.kubernetes.io/load-balancer-cleanup".to_owned()][..]),
            "the other controller's finalizer was touched"
        );
        anyhow::Ok(other)
    };
    // A Service of our class created after it is served, so the controller has seen both.
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "ours"))?;
    w.ingress("ours").await?;
    let other = left_alone().await?;
    assert_eq!(
        other
            .metadata
            .annotations
            .unwrap_or_default()
            .get("herald.dev/served")
            .map(String::as_str),
        Some("other.example/lb"),
        "the other Herald's mark is kept"
    );
    let mine = services.get("ours").await?;
    assert_eq!(
        mine.metadata
            .annotations
            .unwrap_or_default()
            .get("herald.dev/served")
            .map(String::as_str),
        Some(""),
        "Herald marks what it serves with its class (none)"
    );
    // Deleted, it waits for its own controller's cleanup, not Herald's.
    services
        .delete("example-service", &DeleteParams::default())
        .await?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "after-delete"))?;
    w.ingress("after-delete").await?;
    let other = left_alone().await?;
    assert!(other.metadata.deletion_timestamp.is_some(), "being deleted");
    // The other controller finishes its cleanup; the Service goes.
    other_controller(false, r#"{"metadata":{"finalizers":null}}"#)?;
    wait_for("the other Service to be gone", TIMEOUT, || async {
        match services.get_opt("example-service").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_requested_ip_is_given_and_a_taken_one_is_refused_with_a_clear_event()
-> anyhow::Result<()> {
    let w = World::new("requested").await?;
    w.pool("lan", &["203.0.113.96/28"], "")?;
    let asking = |name: &str, ip: &str| {
        EXAMPLE_SERVICE.replace("example-service", name).replace(
            "metadata:\n",
            &format!("metadata:\n  annotations: {{herald.dev/loadBalancerIPs: \"{ip}\"}}\n"),
        )
    };
    w.apply(&asking("holder", "203.0.113.100"))?;
    assert_eq!(w.ingress("holder").await?, ["203.0.113.100"]);
    w.apply(&asking("latecomer", "203.0.113.100"))?;
    let events = w.event("latecomer", "AllocationFailed").await?;
    assert!(
        events.contains("requested address 203.0.113.100 is in use by"),
        "the Event says why: {events}"
    );
    w.apply(&asking("outsider", "192.0.2.200"))?;
    w.event("outsider", "192.0.2.200 is not in any IPAddressPool")
        .await?;
    // Nothing else was disturbed.
    assert_eq!(w.ingress("holder").await?, ["203.0.113.100"]);
    assert!(ingress_ips(&w.services().get("latecomer").await?).is_empty());
    Ok(())
}

#[tokio::test]
async fn services_with_the_same_sharing_key_share_one_ip() -> anyhow::Result<()> {
    let w = World::new("share").await?;
    w.pool("lan", &["203.0.113.112/29"], "")?;
    let shared = |name: &str, port: u16| {
        EXAMPLE_SERVICE
            .replace("example-service", name)
            .replace("8765", &port.to_string())
            .replace(
                "metadata:\n",
                "metadata:\n  annotations: {metallb.universe.tf/allow-shared-ip: web}\n",
            )
    };
    w.apply(&shared("http", 80))?;
    w.apply(&shared("https", 443))?;
    let http = w.ingress("http").await?;
    assert_eq!(
        w.ingress("https").await?,
        http,
        "same key, different ports: one address"
    );
    w.apply(&shared("clash", 80))?;
    assert_ne!(
        w.ingress("clash").await?,
        http,
        "same port: another address"
    );
    Ok(())
}

#[tokio::test]
async fn a_require_dual_stack_service_gets_one_ip_per_family() -> anyhow::Result<()> {
    let w = World::new("dual").await?;
    w.pool("dual", &["203.0.113.120/29", "2001:db8:1::/120"], "")?;
    w.apply(&EXAMPLE_SERVICE.replace(
        "type: LoadBalancer",
        "type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]",
    ))?;
    assert_eq!(
        w.ingress("example-service").await?,
        ["2001:db8:1::", "203.0.113.120"]
    );
    Ok(())
}

#[tokio::test]
async fn shrinking_a_pool_keeps_a_live_services_ip_and_warns() -> anyhow::Result<()> {
    let w = World::new("shrink").await?;
    let pool = w.pool("lan", &["203.0.113.128/30"], "")?;
    w.apply(EXAMPLE_SERVICE)?;
    let ip = w.ingress("example-service").await?;
    w.pool("lan", &["203.0.113.132/30"], "")?;
    w.event("example-service", "IPOutsidePools").await?;
    assert_eq!(
        w.ingress("example-service").await?,
        ip,
        "the Service keeps its address"
    );
    let cp = w.cp;
    wait_for(
        "the pool status to count the shrunk pool",
        TIMEOUT,
        || async {
            let status = cp
                .kubectl(&[
                    "get",
                    "ipaddresspool",
                    &pool,
                    "-o",
                    "jsonpath={.status.availableIPv4}/{.status.assignedIPv4}",
                ])
                .map_err(|e| e.to_string())?;
            if status == "4/0" { Ok(()) } else { Err(status) }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_controller_killed_during_a_burst_leaves_every_service_correct() -> anyhow::Result<()> {
    let mut w = World::new("burst").await?;
    w.pool("lan", &["203.0.113.192/27"], "")?;
    for i in 0..20 {
        w.apply(&EXAMPLE_SERVICE.replace("example-service", &format!("s{i}")))?;
        if i == 7 {
            w.controller.kill();
        }
        if i == 12 {
            w.controller = common::Controller::start(w.cp, w.ns.name(), "second")?;
        }
        if i % 3 == 0 && i > 0 {
            w.kubectl(&["delete", "service", &format!("s{}", i - 1), "--wait=false"])?;
        }
    }
    w.controller.kill();
    w.controller = common::Controller::start(w.cp, w.ns.name(), "third")?;
    let services = w.services();
    let survivors = wait_for(
        "every remaining Service to have one address",
        TIMEOUT,
        || async {
            let list = services
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut ips = Vec::new();
            for s in &list.items {
                if s.metadata.deletion_timestamp.is_some() {
                    return Err(format!("{:?} is stuck in deletion", s.metadata.name));
                }
                match ingress_ips(s).as_slice() {
                    [ip] => ips.push(ip.clone()),
                    other => return Err(format!("{:?} has {other:?}", s.metadata.name)),
                }
            }
            Ok(ips)
        },
    )
    .await?;
    assert_eq!(survivors.len(), 14, "20 created, 6 deleted");
    let mut unique = survivors.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        survivors.len(),
        "no address given twice: {survivors:?}"
    );
    Ok(())
}

#[tokio::test]
async fn only_the_leader_allocates_and_a_standby_takes_over_when_it_dies() -> anyhow::Result<()> {
    let mut w = World::new("leader").await?;
    w.pool("lan", &["203.0.113.224/28"], "")?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "before"))?;
    w.ingress("before").await?;
    // A standby replica on the same Lease.
    let mut standby = common::Controller::start(w.cp, w.ns.name(), "standby")?;
    assert_eq!(w.lease_holder()?, "only", "the first replica leads");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !standby.log().contains("leading"),
        "the standby does not lead while the leader lives:\n{}",
        standby.log()
    );
    w.controller.kill();
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "after"))?;
    let ips = w.ingress("after").await?;
    assert_ne!(
        ips,
        w.ingress("before").await?,
        "no address given twice across leaders"
    );
    assert_eq!(w.lease_holder()?, "standby");
    assert!(standby.is_running());
    // The new leader stays to release the test's Services.
    w.controller = standby;
    Ok(())
}

/// A leader frozen (SIGSTOP) past its Lease comes back to a cluster that moved on: the
/// standby took over, a Service was deleted and its address given to a new one. The old
/// leader's term ended by its own clock while it was frozen, so it writes nothing: the new
/// Service keeps its address and has no Event from it; the old leader follows the new one.
#[tokio::test]
async fn a_leader_frozen_past_its_lease_writes_nothing_when_it_comes_back() -> anyhow::Result<()> {
    let mut w = World::new("fenced").await?;
    w.pool("lan", &["203.0.113.176/31"], "")?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "first"))?;
    let address = w.ingress("first").await?;
    let standby = common::Controller::start(w.cp, w.ns.name(), "standby")?;
    w.controller.signal(nix::sys::signal::Signal::SIGSTOP)?;
    wait_for("the standby to lead", TIMEOUT, || async {
        match w.lease_holder() {
            Ok(holder) if holder == "standby" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    w.kubectl(&["delete", "service", "first", "--timeout=30s"])?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "second"))?;
    let second = w.ingress("second").await?;
    assert_eq!(second, address, "the freed address went to the new Service");
    w.controller.signal(nix::sys::signal::Signal::SIGCONT)?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let services = w.services();
    assert_eq!(
        ingress_ips(&services.get("second").await?),
        address,
        "the old leader did not re-address the Service it never saw"
    );
    let instances = w.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=second",
        "-o",
        "jsonpath={range .items[*]}{.reportingInstance}{.source.host} {end}",
    ])?;
    assert!(
        !instances.contains("only"),
        "no Event from the old leader: {instances}"
    );
    assert!(w.controller.is_running(), "the old leader lives on");
    assert_eq!(w.lease_holder()?, "standby");
    assert!(
        w.controller
            .log()
            .contains("no renewal of the Lease seen in time"),
        "the old leader says why it stopped:\n{}",
        w.controller.log()
    );
    // The standby stays to release the test's Services.
    let old = std::mem::replace(&mut w.controller, standby);
    drop(old);
    Ok(())
}

/// A rollout stops the leader with SIGTERM: it stops writing, releases the Lease and exits 0
/// at once, and the standby leads and allocates within seconds, long before the Lease
/// (30 s, the chart's default is 15 s) would have expired.
#[tokio::test]
async fn a_leader_stopped_with_sigterm_releases_the_lease_and_the_standby_takes_over_at_once()
-> anyhow::Result<()> {
    const LEASE: (u64, u64) = (30, 10);
    let mut w = World::new("sigterm").await?;
    w.controller.kill();
    w.controller = common::Controller::start_with_lease(w.cp, w.ns.name(), "only", LEASE)?;
    w.pool("lan", &["203.0.113.208/28"], "")?;
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "before"))?;
    w.ingress("before").await?;
    let mut standby = common::Controller::start_with_lease(w.cp, w.ns.name(), "standby", LEASE)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.lease_holder()?, "only");
    let signalled = std::time::Instant::now();
    w.controller.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = loop {
        if let Some(status) = w.controller.exit_status() {
            break status;
        }
        assert!(signalled.elapsed() < TIMEOUT, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(exited < Duration::from_secs(3), "exited after {exited:?}");
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "after"))?;
    w.ingress("after").await?;
    let took_over = signalled.elapsed();
    assert_eq!(w.lease_holder()?, "standby");
    println!(
        "SIGTERM to exit 0: {} ms; to a new Service's address from the standby: {} ms",
        exited.as_millis(),
        took_over.as_millis()
    );
    assert!(
        took_over < Duration::from_secs(10),
        "the standby led long before the 30 s Lease would have run out: {took_over:?}"
    );
    assert!(standby.is_running());
    w.controller = standby;
    Ok(())
}

/// The API refuses the controller's status writes for a while (an admission policy, as a
/// quota or a webhook outage would): the controller logs and counts the failures, and once
/// the API allows the write again it lands on the controller's own retry, with no other
/// change in the cluster to trigger a pass.
#[tokio::test]
async fn a_refused_write_is_retried_on_its_own_once_the_api_allows_it() -> anyhow::Result<()> {
    let w = World::new("refused").await?;
    w.pool("lan", &["203.0.113.192/28"], "")?;
    let policy = format!("{}-refuse-status", w.ns.name());
    w.cp.kubectl_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {policy}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [\"\"], apiVersions: [v1], operations: [UPDATE], resources: [services/status]}}
  validations:
  - {{expression: \"false\", message: refused by the test}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {policy}}}
spec:
  policyName: {policy}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
",
            ns = w.ns.name()
        ),
    )?;
    // The API server learns of the policy through a watch: wait until it refuses.
    w.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: canary}\nspec: {ports: [{port: 80}]}\n",
    )?;
    wait_for("the policy in effect", TIMEOUT, || async {
        let patch = r#"{"status":{"conditions":[{"type":"Probe","status":"True","reason":"Probe","message":"probe","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
        match w.kubectl(&[
            "patch",
            "service",
            "canary",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ]) {
            Err(e) if e.to_string().contains("refused by the test") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    w.apply(EXAMPLE_SERVICE)?;
    wait_for("the status write refused and counted", TIMEOUT, || async {
        let (_, metrics) = w
            .controller
            .http_get("/metrics")
            .map_err(|e| e.to_string())?;
        let counted = metrics
            .lines()
            .any(|l| l.starts_with("herald_controller_write_failures_total{write=\"service\"}"));
        if counted && w.controller.log().contains("writing status failed") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let services = w.services();
    assert!(
        ingress_ips(&services.get("example-service").await?).is_empty(),
        "refused"
    );
    w.cp.kubectl(&[
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        &policy,
    ])?;
    let allowed = std::time::Instant::now();
    // The retries back off to one every 30 s while the API refuses, so the one that lands
    // may come up to that long after the API allows the write.
    wait_for(
        "the address written on a retry",
        Duration::from_secs(45),
        || async {
            let service = services
                .get("example-service")
                .await
                .map_err(|e| e.to_string())?;
            if ingress_ips(&service).is_empty() {
                Err("no ingress yet".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await?;
    println!(
        "the address landed {} ms after the API allowed it, with no other change",
        allowed.elapsed().as_millis()
    );
    Ok(())
}

#[tokio::test]
async fn metrics_count_allocations_and_pool_usage_and_the_probes_answer() -> anyhow::Result<()> {
    let w = World::new("metrics").await?;
    let pool = w.pool("lan", &["203.0.113.240/29"], "")?;
    w.apply(EXAMPLE_SERVICE)?;
    w.ingress("example-service").await?;
    let (status, _) = w.controller.http_get("/healthz")?;
    assert!(status.contains("200"), "{status}");
    let (status, _) = w.controller.http_get("/readyz")?;
    assert!(status.contains("200"), "{status}");
    let controller = &w.controller;
    let metrics = wait_for("the pool gauges to count the allocation", TIMEOUT, || async {
        let (_, body) = controller.http_get("/metrics").map_err(|e| e.to_string())?;
        let assigned = format!(
            "herald_controller_pool_addresses{{pool=\"{pool}\",family=\"ipv4\",state=\"assigned\"}} 1.0"
        );
        if body.contains(&assigned) { Ok(body) } else { Err(body) }
    })
    .await?;
    assert!(
        metrics.contains("herald_controller_allocations_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_controller_leader 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "herald_controller_pool_addresses{{pool=\"{pool}\",family=\"ipv4\",state=\"available\"}} 7.0"
        )),
        "{metrics}"
    );
    // What build runs and what it costs, under the names dashboards know.
    assert!(
        metrics.contains(&format!(
            "herald_build_info{{component=\"controller\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(metrics.contains(&format!("\n{name} ")), "{name}: {metrics}");
    }
    // A Service asking for an address no pool has is counted as one without an address.
    w.apply(
        &EXAMPLE_SERVICE
            .replace("example-service", "nowhere")
            .replace(
                "metadata:\n",
                "metadata:\n  annotations: {herald.dev/loadBalancerIPs: 198.51.100.77}\n",
            ),
    )?;
    wait_for(
        "the Service without an address to be counted",
        TIMEOUT,
        || async {
            let (_, body) = controller.http_get("/metrics").map_err(|e| e.to_string())?;
            let count = body
                .lines()
                .find_map(|l| l.strip_prefix("herald_controller_services_without_address "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            match count {
                Some(n) if n >= 1.0 => Ok(()),
                _ => Err(body),
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_unusable_or_overlapping_pool_is_reported_and_nothing_else_stops() -> anyhow::Result<()>
{
    let w = World::new("badpool").await?;
    // The API server cannot compare IPv6 addresses in CEL; the controller reports the
    // inverted range instead, naming the entry.
    let inverted = w.pool("inverted", &["2001:db8:9::ff-2001:db8:9::1"], "")?;
    let first = w.pool("first", &["203.0.113.0/30"], "")?;
    let second = w.pool("second", &["203.0.113.2/31"], "")?;
    let cp = w.cp;
    let condition = |pool: &str, kind: &str| {
        cp.kubectl(&[
            "get", "ipaddresspool", pool,
            "-o", &format!("jsonpath={{.status.conditions[?(@.type==\"{kind}\")].status}}: {{.status.conditions[?(@.type==\"{kind}\")].message}}"),
        ])
    };
    wait_for(
        "the inverted pool to be reported invalid",
        TIMEOUT,
        || async {
            let text = condition(&inverted, "Valid").map_err(|e| e.to_string())?;
            if text.starts_with("False: ")
                && text.contains("spec.addresses[0]")
                && text.contains("inverted")
            {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await?;
    wait_for(
        "the overlap to be reported on both pools",
        TIMEOUT,
        || async {
            let a = condition(&first, "Overlapping").map_err(|e| e.to_string())?;
            let b = condition(&second, "Overlapping").map_err(|e| e.to_string())?;
            if a.starts_with("True")
                && a.contains(&second)
                && b.starts_with("True")
                && b.contains(&first)
            {
                Ok(())
            } else {
                Err(format!("{a} / {b}"))
            }
        },
    )
    .await?;
    let ready = condition(&inverted, "Ready")?;
    assert!(ready.starts_with("False: "), "{ready}");
    // The pools that can be used are Ready: `kubectl wait` returns.
    w.cp.kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("ipaddresspool/{first}"),
        &format!("ipaddresspool/{second}"),
        "--timeout=30s",
    ])?;
    // The controller goes on serving.
    w.apply(EXAMPLE_SERVICE)?;
    w.ingress("example-service").await?;
    Ok(())
}

/// Migrating from MetalLB: a Service MetalLB gave an address keeps it when Herald's controller
/// starts (the Service's status is the truth), and MetalLB's annotations are honoured.
#[tokio::test]
async fn a_service_migrated_from_metallb_keeps_its_address_and_its_annotations_count()
-> anyhow::Result<()> {
    let mut w = World::new("metallb").await?;
    // MetalLB ran here: no Herald controller yet.
    w.controller.kill();
    w.pool("lan", &["203.0.113.32/28"], "")?;
    let other = w.pool("other", &["203.0.113.48/28"], "  autoAssign: false\n")?;
    let annotated = |name: &str, annotation: &str| {
        EXAMPLE_SERVICE.replace(
            "  name: example-service\n",
            &format!("  name: {name}\n  annotations: {{{annotation}}}\n"),
        )
    };
    w.apply(&annotated(
        "kept",
        &format!("metallb.universe.tf/address-pool: {other}"),
    ))?;
    // The address MetalLB had given it, in its status.
    w.kubectl(&[
        "patch",
        "service",
        "kept",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.53"}]}}}"#,
    ])?;
    w.apply(&annotated(
        "requested",
        "metallb.io/loadBalancerIPs: 203.0.113.40",
    ))?;
    w.controller = common::Controller::start(w.cp, w.ns.name(), "herald")?;

    assert_eq!(w.ingress("requested").await?, ["203.0.113.40"]);
    w.apply(&EXAMPLE_SERVICE.replace("example-service", "new"))?;
    assert_eq!(
        w.ingress("new").await?,
        ["203.0.113.32"],
        "the first free address of lan"
    );
    let pool_of_kept = || {
        w.kubectl(&[
            "get",
            "service",
            "kept",
            "-o",
            "jsonpath={.metadata.annotations.herald\\.dev/ip-allocated-from-pool}",
        ])
    };
    wait_for("the kept Service to be adopted", TIMEOUT, || async {
        let pool = pool_of_kept().map_err(|e| e.to_string())?;
        if pool == other { Ok(()) } else { Err(pool) }
    })
    .await?;
    assert_eq!(
        w.ingress("kept").await?,
        ["203.0.113.53"],
        "MetalLB's address is kept"
    );
    Ok(())
}
