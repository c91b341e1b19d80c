//! A Service's annotations from any bytes: see `harness/annotations.rs` for how they are
//! built and what is checked.
#![no_main]

#[path = "../harness/annotations.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
