//! Chaos for the controller (issue #16, scenario 1): two replicas under bounded churn of
//! Services (created, deleted, retyped in bursts) and pool changes, while the leader is killed
//! (SIGKILL, at random moments mid-work) or frozen past its Lease (SIGSTOP once the work has
//! settled, churn while it is frozen, then SIGCONT). Afterwards nothing is lost or doubled:
//! every LoadBalancer Service has one address, no two share one, no deleted Service is left
//! behind by its finalizer, and the pools count what is held. A frozen leader that comes back
//! writes nothing once another replica leads: each replica runs as a ServiceAccount of its
//! own, and the API server's audit log says who wrote what, when.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{Controller, TIMEOUT, World, ingress_ips};
use futures::future::join_all;
use herald_api::{IPAddressPool, annotations::CLEANUP_FINALIZER};
use herald_tests::{ControlPlane, wait_for};
use k8s_openapi::{api::core::v1::Service, jiff::Timestamp};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use nix::sys::signal::Signal;
use serde_json::json;

/// Rounds of churn; each ends with one fault (a kill, a freeze or a pool change).
const ROUNDS: usize = 9;
/// Services created per round; a fifth start as ClusterIP.
const CREATED_PER_ROUND: usize = 30;
/// Live Services kept at most (the pools hold 192 addresses, 160 while the second is shrunk).
const LIVE_AT_MOST: usize = 110;
/// The tests' Lease is 4 s with 1 s of grace: frozen this long, a leader has surely lost it.
const FROZEN: Duration = Duration::from_secs(8);
/// The whole churn stops starting rounds after this.
const CHURN_BUDGET: Duration = Duration::from_secs(180);

/// The first pool, and the second in its two shapes (shrunk and grown back).
const POOL_A: &str = "192.0.2.0/25";
const POOL_B_WIDE: &str = "192.0.2.128/26";
const POOL_B_NARROW: &str = "192.0.2.128/27";

/// A controller replica running as ServiceAccount `name`.
struct Replica {
    name: String,
    process: Controller,
}

/// A replica's writes that must not happen: from `from` (another replica led by then) to
/// `until` (when it might have led again legitimately).
struct Fenced {
    user: String,
    from: Timestamp,
    until: Option<Timestamp>,
}

/// Deletes the cluster-scoped binding that gave the replicas their rights.
struct Binding<'a> {
    cp: &'a ControlPlane,
    name: String,
}

impl Drop for Binding<'_> {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "clusterrolebinding",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}

/// A small deterministic generator (xorshift64*), seeded per run and printed, so a failing run
/// can be replayed with `HERALD_CHURN_SEED`.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from(value % n.max(1) as u64).unwrap_or(0)
    }

    fn pick<T: Clone>(&mut self, from: &BTreeSet<T>) -> Option<T> {
        let index = self.below(from.len());
        from.iter().nth(index).cloned()
    }
}

fn service(name: &str, load_balancer: bool) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": if load_balancer { "LoadBalancer" } else { "ClusterIP" },
            "selector": {"app": name},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }))
    .expect("a valid Service")
}

/// The Services the test believes exist, by whether they are LoadBalancers.
#[derive(Default)]
struct Live {
    load_balancers: BTreeSet<String>,
    cluster_ips: BTreeSet<String>,
}

#[derive(Default)]
struct Counts {
    created: usize,
    deleted: usize,
    retyped: usize,
    kills: usize,
    freezes: usize,
    pool_changes: usize,
}

struct Churn<'a> {
    w: &'a World,
    api: Api<Service>,
    dice: Dice,
    live: Live,
    next: usize,
    counts: Counts,
}

