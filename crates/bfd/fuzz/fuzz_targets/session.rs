//! Any datagrams from a peer, between any timer expiries and configuration changes: decoding
//! and the session never panic, and every packet the session sends is valid and its own.
#![no_main]

use std::time::Duration;

use herald_bfd::{Action, Config, Input, Session, Timer, packet};
use libfuzzer_sys::fuzz_target;

const LOCAL: u32 = 0x0a0b_0c0d;

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new(
        Config {
            desired_min_tx: Duration::from_millis(100),
            required_min_rx: Duration::from_millis(100),
            detect_mult: 3,
            passive: false,
        },
        LOCAL,
        1,
    );
    let mut actions = session.handle(Input::Start);
    // Each step: one byte says what happens; a datagram is the next `length` bytes.
    let mut rest = data;
    while let Some((&step, tail)) = rest.split_first() {
        rest = tail;
        let input = match step % 8 {
            0 => Input::Timer(Timer::Transmit),
            1 => Input::Timer(Timer::Detect),
            2 => Input::AdminDown,
            3 => Input::Start,
            4 => Input::Configure(Config {
                desired_min_tx: Duration::from_millis(u64::from(step) * 10),
                required_min_rx: Duration::from_millis(u64::from(step) * 7),
                detect_mult: step / 8,
                passive: step & 0x80 != 0,
            }),
            _ => {
                let length = usize::from(step / 8).min(rest.len());
                let (datagram, tail) = rest.split_at(length);
                rest = tail;
                match packet::decode(datagram) {
                    Ok(packet) => Input::Received(packet),
                    Err(_) => continue,
                }
            }
        };
        actions.extend(session.handle(input));
    }
    for action in actions {
        if let Action::Send(sent) = action {
            assert_eq!(packet::decode(&sent.encode()), Ok(sent));
            assert_eq!(sent.my_discriminator, LOCAL);
        }
    }
});
