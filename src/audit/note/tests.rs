//! Signed-note tests: Go's and C2SP's published keys, notes and signatures,
//! then tamper and bad-input tables.

use super::*;
use crate::audit::checkpoint::{Checkpoint, CheckpointError};

/// `sumdb/note/example_test.go` and `note_test.go` of golang.org/x/mod
/// (github.com/golang/mod commit fe2ec04, BSD-3-Clause).
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
/// Go's `ExampleSign_add_signatures` generates this key from an all-zero
/// random source, i.e. from the all-zero seed.
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter() -> SignerKey {
    SignerKey::parse(PETER_SKEY).unwrap()
}

fn enoch() -> SignerKey {
    SignerKey::from_seed("EnochRoot", Zeroizing::new([0; 32])).unwrap()
}

fn vkey(text: &str) -> VerifierKey {
    VerifierKey::parse(text).unwrap()
}

#[test]
fn go_example_keys_notes_and_signatures() {
    let (peter, enoch) = (peter(), enoch());
    assert_eq!(peter.verifier().to_string(), PETER_VKEY);
    assert_eq!(enoch.verifier().to_string(), ENOCH_VKEY);
    assert_eq!(vkey(PETER_VKEY), peter.verifier());
    let public_key = *peter.verifier().public_key();
    let rebuilt = VerifierKey::from_public_key("PeterNeumann", public_key).unwrap();
    assert_eq!(rebuilt, peter.verifier());
    assert_eq!(peter.key_id(), 0xc74f_20a3);
    use secrecy::ExposeSecret;
    assert_eq!(peter.to_secret_text().expose_secret(), PETER_SKEY);
    assert_eq!(
        enoch.to_secret_text().expose_secret(),
        "PRIVATE+KEY+EnochRoot+af0cfe78+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );

    // ExampleSign and ExampleSign_add_signatures, byte for byte.
    assert_eq!(
        sign(TEXT, &[&peter]).unwrap(),
        format!("{TEXT}\n{PETER_SIG}")
    );
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(sign(TEXT, &[&peter, &enoch]).unwrap(), both);

    // ExampleOpen and TestOpen: verified by one or both, the other ignored.
    let opened = open(
        format!("{TEXT}\n{PETER_SIG}").as_bytes(),
        &[vkey(PETER_VKEY)],
    )
    .unwrap();
    assert_eq!(opened.text, TEXT);
    assert_eq!(opened.signed_by, vec![vkey(PETER_VKEY)]);
    let opened = open(both.as_bytes(), &[vkey(ENOCH_VKEY)]).unwrap();
    assert_eq!(opened.signed_by, vec![vkey(ENOCH_VKEY)]);
    let opened = open(both.as_bytes(), &[vkey(ENOCH_VKEY), vkey(PETER_VKEY)]).unwrap();
    assert_eq!(opened.signed_by, vec![vkey(PETER_VKEY), vkey(ENOCH_VKEY)]);
}

/// The example of https://c2sp.org/signed-note (C2SP/C2SP commit 5ba5ee8).
#[test]
fn c2sp_example_verifies() {
    let key = vkey("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k");
    let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    assert_eq!(
        open(note.as_bytes(), &[key]).unwrap().text,
        "This is an example message.\n"
    );
}

/// A real tree head in checkpoint form, signed by the Go checksum database
/// test server: `sumdb/client_test.go` of golang.org/x/mod (commit fe2ec04),
/// `testSignerKey`/`testVerifierKey` and the two signed trees its
/// `TestClientFork` prints. The key ID 00000c67 also checks zero padding.
#[test]
fn go_sumdb_checkpoints_verify_and_sign_identically() {
    const SKEY: &str = "PRIVATE+KEY+localhost.localdev/sumdb+00000c67+AXu6+oaVaOYuQOFrf1V59JK1owcFlJcHwwXHDfDGxSPk";
    const VKEY: &str =
        "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6";
    let cases = [
        (
            "go.sum database tree",
            6,
            "wc4SkQt52o5W2nQ8To2ARs+mWuUJjss+sdleoiqxMmM=",
            "AAAMZ6oRNswlEZ6ZZhxrCvgl1MBy+nusq4JU+TG6Fe2NihWLqOzb+y2c2kzRLoCr4tvw9o36ucQEnhc20e4nA4Qc/wc=",
        ),
        (
            // The comment prints this origin as "go.sum database tree!"; the
            // signature is over "go.sum database tree" (checked with
            // pyca/cryptography too).
            "go.sum database tree",
            5,
            "nWzN20+pwMt62p7jbv1/NlN95ePTlHijabv5zO/s36w=",
            "AAAMZ5/2FVAdMH58kmnz/0h299pwyskEbzDzoa2/YaPdhvLya4YWDFQQxu2TQb5GpwAH4NdWnTwuhILafisyf3CNbgg=",
        ),
    ];
    let signer = SignerKey::parse(SKEY).unwrap();
    assert_eq!(signer.verifier().to_string(), VKEY);
    for (origin, size, root, signature) in cases {
        let note =
            format!("{origin}\n{size}\n{root}\n\n\u{2014} localhost.localdev/sumdb {signature}\n");
        let checkpoint = Checkpoint::open(note.as_bytes(), origin, &[vkey(VKEY)]).unwrap();
        assert_eq!((checkpoint.origin(), checkpoint.size()), (origin, size));
        assert_eq!(checkpoint.sign(&[&signer]).unwrap(), note);
        let other_log = Checkpoint::open(note.as_bytes(), "go.sum database tree?", &[vkey(VKEY)]);
        assert!(matches!(
            other_log,
            Err(CheckpointError::OriginMismatch { .. })
        ));
    }
}

#[test]
fn generated_keys_sign_and_round_trip() {
    use secrecy::ExposeSecret;
    let key = SignerKey::generate("callvault.test/audit/t1").unwrap();
    let other = SignerKey::generate("callvault.test/audit/t1").unwrap();
    assert_ne!(key.verifier(), other.verifier());
    let reparsed = SignerKey::parse(key.to_secret_text().expose_secret()).unwrap();
    assert_eq!(reparsed.verifier(), key.verifier());
    assert_eq!(vkey(&key.verifier().to_string()), key.verifier());
    let note = sign("hello\n", &[&key]).unwrap();
    assert_eq!(sign("hello\n", &[&reparsed]).unwrap(), note);
    assert_eq!(
        open(note.as_bytes(), &[key.verifier()]).unwrap().text,
        "hello\n"
    );
    // Another key of the same name has another key ID (but for a 2^-32
    // chance), so its verifier does not even look at this signature.
    assert_eq!(
        open(note.as_bytes(), &[other.verifier()]),
        Err(NoteError::NoKnownSignature)
    );
}

#[test]
fn signer_debug_is_redacted() {
    let shown = format!("{:?}", peter());
    assert_eq!(
        shown,
        "SignerKey { name: \"PeterNeumann\", key_id: c74f20a3, seed: \"<redacted>\" }"
    );
    assert!(!shown.contains("AYEK"));
}

/// Go's TestNewVerifier/TestNewSigner manglings: every proper substring of a
/// key text and every single incremented byte is refused, plus wrong-length
/// and unknown-algorithm keys carrying a correct key ID.
#[test]
fn mangled_key_texts_are_refused() {
    for key in [PETER_VKEY, PETER_SKEY] {
        let parse = |text: &str| {
            if key == PETER_VKEY {
                VerifierKey::parse(text).is_ok()
            } else {
                SignerKey::parse(text).is_ok()
            }
        };
        let b = key.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let sub = String::from_utf8_lossy(&b[i..j]);
                    assert!(!parse(&sub), "substring {sub:?} accepted");
                }
            }
        }
        for i in 0..b.len() {
            let mut bumped = b.to_vec();
            bumped[i] = bumped[i].wrapping_add(1);
            let bumped = String::from_utf8_lossy(&bumped);
            assert!(!parse(&bumped), "{bumped:?} accepted");
        }
    }
    let wrong_length = "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==";
    assert!(matches!(
        VerifierKey::parse(wrong_length),
        Err(NoteError::VerifierKey(_))
    ));
    let unknown_alg = "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    assert_eq!(
        VerifierKey::parse(unknown_alg),
        Err(NoteError::UnsupportedAlgorithm(0x65))
    );
    let upper = "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    assert!(matches!(
        VerifierKey::parse(upper),
        Err(NoteError::VerifierKey(_))
    ));
    for name in ["", "a b", "a+b", "tab\tname", "nbsp\u{a0}name"] {
        let err = SignerKey::from_seed(name, Zeroizing::new([1; 32])).unwrap_err();
        assert_eq!(err, NoteError::KeyName(name.to_owned()));
    }
}

