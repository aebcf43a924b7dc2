//! The audit trail: every access to a recording or a key, per tenant, in an
//! append-only log hashed into a Merkle tree with signed checkpoints.
//! `event` is the event model and its canonical encoding (pure); `trail`
//! records events from the use cases, in their transactions.

pub mod event;
pub mod log;
pub mod trail;
