//! RBAC proven, not guessed: the chart is installed with `helm install` on the real API
//! server, then herald-controller and herald-speaker run with tokens of the chart's own
//! ServiceAccounts through a whole layer-2 story (allocation, pool status, Lease, Events,
//! announcement, ServiceL2Status records), with no "forbidden" anywhere in their logs; and
//! those accounts cannot read Secrets or write what they should not.

mod common;

use std::{path::PathBuf, process::Command};

use common::Lan;
use herald_tests::{ControlPlane, herald::Controller};

fn helm(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cp.tool("helm"))
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Uninstalls the release (its ClusterRoles are cluster-wide) when the test ends.
struct Release {
    cp: ControlPlane,
    namespace: String,
    name: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&self.cp, &["uninstall", &self.name, "-n", &self.namespace]);
    }
}

#[tokio::test]
async fn the_charts_service_accounts_can_do_all_herald_needs_and_no_more() -> anyhow::Result<()> {
    let mut lan = Lan::new("rbac", 2).await?;
    let name = format!("h{}", std::process::id());
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/herald");
    let namespace = lan.ns.name().to_owned();
    helm(
        lan.cp,
        &[
            "install",
            &name,
            chart.to_str().expect("path"),
            "-n",
            &namespace,
        ],
    )?;
    let _release = Release {
        cp: lan.cp.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let dir = lan.topology.dir().to_owned();
    let (controller_config, speaker_config) = (
        dir.join("controller.kubeconfig"),
        dir.join("speaker.kubeconfig"),
    );
    lan.cp.service_account_kubeconfig(
        &namespace,
        &format!("{name}-controller"),
        &controller_config,
    )?;
    lan.cp
        .service_account_kubeconfig(&namespace, &format!("{name}-speaker"), &speaker_config)?;

    // The API server's authorizer learns of new bindings through a watch: wait until it
    // knows them, so that a refusal below means a missing rule, not a new binding.
    for (account, verb, resource) in [
        ("controller", "patch", "services"),
        ("speaker", "create", "servicel2statuses.herald.dev"),
    ] {
        let subject = format!("system:serviceaccount:{namespace}:{name}-{account}");
        herald_tests::wait_for(
            &format!("{account}'s binding in effect"),
            common::TIMEOUT,
            || async {
                let out = lan
                    .cp
                    .kubectl_command()
                    .args([
                        "auth", "can-i", verb, resource, "--as", &subject, "-n", &namespace,
                    ])
                    .output()
                    .map_err(|e| e.to_string())?;
                let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if answer == "yes" { Ok(()) } else { Err(answer) }
            },
        )
        .await?;
    }

    // The whole story with the chart's credentials.
    lan.controller = Controller::start_as(
        &controller_config,
        &namespace,
        &format!("{name}-controller"),
        "rbac",
    )?;
    lan.speaker_kubeconfig = speaker_config.clone();
    lan.start_speakers()?;
    let ips = lan.web_on_every_node(true).await?;
    let mut owners = Vec::new();
    for &ip in &ips {
        let owner = lan.resolve(ip).await?;
        lan.event(
            "web",
            &format!("announcing {ip} from node {}", lan.nodes[owner].name),
        )
        .await?;
        owners.push(owner);
    }
    lan.wait_records("web", &[(ips[0], owners[0]), (ips[1], owners[1])])
        .await?;
    let pool = lan.cp.kubectl(&[
        "get",
        "ipaddresspool",
        &lan.pool,
        "-o",
        "jsonpath={.status.assignedIPv4}",
    ])?;
    assert_eq!(pool.trim(), "1", "the controller wrote the pool's status");
    let lease = lan.kubectl(&["get", "lease", &format!("{name}-controller"), "-o", "name"])?;
    assert!(lease.contains("lease"), "{lease}");
    // Nothing they tried was refused by RBAC (other refusals, such as Events in another
    // test's namespace being deleted, are not about these accounts).
    let logs = format!("{}\n{}", lan.controller.log(), lan.speaker_logs());
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&format!("User \"system:serviceaccount:{namespace}:")))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by RBAC:\n{}",
        refused.join("\n")
    );

    // And no more than that.
    for (account, verb, resource, where_) in [
        ("speaker", "get", "secrets", "kube-system"),
        ("controller", "get", "secrets", "kube-system"),
        ("speaker", "list", "secrets", namespace.as_str()),
        ("speaker", "patch", "services", namespace.as_str()),
        ("speaker", "patch", "nodes", ""),
        ("controller", "delete", "pods", namespace.as_str()),
        ("controller", "update", "leases", "default"),
    ] {
        let subject = format!("system:serviceaccount:{namespace}:{name}-{account}");
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &subject];
        if !where_.is_empty() {
            args.extend(["-n", where_]);
        }
        let out = lan.cp.kubectl_command().args(&args).output()?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{account} may {verb} {resource} in {where_:?}"
        );
    }
    // With the token itself, too.
    let out = Command::new(lan.cp.tool("kubectl"))
        .args(["get", "secrets", "-n", "kube-system"])
        .env("KUBECONFIG", &speaker_config)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    Ok(())
}
