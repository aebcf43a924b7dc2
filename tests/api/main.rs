//! The one integration-test binary. Each module is a concern; every test
//! starts its own server on port 0 over its own fresh catalog.

mod bad_input;
mod catalog_contract;
mod crash;
mod helpers;
mod independent;
mod kms_contract;
mod roundtrip;
mod tamper;