#[test]
fn tampered_and_malformed_notes_are_refused() {
    use NoteError::{
        AmbiguousVerifier, InvalidSignature, Malformed, NoKnownSignature, NoSigner,
        TooManySignatures,
    };
    let known = [vkey(PETER_VKEY)];
    let good = format!("{TEXT}\n{PETER_SIG}");
    let sig_b64 = PETER_SIG.trim_end().rsplit(' ').next().unwrap();
    // Peter's name and key ID in front of Enoch's signature bytes.
    let mut forged = STANDARD
        .decode(ENOCH_SIG.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    forged[..4].copy_from_slice(&0xc74f_20a3u32.to_be_bytes());
    let forged = format!(
        "{TEXT}\n\u{2014} PeterNeumann {}\n",
        STANDARD.encode(forged)
    );
    let cases: Vec<(&str, Vec<u8>, NoteError)> = vec![
        (
            "edited body",
            good.replacen("answer", "Answer", 1).into(),
            InvalidSignature {
                name: "PeterNeumann".into(),
                key_id: 0xc74f_20a3,
            },
        ),
        (
            "signature by another key",
            format!("{TEXT}\n{ENOCH_SIG}").into(),
            NoKnownSignature,
        ),
        (
            "another key's bytes under Peter's ID",
            forged.into(),
            InvalidSignature {
                name: "PeterNeumann".into(),
                key_id: 0xc74f_20a3,
            },
        ),
        (
            "text only",
            TEXT.into(),
            Malformed("no blank line before the signatures"),
        ),
        (
            "no signature",
            format!("{TEXT}\n").into(),
            Malformed("the signature block is empty or does not end in a newline"),
        ),
        (
            "truncated last line",
            good[..good.len() - 1].into(),
            Malformed("the signature block is empty or does not end in a newline"),
        ),
        (
            "line after signatures",
            format!("{good}Unexpected line.\n").into(),
            Malformed("a signature line does not start with an em dash and a space"),
        ),
        (
            "hyphen for em dash",
            good.replace('\u{2014}', "-").into(),
            Malformed("a signature line does not start with an em dash and a space"),
        ),
        (
            "space in name",
            format!("{TEXT}\n\u{2014} Bad Name {sig_b64}\n").into(),
            Malformed("a signature is not canonical standard base64"),
        ),
        (
            "plus in name",
            format!("{TEXT}\n\u{2014} Bad+Name {sig_b64}\n").into(),
            Malformed("a signature's key name is not valid"),
        ),
        (
            "no signature bytes",
            format!("{TEXT}\n\u{2014} PeterNeumann\n").into(),
            Malformed("a signature line has no space after the key name"),
        ),
        (
            "key ID only",
            format!("{TEXT}\n\u{2014} PeterNeumann x08gow==\n").into(),
            Malformed("a signature is shorter than a key ID and one byte"),
        ),
        (
            "unpadded signature",
            good.replace("AM=\n", "AM\n").into(),
            Malformed("a signature is not canonical standard base64"),
        ),
        (
            "CRLF",
            good.replace('\n', "\r\n").into(),
            Malformed("control character other than newline"),
        ),
        (
            "control character",
            format!("\u{1}{good}").into(),
            Malformed("control character other than newline"),
        ),
        (
            "invalid UTF-8",
            [b"\xff".as_slice(), good.as_bytes()].concat(),
            Malformed("not UTF-8"),
        ),
        (
            "101 signatures",
            format!("{TEXT}\n{}", PETER_SIG.repeat(101)).into(),
            TooManySignatures,
        ),
        ("no known keys", good.clone().into(), NoKnownSignature),
    ];
    for (name, note, want) in cases {
        let keys: &[VerifierKey] = if name == "no known keys" { &[] } else { &known };
        assert_eq!(open(&note, keys), Err(want), "{name}");
    }
    // Duplicates count once; a verifier list naming one key twice is refused.
    let twice = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(open(twice.as_bytes(), &known).unwrap().signed_by.len(), 1);
    let ambiguous = open(twice.as_bytes(), &[vkey(PETER_VKEY), vkey(PETER_VKEY)]);
    assert!(matches!(ambiguous, Err(AmbiguousVerifier { .. })));
    // Signing refuses what opening would refuse.
    assert_eq!(
        sign("no newline", &[&peter()]),
        Err(Malformed("the text does not end in a newline"))
    );
    assert_eq!(
        sign("a\rb\n", &[&peter()]),
        Err(Malformed("control character other than newline"))
    );
    assert_eq!(sign(TEXT, &[]), Err(NoSigner));
}

/// Every prefix, every single-byte change and pseudo-random garbage: refused
/// with an error, never a panic, and never accepted.
#[test]
fn no_edit_of_a_signed_checkpoint_is_accepted() {
    let signer = peter();
    let checkpoint = Checkpoint::new(
        "callvault.test/t1",
        42,
        crate::audit::merkle::empty_root(),
        vec![],
    )
    .unwrap();
    let note = checkpoint.sign(&[&signer]).unwrap().into_bytes();
    let known = [signer.verifier()];
    assert_eq!(
        Checkpoint::open(&note, "callvault.test/t1", &known).unwrap(),
        checkpoint
    );
    for end in 0..note.len() {
        assert!(
            Checkpoint::open(&note[..end], "callvault.test/t1", &known).is_err(),
            "prefix {end}"
        );
    }
    for i in 0..note.len() {
        for delta in [1u8, 0x20, 0x80] {
            let mut edited = note.clone();
            edited[i] ^= delta;
            assert!(
                Checkpoint::open(&edited, "callvault.test/t1", &known).is_err(),
                "byte {i} ^ {delta:#x}"
            );
        }
    }
    let mut state = 0x5eed_u64;
    for len in 0..400 {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect();
        assert!(open(&garbage, &known).is_err());
    }
}
