//! The one integration-test binary. Each module is a concern; every test
//! starts its own server on port 0 over its own fresh catalog.

// Panicking is how a test reports failure; helpers outside #[test] fns too.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod catalog_contract;
mod crash;
mod formats;
mod helpers;
mod independent;
mod keys;
mod kms_contract;
mod kms_errors;
mod roundtrip;
mod tamper;
