//! Why a Service could not be given an address; each message says what the user can change.

use std::net::IpAddr;

use herald_domain::{Family, ServiceKey};

/// Why a Service did not get (or keep) the addresses it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("the address-pool annotation names pool {pool:?}, which does not exist")]
    UnknownPool { pool: String },
    #[error("requested address {ip} is not in {}", match pool {
        Some(p) => format!("pool {p:?}"),
        None => "any IPAddressPool".to_owned(),
    })]
    NotInPool { ip: IpAddr, pool: Option<String> },
    #[error(
        "requested address {ip} is a .0 or .255 address, which pool {pool:?} avoids (avoidBuggyIPs)"
    )]
    BuggyAddress { ip: IpAddr, pool: String },
    #[error("requested addresses {ips:?} are not all in one pool")]
    SplitAcrossPools { ips: Vec<IpAddr> },
    #[error("requested address {ip} is in use by {holder}: {conflict}")]
    InUse {
        ip: IpAddr,
        holder: ServiceKey,
        conflict: SharingConflict,
    },
    #[error("requested address {ip} is {family}, but the Service's ipFamilies are {wanted:?}")]
    WrongFamily {
        ip: IpAddr,
        family: Family,
        wanted: Vec<Family>,
    },
    #[error("{count} addresses requested, but the Service is single-stack")]
    TooManyRequested { count: usize },
    #[error(
        "no pool may serve this Service (none names it, and no auto-assign pool's serviceAllocation matches)"
    )]
    NoEligiblePool,
    #[error("no free {} address in {}", families_text(families), pools_text(pools))]
    Exhausted {
        families: Vec<Family>,
        pools: Vec<String>,
    },
}

/// Why two Services cannot share an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingConflict {
    #[error("it does not allow sharing (no allow-shared-ip annotation)")]
    HolderDoesNotShare,
    #[error("this Service has no allow-shared-ip annotation")]
    RequesterDoesNotShare,
    #[error("its allow-shared-ip key is {holder:?}, this Service's is {requester:?}")]
    DifferentKey { holder: String, requester: String },
    #[error(
        "sharing Services must both use externalTrafficPolicy Cluster, or both Local with the same selector"
    )]
    DifferentBackend,
    #[error("both expose {protocol}/{port}")]
    PortClash { protocol: String, port: u16 },
}

fn families_text(families: &[Family]) -> String {
    families
        .iter()
        .map(Family::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

fn pools_text(pools: &[String]) -> String {
    match pools {
        [one] => format!("pool {one:?}"),
        many => format!("pools {many:?}"),
    }
}
