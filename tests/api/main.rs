//! The one integration-test binary. Each module is a concern; every test
//! starts its own server on port 0 over its own fresh catalog.

// Panicking is how a test reports failure; helpers outside #[test] fns too.
#![allow(clippy::unwrap_used)]

// First, so that its macros (`require!`) are in scope in every module.
#[macro_use]
mod helpers;

mod audit;
mod backup;
mod bad_input;
mod browser;
mod catalog_contract;
mod cli;
mod compliance;
mod compose;
mod config_file;
mod crash;
mod durability;
mod export;
mod export_bundle;
mod export_load;
mod formats;
mod http_conns;
mod http_playback;
mod independent;
mod key_safety;
mod keys;
mod kms_contract;
mod kms_errors;
mod listening;
mod load;
mod localstack;
mod logs;
mod metrics;
mod page_api;
mod peaks;
mod pg_proxy;
mod python_example;
mod readme;
mod rendition;
mod revocation;
mod robustness;
mod roundtrip;
mod search;
mod tamper;
mod tls;
mod tokens;
mod upload_safety;
