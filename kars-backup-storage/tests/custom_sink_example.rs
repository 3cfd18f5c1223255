//! Runs `examples/custom_sink.rs`, a downstream team's sink, through the public conformance
//! suite as part of the test suite (it is also an example target: `cargo run --example custom_sink`).

#[path = "../../examples/custom_sink.rs"]
mod custom_sink;

#[test]
fn the_custom_sink_example_passes_the_conformance_suite() {
    custom_sink::main().expect("the example's sink conforms");
}
