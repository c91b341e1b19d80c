//! The API server stops answering (stopped, overloaded, cut off) while the speakers work:
//! nothing they announce depends on it. Every node host reaches the API through a forwarder
//! that the test silences, which looks to the speakers exactly like a stopped kube-apiserver
//! (connections accepted, nothing answered); the shared API server itself keeps serving the
//! other tests and the controller.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use herald_tests::{
    datapath::http_status,
    routers::BgpDaemon,
    world::{Lan, NODE_ASN, RouterOptions, TIMEOUT},
};
use serde_json::json;
use tokio::time::Instant;

/// How long the API stays silent before the owner is killed: past the speakers' password
/// refresh (every 30 s), whose read used to hold up the loop for as long as the API did not
/// answer, and past a request timeout (10 s).
const SILENCE: Duration = Duration::from_secs(45);

/// The status code of the speaker's `/healthz` on node `i`.
fn health(lan: &Lan, i: usize) -> anyhow::Result<u16> {
    Ok(http_status(
        &lan.nodes[i].host,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        7473,
    )?)
}

#[tokio::test]
async fn while_the_api_server_is_silent_announcements_stay_and_a_dead_owner_is_taken_over()
-> anyhow::Result<()> {
    let mut lan = Lan::new("api-silent", 2).await?;
    // BGP with a password, so that every speaker keeps reading a Secret.
    let password = "api-outage-md5";
    let options = RouterOptions {
        password: Some(password.into()),
        graceful_restart: false,
        ..RouterOptions::default()
    };
    let (router, router_link) = lan.router(BgpDaemon::Gobgp, NODE_ASN, options)?;
    lan.password_secret("bgp-password", password)?;
    lan.bgp_peers(
        &router_link,
        NODE_ASN,
        json!({"passwordSecret": {"name": "bgp-password"}}),
    )?;
    lan.bgp_advertise(json!({}))?;
    lan.start_speakers()?;
    let ip = lan.web_on_every_node(false).await?[0];
    let owner = lan.resolve(ip).await?;
    let heir = 1 - owner;
    let every_node = lan.next_hops(ip, &[0, 1]);
    router.wait_next_hops(ip, &every_node, TIMEOUT).await?;

    lan.topology.silence_api(true);
    let silent_since = Instant::now();
    let mut checks = 0;
    while silent_since.elapsed() < SILENCE {
        assert_eq!(
            lan.answers(ip)?,
            [lan.nodes[owner].link.mac.clone()],
            "the owner answers for {ip} after {:?} of silence",
            silent_since.elapsed()
        );
        assert_eq!(router.next_hops(ip)?, every_node, "the router's routes");
        for i in 0..2 {
            assert_eq!(health(&lan, i)?, 200, "node {i}'s speaker is alive");
        }
        checks += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The owner dies while the API is still silent: the other node takes its address over
    // (gossip and the objects it had are all that takes), and the router keeps the route
    // through it.
    lan.nodes[owner].speaker.as_mut().expect("running").kill();
    let killed = Instant::now();
    lan.wait_answers(ip, &[heir]).await?;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(10),
        "taken over in {takeover:?}"
    );
    let heir_only = lan.next_hops(ip, &[heir]);
    router.wait_next_hops(ip, &heir_only, TIMEOUT).await?;
    assert_eq!(health(&lan, heir)?, 200, "the heir is alive");
    assert!(
        silent_since.elapsed() > SILENCE,
        "all of it while the API was silent"
    );
    println!(
        "API silent {:?}: {checks} checks of answers, routes and health, takeover in {takeover:?}",
        silent_since.elapsed()
    );

    // Once the API answers again, a new Service is announced within seconds.
    lan.topology.silence_api(false);
    lan.service("late", "web", "Cluster", false)?;
    let late = lan.ingress("late", 1).await?[0];
    lan.wait_answers(late, &[heir]).await?;
    Ok(())
}
