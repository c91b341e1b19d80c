//! RBAC proven, not guessed: the chart is installed with `helm install` on the real API
//! server, then herald-controller and herald-speaker run with tokens of the chart's own
//! ServiceAccounts through a whole layer-2 story (allocation, pool status, Lease, Events,
//! announcement, ServiceL2Status records; BGP with an MD5 password Secret and
//! BGPSessionStatus records), with no "forbidden" anywhere in their logs; and
//! those accounts cannot read Secrets or write what they should not.

use std::{path::PathBuf, process::Command};

use herald_tests::world::{Lan, Release, RouterOptions, TIMEOUT};
use herald_tests::{herald::Controller, routers::BgpDaemon, wait_for};
use serde_json::json;

#[tokio::test]
async fn the_charts_service_accounts_can_do_all_herald_needs_and_no_more() -> anyhow::Result<()> {
    let mut lan = Lan::new("rbac", 2).await?;
    let name = format!("h{}", std::process::id());
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/herald");
    let namespace = lan.ns.name().to_owned();
    let release = Release::install(lan.cp, &name, &chart, &namespace, &[])?;
    let dir = lan.topology.dir().to_owned();
    let (controller_config, speaker_config) = (
        dir.join("controller.kubeconfig"),
        dir.join("speaker.kubeconfig"),
    );
    lan.cp.service_account_kubeconfig(
        &namespace,
        &format!("{name}-controller"),
        &controller_config,
    )?;
    lan.cp
        .service_account_kubeconfig(&namespace, &format!("{name}-speaker"), &speaker_config)?;
    release.wait_for_bindings(&lan).await?;

    // The whole story with the chart's credentials.
    // The chart leaves the gossip key to the controller (a key rendered by the chart would
    // change with every `helm template`).
    let gossip_secret = format!("{name}-gossip");
    let found = lan.kubectl(&["get", "secrets", "-o", "name"])?;
    assert!(!found.contains(&gossip_secret), "{found}");
    lan.controller = Controller::start_as_with(
        &controller_config,
        &namespace,
        &format!("{name}-controller"),
        "rbac",
        &[&format!("--gossip-secret={gossip_secret}")],
    )?;
    lan.speaker_kubeconfig = speaker_config.clone();
    lan.start_speakers()?;
    let ips = lan.web_on_every_node(true).await?;
    let mut owners = Vec::new();
    for &ip in &ips {
        let owner = lan.resolve(ip).await?;
        lan.event(
            "web",
            &format!("announcing {ip} from node {}", lan.nodes[owner].name),
        )
        .await?;
        owners.push(owner);
    }
    lan.wait_records("web", &[(ips[0], owners[0]), (ips[1], owners[1])])
        .await?;
    let pool = lan.cp.kubectl(&[
        "get",
        "ipaddresspool",
        &lan.pool,
        "-o",
        "jsonpath={.status.assignedIPv4}",
    ])?;
    // At least the Service's address (a Service another test left behind in a namespace that
    // is still being deleted may hold one of the pool's addresses too).
    let assigned: u32 = pool.trim().parse().unwrap_or(0);
    assert!(
        assigned >= 1,
        "the controller wrote the pool's status: {pool:?}"
    );
    let lease = lan.kubectl(&["get", "lease", &format!("{name}-controller"), "-o", "name"])?;
    assert!(lease.contains("lease"), "{lease}");
    // The controller created the gossip key Secret with the chart's credentials: 64 hex
    // digits, where the chart's speakers mount it.
    let key = lan.kubectl(&[
        "get",
        "secret",
        &gossip_secret,
        "-o",
        "go-template={{.data.key | base64decode}}",
    ])?;
    assert!(
        key.len() == 64 && key.bytes().all(|c| c.is_ascii_hexdigit()),
        "{key:?}"
    );

    // BGP with the chart's credentials: the speakers get the MD5 password Secret in Herald's
    // namespace (the release's) and write their BGPSessionStatus records there.
    let password = "rbac-md5-test";
    let options = RouterOptions {
        password: Some(password.into()),
        graceful_restart: false,
        ..RouterOptions::default()
    };
    let (_router, router_link) = lan.router(BgpDaemon::Gobgp, 64513, options)?;
    lan.password_secret("bgp-password", password)?;
    lan.bgp_peers(
        &router_link,
        64513,
        json!({"passwordSecret": {"name": "bgp-password"}}),
    )?;
    lan.bgp_advertise(json!({}))?;
    wait_for(
        "every session Established in its record",
        TIMEOUT,
        || async {
            let states = lan
                .kubectl(&[
                    "get",
                    "bgpsessionstatuses",
                    "-o",
                    "jsonpath={.items[*].spec.state}",
                ])
                .map_err(|e| e.to_string())?;
            let established = states
                .split_whitespace()
                .filter(|s| *s == "Established")
                .count();
            if established == 2 * lan.nodes.len() {
                Ok(())
            } else {
                Err(states)
            }
        },
    )
    .await?;
    // The controller judged the peers with the chart's credentials: it read which keys the
    // password Secret has, and wrote the condition.
    for family in ["v4", "v6"] {
        let peer = format!("{namespace}-{family}");
        wait_for(&format!("BGPPeer {peer} Ready"), TIMEOUT, || async {
            let ready = lan
                .cp
                .kubectl(&[
                    "get",
                    "bgppeer",
                    &peer,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
                ])
                .map_err(|e| e.to_string())?;
            if ready == "InEffect" {
                Ok(())
            } else {
                Err(ready)
            }
        })
        .await?;
    }
    // Nothing they tried was refused by RBAC (other refusals, such as Events in another
    // test's namespace being deleted, are not about these accounts).
    let logs = format!("{}\n{}", lan.controller.log(), lan.speaker_logs());
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&format!("User \"system:serviceaccount:{namespace}:")))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by RBAC:\n{}",
        refused.join("\n")
    );

    // And no more than that.
    for (account, verb, resource, where_) in [
        ("speaker", "get", "secrets", "kube-system"),
        ("controller", "get", "secrets", "kube-system"),
        ("speaker", "list", "secrets", namespace.as_str()),
        ("speaker", "patch", "services", namespace.as_str()),
        ("speaker", "patch", "nodes", ""),
        ("controller", "delete", "pods", namespace.as_str()),
        ("controller", "update", "leases", "default"),
        // Its heartbeat Lease lives in Herald's namespace only.
        ("speaker", "update", "leases", "default"),
        // It only ever patches what it writes.
        ("controller", "update", "services", namespace.as_str()),
        (
            "controller",
            "update",
            "services/status",
            namespace.as_str(),
        ),
        (
            "controller",
            "update",
            "ipaddresspools.herald.dev/status",
            "",
        ),
    ] {
        let subject = format!("system:serviceaccount:{namespace}:{name}-{account}");
        // `kind/status` is the status subresource (`kind/name` would name an object).
        let (resource, subresource) = match resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(format!("--subresource={sub}"))),
            None => (resource, None),
        };
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &subject];
        args.extend(subresource.as_deref());
        if !where_.is_empty() {
            args.extend(["-n", where_]);
        }
        let out = lan.cp.kubectl_command().args(&args).output()?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{account} may {verb} {resource} in {where_:?}"
        );
    }
    // With the token itself, too.
    let out = Command::new(lan.cp.tool("kubectl"))
        .args(["get", "secrets", "-n", "kube-system"])
        .env("KUBECONFIG", &speaker_config)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));

    // Each node offers the Service's routes to its peers, and says so per Service.
    for i in 0..lan.nodes.len() {
        let announced = lan.metric(
            i,
            &format!(
                "herald_speaker_service_announced{{namespace=\"{namespace}\",service=\"web\",mode=\"bgp\"}}"
            ),
        )?;
        assert_eq!(announced, 1.0, "node {i}");
    }

    // A clean uninstall: `helm uninstall` with live Services. No kubelet runs here, so the
    // test plays it for the pre-delete hook's Job: it runs the Job's container as Helm created
    // it (its arguments, its account's token) and reports the Job complete.
    let uninstall_config = dir.join("uninstall.kubeconfig");
    lan.cp.service_account_kubeconfig(
        &namespace,
        &format!("{name}-uninstall"),
        &uninstall_config,
    )?;
    let cp = lan.cp;
    let (release_name, release_namespace) = (name.clone(), namespace.clone());
    let uninstall = std::thread::spawn(move || {
        cp.helm(&[
            "uninstall",
            &release_name,
            "-n",
            &release_namespace,
            "--timeout=2m",
        ])
    });
    let job_name = format!("{name}-release-all");
    let job = wait_for("Helm to create the hook's Job", TIMEOUT, || async {
        lan.kubectl(&["get", "job", &job_name, "-o", "json"])
            .map_err(|e| e.to_string())
    })
    .await?;
    let job: serde_json::Value = serde_json::from_str(&job)?;
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"].as_str(),
        Some("pre-delete")
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some(format!("{name}-uninstall").as_str())
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let started = std::time::Instant::now();
    let hook = Command::new(herald_tests::herald::binary("herald-controller")?)
        .args(&args)
        .env("KUBECONFIG", &uninstall_config)
        .env("RUST_LOG", "info")
        .output()?;
    assert!(
        hook.status.success(),
        "the hook: {}{}",
        String::from_utf8_lossy(&hook.stdout),
        String::from_utf8_lossy(&hook.stderr)
    );
    println!(
        "the pre-delete hook's command returned in {:?}",
        started.elapsed()
    );
    // Nothing of Herald's is left on the Service, and a Service created now gets nothing.
    let web = lan.kubectl(&["get", "service", "web", "-o", "json"])?;
    let web: serde_json::Value = serde_json::from_str(&web)?;
    assert_eq!(
        web["metadata"]["finalizers"],
        serde_json::Value::Null,
        "{web}"
    );
    assert_eq!(web["status"]["loadBalancer"], json!({}), "{web}");
    let annotations = web["metadata"]["annotations"].to_string();
    assert!(!annotations.contains("herald.dev/"), "{annotations}");
    lan.service("late", "web", "Cluster", false)?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let late = lan.kubectl(&[
        "get",
        "service",
        "late",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ])?;
    assert!(late.is_empty(), "{late}");
    // The Job is done, as its kubelet would report it; Helm goes on and removes the release.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let now = k8s_openapi::jiff::Timestamp::from_second(now)?.to_string();
    let done = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now});
    lan.kubectl(&[
        "patch",
        "job",
        &job_name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1,
                           "conditions": [done("SuccessCriteriaMet"), done("Complete")]}})
        .to_string(),
    ])?;
    let uninstalled = uninstall
        .join()
        .map_err(|_| anyhow::anyhow!("helm uninstall panicked"))??;
    assert!(uninstalled.contains("uninstalled"), "{uninstalled}");
    // With the release and the controller gone, Services are deleted at once.
    lan.controller.kill();
    lan.kubectl(&["delete", "service", "web", "late", "--timeout=20s"])?;

    Ok(())
}
