//! Names what an upload is from its magic bytes: symphonia 0.5 does not report
//! which reader matched, and for non-audio we want to say what it *is*.

/// The container (`"wav"`, `"mp3"`, `"flac"`, `"ogg"`, `"mkv"`, `"webm"`,
/// `"mp4"`), or a description of what was found instead ("a PDF document").
pub fn sniff(head: &[u8]) -> &'static str {
    let starts = |m: &[u8]| head.starts_with(m);
    let riff_form = head.get(8..12);
    if (starts(b"RIFF") || starts(b"RF64")) && riff_form == Some(b"WAVE") {
        "wav"
    } else if starts(b"RIFF") && riff_form == Some(b"AVI ") {
        "AVI video"
    } else if starts(b"RIFF") && riff_form == Some(b"WEBP") {
        "WebP image"
    } else if starts(b"fLaC") {
        "flac"
    } else if starts(b"OggS") {
        "ogg"
    } else if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        if head.windows(4).take(64).any(|w| w == b"webm") {
            "webm"
        } else {
            "mkv"
        }
    } else if head.get(4..8) == Some(b"ftyp") {
        iso_brand(head.get(8..12))
    } else if starts(b"ID3") || (head.len() > 1 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        "mp3"
    } else if starts(b"%PDF") {
        "a PDF document"
    } else if starts(&[0x89, b'P', b'N', b'G']) {
        "a PNG image"
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        "a JPEG image"
    } else if starts(b"GIF8") {
        "a GIF image"
    } else if starts(b"PK\x03\x04") {
        "a ZIP archive"
    } else if starts(&[0x1F, 0x8B]) {
        "gzip data"
    } else if starts(b"\x7FELF") {
        "an ELF executable"
    } else if !head.is_empty()
        && std::str::from_utf8(head)
            .is_ok_and(|s| !s.chars().any(|c| c.is_control() && !c.is_whitespace()))
    {
        "text"
    } else {
        "unrecognised binary data"
    }
}

/// ISO base media files share the `ftyp` atom; its major brand tells still
/// images (HEIF, AVIF), which carry no `moov`, from movies and audio.
fn iso_brand(major: Option<&[u8]>) -> &'static str {
    match major {
        Some(b"heic" | b"heix" | b"heim" | b"heis" | b"mif1" | b"msf1") => "a HEIF image",
        Some(b"avif" | b"avis") => "an AVIF image",
        _ => "mp4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_common_non_audio() {
        assert_eq!(sniff(b"%PDF-1.7 ..."), "a PDF document");
        assert_eq!(sniff(b"hello world\n"), "text");
        assert_eq!(sniff(&[0x89, b'P', b'N', b'G', 0, 0]), "a PNG image");
        assert_eq!(sniff(&[0u8, 1, 2, 3, 200, 201]), "unrecognised binary data");
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0"), "a HEIF image");
    }

    #[test]
    fn names_audio_containers() {
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), "wav");
        assert_eq!(sniff(b"RF64\xff\xff\xff\xffWAVEds64"), "wav");
        assert_eq!(sniff(b"\0\0\0\x1cftypM4A \0\0\x02\0"), "mp4");
    }
}
