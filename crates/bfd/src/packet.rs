//! The BFD control packet (RFC 5880 §4.1), without the optional authentication section.
//!
//! ```text
//!    0                   1                   2                   3
//!   |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//!   |                       My Discriminator                        |
//!   |                      Your Discriminator                       |
//!   |                    Desired Min TX Interval                    |
//!   |                   Required Min RX Interval                    |
//!   |                 Required Min Echo RX Interval                 |
//! ```
//!
//! [`decode`] applies every check of §6.8.6 that needs no session: a packet that fails one
//! is an error naming why, for the driver to drop and count.

/// The only BFD version.
pub const VERSION: u8 = 1;
/// The length of a control packet without authentication.
pub const PACKET_LEN: usize = 24;
/// RFC 5881: single-hop control packets go to this UDP port.
pub const SINGLE_HOP_PORT: u16 = 3784;
/// RFC 5883: multihop control packets go to this UDP port.
pub const MULTIHOP_PORT: u16 = 4784;

const POLL: u8 = 0x20;
const FINAL: u8 = 0x10;
const CONTROL_PLANE_INDEPENDENT: u8 = 0x08;
const AUTHENTICATION: u8 = 0x04;
const DEMAND: u8 = 0x02;
const MULTIPOINT: u8 = 0x01;

/// A session's state (§4.1 `Sta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 0x3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// The state as records and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

/// Why a session last changed state (§4.1 `Diag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Diagnostic {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9 to 31, reserved: kept as received.
    Reserved(u8),
}

impl Diagnostic {
    fn from_bits(bits: u8) -> Diagnostic {
        match bits & 0x1f {
            0 => Diagnostic::None,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            other => Diagnostic::Reserved(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Diagnostic::None => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Reserved(bits) => bits & 0x1f,
        }
    }

    /// The diagnostic as RFC 5880 words it, for records and logs.
    pub fn name(self) -> &'static str {
        match self {
            Diagnostic::None => "No Diagnostic",
            Diagnostic::ControlDetectionTimeExpired => "Control Detection Time Expired",
            Diagnostic::EchoFunctionFailed => "Echo Function Failed",
            Diagnostic::NeighborSignaledSessionDown => "Neighbor Signaled Session Down",
            Diagnostic::ForwardingPlaneReset => "Forwarding Plane Reset",
            Diagnostic::PathDown => "Path Down",
            Diagnostic::ConcatenatedPathDown => "Concatenated Path Down",
            Diagnostic::AdministrativelyDown => "Administratively Down",
            Diagnostic::ReverseConcatenatedPathDown => "Reverse Concatenated Path Down",
            Diagnostic::Reserved(_) => "Reserved",
        }
    }
}

/// One control packet. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: State,
    /// The sender asks for a packet with `final_` in return (a poll sequence, §6.5).
    pub poll: bool,
    /// The answer to a poll.
    pub final_: bool,
    pub control_plane_independent: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a datagram is not a usable control packet (RFC 5880 §6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} octets: shorter than a control packet")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {length} with {received} octets received")]
    Length { length: u8, received: usize },
    #[error("detect multiplier 0")]
    DetectMultZero,
    #[error("the multipoint bit is set")]
    Multipoint,
    #[error("my discriminator 0")]
    MyDiscriminatorZero,
    #[error("your discriminator 0 in state {0:?}")]
    YourDiscriminatorZero(State),
    #[error("both poll and final bits set")]
    PollAndFinal,
    #[error("authenticated, and this session uses no authentication")]
    Authenticated,
}

impl DecodeError {
    /// A short name of the error, for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short(_) => "short",
            DecodeError::Version(_) => "version",
            DecodeError::Length { .. } => "length",
            DecodeError::DetectMultZero => "detect_mult_zero",
            DecodeError::Multipoint => "multipoint",
            DecodeError::MyDiscriminatorZero => "my_discriminator_zero",
            DecodeError::YourDiscriminatorZero(_) => "your_discriminator_zero",
            DecodeError::PollAndFinal => "poll_and_final",
            DecodeError::Authenticated => "authenticated",
        }
    }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads a control packet from one datagram's payload.
