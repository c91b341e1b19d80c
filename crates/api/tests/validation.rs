//! The API server itself rejects bad Herald objects, with a message naming the field, using the
//! generated CRDs (real kube-apiserver; see `tests/cluster`).

use herald_tests::ControlPlane;

/// The control plane, with Herald's CRDs installed.
fn control_plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared();
    cp.install_herald_crds().expect("the CRDs install");
    cp
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Applies `manifest`; returns the API server's error text, or panics if it was accepted.
fn rejection(manifest: &str) -> String {
    match control_plane().kubectl_with_input(&["apply", "-f", "-"], manifest) {
        Ok(out) => panic!("accepted, but must be rejected: {out}\n{manifest}"),
        Err(e) => e.to_string(),
    }
}

fn assert_rejected(manifest: &str, expected: &[&str]) {
    let err = rejection(manifest);
    for part in expected {
        assert!(
            err.contains(part),
            "expected {part:?} in the rejection:\n{err}"
        );
    }
}

fn pool(name: &str, address: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {}}}\nspec: {{addresses: [\"{address}\"]}}\n",
        unique(name)
    )
}

#[test]
fn a_valid_pool_is_accepted_with_defaults_and_listed_with_its_columns() {
    let cp = control_plane();
    let name = unique("valid");
    cp.kubectl_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: herald.dev/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\n\
             spec:\n  addresses: [192.0.2.64/26, 2001:db8:1::/120, 192.0.2.10-192.0.2.20, \
             2001:db8:2::1-2001:db8:2::ff]\n"
        ),
    )
    .expect("a valid pool is accepted");
    let auto_assign = cp
        .kubectl(&[
            "get",
            "ipaddresspool",
            &name,
            "-o",
            "jsonpath={.spec.autoAssign}",
        ])
        .expect("readable");
    assert_eq!(auto_assign, "true", "autoAssign defaults to true");
    let table = cp
        .kubectl(&["get", "ipaddresspools", &name])
        .expect("listed");
    for column in [
        "ADDRESSES",
        "AUTO ASSIGN",
        "ASSIGNED IPV4",
        "AVAILABLE IPV4",
        "AVAILABLE IPV6",
    ] {
        assert!(table.contains(column), "{column} in:\n{table}");
    }
    assert!(table.contains("192.0.2.64/26"), "{table}");
    let explain = cp
        .kubectl(&["explain", "ipaddresspool.spec.avoidBuggyIPs"])
        .expect("explained");
    assert!(explain.contains(".0 and .255"), "{explain}");
    cp.kubectl(&["delete", "ipaddresspool", &name])
        .expect("deleted");
}

#[test]
fn malformed_pool_addresses_are_rejected_naming_the_entry() {
    for (address, message) in [
        ("banana", "must be a CIDR (192.0.2.0/24) or a range"),
        ("192.0.2.300/24", "must be a CIDR (192.0.2.0/24) or a range"),
        ("192.0.2.5/24", "the CIDR has host bits set"),
        ("192.0.2.20-192.0.2.10", "the range is inverted"),
        (
            "192.0.2.1-2001:db8::1",
            "both ends of a range must be of the same family",
        ),
    ] {
        assert_rejected(&pool("bad", address), &["spec.addresses[0]", message]);
    }
}

#[test]
fn bad_asns_timers_and_router_ids_of_a_peer_are_rejected() {
    let peer = |fields: &str| {
        format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {}}}\n\
             spec: {{myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.254, {fields}}}\n",
            unique("peer")
        )
    };
    assert_rejected(
        &peer("routerID: 192.0.2.1, myASN: 0"),
        &["spec.myASN", "greater than or equal to 1"],
    );
    assert_rejected(&peer("peerASN: 23456"), &["spec.peerASN", "AS_TRANS"]);
    assert_rejected(
        &peer("peerAddress: 192.0.2"),
        &["spec.peerAddress", "must be an IPv4 or IPv6 address"],
    );
    assert_rejected(
        &peer("holdTime: 2s"),
        &["spec.holdTime", "0s or at least 3s"],
    );
    assert_rejected(&peer("holdTime: ninety"), &["spec.holdTime"]);
    assert_rejected(
        &peer("holdTime: 9s, keepaliveTime: 10s"),
        &["spec.keepaliveTime", "must not exceed holdTime"],
    );
    assert_rejected(
        &peer("routerID: 2001:db8::1"),
        &["spec.routerID", "IPv4 address"],
    );
    assert_rejected(&peer("peerPort: 0"), &["spec.peerPort"]);
}

#[test]
fn bad_communities_and_aggregation_lengths_of_an_advertisement_are_rejected() {
    let advertisement = |fields: &str| {
        format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {{name: {}}}\n\
             spec: {{{fields}}}\n",
            unique("adv")
        )
    };
    assert_rejected(
        &advertisement("communities: [\"65000:100\", \"65536:1\"]"),
        &["spec.communities[1]", "at most 65535"],
    );
    assert_rejected(
        &advertisement("communities: [\"large:1:2:4294967296\"]"),
        &["spec.communities[0]", "at most 4294967295"],
    );
    assert_rejected(
        &advertisement("communities: [\"no-such-community\"]"),
        &["spec.communities[0]", "well-known community name"],
    );
    assert_rejected(
        &advertisement("aggregationLength: 33"),
        &["spec.aggregationLength"],
    );
    assert_rejected(
        &advertisement("aggregationLengthV6: 129"),
        &["spec.aggregationLengthV6"],
    );
    let cp = control_plane();
    let name = unique("good-adv");
    cp.kubectl_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {{name: {name}}}\n\
             spec: {{communities: [\"65000:100\", no-export, \"large:65000:1:2\"], \
             aggregationLength: 24, localPref: 200}}\n"
        ),
    )
    .expect("a valid advertisement is accepted");
    cp.kubectl(&["delete", "bgpadvertisement", &name])
        .expect("deleted");
}

#[test]
fn a_bfd_profile_out_of_range_is_rejected() {
    assert_rejected(
        &format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BFDProfile\nmetadata: {{name: {}}}\n\
             spec: {{detectMultiplier: 1}}\n",
            unique("bfd")
        ),
        &["spec.detectMultiplier"],
    );
}
