//! The Helm chart (`charts/herald`): `helm lint` is clean, the rendered objects are what a
//! careful operator expects (least privilege, hardened pods, a gossip key), the real API
//! server accepts every one of them (server-side dry run), and bad values are refused.

use std::path::PathBuf;

use herald_tests::{ControlPlane, TestNamespace};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/herald")
}

fn helm(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    cp.helm_command().args(args).output().expect("helm runs")
}

/// `helm template` with `extra` arguments, as parsed YAML documents.
fn render(cp: &ControlPlane, namespace: &str, extra: &[&str]) -> (String, Vec<serde_yaml::Value>) {
    let chart = chart();
    let mut args = vec![
        "template",
        "r",
        chart.to_str().expect("a UTF-8 path"),
        "-n",
        namespace,
    ];
    args.extend_from_slice(extra);
    let out = helm(cp, &args);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|d: &serde_yaml::Value| !d.is_null())
        .collect();
    (text, docs)
}

fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn strings(value: &serde_yaml::Value) -> Vec<&str> {
    value
        .as_sequence()
        .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn helm_lint_is_clean() {
    let cp = ControlPlane::shared();
    let chart = chart();
    let out = helm(
        cp,
        &["lint", "--strict", chart.to_str().expect("a UTF-8 path")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm lint:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("[WARNING]") && !text.contains("[ERROR]"),
        "{text}"
    );
}

#[test]
fn the_speaker_gets_the_host_network_and_raw_sockets_and_nothing_more() {
    let cp = ControlPlane::shared();
    let (_, docs) = render(cp, "herald-system", &[]);
    let speaker = find(&docs, "DaemonSet", "r-speaker");
    let pod = &speaker["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    let security = &pod["containers"][0]["securityContext"];
    assert_eq!(security["privileged"].as_bool(), Some(false));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&security["capabilities"]["add"]), ["NET_RAW"]);
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"].as_str(),
        Some("r-gossip")
    );
    // In the host's network, gossip and the probes listen on the node's address only.
    let env = pod["containers"][0]["env"].as_sequence().expect("env");
    for name in ["HERALD_GOSSIP_ADDRESS", "HERALD_METRICS_HOST"] {
        let var = env
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} is set"));
        assert_eq!(
            var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("status.hostIP"),
            "{name}"
        );
    }

    let controller = find(&docs, "Deployment", "r-controller");
    let pod = &controller["spec"]["template"]["spec"];
    assert_eq!(controller["spec"]["replicas"].as_u64(), Some(2));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let security = &pod["containers"][0]["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
}

#[test]
fn no_cluster_role_reads_secrets_and_only_the_controller_writes_services() {
    let cp = ControlPlane::shared();
    let (_, docs) = render(cp, "herald-system", &[]);
    for role in ["r-controller", "r-speaker"] {
        let rules = find(&docs, "ClusterRole", role)["rules"]
            .as_sequence()
            .expect("rules")
            .clone();
        for rule in &rules {
            assert!(
                !strings(&rule["resources"]).contains(&"secrets"),
                "{role}: {rule:?}"
            );
            assert!(!strings(&rule["verbs"]).contains(&"*"), "{role}: {rule:?}");
            let writes = ["patch", "update", "create", "delete"]
                .iter()
                .any(|v| strings(&rule["verbs"]).contains(v));
            if role == "r-speaker" && writes {
                let resources = strings(&rule["resources"]);
                assert!(
                    resources == ["events"]
                        || resources == ["servicel2statuses", "servicebgpstatuses"],
                    "the speaker writes only Events and its records: {rule:?}"
                );
            }
        }
    }
    // In Herald's namespace the speaker may get a Secret it is told the name of (a BGP
    // password), never list them, and write only its session and speaker records and its
    // heartbeat Lease.
    let role = find(&docs, "Role", "r-speaker");
    assert_eq!(
        role["metadata"]["namespace"].as_str(),
        Some("herald-system")
    );
    for rule in role["rules"].as_sequence().expect("rules") {
        let resources = strings(&rule["resources"]);
        if resources.contains(&"secrets") {
            assert_eq!(resources, ["secrets"]);
            assert_eq!(strings(&rule["verbs"]), ["get"], "{rule:?}");
        } else if resources.contains(&"leases") {
            assert_eq!(resources, ["leases"]);
            assert_eq!(
                strings(&rule["apiGroups"]),
                ["coordination.k8s.io"],
                "{rule:?}"
            );
        } else {
            assert_eq!(
                resources,
                ["bgpsessionstatuses", "speakerstatuses"],
                "{rule:?}"
            );
        }
    }
    // The controller may list and watch Secrets in Herald's namespace only, to judge the
    // BGPPeers' passwordSecret (it keeps only which keys each has), and create the gossip
    // key Secret and get that one; nothing more.
    let role = find(&docs, "Role", "r-controller-lease");
    let secret_rules: Vec<(Vec<&str>, Vec<&str>)> = role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter(|rule| strings(&rule["resources"]).contains(&"secrets"))
        .map(|rule| (strings(&rule["verbs"]), strings(&rule["resourceNames"])))
        .collect();
    assert_eq!(
        secret_rules,
        [
            (vec!["list", "watch"], vec![]),
            (vec!["create"], vec![]),
            (vec!["get"], vec!["r-gossip"]),
        ]
    );
}

