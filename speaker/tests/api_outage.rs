//! The API server stops answering (stopped, overloaded, cut off) while the speakers work:
//! nothing they announce depends on it.
//! - Every node host reaches the API through a forwarder that the test silences, which looks
//!   to the speakers exactly like a stopped kube-apiserver (connections accepted, nothing
//!   answered); the shared API server itself keeps serving the other tests and the
//!   controller.
//! - On a control plane of its own, the real kube-apiserver is stopped (SIGSTOP) for 30 s,
//!   then killed for 30 s, under the speakers and the controller, then started again.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use herald_tests::{
    ControlPlane, PrivateControlPlane,
    datapath::http_status,
    routers::BgpDaemon,
    world::{Lan, NODE_ASN, POOL, RouterOptions, TIMEOUT},
};
use nix::sys::signal::Signal;
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

/// Stops a leaked private control plane when the test ends (after the LAN, declared later,
/// is gone).
struct Down(&'static PrivateControlPlane);

impl Drop for Down {
    fn drop(&mut self) {
        self.0.down();
    }
}

/// One check while the API is away: `ip` answered by the owner alone, the router's paths to
/// it through both nodes, every process of Herald still running.
fn everything_stays(
    lan: &mut Lan,
    router: &herald_tests::routers::BgpRouter,
    ip: IpAddr,
    owner: usize,
) -> anyhow::Result<()> {
    let answers = lan.answers(ip)?;
    anyhow::ensure!(
        answers == [lan.nodes[owner].link.mac.clone()],
        "{ip} answered by {answers:?}"
    );
    let hops = router.next_hops(ip)?;
    anyhow::ensure!(hops == lan.next_hops(ip, &[0, 1]), "{ip} via {hops:?}");
    for node in &mut lan.nodes {
        let speaker = node.speaker.as_mut().expect("started");
        anyhow::ensure!(speaker.is_running(), "the speaker of {} exited", node.name);
    }
    anyhow::ensure!(lan.controller.is_running(), "the controller exited");
    Ok(())
}

#[tokio::test]
async fn the_api_server_stopped_then_killed_for_a_minute_takes_nothing_away() -> anyhow::Result<()>
{
    let private: &'static PrivateControlPlane =
        Box::leak(Box::new(ControlPlane::private("outage", 33800)?));
    let _down = Down(private);
    let mut lan = Lan::on(&private.control_plane, "api-down", 2, &POOL).await?;
    let (router, link) = lan.router(BgpDaemon::Gobgp, NODE_ASN, RouterOptions::default())?;
    lan.bgp_peers(&link, NODE_ASN, json!({}))?;
    lan.bgp_advertise(json!({}))?;
    lan.start_speakers()?;
    let ip = lan.web_on_every_node(false).await?[0];
    let owner = lan.resolve(ip).await?;
    router
        .wait_next_hops(ip, &lan.next_hops(ip, &[0, 1]), TIMEOUT)
        .await?;

    let mut checks = 0;
    for (phase, signal) in [("stopped", Signal::SIGSTOP), ("killed", Signal::SIGKILL)] {
        private.signal("kube-apiserver", signal)?;
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(30) {
            everything_stays(&mut lan, &router, ip, owner).map_err(|e| {
                anyhow::anyhow!("kube-apiserver {phase} {:?}: {e}", since.elapsed())
            })?;
            checks += 1;
        }
    }
    let back = Instant::now();
    private.restart_apiserver()?;
    let restarted = back.elapsed();
    // Afterwards: a new Service gets its address and both announcements within seconds.
    let created = Instant::now();
    lan.service("after", "web", "Cluster", false)?;
    let new_ip = match lan.ingress("after", 1).await {
        Ok(ips) => ips[0],
        Err(e) => anyhow::bail!(
            "{e}; kube-apiserver {:?} alive {:?}; the controller's log:\n{}",
            private.pid("kube-apiserver"),
            private
                .pid("kube-apiserver")
                .map(|pid| nix::sys::signal::kill(pid, None).is_ok()),
            lan.controller.log()
        ),
    };
    let allocated = created.elapsed();
    if let Err(e) = router
        .wait_next_hops(new_ip, &lan.next_hops(new_ip, &[0, 1]), TIMEOUT)
        .await
    {
        anyhow::bail!(
            "{e}; EndpointSlices: {:?}; kube-controller-manager {:?}; the speakers' logs:\n{}",
            lan.kubectl(&["get", "endpointslices", "-o", "wide"]),
            private
                .pid("kube-controller-manager")
                .map(|pid| nix::sys::signal::kill(pid, None).is_ok()),
            lan.speaker_logs()
        );
    }
    let routed = created.elapsed();
    let new_owner = lan.resolve(new_ip).await?;
    let answered = created.elapsed();
    // Nothing stale: the first Service is announced as before, and each record is right.
    everything_stays(&mut lan, &router, ip, owner)?;
    lan.wait_records("web", &[(ip, owner)]).await?;
    lan.wait_records("after", &[(new_ip, new_owner)]).await?;
    println!(
        "kube-apiserver stopped 30 s then killed 30 s: {checks} checks, each with the address \
         answered by its owner alone, both BGP paths, every speaker and the controller running; \
         started again in {restarted:?}; a new Service then had its address in {allocated:?}, \
         its BGP paths in {routed:?} and a layer-2 answer in {answered:?}"
    );
    Ok(())
}
