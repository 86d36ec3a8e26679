//! Fuzz target: see `switchyard::fuzzing::crt_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::crt_line(data));