#[test]
fn the_gossip_key_is_left_to_the_controller_and_pools_advertisements_and_peers_come_from_values() {
    let cp = ControlPlane::shared();
    let (_, docs) = render(
        cp,
        "herald-system",
        &[
            "--set",
            "pools[0].name=lan",
            "--set",
            "pools[0].addresses={192.0.2.64/26}",
            "--set",
            "l2Advertisements[0].name=lan",
            "--set",
            "l2Advertisements[0].ipAddressPools={lan}",
            "--set",
            "bgpPeers[0].name=tor",
            "--set",
            "bgpPeers[0].peerAddress=192.0.2.254",
            "--set",
            "bgpAdvertisements[0].name=public",
            "--set",
            "bgpAdvertisements[0].localPref=150",
        ],
    );
    // The key does not depend on the rendering: the controller creates its Secret.
    assert!(docs.iter().all(|d| d["kind"].as_str() != Some("Secret")));
    let controller = find(&docs, "Deployment", "r-controller");
    assert!(
        strings(&controller["spec"]["template"]["spec"]["containers"][0]["args"])
            .contains(&"--gossip-secret=r-gossip")
    );
    let pool = find(&docs, "IPAddressPool", "lan");
    assert_eq!(strings(&pool["spec"]["addresses"]), ["192.0.2.64/26"]);
    let adv = find(&docs, "L2Advertisement", "lan");
    assert_eq!(strings(&adv["spec"]["ipAddressPools"]), ["lan"]);
    let peer = find(&docs, "BGPPeer", "tor");
    assert_eq!(peer["spec"]["peerAddress"].as_str(), Some("192.0.2.254"));
    let adv = find(&docs, "BGPAdvertisement", "public");
    assert_eq!(adv["spec"]["localPref"].as_i64(), Some(150));
    // An existing Secret is used as it is.
    let (_, docs) = render(
        cp,
        "herald-system",
        &["--set", "speaker.gossip.existingSecret=mine"],
    );
    assert!(docs.iter().all(|d| d["kind"].as_str() != Some("Secret")));
    let speaker = find(&docs, "DaemonSet", "r-speaker");
    assert_eq!(
        speaker["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"].as_str(),
        Some("mine")
    );
}

