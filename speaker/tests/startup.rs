//! Started while the API server does not answer (a control-plane outage, a node booting
//! before the API is reachable): herald-speaker and herald-controller answer their liveness
//! probe at once and wait, instead of exiting or being restarted in a loop; the speaker is
//! not ready until it has the cluster's objects, and both go on as soon as the API answers.
//!
//! The outage is a proxy in front of the shared API server that accepts connections and
//! holds them, unanswered, until the test opens it.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use herald_tests::{
    ControlPlane, TestNamespace, herald::Controller, herald::binary, wait_for, world::TIMEOUT,
};
use tokio::{net::TcpListener, sync::watch};

/// A TCP proxy to `upstream` that holds every connection until `open` turns true.
async fn held_proxy(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, watch::Sender<bool>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (open, opened) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut opened = opened.clone();
            tokio::spawn(async move {
                if opened.wait_for(|open| *open).await.is_err() {
                    return;
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    Ok((address, open))
}

/// `GET path` on `port`: the status line.
async fn probe(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return "not listening".into();
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return "not answering".into();
    }
    let mut response = String::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response)).await;
    response.lines().next().unwrap_or_default().to_owned()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn started_while_the_api_server_is_silent_they_stay_alive_and_go_on_when_it_answers()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    cp.install_herald_crds()?;
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "startup").await?;
    let (proxy, open) = held_proxy(cp.api_address).await?;
    let dir = tempfile_dir(ns.name())?;
    let kubeconfig = dir.join("kubeconfig");
    let real = std::fs::read_to_string(&cp.kubeconfig)?;
    std::fs::write(
        &kubeconfig,
        real.replace(
            &format!("https://{}", cp.api_address),
            &format!("https://{proxy}"),
        ),
    )?;
    let key = dir.join("gossip.key");
    std::fs::write(&key, "a startup test key of 32 bytes..\n")?;
    let (speaker_port, gossip_port) = (free_port()?, free_port()?);
    let mut speaker = tokio::process::Command::new(binary("herald-speaker")?)
        .arg("--gossip-key-file")
        .arg(&key)
        .args([
            "--gossip-address=127.0.0.1",
            &format!("--gossip-port={gossip_port}"),
            &format!("--metrics-address=127.0.0.1:{speaker_port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("NODE_NAME", format!("{}-n1", ns.name()))
        .env("POD_NAMESPACE", ns.name())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut controller = Controller::start_as(&kubeconfig, ns.name(), "herald-controller", "up")?;

    wait_for("the speaker's liveness probe", TIMEOUT, || async {
        let status = probe(speaker_port, "/healthz").await;
        if status.contains("200") {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await?;
    let (health, _) = controller.http_get("/healthz")?;
    assert!(health.contains("200"), "the controller is alive: {health}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ready = probe(speaker_port, "/readyz").await;
    assert!(
        ready.contains("503"),
        "not ready without the cluster's objects: {ready}"
    );
    assert!(speaker.try_wait()?.is_none(), "the speaker waits");
    assert!(controller.is_running(), "the controller waits");

    open.send_replace(true);
    wait_for(
        "the speaker ready once the API answers",
        TIMEOUT,
        || async {
            let status = probe(speaker_port, "/readyz").await;
            if status.contains("200") {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await?;
    wait_for(
        "the controller to lead once the API answers",
        TIMEOUT,
        || async {
            let holder = cp
                .kubectl(&[
                    "-n",
                    ns.name(),
                    "get",
                    "lease",
                    "herald-controller",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ])
                .map_err(|e| e.to_string())?;
            if holder == "up" { Ok(()) } else { Err(holder) }
        },
    )
    .await?;
    assert!(speaker.try_wait()?.is_none(), "the speaker runs on");
    Ok(())
}

/// A directory of this test's own, under the system's temporary directory.
fn tempfile_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("herald-{name}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
