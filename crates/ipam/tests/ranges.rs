//! The `ranges` fuzz target's property (`fuzz/harness/ranges.rs`) on every test run, over
//! texts built from the pieces addresses are written with; the fuzzer explores further by
//! coverage (`fuzz/README.md`).

#[path = "../fuzz/harness/ranges.rs"]
mod harness;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_bytes_as_pool_addresses_never_panic_and_parse_to_sound_ranges(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        harness::run(&bytes);
    }

    #[test]
    fn address_like_texts_parse_to_sound_ranges(
        lines in proptest::collection::vec(
            "([0-9]{1,3}\\.){3}[0-9]{1,3}(/[0-9]{1,2}| ?- ?([0-9]{1,3}\\.){3}[0-9]{1,3})?|2001:db8:[0-9a-f]{0,4}::[0-9a-f]{0,4}(/[0-9]{1,3}|-2001:db8::[0-9a-f]{0,4})?",
            1..4,
        ),
    ) {
        harness::run(lines.join("\n").as_bytes());
    }
}

#[test]
fn the_seeds_parse_as_the_fuzzer_starts_from_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ranges");
    for seed in std::fs::read_dir(dir).expect("seeds") {
        harness::run(&std::fs::read(seed.expect("a seed").path()).expect("readable"));
    }
}
