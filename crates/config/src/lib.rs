//! # herald-config: the configuration kinds, translated once
//!
//! BGPPeers, BFDProfiles, L2Advertisements and BGPAdvertisements as users write them become
//! the terms planning works in, or an error that names the object and the field. Both
//! binaries use the same translation: the speaker plans from it, and the controller judges
//! it into each object's `status.conditions`, so what a speaker refuses is what `kubectl get`
//! shows as not ready.
//!
//! ```text
//!   BGPPeer ──────────► peer::Peer ─────────────────┐ speaker: plan_bgp, sessions
//!   BFDProfile ───────► peer::BfdProfile            ├─►
//!   L2Advertisement ──► herald_plan::L2Advertisement│ controller: status.conditions
//!   BGPAdvertisement ─► herald_plan::BgpAdvertisement┘
//!        └──────────── errors: "BGPPeer tor: spec.peerAddress: ..."
//! ```

pub mod advertisement;
pub mod peer;

pub use advertisement::{AdvertisementError, bgp_advertisement, l2_advertisement};
pub use peer::{
    BfdProfile, BfdProfiles, Peer, PeerError, ProfileError, translate_peers, translate_profiles,
};