pub fn decode(bytes: &[u8]) -> Result<ControlPacket, DecodeError> {
    if bytes.len() < PACKET_LEN {
        return Err(DecodeError::Short(bytes.len()));
    }
    let version = bytes[0] >> 5;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let flags = bytes[1];
    let length = bytes[3];
    // An authenticated packet is at least 26 octets; unauthenticated ones at least 24.
    let minimum = if flags & AUTHENTICATION != 0 {
        PACKET_LEN + 2
    } else {
        PACKET_LEN
    };
    if usize::from(length) < minimum || usize::from(length) > bytes.len() {
        return Err(DecodeError::Length {
            length,
            received: bytes.len(),
        });
    }
    let packet = ControlPacket {
        diagnostic: Diagnostic::from_bits(bytes[0]),
        state: State::from_bits(flags >> 6),
        poll: flags & POLL != 0,
        final_: flags & FINAL != 0,
        control_plane_independent: flags & CONTROL_PLANE_INDEPENDENT != 0,
        demand: flags & DEMAND != 0,
        detect_mult: bytes[2],
        my_discriminator: word(bytes, 4),
        your_discriminator: word(bytes, 8),
        desired_min_tx_us: word(bytes, 12),
        required_min_rx_us: word(bytes, 16),
        required_min_echo_rx_us: word(bytes, 20),
    };
    if packet.detect_mult == 0 {
        return Err(DecodeError::DetectMultZero);
    }
    if flags & MULTIPOINT != 0 {
        return Err(DecodeError::Multipoint);
    }
    if packet.my_discriminator == 0 {
        return Err(DecodeError::MyDiscriminatorZero);
    }
    if packet.your_discriminator == 0 && !matches!(packet.state, State::Down | State::AdminDown) {
        return Err(DecodeError::YourDiscriminatorZero(packet.state));
    }
    if packet.poll && packet.final_ {
        return Err(DecodeError::PollAndFinal);
    }
    if flags & AUTHENTICATION != 0 {
        return Err(DecodeError::Authenticated);
    }
    Ok(packet)
}

