//! Runs `examples/custom_source.rs`, a downstream team's source, through the public source
//! conformance suite as part of the test suite (it is also an example target:
//! `cargo run -p kars-backup-core --example custom_source`).

#[path = "../../examples/custom_source.rs"]
mod custom_source;

#[test]
fn the_custom_source_example_passes_the_source_conformance_suite() {
    custom_source::main().expect("the example's source conforms");
}
