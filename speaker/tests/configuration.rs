//! Configuration problems are visible in kubectl: each bad BGPPeer, BFDProfile,
//! L2Advertisement and BGPAdvertisement, applied to a running cluster, shows in its own
//! `Ready` condition within seconds with the field named, told once by an Event; fixing it
//! clears the condition; and what was working (a BGP session, a route, a layer-2 answer) goes
//! on working throughout. Per node, the SpeakerStatus record says whether the node announces
//! and what only it cannot use (an interface it lacks, a Secret it cannot use), and a
//! ServiceBGPStatus says which peers have a Service's routes from it.

use std::time::{Duration, Instant};

use herald_domain::{Family, Prefix};
use herald_tests::world::Lan;
use herald_tests::{routers::BgpDaemon, wait_for};
use serde_json::json;

/// How soon a condition must show what is wrong (or that it is fixed).
const WITHIN: Duration = Duration::from_secs(15);
/// How soon a speaker reads a changed password Secret again (it may `get`, not watch).
const PASSWORD_REREAD: Duration = Duration::from_secs(45);
/// How long the steady state is watched for Events that should not come.
const STEADY: Duration = Duration::from_secs(60);

/// `status, reason, message` of the object's Ready condition.
fn ready(lan: &Lan, kind: &str, name: &str) -> Result<(String, String, String), String> {
    let path = |field: &str| format!("{{.status.conditions[?(@.type==\"Ready\")].{field}}}");
    let out = lan
        .cp
        .kubectl(&[
            "get",
            kind,
            name,
            "-o",
            &format!(
                "jsonpath={}|{}|{}",
                path("status"),
                path("reason"),
                path("message")
            ),
        ])
        .map_err(|e| e.to_string())?;
    let mut parts = out.splitn(3, '|').map(str::to_owned);
    Ok((
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    ))
}