/// The settings operators expect of any chart are there, and Helm's `global` (set when Herald
/// is a subchart) is accepted.
#[test]
fn standard_pod_settings_reach_both_workloads_and_global_is_accepted() {
    let cp = ControlPlane::shared();
    let (_, docs) = render(
        cp,
        "herald-system",
        &[
            "--set",
            "global.imageRegistry=registry.example",
            "--set",
            "imagePullSecrets[0].name=regcred",
            "--set",
            "logLevel=info\\,herald_speaker=debug",
            "--set",
            "speaker.priorityClassName=system-node-critical",
            "--set",
            "controller.podLabels.team=net",
            "--set",
            "controller.podAnnotations.example\\.com/owner=net",
            "--set",
            "speaker.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=edge",
            "--set",
            "speaker.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ],
    );
    for (kind, name) in [("Deployment", "r-controller"), ("DaemonSet", "r-speaker")] {
        let template = &find(&docs, kind, name)["spec"]["template"];
        let pod = &template["spec"];
        assert_eq!(
            pod["imagePullSecrets"][0]["name"].as_str(),
            Some("regcred"),
            "{kind}"
        );
        let env = pod["containers"][0]["env"].as_sequence().expect("env");
        assert!(
            env.iter().any(|e| e["name"].as_str() == Some("RUST_LOG")
                && e["value"].as_str() == Some("info,herald_speaker=debug")),
            "{kind}: {env:?}"
        );
    }
    let speaker = &find(&docs, "DaemonSet", "r-speaker")["spec"]["template"]["spec"];
    assert_eq!(
        speaker["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    assert_eq!(
        speaker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["key"]
            .as_str(),
        Some("edge")
    );
    let controller = &find(&docs, "Deployment", "r-controller")["spec"]["template"];
    assert_eq!(
        controller["metadata"]["labels"]["team"].as_str(),
        Some("net")
    );
    assert_eq!(
        controller["metadata"]["annotations"]["example.com/owner"].as_str(),
        Some("net")
    );
}

#[test]
fn bad_values_are_refused_with_the_field_named() {
    let cp = ControlPlane::shared();
    let chart = chart();
    for (set, field) in [
        ("controller.replicas=0", "/controller/replicas"),
        ("speaker.gossip.port=70000", "/speaker/gossip/port"),
        ("logFormat=xml", "/logFormat"),
        ("speaker.gosip.port=1", "gosip"),
        (
            "controller.priorityClassName[0]=high",
            "/controller/priorityClassName",
        ),
        ("imagePullSecrets[0].nam=regcred", "/imagePullSecrets/0"),
    ] {
        let out = helm(
            cp,
            &["template", "r", chart.to_str().expect("path"), "--set", set],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} accepted");
        assert!(err.contains(field), "{set}: {err}");
    }
}

/// A namespace that enforces the restricted Pod Security level would reject every speaker
/// Pod: the install is refused at once, naming the level and the command that fixes it.
#[tokio::test]
async fn a_namespace_enforcing_restricted_pod_security_is_refused_with_the_fix()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    cp.install_herald_crds()?;
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "psa").await?;
    cp.kubectl(&[
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
    ])?;
    let chart = chart();
    let install = |namespace: &str| {
        helm(
            cp,
            &[
                "install",
                "psa",
                chart.to_str().expect("path"),
                "-n",
                namespace,
                "--dry-run=server",
            ],
        )
    };
    let out = install(ns.name());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "installed into a restricted namespace"
    );
    assert!(
        err.contains("enforces the \"restricted\" Pod Security level")
            && err.contains(&format!(
                "kubectl label namespace {} pod-security.kubernetes.io/enforce=privileged",
                ns.name()
            )),
        "{err}"
    );
    cp.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=privileged",
    ])?;
    let out = install(ns.name());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn the_api_server_accepts_every_rendered_object() -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    cp.install_herald_crds()?;
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "chart").await?;
    let (text, _) = render(
        cp,
        ns.name(),
        &[
            "--set",
            "pools[0].name=chart-test",
            "--set",
            "pools[0].addresses={192.0.2.64/26}",
        ],
    );
    let out = cp.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &text)?;
    for kind in [
        "deployment.apps/r-controller",
        "daemonset.apps/r-speaker",
        "clusterrole.rbac.authorization.k8s.io/r-speaker",
        "ipaddresspool.herald.dev/chart-test",
    ] {
        assert!(out.contains(kind), "{kind} accepted:\n{out}");
    }
    Ok(())
}

