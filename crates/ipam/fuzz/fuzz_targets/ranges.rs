//! A pool's `spec.addresses` from any bytes (one address text a line): see
//! `harness/ranges.rs` for what is checked.
#![no_main]

#[path = "../harness/ranges.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
