//! Served, not only announced: a client's request to the LoadBalancer address answered by a Pod,
//! through real speakers, a real kube-proxy on every node and Pods behind their nodes' bridges
//! (`herald_tests::datapath`), with the real API server, controller and EndpointSlice
//! controller. What is asserted is what the user sees: the Pod's reply, the source address the
//! Pod saw, kube-proxy's health check answers, requests counted.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use herald_domain::Prefix;
use herald_tests::world::{Lan, Routed, TIMEOUT, spread, wait_all_served};
use herald_tests::{Host, Link, datapath, wait_for};

/// Both addresses of a link.
fn addresses(link: &Link) -> [IpAddr; 2] {
    [IpAddr::V4(link.ipv4), IpAddr::V6(link.ipv6)]
}

/// Whether `address` is one of a node's own (on the LAN or on its Pod bridge): the source a
/// Pod sees when kube-proxy masquerades.
fn is_a_node_address(lan: &Lan, address: IpAddr) -> bool {
    lan.nodes.iter().any(|node| {
        let (v4, v6) = node.network.as_ref().expect("serving").gateways();
        addresses(&node.link).contains(&address)
            || [IpAddr::V4(v4), IpAddr::V6(v6)].contains(&address)
    })
}

/// The Service's `healthCheckNodePort` (allocated by the API server under `Local`).
fn health_check_node_port(lan: &Lan, service: &str) -> anyhow::Result<u16> {
    let out = lan.kubectl(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.healthCheckNodePort}",
    ])?;
    Ok(out.trim().parse()?)
}

