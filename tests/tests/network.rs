//! Network-namespace topologies behave like machines on a LAN: the client's kernel resolves
//! node addresses by ARP and NDP, processes in a node reach the API server, and everything is
//! gone after the test, even when it panics.

use std::{net::IpAddr, process::Command};

use herald_tests::{ControlPlane, Host, Link, Topology};

fn namespaces() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list runs")
            .stdout,
    )
    .into_owned()
}

/// A LAN with a node at .1 and a client at .100; returns the client and the node's link.
fn client_and_node() -> anyhow::Result<(Topology, Host, Link)> {
    let topology = Topology::new()?;
    let lan = topology.lan()?;
    let node = topology.host("node")?;
    let client = topology.host("client")?;
    let node_link = lan.attach(&node, 1)?;
    lan.attach(&client, 100)?;
    Ok((topology, client, node_link))
}

#[test]
fn a_client_resolves_a_node_address_by_arp_and_by_ndp() -> anyhow::Result<()> {
    let (_topology, client, node_link) = client_and_node()?;

    for address in [IpAddr::V4(node_link.ipv4), IpAddr::V6(node_link.ipv6)] {
        assert_eq!(client.neighbour(address)?, None, "nothing resolved yet");
        client.run("ping", &["-c", "1", "-W", "2", &address.to_string()])?;
        let entry = client
            .neighbour(address)?
            .unwrap_or_else(|| panic!("the client's kernel has a neighbour entry for {address}"));
        assert!(entry.is_resolved(), "{entry:?}");
        assert_eq!(
            entry.mac.as_deref(),
            Some(node_link.mac.as_str()),
            "{address}"
        );
        assert_eq!(entry.device, "eth0");
    }
    Ok(())
}

#[test]
fn arping_from_the_client_is_answered_by_the_node() -> anyhow::Result<()> {
    let (_topology, client, node_link) = client_and_node()?;
    let out = client.run(
        "arping",
        &[
            "-c",
            "1",
            "-w",
            "2",
            "-I",
            "eth0",
            &node_link.ipv4.to_string(),
        ],
    )?;
    assert!(
        out.to_lowercase().contains(&node_link.mac),
        "arping shows the node's MAC {}:\n{out}",
        node_link.mac
    );
    let out = client.run(
        "ndisc6",
        &["-1", "-r", "2", &node_link.ipv6.to_string(), "eth0"],
    )?;
    assert!(
        out.to_lowercase().contains(&node_link.mac),
        "ndisc6 shows the node's MAC {}:\n{out}",
        node_link.mac
    );
    Ok(())
}

#[test]
fn a_process_inside_a_node_reaches_the_api_server_at_the_tests_address() -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let topology = Topology::new()?;
    let node = topology.host("node")?;
    topology.give_api_access(&node, cp.api_address)?;
    let kubectl = cp.tool("kubectl");
    let kubeconfig = cp.kubeconfig.to_string_lossy().into_owned();
    let version = node.run(
        &kubectl.to_string_lossy(),
        &["--kubeconfig", &kubeconfig, "get", "--raw", "/version"],
    )?;
    assert!(version.contains("\"gitVersion\": \"v1.37."), "{version}");
    Ok(())
}

#[test]
fn a_links_cable_can_be_cut_and_plugged_back() -> anyhow::Result<()> {
    let (_topology, client, node_link) = client_and_node()?;
    let target = node_link.ipv4.to_string();
    node_link.set_connected(false)?;
    assert!(
        client
            .run("ping", &["-c", "1", "-W", "1", &target])
            .is_err(),
        "no answer through a cut cable"
    );
    node_link.set_connected(true)?;
    client.run("ping", &["-c", "1", "-W", "2", &target])?;
    Ok(())
}

#[test]
fn namespaces_are_removed_when_the_topology_is_dropped_even_after_a_panic() {
    let (names_tx, names_rx) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let topology = Topology::new().expect("topology");
        let lan = topology.lan().expect("segment");
        let node = topology.host("node").expect("host");
        lan.attach(&node, 1).expect("link");
        names_tx
            .send(node.netns().to_owned())
            .expect("receiver alive");
        panic!("the test fails while the topology is up");
    });
    assert!(outcome.is_err());
    let netns = names_rx.recv().expect("the name was sent");
    // Every namespace of the topology (hosts and switches) shares the prefix before "node".
    let topology_prefix = netns.trim_end_matches("node");
    let listed = namespaces();
    assert!(
        !listed.lines().any(|l| l.starts_with(topology_prefix)),
        "no namespace of {topology_prefix}* is left:\n{listed}"
    );
}