impl Churn<'_> {
    /// One burst: creates, retypes and deletes Services, all at once.
    async fn burst(&mut self) -> anyhow::Result<()> {
        let mut creates = Vec::new();
        for _ in 0..CREATED_PER_ROUND {
            let name = format!("s{}", self.next);
            self.next += 1;
            let load_balancer = self.dice.below(5) != 0;
            creates.push((name, load_balancer));
        }
        let mut to_cluster_ip = BTreeSet::new();
        let mut to_load_balancer = BTreeSet::new();
        for _ in 0..4 {
            if let Some(name) = self.dice.pick(&self.live.load_balancers) {
                to_cluster_ip.insert(name);
            }
            if let Some(name) = self.dice.pick(&self.live.cluster_ips) {
                to_load_balancer.insert(name);
            }
        }
        let mut deletes = BTreeSet::new();
        let live = self.live.load_balancers.len() + self.live.cluster_ips.len();
        let excess = (live + CREATED_PER_ROUND).saturating_sub(LIVE_AT_MOST);
        let mut everyone: BTreeSet<String> = self
            .live
            .load_balancers
            .union(&self.live.cluster_ips)
            .filter(|n| !to_cluster_ip.contains(*n) && !to_load_balancer.contains(*n))
            .cloned()
            .collect();
        for _ in 0..excess {
            if let Some(name) = self.dice.pick(&everyone) {
                everyone.remove(&name);
                deletes.insert(name);
            }
        }

        let api = &self.api;
        let created = join_all(creates.iter().map(|(name, lb)| async move {
            api.create(&PostParams::default(), &service(name, *lb))
                .await
                .map(|_| ())
        }));
        let retype = |name: String, kind: &'static str| async move {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"type": kind}})),
            )
            .await
            .map(|_| ())
        };
        let retyped = join_all(
            to_cluster_ip
                .iter()
                .map(|n| retype(n.clone(), "ClusterIP"))
                .chain(
                    to_load_balancer
                        .iter()
                        .map(|n| retype(n.clone(), "LoadBalancer")),
                ),
        );
        let deleted = join_all(deletes.iter().map(|name| async move {
            api.delete(name, &DeleteParams::default()).await.map(|_| ())
        }));
        let retypes = to_cluster_ip.len() + to_load_balancer.len();
        let (created, retyped, deleted) = futures::join!(created, retyped, deleted);
        for result in created.into_iter().chain(retyped).chain(deleted) {
            result?;
        }

        for (name, load_balancer) in creates {
            if load_balancer {
                self.live.load_balancers.insert(name);
            } else {
                self.live.cluster_ips.insert(name);
            }
        }
        for name in to_cluster_ip {
            self.live.load_balancers.remove(&name);
            self.live.cluster_ips.insert(name);
        }
        for name in to_load_balancer {
            self.live.cluster_ips.remove(&name);
            self.live.load_balancers.insert(name);
        }
        for name in &deletes {
            self.live.load_balancers.remove(name);
            self.live.cluster_ips.remove(name);
        }
        self.counts.created += CREATED_PER_ROUND;
        self.counts.deleted += deletes.len();
        self.counts.retyped += retypes;
        Ok(())
    }

    /// A pause of up to `most_ms` milliseconds, drawn at random: faults strike mid-work.
    async fn random_moment(&mut self, most_ms: usize) {
        let wait = self.dice.below(most_ms);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

#[tokio::test]
async fn churn_through_leader_kills_and_freezes_loses_nothing_and_a_frozen_leader_writes_nothing()
-> anyhow::Result<()> {
    let mut w = World::new("churn").await?;
    let ns = w.ns.name().to_owned();
    let seed = std::env::var("HERALD_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(1)
        });
    println!("seed {seed} (HERALD_CHURN_SEED replays it)");

    // The replicas' identities: one ServiceAccount each, with the rights of cluster-admin.
    let binding = Binding {
        cp: w.cp,
        name: format!("{ns}-replicas"),
    };
    w.cp.kubectl(&[
        "create",
        "clusterrolebinding",
        &binding.name,
        "--clusterrole=cluster-admin",
        &format!("--group=system:serviceaccounts:{ns}"),
    ])?;
    let dir = tempdir(&ns)?;
    let start = |index: usize| -> anyhow::Result<Replica> {
        let name = format!("r{index}");
        w.kubectl(&["create", "serviceaccount", &name])?;
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        w.cp.service_account_kubeconfig(&ns, &name, &kubeconfig)?;
        let process = Controller::start_as(&kubeconfig, &ns, "herald-controller", &name)?;
        Ok(Replica { name, process })
    };
    let user = |name: &str| format!("system:serviceaccount:{ns}:{name}");
    // The world's own replica steps aside: only the two below compete.
    w.controller.signal(Signal::SIGTERM)?;
    let mut replicas = vec![start(0)?, start(1)?];
    let mut started = 2;

    w.pool("a", &[POOL_A], "")?;
    w.pool("b", &[POOL_B_WIDE], "")?;
    let mut b_narrow = false;

    let mut churn = Churn {
        w: &w,
        api: w.services(),
        dice: Dice(seed),
        live: Live::default(),
        next: 0,
        counts: Counts::default(),
    };
    let mut fenced: Vec<Fenced> = Vec::new();
    let mut holders = Vec::new();
    let began = Instant::now();
    for round in 0..ROUNDS {
        if began.elapsed() > CHURN_BUDGET {
            break;
        }
        churn.burst().await?;
        churn.random_moment(1_500).await;
        match round % 3 {
            0 => {
                // SIGKILL the leader mid-work, and start a replacement.
                let leader = leader_index(churn.w, &replicas).await?;
                let mut killed = replicas.remove(leader);
                killed.process.kill();
                holders.push(killed.name.clone());
                churn.counts.kills += 1;
                // Whoever was fenced might lead again from now on.
                let now = Timestamp::now();
                for window in fenced.iter_mut().filter(|f| f.until.is_none()) {
                    window.until = Some(now);
                }
                replicas.push(start(started)?);
                started += 1;
                churn.burst().await?;
            }
            1 => {
                // SIGSTOP the leader past its Lease, churn meanwhile, then SIGCONT. Frozen at
                // a quiet moment: a request it had handed to its HTTP connection when frozen
                // would reach the API server when it resumes (decided within its term, and
                // refused by its resourceVersion if the object changed), and the audit could
                // not tell it from one decided after. So whatever arrives from it after this
                // freeze was decided after its term ended.
                let range = if b_narrow { POOL_B_NARROW } else { POOL_B_WIDE };
                wait_for("the churn to settle before the freeze", TIMEOUT, || {
                    settled(churn.w, &churn.live, range)
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let leader = leader_index(churn.w, &replicas).await?;
                let frozen_at = Instant::now();
                replicas[leader].process.signal(Signal::SIGSTOP)?;
                holders.push(replicas[leader].name.clone());
                churn.counts.freezes += 1;
                churn.burst().await?;
                let frozen = replicas[leader].name.clone();
                wait_for("another replica to lead", TIMEOUT, || async {
                    match churn.w.lease_holder() {
                        Ok(holder) if holder != frozen && !holder.is_empty() => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                })
                .await?;
                let taken_over = Timestamp::now();
                tokio::time::sleep(FROZEN.saturating_sub(frozen_at.elapsed())).await;
                replicas[leader].process.signal(Signal::SIGCONT)?;
                fenced.push(Fenced {
                    user: user(&frozen),
                    from: taken_over,
                    until: None,
                });
                churn.burst().await?;
            }
            _ => {
                // Shrink the second pool, or grow it back.
                b_narrow = !b_narrow;
                let range = if b_narrow { POOL_B_NARROW } else { POOL_B_WIDE };
                w.pool("b", &[range], "")?;
                churn.counts.pool_changes += 1;
            }
        }
    }
    if b_narrow {
        w.pool("b", &[POOL_B_WIDE], "")?;
        churn.counts.pool_changes += 1;
    }
    let churned = began.elapsed();
    let (live, counts) = (churn.live, churn.counts);

    // Afterwards: every Service as it should be, and nothing left over.
    let settled_at = Instant::now();
    let addresses = wait_for(
        "every Service settled: one address per LoadBalancer, none on a ClusterIP, \
         no Service left in deletion, pool counts true",
        Duration::from_secs(90),
        || settled(&w, &live, POOL_B_WIDE),
    )
    .await?;
    let settled = settled_at;

    // Fencing: a replica frozen past its Lease wrote nothing (but its own Lease bids) from
    // the moment another replica led until it might have led again.
    let writes = w.cp.audited_writes()?;
    let mut fenced_writes = Vec::new();
    for window in &fenced {
        fenced_writes.extend(writes.iter().filter(|write| {
            write.user == window.user
                && write.resource != "leases"
                && write.received >= window.from
                && window.until.is_none_or(|until| write.received <= until)
        }));
    }
    let by_replicas = writes
        .iter()
        .filter(|write| {
            write
                .user
                .starts_with(&format!("system:serviceaccount:{ns}:r"))
                && write.resource != "leases"
        })
        .count();
    println!(
        "{} Services created, {} deleted, {} retyped, {} pool changes over {} rounds in {:.0?}; \
         {} leader kills and {} freezes (leaders in turn: {}); settled {:.1?} later: {} \
         LoadBalancers with one address each, 0 duplicates, 0 left in deletion, pool counts \
         true; {} writes by the replicas, {} by a frozen leader after it lost its Lease",
        counts.created,
        counts.deleted,
        counts.retyped,
        counts.pool_changes,
        ROUNDS,
        churned,
        counts.kills,
        counts.freezes,
        holders.join(", "),
        settled.elapsed(),
        addresses,
        by_replicas,
        fenced_writes.len(),
    );
    assert!(
        by_replicas > counts.created,
        "the audit log records the replicas' writes ({by_replicas})"
    );
    assert!(
        fenced_writes.is_empty(),
        "a frozen leader wrote after losing its Lease: {fenced_writes:#?}"
    );
    assert!(
        counts.kills >= 2 && counts.freezes >= 2,
        "the faults happened"
    );

    // The leader stays to release the test's Services; the other replica goes.
    let leader = leader_index(&w, &replicas).await?;
    w.controller = replicas.swap_remove(leader).process;
    drop(replicas);
    drop(binding);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether the cluster settled as `live` says it should: every LoadBalancer Service with one
/// address of its own, no address on a ClusterIP one, nothing left in deletion, and the pools
/// (the second one as `pool_b` now) counting what is held. The number of addresses held.
async fn settled(w: &World, live: &Live, pool_b: &str) -> Result<usize, String> {
    let ns = w.ns.name();
    let api = w.services();
    let pools: Api<IPAddressPool> = Api::all(w.client.clone());
    let list = api
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut by_address: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for s in &list.items {
        let name = s.metadata.name.clone().unwrap_or_default();
        if s.metadata.deletion_timestamp.is_some() {
            return Err(format!("{name} is still being deleted"));
        }
        let finalized = s
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == CLEANUP_FINALIZER);
        let ips = ingress_ips(s);
        if live.load_balancers.contains(&name) {
            match ips.as_slice() {
                [ip] => by_address.entry(ip.clone()).or_default().push(name.clone()),
                other => return Err(format!("LoadBalancer {name} has {other:?}")),
            }
        } else if live.cluster_ips.contains(&name) {
            if !ips.is_empty() || finalized {
                return Err(format!(
                    "ClusterIP {name} still has {ips:?} (finalizer: {finalized})"
                ));
            }
        } else {
            return Err(format!("{name} was deleted and is still there"));
        }
        seen.insert(name);
    }
    let missing = live.load_balancers.len() + live.cluster_ips.len() - seen.len();
    if missing > 0 {
        return Err(format!("{missing} Services the test made are gone"));
    }
    if let Some((ip, holders)) = by_address.iter().find(|(_, names)| names.len() > 1) {
        return Err(format!("{ip} is held by {holders:?}"));
    }
    for (pool, ranges) in [
        (format!("{ns}-a"), vec![POOL_A]),
        (format!("{ns}-b"), vec![pool_b]),
    ] {
        let status = pools
            .get(&pool)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let held = by_address
            .keys()
            .filter(|ip| ranges.iter().any(|r| within(ip, r)))
            .count() as i64;
        let size: i64 = ranges.iter().map(|r| range_size(r)).sum();
        if status.assigned_ipv4 != held || status.available_ipv4 != size - held {
            return Err(format!(
                "pool {pool} says {} assigned and {} available; {held} of {size} are held",
                status.assigned_ipv4, status.available_ipv4
            ));
        }
    }
    Ok(by_address.len())
}

/// Which of `replicas` holds the Lease (waiting until one does).
async fn leader_index(w: &World, replicas: &[Replica]) -> anyhow::Result<usize> {
    Ok(wait_for("a replica to lead", TIMEOUT, || async {
        let holder = w.lease_holder().map_err(|e| e.to_string())?;
        replicas
            .iter()
            .position(|r| r.name == holder)
            .ok_or_else(|| format!("held by {holder:?}"))
    })
    .await?)
}

fn tempdir(ns: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("herald-{ns}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn parse_range(range: &str) -> (u32, u32) {
    let (base, len) = range.split_once('/').expect("a CIDR");
    let base = u32::from(base.parse::<Ipv4Addr>().expect("an IPv4 CIDR"));
    let len: u32 = len.parse().expect("a prefix length");
    (base, 1 << (32 - len))
}

fn within(ip: &str, range: &str) -> bool {
    let (base, size) = parse_range(range);
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| (base..base + size).contains(&u32::from(ip)))
}

fn range_size(range: &str) -> i64 {
    i64::from(parse_range(range).1)
}
