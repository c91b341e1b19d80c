//! Any bytes from a router in a session already Established, in any split, with timers
//! between: see `harness/established.rs` for what is checked.
#![no_main]

#[path = "../harness/established.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