/// Monitoring is optional and named for what it makes: PodMonitors, a PrometheusRule with
/// Herald's alerts, and the Grafana dashboard for the sidecar.
#[test]
fn pod_monitors_alerts_and_the_dashboard_come_when_asked() {
    let cp = ControlPlane::shared();
    let (_, docs) = render(cp, "herald-system", &[]);
    for kind in ["PodMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(
            docs.iter().all(|d| d["kind"].as_str() != Some(kind)),
            "no {kind} by default"
        );
    }
    let (_, docs) = render(
        cp,
        "herald-system",
        &[
            "--set",
            "podMonitor.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
            // Helm's --set keeps decimals as strings; --set-json gives the number.
            "--set-json",
            "prometheusRule.poolUsageRatio=0.8",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    );
    for component in ["controller", "speaker"] {
        let monitor = find(&docs, "PodMonitor", &format!("r-{component}"));
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"].as_str(),
            Some(component)
        );
    }
    let rule = find(&docs, "PrometheusRule", "r");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        [
            "HeraldPoolNearlyExhausted",
            "HeraldServiceWithoutAddress",
            "HeraldBGPSessionDown",
            "HeraldL2AddressUnanswered",
            "HeraldGossipPartitioned",
            "HeraldGossipKeyMismatch",
            "HeraldConfigurationNotInEffect",
            "HeraldWritesFailing",
        ]
    );
    let pool = rule["spec"]["groups"][0]["rules"][0]["expr"]
        .as_str()
        .expect("an expression");
    assert!(pool.contains("> 0.8"), "{pool}");
    let dashboard = find(&docs, "ConfigMap", "r-dashboard");
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["herald.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "herald");
    assert!(json["panels"].as_array().expect("panels").len() >= 10);
    // The old name says PodMonitors are ServiceMonitors: refused, with the field named.
    let chart = chart();
    let out = helm(
        cp,
        &[
            "template",
            "r",
            chart.to_str().expect("a UTF-8 path"),
            "--set",
            "serviceMonitor.enabled=true",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("serviceMonitor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric the chart's alerts and dashboard read is one the binaries register: a name
/// mistyped in a rule would make an alert that never fires.
#[test]
fn the_alerts_and_the_dashboard_read_only_metrics_herald_serves() {
    let cp = ControlPlane::shared();
    let (text, _) = render(
        cp,
        "herald-system",
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    );
    let root = chart().join("../..");
    let source = |path: &str| std::fs::read_to_string(root.join(path)).expect("the source");
    let (controller, speaker, process) = (
        source("controller/src/metrics.rs"),
        source("speaker/src/metrics.rs"),
        source("crates/shell/src/process.rs"),
    );
    let referenced: std::collections::BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("herald_") || word.starts_with("process_"))
        .collect();
    assert!(referenced.len() >= 15, "{referenced:?}");
    for name in referenced {
        let family = name.strip_suffix("_total").unwrap_or(name);
        let registered = if let Some(short) = family.strip_prefix("herald_controller_") {
            controller.contains(&format!("\"{short}\""))
        } else if let Some(short) = family.strip_prefix("herald_speaker_") {
            speaker.contains(&format!("\"{short}\""))
        } else {
            process.contains(&format!("\"{family}\""))
        };
        assert!(
            registered,
            "{name}, read by the chart, is registered by no binary"
        );
    }
}

/// The alerts, checked by Prometheus' own `promtool` and unit-tested on series as the
/// PodMonitors scrape them: each fires on what it is for, not before its `for`, and the
/// controller's gauges count from the leader only (a replica that led before keeps stale
/// values).
#[test]
fn the_alerts_fire_on_what_they_are_for_and_read_the_leader_only() {
    let cp = ControlPlane::shared();
    let (_, docs) = render(
        cp,
        "herald-system",
        &["--set", "prometheusRule.enabled=true"],
    );
    let rule = find(&docs, "PrometheusRule", "r");
    let dir = std::env::temp_dir().join(format!("herald-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, serde_yaml::to_string(&rule["spec"]).expect("YAML")).expect("written");
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new(cp.tool("promtool"))
            .args(args)
            .output()
            .expect("promtool runs (tests/install-deps builds it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["check", "rules", rules.to_str().expect("UTF-8")]);

    // The annotations as Prometheus expands them for `labels` and `value`.
    let annotations = |alert: &str, labels: &[(&str, &str)], value: &str| {
        let rule = rule["spec"]["groups"][0]["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .find(|r| r["alert"].as_str() == Some(alert))
            .expect("the alert")
            .clone();
        let mut expanded = serde_yaml::Mapping::new();
        for (key, text) in rule["annotations"].as_mapping().expect("annotations") {
            let mut text = text.as_str().expect("text").replace("{{ $value }}", value);
            for (name, label) in labels {
                text = text.replace(&format!("{{{{ $labels.{name} }}}}"), label);
            }
            expanded.insert(key.clone(), text.into());
        }
        serde_yaml::Value::Mapping(expanded)
    };
    let controller =
        |pod: &str, rest: &str| format!("{{namespace=\"herald-system\",pod=\"{pod}\"{rest}}}");
    let speaker =
        |pod: &str, rest: &str| format!("{{namespace=\"herald-system\",pod=\"{pod}\"{rest}}}");
    let series = |name: &str, labels: String, values: &str| serde_json::json!({"series": format!("{name}{labels}"), "values": values});
    let pool = |pod: &str, pool: &str, state: &str, values: &str| {
        series(
            "herald_controller_pool_addresses",
            controller(
                pod,
                &format!(",pool=\"{pool}\",family=\"ipv4\",state=\"{state}\""),
            ),
            values,
        )
    };
    let tests = serde_json::json!({
        "rule_files": [rules.to_str().expect("UTF-8")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                series("herald_controller_leader", controller("c-0", ""), "1x30"),
                series("herald_controller_leader", controller("c-1", ""), "0x30"),
                // The leader: lan 60 of 64 assigned (94 %), big 1 of 64.
                pool("c-0", "lan", "assigned", "60x30"),
                pool("c-0", "lan", "available", "4x30"),
                pool("c-0", "big", "assigned", "1x30"),
                pool("c-0", "big", "available", "63x30"),
                // A replica that led before: stale values, big full.
                pool("c-1", "big", "assigned", "64x30"),
                pool("c-1", "big", "available", "0x30"),
                series("herald_controller_services_without_address", controller("c-0", ""), "2x30"),
                series("herald_controller_services_without_address", controller("c-1", ""), "9x30"),
                // One speaker sees only itself; its BGP session is down.
                series("herald_speaker_members", speaker("s-0", ""), "3x30"),
                series("herald_speaker_members", speaker("s-1", ""), "3x30"),
                series("herald_speaker_members", speaker("s-2", ""), "1x30"),
                series("herald_speaker_bgp_session_up", speaker("s-0", ",peer=\"tor\""), "1x30"),
                series("herald_speaker_bgp_session_up", speaker("s-2", ",peer=\"tor\""), "0x30"),
                series("herald_speaker_gossip_unauthenticated_nodes", speaker("s-0", ""), "0x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "HeraldPoolNearlyExhausted", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "HeraldPoolNearlyExhausted", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "pool": "lan", "family": "ipv4"},
                    "exp_annotations": annotations("HeraldPoolNearlyExhausted",
                        &[("pool", "lan"), ("family", "ipv4")], ""),
                }]},
                {"eval_time": "10m", "alertname": "HeraldServiceWithoutAddress", "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": annotations("HeraldServiceWithoutAddress", &[], "2"),
                }]},
                {"eval_time": "1m", "alertname": "HeraldGossipPartitioned", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "HeraldGossipPartitioned", "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": annotations("HeraldGossipPartitioned", &[], ""),
                }]},
                {"eval_time": "10m", "alertname": "HeraldBGPSessionDown", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "herald-system",
                                   "pod": "s-2", "peer": "tor"},
                    "exp_annotations": annotations("HeraldBGPSessionDown",
                        &[("peer", "tor"), ("pod", "s-2")], "0"),
                }]},
                {"eval_time": "10m", "alertname": "HeraldGossipKeyMismatch", "exp_alerts": []},
            ],
        }],
    });
    let test_file = dir.join("tests.yaml");
    std::fs::write(&test_file, serde_yaml::to_string(&tests).expect("YAML")).expect("written");
    promtool(&["test", "rules", test_file.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_dir_all(&dir);
}
