//! The audit trail's verifiable core: a Merkle tree over each tenant's events.
//!
//! Every module here is pure: no I/O, no async, no knowledge of gRPC, SQL,
//! object stores or KMS.

pub mod merkle;
pub mod proof;