impl ControlPacket {
    /// The packet on the wire (no authentication, so always [`PACKET_LEN`] octets).
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[0] = (VERSION << 5) | self.diagnostic.bits();
        out[1] = (self.state.bits() << 6)
            | if self.poll { POLL } else { 0 }
            | if self.final_ { FINAL } else { 0 }
            | if self.control_plane_independent {
                CONTROL_PLANE_INDEPENDENT
            } else {
                0
            }
            | if self.demand { DEMAND } else { 0 };
        out[2] = self.detect_mult;
        out[3] = PACKET_LEN as u8;
        for (at, value) in [
            (4, self.my_discriminator),
            (8, self.your_discriminator),
            (12, self.desired_min_tx_us),
            (16, self.required_min_rx_us),
            (20, self.required_min_echo_rx_us),
        ] {
            out[at..at + 4].copy_from_slice(&value.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An Up packet with FRR bfdd's default settings (300 ms intervals, multiplier 3, echo 50 ms).
    const FRR_UP: [u8; 24] = [
        0x20, 0xc0, 0x03, 0x18, 0x00, 0x00, 0x00, 0x01, 0x8d, 0x2e, 0x4a, 0x11, 0x00, 0x04, 0x93,
        0xe0, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00, 0xc3, 0x50,
    ];

    #[test]
    fn a_packet_from_frr_decodes_field_by_field_and_encodes_back() {
        let packet = decode(&FRR_UP).expect("valid");
        assert_eq!(packet.state, State::Up);
        assert_eq!(packet.diagnostic, Diagnostic::None);
        assert!(!packet.poll && !packet.final_ && !packet.demand);
        assert_eq!(packet.detect_mult, 3);
        assert_eq!(packet.my_discriminator, 1);
        assert_eq!(packet.your_discriminator, 0x8d2e_4a11);
        assert_eq!(packet.desired_min_tx_us, 300_000);
        assert_eq!(packet.required_min_rx_us, 300_000);
        assert_eq!(packet.required_min_echo_rx_us, 50_000);
        assert_eq!(packet.encode(), FRR_UP);
    }

    #[test]
    fn each_malformed_packet_is_refused_with_its_reason() {
        let with = |at: usize, value: u8| {
            let mut bytes = FRR_UP;
            bytes[at] = value;
            decode(&bytes).map(|_| ()).map_err(|e| e.reason())
        };
        assert_eq!(
            decode(&FRR_UP[..23]).map(|_| ()),
            Err(DecodeError::Short(23))
        );
        assert_eq!(with(0, 0x40), Err("version"), "version 2");
        assert_eq!(with(3, 23), Err("length"), "shorter than 24");
        assert_eq!(with(3, 25), Err("length"), "longer than received");
        assert_eq!(with(2, 0), Err("detect_mult_zero"));
        assert_eq!(with(1, 0xc1), Err("multipoint"));
        assert_eq!(with(7, 0), Err("my_discriminator_zero"));
        assert_eq!(with(1, 0xf0), Err("poll_and_final"));
        let mut zero_yours = FRR_UP;
        zero_yours[8..12].fill(0);
        assert_eq!(
            decode(&zero_yours),
            Err(DecodeError::YourDiscriminatorZero(State::Up))
        );
        zero_yours[1] = 0x40; // Down: the peer does not know us yet
        assert!(decode(&zero_yours).is_ok());
        let mut authenticated = [0u8; 26];
        authenticated[..24].copy_from_slice(&FRR_UP);
        authenticated[1] |= AUTHENTICATION;
        authenticated[3] = 26;
        assert_eq!(decode(&authenticated), Err(DecodeError::Authenticated));
        assert_eq!(
            with(1, 0xc4),
            Err("length"),
            "authenticated needs 26 octets"
        );
    }

    #[test]
    fn trailing_octets_beyond_the_length_field_are_ignored() {
        let mut longer = FRR_UP.to_vec();
        longer.extend([0xff; 8]);
        assert_eq!(decode(&longer), decode(&FRR_UP));
    }

    fn any_packet() -> impl Strategy<Value = ControlPacket> {
        (
            0u8..32,
            0u8..4,
            any::<(bool, bool, bool)>(),
            1u8..=255,
            1u32..,
            any::<u32>(),
            any::<(u32, u32, u32)>(),
        )
            .prop_map(
                |(diag, state, (poll, cpi, demand), mult, mine, yours, intervals)| {
                    let state = State::from_bits(state);
                    ControlPacket {
                        diagnostic: Diagnostic::from_bits(diag),
                        state,
                        poll,
                        final_: !poll && cpi,
                        control_plane_independent: cpi,
                        demand,
                        detect_mult: mult,
                        my_discriminator: mine,
                        your_discriminator: if matches!(state, State::Down | State::AdminDown) {
                            yours
                        } else {
                            yours.max(1)
                        },
                        desired_min_tx_us: intervals.0,
                        required_min_rx_us: intervals.1,
                        required_min_echo_rx_us: intervals.2,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_valid_packet_survives_encode_and_decode(packet in any_packet()) {
            prop_assert_eq!(decode(&packet.encode()), Ok(packet));
        }

        #[test]
        fn arbitrary_bytes_decode_or_are_refused_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = decode(&bytes) {
                // What decodes encodes to the same first 24 octets, but for reserved bits.
                let again = decode(&packet.encode()).expect("re-encoded packets decode");
                prop_assert_eq!(again, packet);
            }
        }
    }
}
