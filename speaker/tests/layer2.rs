//! Layer 2 end to end: real speakers in node namespaces on one LAN, the real API server and
//! controller, and a client whose kernel resolves Service addresses by ARP and NDP.

use std::{net::IpAddr, time::Instant};

use herald_tests::wait_for;
use herald_tests::world::{Lan, TIMEOUT};

/// Waits until the client's existing neighbour entry for `ip` points at a node other than
/// `old`, without the client asking again (the new owner's GARP / NA must update it), and
/// returns that node.
async fn entry_moves_away(lan: &Lan, ip: IpAddr, old: usize) -> anyhow::Result<usize> {
    Ok(wait_for(
        &format!(
            "the client's entry for {ip} to leave {}",
            lan.nodes[old].name
        ),
        TIMEOUT,
        || async {
            let mac = lan.client_entry(ip).map_err(|e| e.to_string())?;
            match mac.as_deref().and_then(|m| lan.node_with_mac(m)) {
                Some(node) if node != old => Ok(node),
                other => Err(format!("entry {mac:?} (node {other:?})")),
            }
        },
    )
    .await?)
}

#[tokio::test]
async fn the_client_resolves_each_address_to_one_owner_and_follows_it_when_its_speaker_is_killed()
-> anyhow::Result<()> {
    let mut lan = Lan::new("l2-kill", 3).await?;
    lan.start_speakers()?;
    let ips = lan.web_on_every_node(true).await?;
    let mut owners = Vec::new();
    for &ip in &ips {
        let owner = lan.resolve(ip).await?;
        // One node, and only one, answers when asked directly.
        let answers = lan.answers(ip)?;
        assert_eq!(
            answers,
            [lan.nodes[owner].link.mac.clone()],
            "answers for {ip}"
        );
        lan.event(
            "web",
            &format!("announcing {ip} from node {}", lan.nodes[owner].name),
        )
        .await?;
        owners.push(owner);
    }
    // The owner's metrics say what it does; its probes answer.
    let owner = owners[0];
    assert!(lan.metric(owner, "herald_speaker_owned_addresses")? >= 1.0);
    assert_eq!(lan.metric(owner, "herald_speaker_members")?, 3.0);
    assert!(
        lan.metric(
            owner,
            "herald_speaker_requests_answered_total{protocol=\"arp\"}"
        )? >= 1.0
    );
    assert!(
        lan.metric(
            owner,
            "herald_speaker_announcements_sent_total{protocol=\"arp\"}"
        )? >= 1.0
    );
    assert!(lan.metric(owner, "herald_speaker_gossip_datagrams_received_total")? >= 1.0);
    let announced = |mode: &str| {
        format!(
            "herald_speaker_service_announced{{namespace=\"{}\",service=\"web\",mode=\"{mode}\"}}",
            lan.ns.name()
        )
    };
    assert_eq!(lan.metric(owner, &announced("l2"))?, 1.0);
    assert!(lan.metric(owner, &announced("bgp")).is_err(), "no BGP here");
    assert_eq!(
        lan.metric(
            owner,
            &format!(
                "herald_build_info{{component=\"speaker\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        )?,
        1.0
    );
    assert!(lan.metric(owner, "process_resident_memory_bytes")? > 0.0);
    lan.nodes[owner]
        .host
        .run("curl", &["-sf", "http://127.0.0.1:7473/readyz"])?;
    // kubectl shows who announces what.
    lan.wait_records("web", &[(ips[0], owners[0]), (ips[1], owners[1])])
        .await?;

    // SIGKILL the owner of the IPv4 address: no goodbye, gossip must notice.
    let victim = owners[0];
    lan.nodes[victim].speaker.as_mut().expect("running").kill();
    let heir = entry_moves_away(&lan, ips[0], victim).await?;
    lan.event(
        "web",
        &format!("announcing {} from node {}", ips[0], lan.nodes[heir].name),
    )
    .await?;
    let v6_owner = if owners[1] == victim {
        entry_moves_away(&lan, ips[1], victim).await?
    } else {
        owners[1]
    };
    assert_eq!(lan.answers(ips[0])?, [lan.nodes[heir].link.mac.clone()]);
    // The dead node's record is gone; the heir's is there.
    lan.wait_records("web", &[(ips[0], heir), (ips[1], v6_owner)])
        .await?;
    Ok(())
}

#[tokio::test]
async fn cutting_the_owners_link_moves_the_address_to_a_node_that_is_still_connected()
-> anyhow::Result<()> {
    let mut lan = Lan::new("l2-cut", 3).await?;
    lan.start_speakers()?;
    let ip = lan.web_on_every_node(false).await?[0];
    let owner = lan.resolve(ip).await?;
    lan.nodes[owner].link.set_connected(false)?;
    let heir = entry_moves_away(&lan, ip, owner).await?;
    assert_ne!(heir, owner);
    assert_eq!(lan.answers(ip)?, [lan.nodes[heir].link.mac.clone()]);
    Ok(())
}

#[tokio::test]
async fn with_local_policy_the_announcement_follows_the_only_ready_endpoint_and_stops_without_one()
-> anyhow::Result<()> {
    let mut lan = Lan::new("l2-local", 3).await?;
    lan.start_speakers()?;
    lan.pod("web-0", "web", 0, true).await?;
    lan.pod("web-1", "web", 1, false).await?;
    lan.service("web", "web", "Local", true)?;
    let ips = lan.ingress("web", 2).await?;
    for &ip in &ips {
        assert_eq!(
            lan.resolve(ip).await?,
            0,
            "{ip}: only n1 has a ready endpoint"
        );
    }
    // The endpoint moves: n1's Pod stops being ready, n2's becomes ready.
    lan.set_ready("web-0", false, 0).await?;
    lan.set_ready("web-1", true, 1).await?;
    for &ip in &ips {
        assert_eq!(
            entry_moves_away(&lan, ip, 0).await?,
            1,
            "{ip} follows to n2"
        );
    }
    // No ready endpoint anywhere: nobody answers.
    lan.set_ready("web-1", false, 1).await?;
    for &ip in &ips {
        lan.wait_answers(ip, &[]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn deleting_the_service_stops_every_answer() -> anyhow::Result<()> {
    let mut lan = Lan::new("l2-delete", 2).await?;
    lan.start_speakers()?;
    let ips = lan.web_on_every_node(true).await?;
    lan.resolve_all(&ips).await?;
    lan.kubectl(&["delete", "service", "web", "--timeout=30s"])?;
    for &ip in &ips {
        lan.wait_answers(ip, &[]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn node_selectors_and_named_interfaces_decide_where_the_address_is_answered()
-> anyhow::Result<()> {
    let mut lan = Lan::new("l2-select", 3).await?;
    lan.start_speakers()?;
    // A second LAN on eth1 of every node, with a client of its own, plugged in while the
    // speakers run: they pick the new interfaces up.
    let lan2 = lan.topology.segment(
        "lan2",
        herald_tests::netns::addressing::UPSTREAM_V4,
        herald_tests::netns::addressing::UPSTREAM_V6,
    )?;
    let mut second_links = Vec::new();
    for (i, node) in lan.nodes.iter().enumerate() {
        second_links.push(lan2.attach(&node.host, 1 + i as u32)?);
    }
    let client2 = lan.topology.host("client2")?;
    lan2.attach(&client2, 100)?;
    let ip = lan.web_on_every_node(false).await?[0];

    // Only n3 is selected.
    let n3 = lan.nodes[2].name.clone();
    lan.advertise(serde_json::json!({
        "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": n3}}],
    }))?;
    lan.wait_answers(ip, &[2]).await?;

    // Answered on eth1 only: the first LAN's client hears nothing, the second's hears n3.
    lan.advertise(serde_json::json!({
        "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": n3}}],
        "interfaces": ["eth1"],
    }))?;
    lan.wait_answers(ip, &[]).await?;
    let out = client2.run(
        "arping",
        &["-c", "2", "-w", "3", "-I", "eth0", &ip.to_string()],
    )?;
    assert!(
        out.to_lowercase().contains(&second_links[2].mac),
        "n3's eth1 ({}) answers on the second LAN:\n{out}",
        second_links[2].mac
    );
    Ok(())
}

#[tokio::test]
async fn services_sharing_an_address_are_announced_from_one_node() -> anyhow::Result<()> {
    let mut lan = Lan::new("l2-share", 3).await?;
    lan.start_speakers()?;
    for i in 0..3 {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    for (name, port) in [("web", 8765), ("admin", 8766)] {
        lan.apply(&serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": {
                "herald.dev/allow-shared-ip": "web", "herald.dev/loadBalancerIPs": "192.0.2.70"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "ports": [{"port": port, "targetPort": 9376}]}}))?;
    }
    let ip: IpAddr = "192.0.2.70".parse()?;
    for name in ["web", "admin"] {
        assert_eq!(lan.ingress(name, 1).await?, [ip]);
    }
    let owner = lan.resolve(ip).await?;
    assert_eq!(lan.answers(ip)?, [lan.nodes[owner].link.mac.clone()]);
    for name in ["web", "admin"] {
        lan.event(
            name,
            &format!("announcing {ip} from node {}", lan.nodes[owner].name),
        )
        .await?;
        lan.wait_records(name, &[(ip, owner)]).await?;
    }
    Ok(())
}

