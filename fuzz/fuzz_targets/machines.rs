//! The core's machines against a server answering with arbitrary bytes: each must end,
//! without panicking, in a bounded number of effects.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tikv_core::fuzzing::machines_with_responses(data);
});
