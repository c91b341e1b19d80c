//! Herald's whole story on one machine, as a user would see it (the README's first command,
//! `demo/run`, builds and runs this):
//!
//! ```text
//!   local control plane (etcd, kube-apiserver, kube-controller-manager)
//!        ▲  helm install charts/herald (RBAC, BGPPeers, BGPAdvertisement from values; the
//!        │  CRDs, shared by every namespace of the local control plane, applied before)
//!        │  herald-controller and three herald-speakers with the chart's ServiceAccounts
//!   n1 ─┐
//!   n2 ─┼─ LAN 192.0.2.0/24, 2001:db8::/64 ─┬─ client (192.0.2.100): resolves the address
//!   n3 ─┘                                   └─ router (192.0.2.254): FRR, eBGP with each node
//! ```
//!
//! Every node runs a real kube-proxy and has a Pod network (`herald_tests::datapath`). The demo
//! creates the page's example Service (`example-service`, selector `app: example`, port 8765 to
//! 9376) with one ready endpoint on n2, a Pod that serves HTTP, then prints `kubectl describe
//! services example-service`, the client's neighbour entry for the address (pointing at the
//! node that answers ARP for it), a `curl` from the client answered by the Pod (its name and
//! the source address it saw) and the router's route to the address (through every node:
//! ECMP). Then it cleans up, or with `--keep` leaves everything running until Ctrl-C and
//! prints how to explore.
//!
//! `cargo run -p herald-speaker --example demo [-- --keep]` (as root, after
//! `cargo build -p herald-controller -p herald-speaker --bins`; `demo/run` does all of it).

use std::{net::IpAddr, path::PathBuf};

use herald_tests::world::{Lan, NODE_ASN, ROUTER_ASN, Release, RouterOptions, TIMEOUT};
use herald_tests::{
    herald::Controller,
    routers::{BgpDaemon, BgpRouter},
    wait_for,
};

fn heading(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    println!(
        "Starting: control plane, three nodes, a client and an FRR router in network namespaces"
    );
    let mut lan = Lan::new("demo", 3).await?;
    let (router, router_link) = lan.router(BgpDaemon::Frr, NODE_ASN, RouterOptions::default())?;

    // Herald from its chart: RBAC and the BGP setup from values (the CRDs are applied by
    // Lan::new, as the local control plane is shared).
    let namespace = lan.ns.name().to_owned();
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/herald");
    let release = Release::install(
        lan.cp,
        "herald",
        &chart,
        &namespace,
        &[
            format!("bgpPeers[0].name={namespace}-tor"),
            format!("bgpPeers[0].myASN={NODE_ASN}"),
            format!("bgpPeers[0].peerASN={ROUTER_ASN}"),
            format!("bgpPeers[0].peerAddress={}", router_link.ipv4),
            format!("bgpAdvertisements[0].name={namespace}-public"),
            format!("bgpAdvertisements[0].ipAddressPools={{{}}}", lan.pool),
        ],
    )?;
    let dir = lan.topology.dir().to_owned();
    let (controller_config, speaker_config) = (
        dir.join("controller.kubeconfig"),
        dir.join("speaker.kubeconfig"),
    );
    lan.cp
        .service_account_kubeconfig(&namespace, "herald-controller", &controller_config)?;
    lan.cp
        .service_account_kubeconfig(&namespace, "herald-speaker", &speaker_config)?;
    release.wait_for_bindings(&lan).await?;
    lan.controller =
        Controller::start_as(&controller_config, &namespace, "herald-controller", "demo")?;
    lan.speaker_kubeconfig = speaker_config;
    // Every node carries traffic as on a real cluster: a Pod network and a real kube-proxy.
    lan.serve_traffic().await?;
    lan.start_speakers()?;

    // The page's example: one ready endpoint, on n2, a Pod that serves HTTP on 9376.
    let _pod = lan.serving_pod("example-n2", "example", 1).await?;
    lan.service("example-service", "example", "Cluster", false)?;
    let ip: IpAddr = lan.ingress("example-service", 1).await?[0];
    let owner = lan.resolve(ip).await?;
    lan.event("example-service", "nodeAssigned").await?;
    wait_for("the router's route through every node", TIMEOUT, || async {
        let route = router_route(&router, ip).map_err(|e| e.to_string())?;
        if route.matches("via").count() == lan.nodes.len() {
            Ok(())
        } else {
            Err(route)
        }
    })
    .await?;
    lan.event("example-service", "bgpAdvertisement").await?;

    heading("kubectl describe services example-service");
    println!(
        "{}",
        lan.kubectl(&["describe", "services", "example-service"])?
    );
    heading(&format!("the client's neighbour entry for {ip}"));
    let neighbour = lan
        .client_host
        .run("ip", &["neigh", "show", &ip.to_string()])?;
    println!("{}", neighbour.trim());
    println!(
        "  -> {} is the MAC of {} ({}), the node answering ARP for {ip}",
        lan.nodes[owner].link.mac, lan.nodes[owner].name, lan.nodes[owner].link.ipv4
    );
    heading(&format!("curl http://{ip}:8765/ from the client"));
    let reply = lan.curl_until_served(&lan.client_host, ip).await?;
    println!(
        "{}",
        lan.client_host
            .run(
                "curl",
                &["-sS", "--max-time", "5", &format!("http://{ip}:8765/")]
            )?
            .trim()
    );
    println!(
        "  -> answered by the Pod {} through kube-proxy on {}; it saw the source address {} \
         (a node's: the Service's externalTrafficPolicy is Cluster)",
        reply.pod, lan.nodes[owner].name, reply.client
    );
    heading(&format!(
        "the router's route to {ip} (FRR, installed in its kernel)"
    ));
    println!("{}", router_route(&router, ip)?.trim());
    heading("kubectl get bgpsessionstatuses,servicel2statuses");
    println!(
        "{}",
        lan.kubectl(&["get", "bgpsessionstatuses,servicel2statuses"])?
    );

    if keep {
        heading("everything keeps running; explore, then press Ctrl-C to stop and clean up");
        println!("  export KUBECONFIG={}", lan.cp.kubeconfig.display());
        println!("  kubectl -n {namespace} get services,pods,bgpsessionstatuses,servicel2statuses");
        println!("  kubectl get ipaddresspools,l2advertisements,bgppeers,bgpadvertisements");
        println!(
            "  ip netns exec {} ping -c1 {ip}; ip netns exec {} ip neigh",
            lan.client_host.netns(),
            lan.client_host.netns()
        );
        println!(
            "  ip netns exec {} curl http://{ip}:8765/",
            lan.client_host.netns()
        );
        println!("  ip netns exec {} ip route", router.host().netns());
        println!("  logs: {}", dir.display());
        tokio::signal::ctrl_c().await?;
        println!("stopping");
    }
    drop(release);
    Ok(())
}

/// `ip route show IP` in the router's namespace.
fn router_route(router: &BgpRouter, ip: IpAddr) -> anyhow::Result<String> {
    Ok(router
        .host()
        .run("ip", &["route", "show", &ip.to_string()])?)
}
