//! Region cache operation sequences; the cache's invariants must hold after every step.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tikv_core::fuzzing::region_cache_ops(data));
