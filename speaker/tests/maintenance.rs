//! Node maintenance and node failure: a node that is NotReady, out of service, about to be
//! removed by the autoscaler or excluded from load balancers stops announcing, in layer 2
//! (its addresses move to another node) and in BGP (its routes are withdrawn), and announces
//! again once that is over; a cordoned node does so only when the speakers are told to.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use herald_domain::{Family, Prefix};
use herald_tests::routers::{BgpDaemon, BgpRouter};
use herald_tests::wait_for;
use herald_tests::world::{Lan, TIMEOUT};
use serde_json::json;

/// Waits until the router's paths to `ip` go through exactly `next_hops`.
async fn wait_next_hops(
    router: &BgpRouter,
    ip: IpAddr,
    next_hops: &BTreeSet<IpAddr>,
) -> anyhow::Result<()> {
    let prefix = Prefix::host(ip).to_string();
    wait_for(
        &format!("paths to {prefix} via {next_hops:?}"),
        TIMEOUT,
        || async {
            let hops: BTreeSet<IpAddr> = router
                .routes(Family::of(ip))
                .map_err(|e| e.to_string())?
                .iter()
                .filter(|r| r.prefix == prefix)
                .filter_map(|r| r.next_hop)
                .collect();
            if hops == *next_hops {
                Ok(())
            } else {
                Err(format!("{hops:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

/// One way a node leaves load balancing, and how it comes back.
struct Predicate {
    name: &'static str,
    apply: fn(&Lan, &str) -> anyhow::Result<()>,
    undo: fn(&Lan, &str) -> anyhow::Result<()>,
}

fn ready(lan: &Lan, node: &str, status: &str) -> anyhow::Result<()> {
    let patch = json!({"status": {"conditions": [
        {"type": "Ready", "status": status, "reason": "Test", "message": "set by the test"}]}});
    lan.cp.kubectl(&[
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

fn taint(lan: &Lan, node: &str, taint: &str) -> anyhow::Result<()> {
    lan.cp.kubectl(&["taint", "node", node, taint])?;
    Ok(())
}

fn label(lan: &Lan, node: &str, label: &str) -> anyhow::Result<()> {
    lan.cp
        .kubectl(&["label", "--overwrite", "node", node, label])?;
    Ok(())
}

const PREDICATES: [Predicate; 5] = [
    Predicate {
        name: "NotReady",
        apply: |lan, node| ready(lan, node, "False"),
        undo: |lan, node| ready(lan, node, "True"),
    },
    Predicate {
        name: "Ready Unknown (the node lifecycle controller lost the kubelet)",
        apply: |lan, node| ready(lan, node, "Unknown"),
        undo: |lan, node| ready(lan, node, "True"),
    },
    Predicate {
        name: "out-of-service taint",
        apply: |lan, node| {
            taint(
                lan,
                node,
                "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
            )
        },
        undo: |lan, node| taint(lan, node, "node.kubernetes.io/out-of-service-"),
    },
    Predicate {
        name: "autoscaler's ToBeDeleted taint",
        apply: |lan, node| taint(lan, node, "ToBeDeletedByClusterAutoscaler=1:NoSchedule"),
        undo: |lan, node| taint(lan, node, "ToBeDeletedByClusterAutoscaler-"),
    },
    Predicate {
        name: "exclude-from-external-load-balancers label (\"false\" lets it back)",
        apply: |lan, node| {
            label(
                lan,
                node,
                "node.kubernetes.io/exclude-from-external-load-balancers=true",
            )
        },
        undo: |lan, node| {
            label(
                lan,
                node,
                "node.kubernetes.io/exclude-from-external-load-balancers=false",
            )
        },
    },
];

#[tokio::test]
async fn a_node_under_maintenance_or_failing_stops_announcing_in_layer_2_and_bgp()
-> anyhow::Result<()> {
    let mut lan = Lan::new("maint", 2).await?;
    lan.start_speakers()?;
    let (router, _) = lan.peered_router(BgpDaemon::Gobgp)?;
    let ip = lan.web_on_every_node(false).await?[0];
    let owner = lan.resolve(ip).await?;
    let other = 1 - owner;
    let both = lan.next_hops(ip, &[0, 1]);
    wait_next_hops(&router, ip, &both).await?;
    let node = lan.nodes[owner].name.clone();
    let moved = |lan: &Lan| lan.next_hops(ip, &[other]);

    for predicate in &PREDICATES {
        (predicate.apply)(&lan, &node)?;
        lan.wait_answers(ip, &[other]).await?;
        wait_next_hops(&router, ip, &moved(&lan)).await?;
        (predicate.undo)(&lan, &node)?;
        lan.wait_answers(ip, &[owner]).await?;
        wait_next_hops(&router, ip, &both).await?;
        println!(
            "{}: the address moved and the route was withdrawn, then both came back",
            predicate.name
        );
    }

    // Cordoned, by default: nothing moves (cordoning moves no Pod; the node still serves).
    lan.cp.kubectl(&["cordon", &node])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lan.answers(ip)?, [lan.nodes[owner].link.mac.clone()]);
    wait_next_hops(&router, ip, &both).await?;
    lan.cp.kubectl(&["uncordon", &node])?;

    // With --exclude-cordoned-nodes (the chart's speaker.excludeCordonedNodes), it does.
    lan.speaker_args = vec!["--exclude-cordoned-nodes=true".into()];
    for i in 0..lan.nodes.len() {
        lan.nodes[i].speaker = None;
        lan.start_speaker(i)?;
    }
    lan.wait_answers(ip, &[owner]).await?;
    wait_next_hops(&router, ip, &both).await?;
    lan.cp.kubectl(&["cordon", &node])?;
    lan.wait_answers(ip, &[other]).await?;
    wait_next_hops(&router, ip, &moved(&lan)).await?;
    lan.cp.kubectl(&["uncordon", &node])?;
    lan.wait_answers(ip, &[owner]).await?;
    wait_next_hops(&router, ip, &both).await?;
    assert!(
        lan.speaker_logs().contains("this node announces nothing"),
        "the speaker says why"
    );
    Ok(())
}
