//! The decoder's complaints about one piece of audio, counted instead of
//! printed.
//!
//! symphonia reports what it skips in damaged audio through the `log`
//! crate, one record per packet or resync: one bad upload is thousands of
//! log lines, on every node that demuxes or decodes it. Inside [`collect`],
//! the records symphonia emits on this thread are counted (and the first
//! kept) by the [`DecoderNoise`] layer instead of reaching the log; the
//! caller writes one line naming the recording (`Noise::summary`).
//! Outside `collect` they pass through as before.

use std::cell::RefCell;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

/// What the decoder reported while collecting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Noise {
    /// Records suppressed.
    pub records: u64,
    /// The first of them, as `target: message`.
    pub first: Option<String>,
}

impl Noise {
    pub fn merge(&mut self, other: Noise) {
        self.records += other.records;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    /// One line for all of it, or None when the decoder said nothing.
    pub fn summary(&self) -> Option<String> {
        let first = self.first.as_deref()?;
        Some(match self.records {
            1 => format!("1 decoder report: {first}"),
            n => format!("{n} decoder reports; the first: {first}"),
        })
    }
}

thread_local! {
    static COLLECTING: RefCell<Option<Noise>> = const { RefCell::new(None) };
}

/// Runs `f`, adding what the decoder reports on this thread meanwhile to
/// `noise` instead of logging it. Nested calls collect into the outermost.
pub fn collect<T>(noise: &mut Noise, f: impl FnOnce() -> T) -> T {
    let outer = COLLECTING.with(|c| c.borrow().is_some());
    if outer {
        return f();
    }
    COLLECTING.with(|c| *c.borrow_mut() = Some(Noise::default()));
    // Restores the thread's state even if `f` panics (symphonia readers
    // run under `catch_unwind`).
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            COLLECTING.with(|c| c.borrow_mut().take());
        }
    }
    let reset = Reset;
    let out = f();
    if let Some(got) = COLLECTING.with(|c| c.borrow_mut().take()) {
        noise.merge(got);
    }
    drop(reset);
    out
}

fn is_decoder(target: &str) -> bool {
    target.starts_with("symphonia")
}

/// The layer that diverts decoder records inside [`collect`]. Install it on
/// the process's subscriber before the formatting layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecoderNoise;

impl<S: Subscriber> Layer<S> for DecoderNoise {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // `log` records arrive through a few shared callsites (target
        // "log"); their real target is only known per event.
        if is_decoder(meta.target()) || meta.target() == "log" {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let normalized = event.normalized_metadata();
        let target = normalized
            .as_ref()
            .map_or_else(|| event.metadata().target(), |m| m.target());
        if !is_decoder(target) {
            return true;
        }
        COLLECTING.with(|c| match c.borrow_mut().as_mut() {
            Some(noise) => {
                noise.records += 1;
                if noise.first.is_none() {
                    let mut message = Message(String::new());
                    event.record(&mut message);
                    noise.first = Some(format!("{target}: {}", message.0));
                }
                false
            }
            None => true,
        })
    }
}

/// The event's `message` field.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts what reaches the layer after [`DecoderNoise`].
    #[derive(Clone, Default)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(m.0);
        }
    }

    #[test]
    fn decoder_records_are_counted_inside_collect_and_pass_outside() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(DecoderNoise)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let mut noise = Noise::default();
            let out = collect(&mut noise, || {
                for i in 0..1000 {
                    tracing::warn!(target: "symphonia_bundle_mp3::demuxer", "skipping junk {i}");
                }
                tracing::warn!(target: "callvault::ingest", "ours");
                7
            });
            assert_eq!(out, 7);
            assert_eq!(noise.records, 1000);
            assert_eq!(
                noise.summary().as_deref(),
                Some(
                    "1000 decoder reports; the first: symphonia_bundle_mp3::demuxer: skipping junk 0"
                )
            );
            // Outside collect, the decoder's records are logged as before.
            tracing::warn!(target: "symphonia_core::probe", "outside");
            // A second collection adds to the same total.
            collect(&mut noise, || {
                tracing::warn!(target: "symphonia_codec_aac", "again");
            });
            assert_eq!(noise.records, 1001);
        });
        let seen = seen.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(seen, vec!["ours".to_owned(), "outside".to_owned()]);
        assert_eq!(Noise::default().summary(), None);
    }
}
