//! Gossip misconfigured: a speaker whose gossip key differs from the others' is reported (its
//! log, the others' and its own SpeakerStatus, metrics) and does not answer for an address a
//! speaker with the right key owns, so the client never sees two answers.

use std::{net::IpAddr, time::Duration};

use herald_tests::{
    wait_for,
    world::{Lan, TIMEOUT},
};
use tokio::time::Instant;

/// The `spec.gossip` of node `i`'s SpeakerStatus, once it has one.
fn gossip_status(lan: &Lan, i: usize) -> Result<serde_json::Value, String> {
    let text = lan
        .kubectl(&["get", "speakerstatus", &lan.nodes[i].name, "-o", "json"])
        .map_err(|e| e.to_string())?;
    let record: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(record["spec"]["gossip"].clone())
}

/// Checks that each of `ips` is answered by exactly one node, never node `outsider`.
fn one_healthy_answer(lan: &Lan, ips: &[IpAddr], outsider: usize) -> anyhow::Result<()> {
    for &ip in ips {
        let answers = lan.answers(ip)?;
        anyhow::ensure!(
            answers.len() == 1 && answers[0] != lan.nodes[outsider].link.mac,
            "{ip} answered by {answers:?} (node {outsider} is {})",
            lan.nodes[outsider].link.mac
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_speaker_with_another_gossip_key_is_reported_and_claims_no_address_a_healthy_member_owns()
-> anyhow::Result<()> {
    let mut lan = Lan::new("gossip-key", 3).await?;
    for i in 0..2 {
        lan.start_speaker(i)?;
    }
    let mut ips = lan.web_on_every_node(false).await?;
    lan.service("web-b", "web", "Cluster", false)?;
    ips.extend(lan.ingress("web-b", 1).await?);
    for &ip in &ips {
        lan.resolve(ip).await?;
    }
    one_healthy_answer(&lan, &ips, 2)?;
    // Gossip listens on the node's address, not on every interface of the host.
    let listening = lan.nodes[0].host.run("ss", &["-Hunl", "sport = :7952"])?;
    assert!(
        listening.contains(&format!("{}:7952", lan.nodes[0].link.ipv4))
            && !listening.contains("0.0.0.0:7952")
            && !listening.contains("*:7952"),
        "{listening}"
    );

    // Node 3's speaker starts with a key of its own. Alone in its gossip it would take every
    // address for its own after its join grace; it hears the two others instead.
    lan.start_speaker_with_key(2, "a key nobody else has\n")?;
    let outsider = lan.nodes[2].name.clone();
    let healthy: Vec<String> = lan.nodes[..2].iter().map(|n| n.name.clone()).collect();
    wait_for(
        "node 3 to hear the others' gossip fail",
        TIMEOUT,
        || async {
            let gossip = gossip_status(&lan, 2)?;
            if gossip["unauthenticated"] == serde_json::json!(healthy) {
                Ok(())
            } else {
                Err(gossip.to_string())
            }
        },
    )
    .await?;

    // Well past its join grace, and for longer than the window of the others' datagrams:
    // every address keeps exactly one answer, from a node with the right key.
    let since = Instant::now();
    let mut rounds = 0;
    while since.elapsed() < Duration::from_secs(12) {
        one_healthy_answer(&lan, &ips, 2)?;
        rounds += 1;
    }
    assert_eq!(lan.metric(2, "herald_speaker_owned_addresses")?, 0.0);
    println!(
        "{rounds} rounds over {:?}: every address answered once, never by the outsider",
        since.elapsed()
    );

    // It says so: in its SpeakerStatus, its metrics and its log; the others name it.
    let status = gossip_status(&lan, 2).map_err(anyhow::Error::msg)?;
    assert_eq!(status["outvoted"], true, "{status}");
    assert_eq!(status["members"], 1, "{status}");
    assert_eq!(status["nodes"], 3, "{status}");
    for i in 0..2 {
        let gossip = wait_for("the healthy nodes to name node 3", TIMEOUT, || async {
            let gossip = gossip_status(&lan, i)?;
            if gossip["unauthenticated"] == serde_json::json!([outsider]) {
                Ok(gossip)
            } else {
                Err(gossip.to_string())
            }
        })
        .await?;
        assert_eq!(gossip["members"], 2, "{gossip}");
        assert!(gossip.get("outvoted").is_none(), "{gossip}");
        assert!(
            lan.metric(
                i,
                "herald_speaker_gossip_datagrams_rejected_total{reason=\"unauthenticated\"}"
            )? >= 1.0
        );
    }
    assert_eq!(lan.metric(2, "herald_speaker_gossip_outvoted")?, 1.0);
    assert_eq!(lan.metric(2, "herald_speaker_gossip_nodes")?, 3.0);
    assert_eq!(
        lan.metric(2, "herald_speaker_gossip_unauthenticated_nodes")?,
        2.0
    );
    let problems = lan.kubectl(&[
        "get",
        "speakerstatus",
        &outsider,
        "-o",
        "jsonpath={.spec.problems}",
    ])?;
    assert!(
        problems.contains("use another gossip key") && problems.contains(&healthy[0]),
        "{problems}"
    );
    let logs = lan.speaker_logs();
    assert!(
        logs.contains(&format!(
            "gossip from node {}'s speaker fails authentication",
            healthy[0]
        )),
        "the outsider names the node whose gossip fails:\n{logs}"
    );

    // Once the speakers with the right key are gone, the outsider is all there is: it
    // answers for everything after their datagrams stop for the window.
    for i in 0..2 {
        lan.nodes[i].speaker.as_mut().expect("running").kill();
    }
    let gone = Instant::now();
    for &ip in &ips {
        lan.wait_answers(ip, &[2]).await?;
    }
    println!(
        "the outsider took over {:?} after the others died",
        gone.elapsed()
    );
    Ok(())
}
