//! The gRPC message decoder on arbitrary chunks: errors are fine, panics are not.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tikv_driver::grpc::codec::fuzz_decode(data));
