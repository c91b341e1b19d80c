//! L2Advertisements and BGPAdvertisements, translated into planning terms: selectors parsed,
//! defaults applied, communities decoded.

use herald_api::{
    BGPAdvertisement, L2Advertisement,
    selector::{SelectorError, convert_all},
    values::CommunityValue,
};
use herald_plan::{
    BgpAdvertisement as PlannedBgpAdvertisement, L2Advertisement as PlannedL2Advertisement,
    Selection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

/// Why an advertisement cannot be used, naming the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertisementError {
    /// A selector that does not parse (its error names the object and field already).
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("{object}: spec.communities[{index}]: {problem}")]
    Community {
        object: String,
        index: usize,
        problem: String,
    },
}

/// The parsed selectors of an advertisement of either kind.
fn selection(
    object: &str,
    pools: &[String],
    pool_selectors: &[LabelSelector],
    node_selectors: &[LabelSelector],
    service_selectors: &[LabelSelector],
) -> Result<Selection, SelectorError> {
    Ok(Selection {
        pools: pools.to_vec(),
        pool_selectors: convert_all(pool_selectors, object, "spec.ipAddressPoolSelectors")?,
        node_selectors: convert_all(node_selectors, object, "spec.nodeSelectors")?,
        service_selectors: convert_all(service_selectors, object, "spec.serviceSelectors")?,
    })
}

/// An L2Advertisement as planning takes it.
pub fn l2_advertisement(adv: &L2Advertisement) -> Result<PlannedL2Advertisement, SelectorError> {
    let name = adv.name_any();
    let spec = &adv.spec;
    let selection = selection(
        &format!("L2Advertisement {name}"),
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
        &spec.node_selectors,
        &spec.service_selectors,
    )?;
    Ok(PlannedL2Advertisement {
        selection,
        interfaces: spec.interfaces.clone(),
        name,
    })
}

/// A BGPAdvertisement as planning takes it.
pub fn bgp_advertisement(
    adv: &BGPAdvertisement,
) -> Result<PlannedBgpAdvertisement, AdvertisementError> {
    let name = adv.name_any();
    let object = format!("BGPAdvertisement {name}");
    let spec = &adv.spec;
    let selection = selection(
        &object,
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
        &spec.node_selectors,
        &spec.service_selectors,
    )?;
    let mut planned = PlannedBgpAdvertisement {
        name: name.clone(),
        selection,
        aggregation_length: spec
            .aggregation_length
            .map_or(32, |l| u8::try_from(l.clamp(0, 32)).unwrap_or(32)),
        aggregation_length_v6: spec
            .aggregation_length_v6
            .map_or(128, |l| u8::try_from(l.clamp(0, 128)).unwrap_or(128)),
        local_pref: spec.local_pref.and_then(|p| u32::try_from(p).ok()),
        peers: spec.peers.clone(),
        weight_by_local_endpoints: spec.weight_by_local_endpoints,
        ..Default::default()
    };
    for (i, community) in spec.communities.iter().enumerate() {
        match community.value() {
            Ok(CommunityValue::Standard(value)) => planned.communities.push(value),
            Ok(CommunityValue::Large(value)) => planned.large_communities.push(value),
            Err(e) => {
                return Err(AdvertisementError::Community {
                    object,
                    index: i,
                    problem: e.to_string(),
                });
            }
        }
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use herald_tests::herald::object;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bgp_advertisement_gets_its_defaults_and_a_bad_selector_is_named() {
        let adv: BGPAdvertisement = object(
            "BGPAdvertisement",
            "edge",
            json!({"communities": ["65000:100", "large:65000:1:2"], "peers": ["tor"]}),
        );
        let planned = bgp_advertisement(&adv).expect("usable");
        assert_eq!(
            (planned.aggregation_length, planned.aggregation_length_v6),
            (32, 128)
        );
        assert_eq!(planned.communities, [0xfde8_0064]);
        assert_eq!(planned.large_communities, [[65000, 1, 2]]);
        let bad: L2Advertisement = object(
            "L2Advertisement",
            "bad",
            json!({"ipAddressPoolSelectors": [{"matchExpressions": [{"key": "k", "operator": "Near"}]}]}),
        );
        assert!(
            l2_advertisement(&bad)
                .expect_err("no such operator")
                .to_string()
                .starts_with("L2Advertisement bad: spec.ipAddressPoolSelectors[0].matchExpressions[0].operator"),
        );
    }
}