/// Waits until the object's Ready condition has `status` and `reason`, with a message
/// containing `text`; returns how long that took.
async fn wait_ready(
    lan: &Lan,
    kind: &str,
    name: &str,
    (status, reason, text): (&str, &str, &str),
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    wait_for(
        &format!("{kind} {name}: Ready {status} ({reason}) saying {text:?}"),
        WITHIN,
        || async {
            let now = ready(lan, kind, name)?;
            if now.0 == status && now.1 == reason && now.2.contains(text) {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await?;
    Ok(start.elapsed())
}

/// The number of Events `kubectl get events ARGS` lists, counting repeats.
fn count_events(lan: &Lan, args: &[&str]) -> anyhow::Result<u64> {
    let mut full = vec!["get", "events"];
    full.extend_from_slice(args);
    full.extend(["-o", "jsonpath={range .items[*]}{.count}{\"\\n\"}{end}"]);
    Ok(lan
        .cp
        .kubectl(&full)?
        .lines()
        .map(|count| count.trim().parse::<u64>().unwrap_or(1))
        .sum())
}

/// The number of Events with `reason` about cluster-scoped object `name` (they are kept in
/// `default`).
fn events(lan: &Lan, name: &str, reason: &str) -> anyhow::Result<u64> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    count_events(lan, &["-n", "default", "--field-selector", &selector])
}

/// Every Event in the test's namespace (the speakers' and the controller's, about Services).
fn namespace_events(lan: &Lan) -> anyhow::Result<u64> {
    count_events(lan, &["-n", lan.ns.name()])
}

#[tokio::test]
async fn every_bad_configuration_is_shown_in_its_condition_and_fixing_it_clears_it()
-> anyhow::Result<()> {
    let mut lan = Lan::new("config", 2).await?;
    let ns = lan.ns.name().to_owned();
    lan.start_speakers()?;
    let (router, _) = lan.peered_router(BgpDaemon::Gobgp)?;
    let ip = lan.web_on_every_node(false).await?[0];
    let owner = lan.resolve(ip).await?;
    let route = Prefix::host(ip).to_string();
    let routed = |router: &herald_tests::routers::BgpRouter| -> anyhow::Result<usize> {
        Ok(router
            .routes(Family::of(ip))?
            .iter()
            .filter(|r| r.prefix == route)
            .count())
    };
    wait_for("both nodes' routes at the router", WITHIN, || async {
        match routed(&router) {
            Ok(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let good = [
        (
            "bgppeer",
            format!("{ns}-v4"),
            "speakers on 2 nodes peer with it",
        ),
        ("bgpadvertisement", format!("{ns}-bgp"), "from 2 nodes"),
        ("l2advertisement", format!("{ns}-l2"), "from 2 nodes"),
    ];
    for (kind, name, text) in &good {
        wait_ready(&lan, kind, name, ("True", "InEffect", text)).await?;
    }
    // What each node does, at a glance: both announce, without problems, and both advertise
    // the Service to the IPv4 peer.
    let speakers = |lan: &Lan| {
        lan.kubectl(&[
            "get",
            "speakerstatuses",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.node} {.spec.announcing} {.spec.problemCount} {.spec.problems}{"\n"}{end}"#,
        ])
    };
    let nodes: Vec<String> = lan.nodes.iter().map(|n| n.name.clone()).collect();
    let all_fine = |within: Duration| {
        wait_for(
            "every SpeakerStatus: announcing, no problem",
            within,
            || async {
                let now = speakers(&lan).map_err(|e| e.to_string())?;
                let fine = nodes
                    .iter()
                    .all(|n| now.lines().any(|l| l == format!("{n} true 0 ")));
                if fine { Ok(()) } else { Err(now) }
            },
        )
    };
    all_fine(WITHIN).await?;
    wait_for("a ServiceBGPStatus from each node", WITHIN, || async {
        let now = lan
            .kubectl(&[
                "get",
                "servicebgpstatuses",
                "-o",
                r#"jsonpath={range .items[*]}{.spec.service} {.spec.node} {.spec.prefixes} {.spec.peers}{"\n"}{end}"#,
            ])
            .map_err(|e| e.to_string())?;
        let fine = nodes.iter().all(|n| {
            now.lines()
                .any(|l| l == format!("web {n} [\"{route}\"] [\"{ns}-v4\"]"))
        });
        if fine { Ok(()) } else { Err(now) }
    })
    .await?;

    // What only a node can know: which interfaces it has. An advertisement naming one that
    // no node has leaves the owner unable to answer, and its record says so.
    lan.advertise(json!({"interfaces": ["eth9"]}))?;
    let owner_name = lan.nodes[owner].name.clone();
    wait_for(
        "the owner's SpeakerStatus names the missing interface",
        WITHIN,
        || async {
            let now = speakers(&lan).map_err(|e| e.to_string())?;
            let line = now
                .lines()
                .find(|l| l.starts_with(&format!("{owner_name} ")))
                .unwrap_or_default()
                .to_owned();
            if line.contains(&format!("{ip} is this node's to announce"))
                && line.contains("spec.interfaces: eth9")
            {
                Ok(())
            } else {
                Err(now)
            }
        },
    )
    .await?;
    // The alert's metric counts it.
    assert_eq!(
        lan.metric(owner, "herald_speaker_unanswerable_addresses")?,
        1.0
    );
    lan.advertise(json!({}))?;
    lan.wait_answers(ip, &[owner]).await?;
    assert_eq!(
        lan.metric(owner, "herald_speaker_unanswerable_addresses")?,
        0.0
    );
    // Everything that can be wrong cluster-wide, at once.
    let peer = |name: &str, extra: serde_json::Value| {
        let mut spec = json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "198.51.100.1",
                              "nodeSelectors": [{"matchLabels": {"herald.dev/test": ns}}]});
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
               "metadata": {"name": format!("{ns}-{name}")}, "spec": spec})
    };
    let objects = [
        peer("nobfd", json!({"bfdProfile": format!("{ns}-fast")})),
        peer("nosecret", json!({"passwordSecret": {"name": "md5"}})),
        peer(
            "nowhere",
            json!({"nodeSelectors": [{"matchLabels": {"rack": "r9"}}]}),
        ),
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BFDProfile",
               "metadata": {"name": format!("{ns}-echo")}, "spec": {"echoMode": true}}),
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
               "metadata": {"name": format!("{ns}-typo")},
               "spec": {"ipAddressPools": [format!("{ns}-lann")]}}),
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
               "metadata": {"name": format!("{ns}-badsel")},
               "spec": {"ipAddressPools": [lan.pool],
                        "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "Near"}]}]}}),
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BGPAdvertisement",
               "metadata": {"name": format!("{ns}-lost")},
               "spec": {"ipAddressPools": [lan.pool], "peers": [format!("{ns}-spine")],
                        "nodeSelectors": [{"matchLabels": {"herald.dev/test": ns}}]}}),
    ];
    for object in &objects {
        lan.apply_owned(object)?;
    }
    let bad = [
        (
            "bgppeer",
            "nobfd",
            "MissingReference",
            format!("spec.bfdProfile: BFDProfile {ns}-fast does not exist"),
        ),
        (
            "bgppeer",
            "nosecret",
            "MissingReference",
            format!("spec.passwordSecret: Secret {ns}/md5 does not exist"),
        ),
        (
            "bgppeer",
            "nowhere",
            "NoNodeSelected",
            "spec.nodeSelectors: no node matches".to_owned(),
        ),
        (
            "bfdprofile",
            "echo",
            "InvalidSpec",
            format!("BFDProfile {ns}-echo: spec.echoMode: the echo function is not implemented"),
        ),
        (
            "l2advertisement",
            "typo",
            "MissingReference",
            format!("spec.ipAddressPools: no IPAddressPool {ns}-lann"),
        ),
        (
            "l2advertisement",
            "badsel",
            "InvalidSpec",
            "spec.nodeSelectors[0].matchExpressions[0].operator".to_owned(),
        ),
        (
            "bgpadvertisement",
            "lost",
            "MissingReference",
            format!("spec.peers: no BGPPeer {ns}-spine"),
        ),
    ];
    let mut slowest = Duration::ZERO;
    for (kind, name, reason, text) in &bad {
        let took = wait_ready(&lan, kind, &format!("{ns}-{name}"), ("False", reason, text)).await?;
        slowest = slowest.max(took);
    }
    println!(
        "{} bad objects shown in their Ready condition, the last {} ms after the first was \
         looked for",
        bad.len(),
        slowest.as_millis()
    );
    let shown = lan
        .cp
        .kubectl(&["get", "bgppeer", &format!("{ns}-nobfd")])?;
    assert!(
        shown.contains("READY") && shown.contains("False") && shown.contains("MissingReference"),
        "kubectl get shows it at a glance:\n{shown}"
    );

    // Told once each, and nothing else said while nothing changes; meanwhile what worked
    // still works.
    let before = namespace_events(&lan)?;
    tokio::time::sleep(STEADY).await;
    for (_, name, _, _) in &bad {
        let name = format!("{ns}-{name}");
        assert_eq!(events(&lan, &name, "NotInEffect")?, 1, "{name}");
    }
    assert_eq!(
        namespace_events(&lan)?,
        before,
        "no Event about Services in a steady minute"
    );
    assert_eq!(routed(&router)?, 2, "both routes stay");
    assert_eq!(
        router.established_peers()?.len(),
        4,
        "both nodes, both families"
    );
    assert_eq!(
        lan.resolve(ip).await?,
        owner,
        "the address stays where it was"
    );
    for (kind, name, text) in &good {
        let now = ready(&lan, kind, name).map_err(anyhow::Error::msg)?;
        assert!(
            now.0 == "True" && now.2.contains(text),
            "{kind} {name}: {now:?}"
        );
    }

    // Fixed, each clears.
    lan.apply_owned(
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BFDProfile",
        "metadata": {"name": format!("{ns}-fast")}, "spec": {}}),
    )?;
    lan.password_secret("md5", "config-test")?;
    lan.apply_owned(&peer("nowhere", json!({})))?;
    lan.apply_owned(
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BFDProfile",
        "metadata": {"name": format!("{ns}-echo")}, "spec": {"echoMode": false}}),
    )?;
    lan.apply_owned(
        &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
        "metadata": {"name": format!("{ns}-typo")}, "spec": {"ipAddressPools": [lan.pool]}}),
    )?;
    lan.apply_owned(&json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
        "metadata": {"name": format!("{ns}-badsel")},
        "spec": {"ipAddressPools": [lan.pool],
                 "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "DoesNotExist"}]}]}}))?;
    lan.apply_owned(&peer("spine", json!({})))?;
    for (kind, name, _, _) in &bad {
        let name = format!("{ns}-{name}");
        wait_ready(&lan, kind, &name, ("True", "InEffect", "")).await?;
    }
    // Events go out in the background, just after the status.
    for (_, name, _, _) in &bad {
        let name = format!("{ns}-{name}");
        wait_for(
            &format!("{name} told it is in effect, once"),
            WITHIN,
            || async {
                match events(&lan, &name, "InEffect") {
                    Ok(1) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await?;
    }
    assert_eq!(routed(&router)?, 2, "both routes stay");

    // What only a node can know: what it reads of a Secret.
    lan.apply(
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "nokey"}, "stringData": {"username": "herald"}}),
    )?;
    lan.apply_owned(&peer("nokey", json!({"passwordSecret": {"name": "nokey"}})))?;
    wait_ready(
        &lan,
        "bgppeer",
        &format!("{ns}-nokey"),
        ("False", "MissingReference", "has no key \"password\""),
    )
    .await?;
    wait_for(
        "every SpeakerStatus names the unreadable password",
        WITHIN,
        || async {
            let now = speakers(&lan).map_err(|e| e.to_string())?;
            let lines: Vec<&str> = now.lines().filter(|l| !l.is_empty()).collect();
            let problem =
                format!("BGPPeer {ns}-nokey: spec.passwordSecret: Secret nokey has no key");
            if lines.len() == 2
                && lines
                    .iter()
                    .all(|l| l.contains(" true ") && l.contains(&problem))
            {
                Ok(())
            } else {
                Err(now)
            }
        },
    )
    .await?;
    lan.password_secret("nokey", "config-test")?;
    // Speakers read password Secrets again every 30 s.
    all_fine(PASSWORD_REREAD).await?;
    Ok(())
}
