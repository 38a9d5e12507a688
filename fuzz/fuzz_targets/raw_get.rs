//! A raw get against a server answering with arbitrary bytes: it must end, without panicking.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tikv_core::fuzzing::raw_get_with_responses(data);
});
