//! The `annotations` fuzz target's property (`fuzz/harness/annotations.rs`) on every test run;
//! the fuzzer explores further by coverage (`fuzz/README.md`).

#[path = "../fuzz/harness/annotations.rs"]
mod harness;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_annotations_are_read_without_panic_and_as_written(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        harness::run(&bytes);
    }

    #[test]
    fn address_lists_are_read_as_written(
        choice in 0u8..12,
        parts in proptest::collection::vec(
            " ?(([0-9]{1,3}\\.){3}[0-9]{1,3}|2001:db8::[0-9a-f]{1,4}|[a-z]{0,3}) ?",
            0..4,
        ),
    ) {
        let mut data = vec![choice];
        data.extend_from_slice(parts.join(",").as_bytes());
        harness::run(&data);
    }
}

#[test]
fn the_seeds_read_as_the_fuzzer_starts_from_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/annotations");
    for seed in std::fs::read_dir(dir).expect("seeds") {
        harness::run(&std::fs::read(seed.expect("a seed").path()).expect("readable"));
    }
}
