//! Hostile input to the parsers (hardening issue, item 14), as property
//! tests with a bounded number of cases so that CI runs them in seconds:
//! the chunk opener, the audio probe and analyzer on mutated real
//! recordings, the audit event decoder, and the signed note and
//! checkpoint parsers. Each must answer (accept or refuse) without
//! panicking, and must never accept what it did not authenticate.

use callvault::audit::event::{Action, Actor, Event, NewEvent};
use callvault::crypto::{DataKey, RecordingCipher, RecordingParams};
use callvault::domain::{KeyArn, RecordingId, Role};
use proptest::prelude::*;

fn cipher() -> RecordingCipher {
    let dk = DataKey::from_slice(&[7u8; 32]).unwrap();
    let params = RecordingParams {
        salt: [1u8; 32],
        nonce_prefix: [2u8; 7],
    };
    RecordingCipher::new(&dk, &params, "tenant-a", "rec-1").unwrap()
}

const FIXTURES: &[&str] = &[
    "speech_pcm.wav",
    "speech_mulaw.wav",
    "speech.mp3",
    "speech.flac",
    "speech_opus.ogg",
    "speech_vorbis.ogg",
    "speech_opus.webm",
    "speech_aac.m4a",
    "speech_aac_moov_end.m4a",
];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A real recording damaged: bytes overwritten, a span cut out, the tail
/// cut off.
#[derive(Debug, Clone)]
struct Damage {
    file: usize,
    writes: Vec<(usize, u8)>,
    cut: Option<(usize, usize)>,
    keep: Option<usize>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        0..FIXTURES.len(),
        proptest::collection::vec((0usize..1 << 20, any::<u8>()), 0..24),
        proptest::option::of((0usize..1 << 20, 1usize..4096)),
        proptest::option::of(0usize..1 << 20),
    )
        .prop_map(|(file, writes, cut, keep)| Damage {
            file,
            writes,
            cut,
            keep,
        })
}

impl Damage {
    fn apply(&self) -> Vec<u8> {
        let mut data = fixture(FIXTURES[self.file]);
        // Damage is likelier where parsers look: the first 64 KiB.
        for &(at, b) in &self.writes {
            let at = at % data.len().min(64 * 1024);
            data[at] = b;
        }
        if let Some((at, len)) = self.cut {
            let at = at % data.len();
            let end = (at + len).min(data.len());
            data.drain(at..end);
        }
        if let Some(keep) = self.keep {
            data.truncate(keep % (data.len() + 1));
        }
        data
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never open as a chunk, whatever the index and flag.
    #[test]
    fn chunk_open_refuses_what_it_did_not_seal(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        index in any::<u32>(),
        fin in any::<bool>(),
    ) {
        prop_assert!(cipher().open_chunk(index, fin, bytes).is_err());
    }

    /// A sealed chunk with any one byte changed, or opened at another
    /// index or with the other final flag, is refused.
    #[test]
    fn a_changed_chunk_is_refused(
        plain in proptest::collection::vec(any::<u8>(), 1..1024),
        at in any::<usize>(),
        bit in 0u8..8,
        index in 0u32..1000,
        other in 0u32..1000,
    ) {
        let c = cipher();
        let sealed = c.seal_chunk(index, false, plain.clone());
        prop_assert_eq!(c.open_chunk(index, false, sealed.clone()).unwrap(), plain);
        let mut flipped = sealed.clone();
        let at = at % flipped.len();
        flipped[at] ^= 1 << bit;
        prop_assert!(c.open_chunk(index, false, flipped).is_err());
        prop_assert!(c.open_chunk(index, true, sealed.clone()).is_err());
        if other != index {
            prop_assert!(c.open_chunk(other, false, sealed).is_err());
        }
    }

    /// Sealed labels: random or altered bytes never open.
    #[test]
    fn metadata_open_refuses_what_it_did_not_seal(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        prop_assert!(cipher().open_metadata(&bytes).is_err());
    }

    /// The canonical event decoder takes only what re-encodes to the very
    /// same bytes, for arbitrary input and for a real event with a byte
    /// changed.
    #[test]
    fn the_audit_event_decoder_never_accepts_a_non_canonical_encoding(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<usize>(),
        to in any::<u8>(),
    ) {
        if let Some(e) = Event::from_canonical(&bytes) {
            prop_assert_eq!(e.canonical(), bytes);
        }
        let real = Event::new(
            "tenant-a",
            7,
            1_764_000_000_000,
            "node-1",
            NewEvent::new(Actor::token("tok-1", Role::Supervisor), Action::PlaybackStarted)
                .recording(RecordingId::new())
                .detail("purpose", "stream")
                .detail("offset_bytes", 0),
        )
        .canonical();
        let mut changed = real.clone();
        let at = at % changed.len();
        changed[at] = to;
        match Event::from_canonical(&changed) {
            Some(e) => prop_assert_eq!(e.canonical(), changed),
            None => prop_assert_ne!(changed, real),
        }
    }

    /// Signed notes, checkpoints and verifier keys from arbitrary text:
    /// refused or parsed, never a panic.
    #[test]
    fn note_and_checkpoint_parsers_answer_any_text(text in "\\PC{0,400}", lines in proptest::collection::vec("[ -~]{0,60}", 0..8)) {
        let joined = lines.join("\n") + "\n";
        for t in [text.as_str(), joined.as_str()] {
            let _ = callvault::audit::checkpoint::Checkpoint::parse(t);
            let _ = callvault::audit::note::VerifierKey::parse(t);
            let _ = callvault::audit::note::SignerKey::parse(t);
            prop_assert!(callvault::audit::note::open(t.as_bytes(), &[]).is_err());
        }
    }

    /// Identifiers and ARNs from the network: one parser each, total.
    #[test]
    fn identifier_parsers_answer_any_text(text in "\\PC{0,300}") {
        if let Ok(arn) = KeyArn::parse("key_arn", &text) {
            prop_assert_eq!(arn.as_str(), text.as_str());
            prop_assert!(!arn.region().is_empty() && !arn.key_id().is_empty());
        }
        if let Ok(id) = RecordingId::parse("recording_id", &text) {
            prop_assert_eq!(id.to_string(), text.clone());
        }
        let _ = callvault::domain::parse_duration(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Damaged real recordings: the head probe and the streaming analyzer
    /// answer (audio with or without a warning, or "not audio") and never
    /// panic or hang.
    #[test]
    fn the_audio_probe_and_analyzer_answer_damaged_recordings(d in damage()) {
        let data = d.apply();
        let head = &data[..data.len().min(64 * 1024)];
        let Ok(detected) = callvault::audio::detect(head) else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let info = rt.block_on(async {
            let analyzer = callvault::audio::Analyzer::start(detected, head);
            for piece in data.chunks(16 * 1024) {
                analyzer.feed_slice(piece).await;
            }
            tokio::time::timeout(std::time::Duration::from_secs(20), analyzer.finish()).await
        });
        let info = info.expect("the analyzer took more than 20 s");
        if let Ok((info, _)) = info {
            prop_assert!(!info.container.is_empty());
        }
    }
}
