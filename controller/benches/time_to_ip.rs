//! Time from Service creation to an address in its status, on the real API server, and the
//! controller's memory once it serves them all.
//!
//! `cargo bench -p herald-controller --bench time_to_ip` (as root on a machine where
//! `tests/cluster up` works). `HERALD_BENCH_SERVICES` sets how many Services (1000 by default),
//! `HERALD_BENCH_CONCURRENCY` how many creates are in flight at once (16).
//! `HERALD_BENCH_PACED=1` holds each create's slot until its Service has its address (with one
//! in flight: the latency of a Service created into an idle controller).
//! `HERALD_BENCH_CONTROLLER=metallb` runs MetalLB's controller instead of Herald's, built from its
//! Go module by `tests/metallb/build`, with the same pool, Services and measurement.
//!
//! Prints p50, p99 and max of create-returned -> status-seen, the total time, and the
//! controller's resident memory (VmRSS) after the last Service got its address.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use herald_tests::{ControlPlane, TestNamespace, metallb};
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The controller under measurement.
enum Controller {
    Herald,
    /// MetalLB's, from the directory `tests/metallb/build` prints.
    Metallb {
        dir: std::path::PathBuf,
    },
}

/// The pool every run allocates from: the same addresses for either controller.
const POOL_ADDRESSES: &str = r#"["2001:db8:b::/64", "192.0.2.0/24"]"#;

impl Controller {
    fn from_env() -> anyhow::Result<Controller> {
        match std::env::var("HERALD_BENCH_CONTROLLER").as_deref() {
            Err(_) | Ok("herald") => Ok(Controller::Herald),
            Ok("metallb") => Ok(Controller::Metallb {
                dir: metallb::install_crds(ControlPlane::shared())?,
            }),
            Ok(other) => anyhow::bail!("HERALD_BENCH_CONTROLLER={other}: herald or metallb"),
        }
    }

    /// The `loadBalancerClass` of the Services the controller serves.
    fn class(&self) -> Option<&'static str> {
        match self {
            Controller::Herald => None,
            Controller::Metallb { .. } => Some(metallb::CLASS),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Controller::Herald => "herald-controller",
            Controller::Metallb { .. } => "MetalLB controller (tests/metallb/build)",
        }
    }

    /// Creates the pool for the Services of `services` and starts the controller (MetalLB's
    /// in `own`, where its pools live); returns it and the cluster-scoped pool to delete.
    fn start(
        &self,
        cp: &ControlPlane,
        services: &TestNamespace,
        own: Option<&TestNamespace>,
    ) -> anyhow::Result<(std::process::Child, Option<String>)> {
        let pool = format!("{}-pool", services.name());
        let namespaces = services.name();
        match (self, own) {
            (Controller::Herald, _) => {
                cp.kubectl_with_input(
                    &["apply", "-f", "-"],
                    &format!(
                        "apiVersion: herald.dev/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {pool}}}\n\
                         spec: {{addresses: {POOL_ADDRESSES}, serviceAllocation: {{namespaces: [{namespaces}]}}}}\n"
                    ),
                )?;
                let controller = Command::new(env!("CARGO_BIN_EXE_herald-controller"))
                    .args(["--namespace", "default", "--lease-name", services.name()])
                    .env("KUBECONFIG", &cp.kubeconfig)
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()?;
                Ok((controller, Some(pool)))
            }
            (Controller::Metallb { dir }, Some(own)) => {
                cp.kubectl_with_input(
                    &["apply", "-f", "-"],
                    &format!(
                        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
                         metadata: {{name: {pool}, namespace: {}}}\n\
                         spec: {{addresses: {POOL_ADDRESSES}, serviceAllocation: {{namespaces: [{namespaces}]}}}}\n",
                        own.name()
                    ),
                )?;
                let controller = metallb::controller_command(dir, &cp.kubeconfig, own.name())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                // The pool is namespaced: it goes with `own`.
                Ok((controller, None))
            }
            (Controller::Metallb { .. }, None) => anyhow::bail!("MetalLB needs its namespace"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count = env_number("HERALD_BENCH_SERVICES", 1000);
    let concurrency = env_number("HERALD_BENCH_CONCURRENCY", 16);
    let cp = ControlPlane::shared();
    cp.install_herald_crds()?;
    let client = cp.client().await?;
    let ns = TestNamespace::create(cp, &client, "bench").await?;
    let under = Controller::from_env()?;
    let controller_ns = match under {
        Controller::Herald => None,
        Controller::Metallb { .. } => Some(TestNamespace::create(cp, &client, "metallb").await?),
    };
    let (mut controller, pool_cleanup) = under.start(cp, &ns, controller_ns.as_ref())?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let services = services.clone();
        tokio::spawn(async move {
            let mut stream = watcher(services, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(service)) = stream.try_next().await {
                let has_ip = service
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .is_some_and(|i| !i.is_empty());
                if has_ip {
                    let name = service.metadata.name.unwrap_or_default();
                    seen.lock()
                        .expect("not poisoned")
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    let class = under.class();
    let paced = std::env::var_os("HERALD_BENCH_PACED").is_some();
    let start = Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(concurrency, |i| {
            let services = services.clone();
            let created = created.clone();
            let seen = seen.clone();
            async move {
                let name = format!("s{i}");
                let service: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    // No node ports: 10,000 Services would exhaust the node-port range.
                    "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"],
                             "loadBalancerClass": class,
                             "allocateLoadBalancerNodePorts": false,
                             "selector": {"app": "bench"}, "ports": [{"port": 80}]}
                }))
                .expect("valid");
                services
                    .create(&PostParams::default(), &service)
                    .await
                    .expect("created");
                created
                    .lock()
                    .expect("not poisoned")
                    .insert(name.clone(), Instant::now());
                // Paced: this create's slot frees only once its Service has its address.
                let until = Instant::now() + Duration::from_secs(60);
                while paced
                    && !seen.lock().expect("not poisoned").contains_key(&name)
                    && Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.lock().expect("not poisoned").len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    let rss = rss_kib(controller.id());
    watch.abort();
    // Clean up while the controller still runs: it must release every finalizer.
    let _ = cp.kubectl(&["delete", "namespace", ns.name(), "--timeout=300s"]);
    let _ = controller.kill();
    let _ = controller.wait();
    if let Some(pool) = pool_cleanup {
        let _ = cp.kubectl(&["delete", "ipaddresspool.herald.dev", &pool, "--wait=false"]);
    }
    drop(controller_ns);

    let created = created.lock().expect("not poisoned");
    let seen = seen.lock().expect("not poisoned");
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, t0)| Some(seen.get(name)?.saturating_duration_since(*t0)))
        .collect();
    latencies.sort();
    if latencies.len() < count {
        anyhow::bail!(
            "only {} of {count} Services got an address within 600 s",
            latencies.len()
        );
    }
    println!(
        "controller: {}; services: {count} (IPv6 /64 pool), creates in flight: {concurrency}{}",
        under.name(),
        if paced { ", paced" } else { "" }
    );
    println!(
        "create -> IP in status: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    println!("total: {:.2} s", total.as_secs_f64());
    match rss {
        Some(kib) => println!(
            "controller RSS with {count} Services: {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("controller RSS: unavailable"),
    }
    Ok(())
}
