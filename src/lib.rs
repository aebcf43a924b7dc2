//! callvault: an encrypted-at-rest archive for contact-center call recordings.
//!
//! Layers, bottom up (see ARCHITECTURE.md): `crypto` (pure format) and `audit`
//! (pure Merkle tree, proofs and signed checkpoints), `kms`,
//! `store`, `catalog`, `audio`; the use cases `ingest`, `playback` and `keys` composed
//! over an `archive::Archive`; `api` (gRPC edge) and `server`; `tls` (rustls for
//! the listeners and the client); `revocation` (revoked keys and tokens reaching open
//! streams); `config` (settings → archive → listeners) and
//! `client` (the typed gRPC client). The `callvault`
//! binary (`src/bin/callvault/`) is the command line over `config` and `client`;
//! `synth` makes synthetic audio for the demo, tests and benches; `backup`
//! snapshots, verifies, restores and prunes backups of the embedded default.

pub mod access;
pub mod api;
pub mod archive;
pub mod audio;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod checksum;
pub mod client;
pub mod compliance;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod export;
pub mod fault;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod kms;
pub mod metrics;
pub mod operator;
pub mod playback;
pub mod revocation;
pub mod server;
pub mod store;
pub mod synth;
pub mod tls;
