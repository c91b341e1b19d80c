//! Any sequence of inputs, packets among them with arbitrary fields: the session never
//! panics, and what it sends is always a valid packet of its own.

use std::time::Duration;

use herald_bfd::{Action, Config, ControlPacket, Diagnostic, Input, Session, State, Timer, packet};
use proptest::prelude::*;

const LOCAL: u32 = 0x0a0b_0c0d;

fn any_state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::AdminDown),
        Just(State::Down),
        Just(State::Init),
        Just(State::Up)
    ]
}

fn any_packet() -> impl Strategy<Value = ControlPacket> {
    (
        any_state(),
        any::<(bool, bool, bool)>(),
        1u8..=255,
        1u32..,
        prop_oneof![Just(0), Just(LOCAL), any::<u32>()],
        any::<(u32, u32)>(),
    )
        .prop_map(
            |(state, (poll, fin, demand), mult, mine, yours, (tx, rx))| ControlPacket {
                diagnostic: Diagnostic::None,
                state,
                poll,
                final_: fin && !poll,
                control_plane_independent: false,
                demand,
                detect_mult: mult,
                my_discriminator: mine,
                your_discriminator: yours,
                desired_min_tx_us: tx,
                required_min_rx_us: rx,
                required_min_echo_rx_us: 0,
            },
        )
}

fn any_config() -> impl Strategy<Value = Config> {
    // Mostly everyday intervals, sometimes absurd ones (up to 49 days).
    let millis = || prop_oneof![4 => 0u64..20_000, 1 => any::<u32>().prop_map(u64::from)];
    (millis(), millis(), 0u8..=255, any::<bool>()).prop_map(|(tx, rx, mult, passive)| Config {
        desired_min_tx: Duration::from_millis(tx),
        required_min_rx: Duration::from_millis(rx),
        detect_mult: mult,
        passive,
    })
}

fn any_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => any_packet().prop_map(Input::Received),
        2 => Just(Input::Timer(Timer::Transmit)),
        2 => Just(Input::Timer(Timer::Detect)),
        1 => any_config().prop_map(Input::Configure),
        1 => Just(Input::AdminDown),
        1 => Just(Input::Start),
    ]
}

proptest! {
    #[test]
    fn any_inputs_leave_a_session_sending_only_valid_packets_of_its_own(
        config in any_config(),
        inputs in proptest::collection::vec(any_input(), 0..64),
    ) {
        let mut session = Session::new(config, LOCAL, 3);
        for input in inputs {
            for action in session.handle(input) {
                match action {
                    Action::Send(sent) => {
                        prop_assert_eq!(packet::decode(&sent.encode()), Ok(sent));
                        prop_assert_eq!(sent.my_discriminator, LOCAL);
                        prop_assert!(!(sent.poll && sent.final_));
                        prop_assert_eq!(sent.state, session.state());
                        if sent.state != State::Up {
                            prop_assert!(sent.desired_min_tx_us >= 1_000_000, "slow start");
                        }
                    }
                    Action::Arm(Timer::Transmit, after) => {
                        let interval = session.transmit_interval();
                        // (a microsecond of slack for the float scaling of huge intervals)
                        prop_assert!(interval.is_some_and(|i| after <= i && after + Duration::from_micros(1) >= i * 3 / 4));
                    }
                    Action::Arm(Timer::Detect, after) => {
                        prop_assert_eq!(Some(after), session.detection_time());
                    }
                    Action::Disarm(_) | Action::Report(_) => {}
                }
            }
        }
    }
}
