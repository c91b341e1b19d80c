//! BGP end to end: real speakers in node namespaces peer with a real router (gobgpd, BIRD 2,
//! FRR) and the router's RIB shows what a user relies on: every node's path for a Cluster
//! Service (ECMP), only endpoint nodes for Local, and withdrawals when that changes.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use herald_domain::{Family, Prefix};
use herald_tests::world::{BGP_POOL, Lan, NODE_ASN, ROUTER_ASN, RouterOptions, TIMEOUT};
use herald_tests::{
    Link,
    routers::{BfdTimers, BgpDaemon, BgpRouter},
    wait_for,
};
use nix::sys::signal::Signal;
use serde_json::json;

fn host_prefix(ip: IpAddr) -> String {
    Prefix::host(ip).to_string()
}

/// Waits until the router's paths to `ip`'s host route come from exactly `next_hops`, each
/// with AS path `[as_path]`.
async fn wait_paths(
    router: &BgpRouter,
    ip: IpAddr,
    next_hops: &BTreeSet<IpAddr>,
    as_path: &[u32],
) -> anyhow::Result<()> {
    let prefix = host_prefix(ip);
    wait_for(
        &format!(
            "{} paths to {prefix} via {next_hops:?}",
            router.daemon().name()
        ),
        TIMEOUT,
        || async {
            let routes = router.routes(Family::of(ip)).map_err(|e| e.to_string())?;
            let paths: Vec<_> = routes.iter().filter(|r| r.prefix == prefix).collect();
            let hops: BTreeSet<IpAddr> = paths.iter().filter_map(|r| r.next_hop).collect();
            if hops == *next_hops
                && paths.len() == next_hops.len()
                && paths.iter().all(|r| r.as_path == as_path)
            {
                Ok(())
            } else {
                Err(format!("{paths:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

/// Waits until the router's established sessions are exactly those of `nodes` (both
/// families each).
async fn wait_sessions(world: &Lan, router: &BgpRouter, nodes: &[usize]) -> anyhow::Result<()> {
    let wanted: BTreeSet<IpAddr> = nodes
        .iter()
        .flat_map(|&i| {
            [
                IpAddr::V4(world.nodes[i].link.ipv4),
                IpAddr::V6(world.nodes[i].link.ipv6),
            ]
        })
        .collect();
    wait_for(
        &format!("sessions of nodes {nodes:?} established, no others"),
        TIMEOUT,
        || async {
            let up: BTreeSet<IpAddr> = router
                .established_peers()
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
            if up == wanted {
                Ok(())
            } else {
                Err(format!("{up:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

async fn routes_follow_endpoints(daemon: BgpDaemon) -> anyhow::Result<()> {
    let mut world = Lan::with_pool(&format!("bgp-{}", daemon.name()), 3, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) = world.router(daemon, NODE_ASN, RouterOptions::default())?;
    world.bgp_peers(&router_link, NODE_ASN, json!({}))?;
    world.bgp_advertise(json!({}))?;
    world.start_speakers()?;

    // Every node opens an IPv4 and an IPv6 session.
    let all_sessions: BTreeSet<IpAddr> = world
        .nodes
        .iter()
        .flat_map(|n| [IpAddr::V4(n.link.ipv4), IpAddr::V6(n.link.ipv6)])
        .collect();
    wait_for("every session established", TIMEOUT, || async {
        let up: BTreeSet<IpAddr> = router
            .established_peers()
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        if up == all_sessions {
            Ok(())
        } else {
            Err(format!("{up:?}"))
        }
    })
    .await?;

    // Cluster: every node advertises both addresses; the router has one path per node.
    let ips = world.web_on_every_node(true).await?;
    for ip in &ips {
        let hops: BTreeSet<IpAddr> = world
            .nodes
            .iter()
            .map(|n| match ip {
                IpAddr::V4(_) => IpAddr::V4(n.link.ipv4),
                IpAddr::V6(_) => IpAddr::V6(n.link.ipv6),
            })
            .collect();
        wait_paths(&router, *ip, &hops, &[NODE_ASN]).await?;
    }
    // What users see: a record per node and peer, and an Event per node on the Service.
    wait_for("a BGPSessionStatus per node and peer", TIMEOUT, || async {
        let table = world
            .kubectl(&["get", "bgpsessionstatuses", "-o",
                r#"jsonpath={range .items[*]}{.spec.node} {.spec.peer} {.spec.state} {.spec.prefixesAdvertised}{"\n"}{end}"#])
            .map_err(|e| e.to_string())?;
        let mut lines: Vec<&str> = table.lines().collect();
        lines.sort();
        let wanted: Vec<String> = world
            .nodes
            .iter()
            .flat_map(|n| {
                ["v4", "v6"].map(|f| format!("{} {}-{f} Established 1", n.name, world.ns.name()))
            })
            .collect();
        if lines == wanted { Ok(()) } else { Err(table) }
    })
    .await?;
    let event = world
        .event("web", &format!("node {} advertises", world.nodes[0].name))
        .await?;
    let v4 = ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .expect("an IPv4 address");
    let to_v4_peer = format!("{} to {}-v4 (BGP)", host_prefix(v4), world.ns.name());
    assert!(event.contains(&to_v4_peer), "{event}");
    for family in ["v4", "v6"] {
        let session = format!("{{peer=\"{}-{family}\"}}", world.ns.name());
        assert_eq!(
            world.metric(0, &format!("herald_speaker_bgp_session_up{session}"))?,
            1.0
        );
        assert_eq!(
            world.metric(
                0,
                &format!("herald_speaker_bgp_prefixes_advertised{session}")
            )?,
            1.0
        );
    }

    // Local: only the node with a ready endpoint advertises.
    world.kubectl(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ])?;
    world.set_ready("web-0", false, 0).await?;
    world.set_ready("web-2", false, 2).await?;
    let v4 = ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv4)
        .expect("an IPv4 address");
    let v6 = ips
        .iter()
        .copied()
        .find(IpAddr::is_ipv6)
        .expect("an IPv6 address");
    wait_paths(
        &router,
        v4,
        &[IpAddr::V4(world.nodes[1].link.ipv4)].into(),
        &[NODE_ASN],
    )
    .await?;
    wait_paths(
        &router,
        v6,
        &[IpAddr::V6(world.nodes[1].link.ipv6)].into(),
        &[NODE_ASN],
    )
    .await?;

    // The last local endpoint goes: the route is withdrawn.
    world.set_ready("web-1", false, 1).await?;
    wait_paths(&router, v4, &BTreeSet::new(), &[]).await?;
    wait_paths(&router, v6, &BTreeSet::new(), &[]).await?;

    // An endpoint comes back, then the Service is deleted: withdrawn again.
    world.set_ready("web-2", true, 2).await?;
    wait_paths(
        &router,
        v4,
        &[IpAddr::V4(world.nodes[2].link.ipv4)].into(),
        &[NODE_ASN],
    )
    .await?;
    world.kubectl(&["delete", "service", "web"])?;
    wait_paths(&router, v4, &BTreeSet::new(), &[]).await?;
    wait_paths(&router, v6, &BTreeSet::new(), &[]).await?;
    Ok(())
}

#[tokio::test]
async fn gobgpd_gets_ecmp_paths_that_follow_endpoints() -> anyhow::Result<()> {
    routes_follow_endpoints(BgpDaemon::Gobgp).await
}

#[tokio::test]
async fn bird_gets_ecmp_paths_that_follow_endpoints() -> anyhow::Result<()> {
    routes_follow_endpoints(BgpDaemon::Bird).await
}

#[tokio::test]
async fn frr_gets_ecmp_paths_that_follow_endpoints() -> anyhow::Result<()> {
    routes_follow_endpoints(BgpDaemon::Frr).await
}

/// Sessions signed with TCP MD5 (the password from a Secret) come up, and a speaker that
/// restarts (SIGTERM, then back) leaves its routes in the router meanwhile: graceful restart.
async fn signed_sessions_survive_a_speaker_restart(daemon: BgpDaemon) -> anyhow::Result<()> {
    let mut world = Lan::with_pool(&format!("bgp-gr-{}", daemon.name()), 2, &BGP_POOL).await?;
    world.stop_layer2()?;
    let password = "herald-md5-test";
    let options = RouterOptions {
        password: Some(password.into()),
        graceful_restart: true,
        ..RouterOptions::default()
    };
    let (router, router_link) = world.router(daemon, NODE_ASN, options)?;
    world.password_secret("bgp-password", password)?;
    world.bgp_peers(
        &router_link,
        NODE_ASN,
        json!({"passwordSecret": {"name": "bgp-password"}, "enableGracefulRestart": true}),
    )?;
    world.bgp_advertise(json!({}))?;
    world.start_speakers()?;
    // The router takes only signed segments: an established session proves the signature.
    wait_sessions(&world, &router, &[0, 1]).await?;
    let ips = world.web_on_every_node(true).await?;
    for ip in &ips {
        wait_paths(&router, *ip, &world.next_hops(*ip, &[0, 1]), &[NODE_ASN]).await?;
    }

    // n1's speaker stops (as in a rolling upgrade): its sessions go down, its paths stay.
    let speaker = world.nodes[0].speaker.as_mut().expect("running");
    speaker.signal(Signal::SIGTERM)?;
    let stopping = Instant::now();
    while speaker.is_running() {
        anyhow::ensure!(
            stopping.elapsed() < TIMEOUT,
            "n1's speaker did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_sessions(&world, &router, &[1]).await?;
    for ip in &ips {
        assert_eq!(
            router.next_hops(*ip)?,
            world.next_hops(*ip, &[0, 1]),
            "{} kept n1's path to {ip}",
            daemon.name()
        );
    }

    // Back again: the sessions return and the routes are refreshed.
    world.start_speaker(0)?;
    wait_sessions(&world, &router, &[0, 1]).await?;
    for ip in &ips {
        wait_paths(&router, *ip, &world.next_hops(*ip, &[0, 1]), &[NODE_ASN]).await?;
    }
    world.kubectl(&["delete", "secret", "bgp-password"])?;
    Ok(())
}

#[tokio::test]
async fn gobgpd_keeps_signed_routes_across_a_speaker_restart() -> anyhow::Result<()> {
    signed_sessions_survive_a_speaker_restart(BgpDaemon::Gobgp).await
}

#[tokio::test]
async fn bird_keeps_signed_routes_across_a_speaker_restart() -> anyhow::Result<()> {
    signed_sessions_survive_a_speaker_restart(BgpDaemon::Bird).await
}

#[tokio::test]
async fn frr_keeps_signed_routes_across_a_speaker_restart() -> anyhow::Result<()> {
    signed_sessions_survive_a_speaker_restart(BgpDaemon::Frr).await
}

/// iBGP with every attribute an advertisement sets: LOCAL_PREF, standard, well-known and
/// large communities, and the link bandwidth of each node's ready local endpoints.
async fn ibgp_routes_carry_their_attributes(daemon: BgpDaemon) -> anyhow::Result<()> {
    let asn = herald_tests::world::ROUTER_ASN;
    let mut world = Lan::with_pool(&format!("bgp-attr-{}", daemon.name()), 2, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) = world.router(daemon, asn, RouterOptions::default())?;
    world.bgp_peers(&router_link, asn, json!({}))?;
    world.bgp_advertise(json!({"localPref": 150, "weightByLocalEndpoints": true,
        "communities": ["65000:100", "no-export", "large:64512:1:2"]}))?;
    world.start_speakers()?;
    wait_sessions(&world, &router, &[0, 1]).await?;
    // Two endpoints on n1, one on n2.
    world.pod("web-a", "web", 0, true).await?;
    world.pod("web-b", "web", 0, true).await?;
    world.pod("web-c", "web", 1, true).await?;
    world.service("web", "web", "Local", false)?;
    let ip = world.ingress("web", 1).await?[0];
    wait_paths(&router, ip, &world.next_hops(ip, &[0, 1]), &[]).await?;
    let routes = router.routes(Family::of(ip))?;
    let shown = || router.show_routes(Family::of(ip)).unwrap_or_default();
    for (node, endpoints) in [(0, 2.0), (1, 1.0)] {
        let hop = IpAddr::V4(world.nodes[node].link.ipv4);
        let path = routes
            .iter()
            .find(|r| r.prefix == host_prefix(ip) && r.next_hop == Some(hop))
            .expect("a path from the node");
        let attributes = &path.attributes;
        assert_eq!(attributes.local_pref, Some(150), "{}", shown());
        assert_eq!(
            attributes.communities,
            ["65000:100", "65535:65281"],
            "{}",
            shown()
        );
        assert_eq!(attributes.large_communities, ["64512:1:2"], "{}", shown());
        // 1 Mbit/s (125,000 octets/s) per ready local endpoint.
        assert_eq!(
            attributes.link_bandwidth,
            Some(endpoints * 125_000.0),
            "{}",
            shown()
        );
    }

    // A third endpoint on n2: its weight follows.
    world.pod("web-d", "web", 1, true).await?;
    wait_for(
        "n2's link bandwidth to follow its endpoints",
        TIMEOUT,
        || async {
            let routes = router.routes(Family::of(ip)).map_err(|e| e.to_string())?;
            let hop = IpAddr::V4(world.nodes[1].link.ipv4);
            let bandwidth = routes
                .iter()
                .find(|r| r.prefix == host_prefix(ip) && r.next_hop == Some(hop))
                .and_then(|r| r.attributes.link_bandwidth);
            if bandwidth == Some(250_000.0) {
                Ok(())
            } else {
                Err(format!("{bandwidth:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn gobgpd_gets_ibgp_routes_with_their_attributes() -> anyhow::Result<()> {
    ibgp_routes_carry_their_attributes(BgpDaemon::Gobgp).await
}

#[tokio::test]
async fn bird_gets_ibgp_routes_with_their_attributes() -> anyhow::Result<()> {
    ibgp_routes_carry_their_attributes(BgpDaemon::Bird).await
}

#[tokio::test]
async fn frr_gets_ibgp_routes_with_their_attributes() -> anyhow::Result<()> {
    ibgp_routes_carry_their_attributes(BgpDaemon::Frr).await
}

/// Every change that takes an address away from a node's routes withdraws it: the
/// advertisement no longer selecting the node or the pool, the Service no longer a load
/// balancer, the advertisement deleted.
#[tokio::test]
async fn routes_are_withdrawn_when_the_advertisement_or_the_service_changes() -> anyhow::Result<()>
{
    let mut world = Lan::with_pool("bgp-withdraw", 2, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) =
        world.router(BgpDaemon::Gobgp, NODE_ASN, RouterOptions::default())?;
    world.bgp_peers(&router_link, NODE_ASN, json!({}))?;
    world.bgp_advertise(json!({}))?;
    world.start_speakers()?;
    wait_sessions(&world, &router, &[0, 1]).await?;
    let ip = world.web_on_every_node(false).await?[0];
    let both = world.next_hops(ip, &[0, 1]);
    wait_paths(&router, ip, &both, &[NODE_ASN]).await?;

    // The advertisement selects only n2, then no node, then another pool.
    world.bgp_advertise(json!({"nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": world.nodes[1].name}}]}))?;
    wait_paths(&router, ip, &world.next_hops(ip, &[1]), &[NODE_ASN]).await?;
    world.bgp_advertise(
        json!({"nodeSelectors": [{"matchLabels": {"herald.dev/test": "nobody"}}]}),
    )?;
    wait_paths(&router, ip, &BTreeSet::new(), &[]).await?;
    world.bgp_advertise(json!({}))?;
    wait_paths(&router, ip, &both, &[NODE_ASN]).await?;
    world.bgp_advertise(json!({"ipAddressPools": ["another-pool"]}))?;
    wait_paths(&router, ip, &BTreeSet::new(), &[]).await?;
    world.bgp_advertise(json!({}))?;
    wait_paths(&router, ip, &both, &[NODE_ASN]).await?;

    // The Service becomes a ClusterIP Service, then a load balancer again.
    world.kubectl(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])?;
    wait_paths(&router, ip, &BTreeSet::new(), &[]).await?;
    world.kubectl(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ])?;
    let ip = world.ingress("web", 1).await?[0];
    wait_paths(&router, ip, &world.next_hops(ip, &[0, 1]), &[NODE_ASN]).await?;

    // The advertisement is deleted.
    world.kubectl(&[
        "delete",
        "bgpadvertisement",
        &format!("{}-bgp", world.ns.name()),
    ])?;
    wait_paths(&router, ip, &BTreeSet::new(), &[]).await?;
    // The sessions stay up, with nothing to advertise.
    wait_sessions(&world, &router, &[0, 1]).await?;
    Ok(())
}

/// A router two hops away: without `ebgpMultiHop` the speaker's packets (TTL 1) die on the
/// way and no session comes up; with it the sessions come up and the routes arrive.
async fn a_peer_two_hops_away_needs_ebgp_multihop(daemon: BgpDaemon) -> anyhow::Result<()> {
    let mut world = Lan::with_pool(&format!("bgp-mh-{}", daemon.name()), 1, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) =
        world.router_behind_a_hop(daemon, NODE_ASN, RouterOptions::default())?;
    world.bgp_peers(&router_link, NODE_ASN, json!({}))?;
    world.bgp_advertise(json!({}))?;
    world.start_speakers()?;
    let ip = world.web_on_every_node(false).await?[0];
    // Give the speaker time for several attempts; the record says why it is not up.
    let status = wait_for(
        "the session record to show a failed connection",
        TIMEOUT,
        || async {
            let status = world
                .kubectl(&[
                    "get",
                    "bgpsessionstatus",
                    &format!("{}-v4-{}", world.ns.name(), world.nodes[0].name),
                    "-o",
                    "jsonpath={.spec.state} {.spec.lastError}",
                ])
                .map_err(|e| e.to_string())?;
            if status.contains("connecting") {
                Ok(status)
            } else {
                Err(status)
            }
        },
    )
    .await?;
    assert!(!status.starts_with("Established"), "{status}");
    assert!(
        router.established_peers()?.is_empty(),
        "TTL 1 does not reach the router"
    );

    world.bgp_peers(&router_link, NODE_ASN, json!({"ebgpMultiHop": true}))?;
    wait_sessions(&world, &router, &[0]).await?;
    wait_paths(&router, ip, &world.next_hops(ip, &[0]), &[NODE_ASN]).await?;
    Ok(())
}

/// The two ASN mistakes operators make: the router expects another AS (it sends the
/// NOTIFICATION), or `peerASN` is wrong (the speaker sends it). Twenty seconds of retries
/// later, when a person looks, each record still says which, with the time; fixed, the
/// sessions come up and the record clears.
#[tokio::test]
async fn a_wrong_asn_stays_in_the_session_record_until_the_session_is_established()
-> anyhow::Result<()> {
    let mut world = Lan::with_pool("bgp-asn", 1, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) =
        world.router(BgpDaemon::Gobgp, NODE_ASN, RouterOptions::default())?;
    let ns = world.ns.name().to_owned();
    let peer = |family: &str, address: String, my_asn: u32, peer_asn: u32| {
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
               "metadata": {"name": format!("{ns}-{family}")},
               "spec": {"myASN": my_asn, "peerASN": peer_asn, "peerAddress": address,
                        "nodeSelectors": [{"matchLabels": {"herald.dev/test": ns}}]}})
    };
    let (v4, v6) = (router_link.ipv4.to_string(), router_link.ipv6.to_string());
    world.apply_owned(&peer("v4", v4.clone(), NODE_ASN + 1, ROUTER_ASN))?;
    world.apply_owned(&peer("v6", v6.clone(), NODE_ASN, ROUTER_ASN + 1))?;
    world.start_speakers()?;
    let record = |family: &str| {
        world.kubectl(&[
            "get",
            "bgpsessionstatus",
            &format!("{ns}-{family}-{}", world.nodes[0].name),
            "-o",
            "jsonpath={.spec.state}|{.spec.lastNotification}|{.spec.lastNotificationTime}",
        ])
    };
    let expected = [
        ("v4", "received NOTIFICATION open-message-error"),
        (
            "v6",
            "sent NOTIFICATION open-message-error, bad peer AS (2/2)",
        ),
    ];
    let mut first = Vec::new();
    for (family, text) in expected {
        let seen = wait_for(&format!("{family}: {text}"), TIMEOUT, || async {
            let now = record(family).map_err(|e| e.to_string())?;
            if now.contains(text) {
                Ok(now)
            } else {
                Err(now)
            }
        })
        .await?;
        first.push(seen);
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    for ((family, text), seen) in expected.iter().zip(&first) {
        let now = record(family)?;
        let parts: Vec<&str> = now.split('|').collect();
        assert!(
            parts[0] != "Established" && parts[1].contains(text),
            "{family}: {now}"
        );
        assert!(!parts[2].is_empty(), "{family}: a time: {now}");
        assert_eq!(
            &now, seen,
            "{family}: the same root cause, the same time, after 20 s"
        );
    }
    let shown = world.kubectl(&["get", "bgpsessionstatuses"])?;
    assert!(
        shown.contains("LAST NOTIFICATION") && shown.contains("bad peer AS"),
        "kubectl get shows it:\n{shown}"
    );

    world.apply_owned(&peer("v4", v4, NODE_ASN, ROUTER_ASN))?;
    world.apply_owned(&peer("v6", v6, NODE_ASN, ROUTER_ASN))?;
    wait_sessions(&world, &router, &[0]).await?;
    for family in ["v4", "v6"] {
        wait_for(
            &format!("{family}: Established, nothing kept"),
            TIMEOUT,
            || async {
                let now = record(family).map_err(|e| e.to_string())?;
                if now == "Established||" {
                    Ok(())
                } else {
                    Err(now)
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn gobgpd_two_hops_away_peers_only_with_ebgp_multihop() -> anyhow::Result<()> {
    a_peer_two_hops_away_needs_ebgp_multihop(BgpDaemon::Gobgp).await
}

#[tokio::test]
async fn bird_two_hops_away_peers_only_with_ebgp_multihop() -> anyhow::Result<()> {
    a_peer_two_hops_away_needs_ebgp_multihop(BgpDaemon::Bird).await
}

#[tokio::test]
async fn frr_two_hops_away_peers_only_with_ebgp_multihop() -> anyhow::Result<()> {
    a_peer_two_hops_away_needs_ebgp_multihop(BgpDaemon::Frr).await
}

/// BFD drives BGP. With a BFDProfile of 100 ms x 3 and a BGP hold time of 90 s: the router
/// drops a frozen speaker's routes within about the BFD detection time, not the hold time, and
/// takes them back once it is thawed; with the router's BFD frozen, the speakers take their BGP
/// sessions down themselves and their BGPSessionStatus says why.
async fn bfd_takes_a_frozen_speakers_routes_away(daemon: BgpDaemon) -> anyhow::Result<()> {
    let mut world = Lan::with_pool(&format!("bgp-bfd-{}", daemon.name()), 2, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) = world.router(daemon, NODE_ASN, bfd_router())?;
    let ips = bfd_sessions_up(&mut world, &router, &router_link, json!({}), json!({})).await?;
    for node in 0..2 {
        for family in ["v4", "v6"] {
            let peer = format!("{}-{family}", world.ns.name());
            let gauge = format!("herald_speaker_bfd_session_up{{peer=\"{peer}\"}}");
            assert_eq!(world.metric(node, &gauge)?, 1.0, "{gauge} on n{}", node + 1);
        }
        let entered_up =
            "herald_speaker_bfd_transitions_total{state=\"Up\",diagnostic=\"No Diagnostic\"}";
        assert!(world.metric(node, entered_up)? >= 2.0);
        assert!(world.metric(node, "herald_speaker_bfd_packets_received_total")? >= 10.0);
        assert!(world.metric(node, "herald_speaker_bfd_packets_sent_total")? >= 10.0);
    }

    freeze_a_speaker(&world, &router, &ips).await?;

    // The router's BFD frozen: the speakers take their BGP sessions down and say why.
    let bfdd = router.bfd_daemon().expect("BFD runs");
    bfdd.signal(Signal::SIGSTOP)?;
    let wanted = "Idle BFD Down: Control Detection Time Expired";
    wait_for(
        "every BGPSessionStatus to show BFD down",
        TIMEOUT,
        || async {
            let table = world
                .kubectl(&[
                    "get",
                    "bgpsessionstatuses",
                    "-o",
                    r#"jsonpath={range .items[*]}{.spec.state} {.spec.lastError}{"\n"}{end}"#,
                ])
                .map_err(|e| e.to_string())?;
            let lines: Vec<&str> = table.lines().collect();
            if lines.len() == 4 && lines.iter().all(|l| *l == wanted) {
                Ok(())
            } else {
                Err(table)
            }
        },
    )
    .await?;
    let down = bfd_records(&world)?;
    assert!(
        down.iter()
            .all(|l| l.starts_with("Down Control Detection Time Expired")),
        "{down:?}"
    );
    assert!(
        world.metric(
            0,
            "herald_speaker_bfd_transitions_total{state=\"Down\",diagnostic=\"Control Detection Time Expired\"}"
        )? >= 2.0
    );
    bfdd.signal(Signal::SIGCONT)?;
    wait_sessions(&world, &router, &[0, 1]).await?;
    for ip in &ips {
        wait_paths(&router, *ip, &world.next_hops(*ip, &[0, 1]), &[NODE_ASN]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn frr_drops_a_frozen_speakers_routes_within_the_bfd_detection_time() -> anyhow::Result<()> {
    bfd_takes_a_frozen_speakers_routes_away(BgpDaemon::Frr).await
}

#[tokio::test]
async fn bird_drops_a_frozen_speakers_routes_within_the_bfd_detection_time() -> anyhow::Result<()> {
    bfd_takes_a_frozen_speakers_routes_away(BgpDaemon::Bird).await
}

/// Multihop BFD (RFC 5883) with a router two hops away, beside an `ebgpMultiHop` session: Up,
/// and a frozen speaker's routes gone within the detection time.
async fn multihop_bfd_reaches_a_router_two_hops_away(daemon: BgpDaemon) -> anyhow::Result<()> {
    let mut world = Lan::with_pool(&format!("bgp-mhbfd-{}", daemon.name()), 2, &BGP_POOL).await?;
    world.stop_layer2()?;
    let (router, router_link) = world.router_behind_a_hop(daemon, NODE_ASN, bfd_router())?;
    let peer = json!({"ebgpMultiHop": true});
    // FRR sends multihop BFD with TTL 255, so the default minimumTtl of 254 holds; BIRD sends
    // it with the system's default TTL (64), one hop leaves 63.
    let profile = match daemon {
        BgpDaemon::Bird => json!({"minimumTtl": 60}),
        _ => json!({}),
    };
    let ips = bfd_sessions_up(&mut world, &router, &router_link, peer, profile).await?;
    freeze_a_speaker(&world, &router, &ips).await
}

#[tokio::test]
async fn frr_runs_multihop_bfd_two_hops_away() -> anyhow::Result<()> {
    multihop_bfd_reaches_a_router_two_hops_away(BgpDaemon::Frr).await
}

#[tokio::test]
async fn bird_runs_multihop_bfd_two_hops_away() -> anyhow::Result<()> {
    multihop_bfd_reaches_a_router_two_hops_away(BgpDaemon::Bird).await
}

/// `base` with every field of the object `extra` set over it.
fn merged(mut base: serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    for (key, value) in extra.as_object().into_iter().flatten() {
        base[key] = value.clone();
    }
    base
}

/// A router that runs BFD at 100 ms x 3 with every node.
fn bfd_router() -> RouterOptions {
    RouterOptions {
        bfd: Some(BfdTimers {
            interval: Duration::from_millis(100),
            multiplier: 3,
        }),
        ..RouterOptions::default()
    }
}

/// BGPPeers toward `router_link` (with `peer_extra` in their spec) naming a BFDProfile of
/// 100 ms x 3 (with `profile_extra`), a hold time of 90 s, one web Service per node: every BGP and BFD session Up on both sides,
/// every record showing BFD Up with the agreed timers. The Services' addresses.
async fn bfd_sessions_up(
    world: &mut Lan,
    router: &BgpRouter,
    router_link: &Link,
    peer_extra: serde_json::Value,
    profile_extra: serde_json::Value,
) -> anyhow::Result<Vec<IpAddr>> {
    let profile = format!("{}-fast", world.ns.name());
    let timers = json!({"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3});
    world.apply_owned(
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BFDProfile",
        "metadata": {"name": profile}, "spec": merged(timers, &profile_extra)}),
    )?;
    let spec = merged(
        json!({"bfdProfile": profile, "holdTime": "90s"}),
        &peer_extra,
    );
    world.bgp_peers(router_link, NODE_ASN, spec)?;
    world.bgp_advertise(json!({}))?;
    world.start_speakers()?;
    let nodes: Vec<usize> = (0..world.nodes.len()).collect();
    let sessions = 2 * nodes.len();
    wait_sessions(world, router, &nodes).await?;
    router.wait_bfd_up(sessions, TIMEOUT).await?;
    let ips = world.web_on_every_node(true).await?;
    for ip in &ips {
        wait_paths(router, *ip, &world.next_hops(*ip, &nodes), &[NODE_ASN]).await?;
    }
    // Each record shows its BFD session Up with the agreed timers.
    let up = "Up No Diagnostic 100 300";
    wait_for("every BGPSessionStatus to show BFD Up", TIMEOUT, || async {
        let lines = bfd_records(world).map_err(|e| e.to_string())?;
        if lines.len() == sessions && lines.iter().all(|l| l == up) {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    })
    .await?;
    Ok(ips)
}

/// n1's speaker frozen: its BGP sessions would last the 90 s hold time; BFD ends them in a
/// fraction of a second and the router keeps only the other nodes' paths. Thawed: back.
async fn freeze_a_speaker(world: &Lan, router: &BgpRouter, ips: &[IpAddr]) -> anyhow::Result<()> {
    let nodes = world.nodes.len();
    let speaker = world.nodes[0].speaker.as_ref().expect("running");
    let frozen_at = Instant::now();
    speaker.signal(Signal::SIGSTOP)?;
    let others: Vec<usize> = (1..nodes).collect();
    for ip in ips {
        wait_paths(router, *ip, &world.next_hops(*ip, &others), &[NODE_ASN]).await?;
    }
    let gone = frozen_at.elapsed();
    eprintln!("n1 frozen -> its paths gone from the router (polled): {gone:?}");
    assert!(
        gone < Duration::from_secs(5),
        "the routes went with the hold time, not BFD: {gone:?}"
    );
    speaker.signal(Signal::SIGCONT)?;
    let all: Vec<usize> = (0..nodes).collect();
    wait_sessions(world, router, &all).await?;
    for ip in ips {
        wait_paths(router, *ip, &world.next_hops(*ip, &all), &[NODE_ASN]).await?;
    }
    Ok(())
}

/// The BFD part of the test's BGPSessionStatus records, one `state diagnostic transmit
/// detection` line per record.
fn bfd_records(world: &Lan) -> anyhow::Result<Vec<String>> {
    let table = world.kubectl(&[
        "get",
        "bgpsessionstatuses",
        "-o",
        r#"jsonpath={range .items[*]}{.spec.bfd.state} {.spec.bfd.diagnostic} {.spec.bfd.transmitIntervalMs} {.spec.bfd.detectionTimeMs}{"\n"}{end}"#,
    ])?;
    Ok(table.lines().map(|l| l.trim().to_owned()).collect())
}