/// Waits until exactly one node answers for `ip` and the client's entry, without the client
/// asking, points at it; returns that node.
async fn settled_on_one(lan: &Lan, ip: IpAddr) -> anyhow::Result<usize> {
    Ok(wait_for(
        &format!("one node answering {ip}, the client's entry on it"),
        TIMEOUT,
        || async {
            let answers = lan.answers(ip).map_err(|e| e.to_string())?;
            let entry = lan.client_entry(ip).map_err(|e| e.to_string())?;
            match answers.as_slice() {
                [only] if entry.as_ref() == Some(only) => lan
                    .node_with_mac(only)
                    .ok_or_else(|| format!("{only} is no node's")),
                _ => Err(format!("answers {answers:?}, entry {entry:?}")),
            }
        },
    )
    .await?)
}

#[tokio::test]
async fn the_address_follows_link_flaps_a_mac_change_and_a_renamed_interface() -> anyhow::Result<()>
{
    let mut lan = Lan::new("l2-links", 3).await?;
    lan.start_speakers()?;
    let ip = lan.web_on_every_node(false).await?[0];
    let mut owner = lan.resolve(ip).await?;

    // The owner's cable out and back in, three times, while the client asks who has the
    // address every 10 ms (to the end of the test). When a cable is back, its node stays
    // silent until gossip has merged; then the address's owner takes it back.
    let flaps = 3;
    let prober = lan.arp_prober(ip, 120)?;
    let mut moved = Vec::new();
    let mut settled = Vec::new();
    for _ in 0..flaps {
        let cut = Instant::now();
        lan.nodes[owner].link.set_connected(false)?;
        entry_moves_away(&lan, ip, owner).await?;
        moved.push(cut.elapsed());
        let back = Instant::now();
        lan.nodes[owner].link.set_connected(true)?;
        owner = settled_on_one(&lan, ip).await?;
        settled.push(back.elapsed());
    }
    println!(
        "{flaps} flaps: the client's entry moved within {moved:?}; settled again (one answer, \
         the client's entry on it) within {settled:?}"
    );

    // The owner's MAC changes: it answers with the new one and tells the client, whose entry
    // follows without asking.
    let host = lan.nodes[owner].host.clone();
    let ifname = lan.nodes[owner].link.ifname.clone();
    let new_mac = "02:00:5e:00:53:77";
    // Timed from when `ip` returns (the command itself may take a second or two).
    host.run("ip", &["link", "set", "dev", &ifname, "address", new_mac])?;
    let changed = Instant::now();
    let followed = wait_for("the client's entry on the new MAC", TIMEOUT, || async {
        let entry = lan.client_entry(ip).map_err(|e| e.to_string())?;
        if entry.as_deref() == Some(new_mac) {
            Ok(())
        } else {
            Err(format!("entry {entry:?}"))
        }
    })
    .await;
    if let Err(e) = followed {
        let answers = lan.answers(ip)?;
        anyhow::bail!("{e}; answering now: {answers:?}");
    }
    let asked = lan.client_host.run(
        "arping",
        &["-c", "2", "-w", "3", "-I", "eth0", &ip.to_string()],
    )?;
    assert!(asked.to_lowercase().contains(new_mac), "{asked}");
    println!(
        "MAC changed: the client's entry followed within {:?}",
        changed.elapsed()
    );
    lan.nodes[owner].link.mac = new_mac.to_owned();

    // The owner's interface renamed (down, renamed, up): the address moves away while it is
    // down, and one node answers once it is back under its new name.
    let renamed = Instant::now();
    host.run("ip", &["link", "set", "dev", &ifname, "down"])?;
    host.run("ip", &["link", "set", "dev", &ifname, "name", "lan0"])?;
    entry_moves_away(&lan, ip, owner).await?;
    host.run("ip", &["link", "set", "dev", "lan0", "up"])?;
    wait_for("one answer, the client's entry on it", TIMEOUT, || async {
        let answers = lan.answers(ip).map_err(|e| e.to_string())?;
        let entry = lan.client_entry(ip).map_err(|e| e.to_string())?;
        match answers.as_slice() {
            [only] if entry.as_ref() == Some(only) => Ok(()),
            _ => Err(format!("answers {answers:?}, entry {entry:?}")),
        }
    })
    .await?;
    println!(
        "interface renamed: one answer again within {:?}",
        renamed.elapsed()
    );

    // What the client heard all along, request by request.
    let requests = prober.finish()?;
    let twice = requests.iter().filter(|asked| asked.macs.len() > 1).count();
    let unanswered = requests.iter().filter(|asked| !asked.answered).count();
    println!(
        "of {} ARP requests 10 ms apart through {flaps} flaps, a MAC change and a rename: \
         {twice} answered by two nodes, {unanswered} not answered within 50 ms (the detection \
         time of each cut, and more)",
        requests.len()
    );
    assert!(
        requests.len() > 1_000,
        "the prober ran: {} requests",
        requests.len()
    );
    // A handover takes a few milliseconds in which both nodes may answer (about 5 requests
    // for 3 flaps here); before a node back from a cut stayed silent until gossip merged, it
    // answered beside the node that had taken over for hundreds of milliseconds (259
    // requests answered twice in the same run).
    assert!(
        twice <= 10 * (flaps + 1),
        "{twice} requests answered by two nodes"
    );
    Ok(())
}