/// Waits until kube-proxy's health check for the Service answers `expected[i]` on node `i`,
/// asked by the client at the node's LAN address, as a cloud load balancer would ask.
async fn wait_health_checks(lan: &Lan, port: u16, expected: &[u16]) -> anyhow::Result<()> {
    wait_for(
        &format!("healthCheckNodePort {port} to answer {expected:?} on the nodes"),
        TIMEOUT,
        || async {
            let mut seen = Vec::new();
            for node in &lan.nodes {
                let code =
                    datapath::http_status(&lan.client_host, IpAddr::V4(node.link.ipv4), port)
                        .map_err(|e| e.to_string())?;
                seen.push(code);
            }
            if seen == expected {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

/// Waits until `ip` answers from `pods` only, with the client's own source address, over
/// `rounds` requests.
async fn wait_served_by(
    lan: &Lan,
    ip: IpAddr,
    pods: &[&str],
    client: IpAddr,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{ip} served by {pods:?} only, seeing the client {client}"),
        TIMEOUT,
        || async {
            let mut seen = Vec::new();
            for _ in 0..6 {
                let reply =
                    datapath::curl(&lan.client_host, ip, 8765).map_err(|e| e.to_string())?;
                if !pods.contains(&reply.pod.as_str()) || reply.client != client {
                    return Err(format!("{reply:?}"));
                }
                seen.push(reply.pod);
            }
            Ok(seen)
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_client_is_answered_by_a_pod_at_the_layer_2_address_and_local_policy_keeps_its_source_address()
-> anyhow::Result<()> {
    let mut lan = Lan::new("dp-l2", 3).await?;
    lan.serve_traffic().await?;
    lan.start_speakers()?;
    let _web0 = lan.serving_pod("web-0", "web", 0).await?;
    let web1 = lan.serving_pod("web-1", "web", 1).await?;
    lan.service("web", "web", "Cluster", true)?;
    let ips = lan.ingress("web", 2).await?;
    let clients = addresses(&lan.client_link);

    // Cluster: answered by a Pod, over IPv4 and IPv6; the Pod sees a node's address (kube-proxy
    // masquerades traffic that may cross to another node).
    for &ip in &ips {
        let reply = lan.curl_until_served(&lan.client_host, ip).await?;
        assert!(
            ["web-0", "web-1"].contains(&reply.pod.as_str()),
            "curl {ip}: {reply:?}"
        );
        let owner = lan.resolve(ip).await?;
        assert!(
            !clients.contains(&reply.client),
            "under Cluster the Pod must see a node's address, not the client's: {reply:?}"
        );
        assert!(
            is_a_node_address(&lan, reply.client),
            "the Pod saw {}, which is no node's address (owner {})",
            reply.client,
            lan.nodes[owner].name
        );
    }

    // kube-proxy serves the Service's NodePort on every node's address as well.
    let node_port: u16 = lan
        .kubectl(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])?
        .trim()
        .parse()?;
    for node in &lan.nodes {
        let reply = datapath::curl(&lan.client_host, IpAddr::V4(node.link.ipv4), node_port)?;
        assert!(
            reply.pod.starts_with("web-"),
            "NodePort {node_port} of {}: {reply:?}",
            node.name
        );
    }

    // ... and its ClusterIP inside the cluster, here from n3's own network.
    let cluster_ip: IpAddr = lan
        .kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])?
        .trim()
        .parse()?;
    let reply = datapath::curl(&lan.nodes[2].host, cluster_ip, 8765)?;
    assert!(
        reply.pod.starts_with("web-"),
        "ClusterIP {cluster_ip}: {reply:?}"
    );

    // Local: the API server allocates a healthCheckNodePort; kube-proxy answers 200 where a
    // ready local endpoint is and 503 elsewhere; the Pod sees the client's own address.
    lan.service("web", "web", "Local", true)?;
    let port = health_check_node_port(&lan, "web")?;
    wait_health_checks(&lan, port, &[200, 200, 503]).await?;
    for (&ip, &client) in ips.iter().zip(&clients) {
        wait_served_by(&lan, ip, &["web-0", "web-1"], client).await?;
        // Herald announces from a node whose health check says 200.
        let owner = lan.resolve(ip).await?;
        assert!(
            owner < 2,
            "{ip} announced from {}, which has no endpoint",
            lan.nodes[owner].name
        );
    }

    // The endpoint on n2 goes unready: its health check turns 503, every address is
    // announced from n1 and served by web-0, still with the client's address.
    web1.set_ready(&lan.client, lan.ns.name(), false).await?;
    wait_health_checks(&lan, port, &[200, 503, 503]).await?;
    for (&ip, &client) in ips.iter().zip(&clients) {
        lan.wait_answers(ip, &[0]).await?;
        wait_served_by(&lan, ip, &["web-0"], client).await?;
    }
    Ok(())
}

#[tokio::test]
async fn when_the_announcing_node_dies_under_traffic_every_request_after_the_failover_is_answered()
-> anyhow::Result<()> {
    let mut lan = Lan::new("dp-failover", 3).await?;
    lan.serve_traffic().await?;
    lan.start_speakers()?;
    let (ip, owner, _pods) = lan.web_with_a_spare_owner().await?;
    let old_mac = lan.client_entry(ip)?;

    // 20 requests a second for 15 s; after 3 s the owner dies: its speaker is killed and its
    // cable cut at the same moment.
    let mut killed = false;
    let link = lan.nodes[owner].link.clone();
    let mut speaker = lan.nodes[owner].speaker.take().expect("running");
    let results = datapath::request_loop(
        &lan.client_host,
        std::net::SocketAddr::new(ip, 8765),
        Duration::from_millis(50),
        Duration::from_secs(15),
        Duration::from_millis(400),
        |sent| {
            if !killed && sent >= Duration::from_secs(3) {
                speaker.kill();
                let _ = link.set_connected(false);
                killed = true;
            }
        },
    );
    let kill_at = Duration::from_secs(3);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|s| s.reply.as_ref().err().map(|e| format!("{:?}: {e}", s.at)))
        .collect();
    let first_after = results
        .iter()
        .position(|s| s.at >= kill_at && s.reply.is_ok())
        .ok_or_else(|| anyhow::anyhow!("no request answered after the kill: {failed:?}"))?;
    let lost_after_failover: Vec<String> = results[first_after..]
        .iter()
        .filter_map(|s| s.reply.as_ref().err().map(|e| format!("{:?}: {e}", s.at)))
        .collect();
    assert!(
        lost_after_failover.is_empty(),
        "requests lost after the failover ({} of {}): {lost_after_failover:?}",
        lost_after_failover.len(),
        results.len() - first_after
    );
    assert!(results.len() >= 250, "only {} requests sent", results.len());
    // Answered through another node, whose MAC the client learnt without a flush.
    let new_mac = lan.client_entry(ip)?;
    assert_ne!(new_mac, old_mac, "the client's entry for {ip} did not move");
    let heir = new_mac.as_deref().and_then(|m| lan.node_with_mac(m));
    assert!(matches!(heir, Some(h) if h != owner), "entry {new_mac:?}");
    eprintln!(
        "failover under traffic: {} of {} requests lost, longest gap {:?}",
        failed.len(),
        results.len(),
        datapath::longest_gap(&results)
    );
    Ok(())
}

/// Waits until the router's kernel route to `ip` (what zebra installed) passes `check`, which
/// says what it expects; the route's next hops and weights.
async fn wait_kernel_route(
    router: &Host,
    ip: IpAddr,
    expected: &str,
    check: impl Fn(&[(IpAddr, u32)]) -> bool,
) -> anyhow::Result<Vec<(IpAddr, u32)>> {
    let prefix = Prefix::host(ip).to_string();
    Ok(wait_for(
        &format!("the router's kernel route to {prefix}: {expected}"),
        TIMEOUT,
        || async {
            let hops = datapath::kernel_next_hops(router, &prefix).map_err(|e| e.to_string())?;
            if check(&hops) {
                Ok(hops)
            } else {
                Err(format!("{hops:?}"))
            }
        },
    )
    .await?)
}

/// Waits until the router's kernel forwards `ip` to exactly the nodes `nodes`.
async fn wait_routed_via(
    router: &Host,
    lan: &Lan,
    ip: IpAddr,
    nodes: &[usize],
) -> anyhow::Result<()> {
    let want = lan.next_hops(ip, nodes);
    wait_kernel_route(router, ip, &format!("via {want:?}"), |hops| {
        hops.iter().map(|(g, _)| *g).collect::<BTreeSet<_>>() == want
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn through_the_router_clients_reach_pods_on_every_node_and_a_dead_nodes_path_and_a_deleted_service_stop_being_served()
-> anyhow::Result<()> {
    let Routed {
        lan,
        router: _router,
        router_link,
        outside,
    } = Routed::new("dp-bgp", serde_json::json!({})).await?;
    let mut lan = lan;
    let mut pods = Vec::new();
    for i in 0..3 {
        pods.push(lan.serving_pod(&format!("web-{i}"), "web", i).await?);
    }

    // Cluster: routes through every node; answered, the Pod seeing a node's address.
    lan.service("web", "web", "Cluster", true)?;
    let ips = lan.ingress("web", 2).await?;
    for &ip in &ips {
        wait_routed_via(&router_link.host, &lan, ip, &[0, 1, 2]).await?;
        let reply = lan.curl_until_served(&outside.host, ip).await?;
        assert!(
            is_a_node_address(&lan, reply.client),
            "under Cluster the Pod must see a node's address: {reply:?}"
        );
    }

    // Local: every node still has an endpoint; the Pods see the outside client's own address,
    // and the router's hash spreads flows over the three nodes.
    lan.service("web", "web", "Local", true)?;
    for (&ip, client) in ips.iter().zip(addresses(&outside)) {
        wait_all_served(&outside.host, ip, 3, Some(client)).await?;
        let (per_pod, sources) = spread(&outside.host, ip, 60)?;
        assert_eq!(sources, [client], "sources the Pods saw for {ip}");
        assert_eq!(per_pod.len(), 3, "60 flows to {ip} reached {per_pod:?}");
    }

    // n3's endpoint turns unready: its health check says 503, and the router forwards only to
    // the nodes whose health check says 200; ready again, n3 is back.
    let port = health_check_node_port(&lan, "web")?;
    wait_health_checks(&lan, port, &[200, 200, 200]).await?;
    pods[2].set_ready(&lan.client, lan.ns.name(), false).await?;
    wait_health_checks(&lan, port, &[200, 200, 503]).await?;
    for &ip in &ips {
        wait_routed_via(&router_link.host, &lan, ip, &[0, 1]).await?;
    }
    pods[2].set_ready(&lan.client, lan.ns.name(), true).await?;
    for &ip in &ips {
        wait_routed_via(&router_link.host, &lan, ip, &[0, 1, 2]).await?;
        wait_all_served(&outside.host, ip, 3, None).await?;
    }

    // n1's speaker dies: the router withdraws its paths and web-0 (reachable only through
    // n1 under Local) gets no more requests.
    lan.nodes[0].speaker.as_mut().expect("running").kill();
    for &ip in &ips {
        wait_routed_via(&router_link.host, &lan, ip, &[1, 2]).await?;
        let (per_pod, _) = spread(&outside.host, ip, 60)?;
        assert!(
            !per_pod.contains_key("web-0") && per_pod.len() == 2,
            "60 flows to {ip} after n1's speaker died: {per_pod:?}"
        );
    }

    // The Service deleted: the routes go and the address answers no more.
    lan.kubectl(&["delete", "service", "web"])?;
    for &ip in &ips {
        wait_routed_via(&router_link.host, &lan, ip, &[]).await?;
        let attempt = datapath::http_get(
            &outside.host,
            std::net::SocketAddr::new(ip, 8765),
            Duration::from_secs(1),
        );
        assert!(
            attempt.is_err(),
            "{ip} still answered after the Service was deleted: {attempt:?}"
        );
    }
    Ok(())
}

/// Each Pod's share of `count` flows, in percent, in Pod order.
fn shares(per_pod: &std::collections::BTreeMap<String, usize>, count: usize) -> Vec<(String, f64)> {
    per_pod
        .iter()
        .map(|(pod, n)| (pod.clone(), 100.0 * *n as f64 / count as f64))
        .collect()
}

#[tokio::test]
async fn with_link_bandwidth_weights_each_pod_gets_an_equal_share_and_without_them_the_lone_pod_gets_half()
-> anyhow::Result<()> {
    let Routed {
        lan,
        router: _router,
        router_link,
        outside,
    } = Routed::new(
        "dp-weights",
        serde_json::json!({"weightByLocalEndpoints": true}),
    )
    .await?;
    // Three Pods on n1, one on n2, none on n3: the page's uneven case.
    let mut pods = Vec::new();
    for (name, node) in [("web-0", 0), ("web-1", 0), ("web-2", 0), ("web-3", 1)] {
        pods.push(lan.serving_pod(name, "web", node).await?);
    }
    lan.service("web", "web", "Local", true)?;
    let ips = lan.ingress("web", 2).await?;
    const FLOWS: usize = 400;
    for &ip in &ips {
        // zebra installs the link bandwidth as next-hop weights, 3 : 1.
        let hops = wait_kernel_route(
            &router_link.host,
            ip,
            "weights 3 : 1",
            |hops| matches!(hops, [(_, a), (_, b)] if *a == 3 * *b),
        )
        .await?;
        assert_eq!(
            hops.iter().map(|(g, _)| *g).collect::<BTreeSet<_>>(),
            lan.next_hops(ip, &[0, 1])
        );
        wait_all_served(&outside.host, ip, 4, None).await?;
        let (per_pod, _) = spread(&outside.host, ip, FLOWS)?;
        let weighted = shares(&per_pod, FLOWS);
        eprintln!("{ip} with weights, {FLOWS} flows: {weighted:?}");
        assert_eq!(per_pod.len(), 4, "{per_pod:?}");
        for (pod, share) in &weighted {
            assert!(
                (share - 25.0).abs() <= 8.0,
                "with weights {pod} got {share:.1} % of {FLOWS} flows to {ip}: {weighted:?}"
            );
        }
    }

    // The same, without weights: plain ECMP per node, and the lone Pod on n2 gets half.
    lan.bgp_advertise(serde_json::json!({"weightByLocalEndpoints": false}))?;
    for &ip in &ips {
        wait_kernel_route(
            &router_link.host,
            ip,
            "equal weights",
            |hops| matches!(hops, [(_, a), (_, b)] if a == b),
        )
        .await?;
        wait_all_served(&outside.host, ip, 4, None).await?;
        let (per_pod, _) = spread(&outside.host, ip, FLOWS)?;
        let unweighted = shares(&per_pod, FLOWS);
        eprintln!("{ip} without weights, {FLOWS} flows: {unweighted:?}");
        let lone = unweighted
            .iter()
            .find(|(pod, _)| pod == "web-3")
            .map_or(0.0, |(_, s)| *s);
        assert!(
            (lone - 50.0).abs() <= 10.0,
            "without weights the lone Pod web-3 got {lone:.1} % of {FLOWS} flows to {ip}: {unweighted:?}"
        );
    }
    Ok(())
}
