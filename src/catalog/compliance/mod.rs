//! Retention rules, legal holds, erasure (tombstones and the object-deletion
//! queue) and deletion certificates.
//!
//! Erasure is crypto-shredding: the recording's row, which holds the only
//! copy of its wrapped data key the catalog keeps, is deleted in the same
//! transaction that writes its tombstone, its certificate (pending until its
//! objects are verified gone) and its audit event, and queues its objects
//! for deletion. A recording with an active legal hold is never deleted:
//! the delete statement itself requires `legal_hold = 0`, so a hold that
//! commits first wins whatever the interleaving.
//!
//! One file per room: `retention`, `holds`, `erasure`, `certificates`.

mod certificates;
mod erasure;
mod holds;
mod retention;

pub use certificates::*;
pub use erasure::*;
pub use holds::*;
pub use retention::*;
