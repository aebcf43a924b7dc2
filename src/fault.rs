//! Pause points for crash tests. With `CALLVAULT_FAULT_PAUSE=<point>` in its
//! environment, the process stops at `<point>` (the task waits forever,
//! after printing `fault pause at <point>` on stderr) so that a test can
//! kill -9 it exactly there and check what a restart finds. Never set in
//! production; unset, a point costs one read of a cached value.

use std::sync::OnceLock;

/// Waits forever if this process was told to pause at `point`.
pub async fn pause_point(point: &'static str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("CALLVAULT_FAULT_PAUSE").ok());
    if wanted.as_deref() == Some(point) {
        eprintln!("fault pause at {point}");
        std::future::pending::<()>().await;
    }
}
