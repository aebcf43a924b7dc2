//! The streaming demuxer for every container but MP4, run in short batches on
//! the blocking pool that never wait for bytes.
//!
//! symphonia's readers pull bytes through a blocking `Read`. Instead of
//! parking a thread in that `Read` until the network delivers (one thread per
//! upload, for the whole upload), bytes are queued here as they are fed, and
//! a batch runs only over bytes already queued:
//!
//! - The reader is opened over bytes read without taking them from the
//!   queue: first once [`FIRST_OPEN`] bytes are queued, and if that was not
//!   the whole header, again each time the queue has doubled, up to
//!   [`HEADER_WINDOW`] (or the end of the stream). Only an open that
//!   succeeds takes what it read. A live call's header is read within
//!   seconds, and a header with large tags or cover art is still read
//!   whole.
//! - A batch calls `next_packet` only while more than the stream's window
//!   ([`WINDOW`], or [`wav_window`] for a WAV stream) waits past the
//!   reader's position, or the stream has ended. The window exceeds any
//!   packet of the stream plus symphonia's 32 KiB read-ahead, so the reader
//!   never finds the queue empty mid-packet. If it does anyway (a
//!   gigantic packet, or a long run of garbage to resynchronise over), the
//!   read fails instead of blocking, and the recording is kept with a warning
//!   saying up to where it was measured.
//! - When the queue drops to the window, the batch puts the format reader
//!   back in [`Slot::Idle`] (a `Box<dyn FormatReader>` is `Send`) and
//!   returns its thread. The next batch starts once half a window more (at
//!   least [`MIN_BATCH`]) is queued.
//! - `feed` waits, asynchronously, while more than two windows are queued
//!   and a batch is running or waiting for a thread.

use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatReader, Packet};
use symphonia::core::io::MediaSource;
use symphonia::core::units::TimeBase;
use tokio::sync::Notify;

use super::noise::{self, Noise};
use super::queue::Pieces;
use super::{Detected, ebml, probe, wav};
use crate::domain::AudioInfo;

/// The largest header the analyzer reads (tags, cover art, a WAV's LIST
/// chunks before its data).
pub(super) const HEADER_WINDOW: usize = 1 << 20;
/// Bytes queued before the first attempt to open the reader.
const FIRST_OPEN: usize = 64 << 10;
/// Bytes that must wait past the reader's position before it reads a
/// packet. The largest packets of the supported formats are tens of KiB (a
/// WAV packet is at most 1,152 frames, 36 KiB at 8 channels of 32 bits; an
/// Ogg page at most 64 KiB); symphonia reads 32 KiB ahead. Every upload
/// holds this much of what it received, so it is the analyzer's share of an
/// upload's memory: 1 MiB here made 100 concurrent uploads hold 100–200 MiB
/// in their analyzers alone, and a live call hold minutes of audio twice.
pub(super) const WINDOW: usize = 256 << 10;
/// The fewest bytes a batch of packets waits for past the window.
const MIN_BATCH: usize = 32 << 10;
/// symphonia's read-ahead past the packet it returns, with room to spare.
const READ_AHEAD: usize = 48 << 10;

/// The window of a WAV stream: its largest packet (symphonia's WAV reader
/// cuts `max_frames_per_packet` frames, 1,152) at 8 bytes per sample per
/// channel, the most any WAV codec takes, plus the read-ahead; never more
/// than [`WINDOW`]. A G.711 call's analyzer then holds about 60 KiB, not
/// 256 KiB: with a thousand live calls, the difference is a quarter of a
/// GiB.
fn wav_window(params: &symphonia::core::codecs::CodecParameters) -> usize {
    let frames = params.max_frames_per_packet.unwrap_or(u64::MAX);
    let channels = params.channels.map_or(u64::MAX, |c| c.count() as u64);
    let packet = frames.saturating_mul(channels).saturating_mul(8);
    usize::try_from(packet)
        .unwrap_or(usize::MAX)
        .saturating_add(READ_AHEAD)
        .min(WINDOW)
}

#[derive(Debug)]
pub(super) struct Stream {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken whenever a batch gives the reader back.
    settled: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

struct State {
    /// The start of a WAV stream, held back until its header can be made
    /// readable (see `wav`); `None` once released or for other containers.
    prelude: Option<Vec<u8>>,
    /// What was fed and the reader has not taken (`queue`).
    queue: Pieces,
    ended: bool,
    /// A read found the queue empty before the end of the stream.
    starved: bool,
    /// While the reader is being opened, reads take no bytes from the
    /// queue: `Some(n)`, the bytes read so far.
    peeked: Option<usize>,
    /// Bytes queued before the next attempt to open the reader.
    open_at: usize,
    /// Matroska/WebM only: the walk of element headers that stops the
    /// stream before an element symphonia must not read (`ebml`).
    guard: Option<ebml::Guard>,
    /// Why the stream was stopped early, for the recording's warning.
    cut: Option<String>,
    /// False when the header cannot say how long the audio is.
    length_known: bool,
    /// Bytes that must wait past the reader's position before it reads a
    /// packet: [`WINDOW`], or less once the header says packets are small.
    window: usize,
    slot: Slot,
    /// What symphonia reported about the stream so far (`noise`).
    noise: Noise,
}

enum Slot {
    Idle(Demux),
    /// A batch holds the reader (running, or waiting for a pool thread).
    Busy,
}

enum Demux {
    /// Not enough bytes yet to open the reader.
    Open(AudioInfo),
    Packets(Packets),
    Done(AudioInfo),
}

struct Packets {
    reader: Box<dyn FormatReader>,
    track_id: u32,
    time_base: Option<TimeBase>,
    /// How many frames the header says the track holds, when it knows.
    declared: Option<u64>,
    end_ts: u64,
    /// WAV only: bytes and frames of the first packet.
    frame_size: Option<(u64, u64)>,
    info: AudioInfo,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn enqueue(&mut self, data: Bytes) {
        self.queue.push(data);
    }

    /// Queues `data`, passing a WAV header through `wav` first and a
    /// Matroska stream through its guard (`ebml`).
    fn push(&mut self, data: Bytes) {
        if self.cut.is_some() {
            // Stopped before a damaged element: the reader has its end.
            return;
        }
        if let Some(guard) = self.guard.as_mut()
            && let Some(stop) = guard.feed(&data)
        {
            self.enqueue(data.slice(..stop.pass));
            self.cut = Some(stop.why);
            self.guard = None;
            return;
        }
        let Some(mut held) = self.prelude.take() else {
            return self.enqueue(data);
        };
        // Usually the first piece holds the whole header: scan it in place.
        let fresh = held.is_empty();
        let scan = if fresh {
            wav::scan(&data)
        } else {
            held.extend_from_slice(&data);
            wav::scan(&held)
        };
        if matches!(scan, wav::Scan::NeedMore) && held.len() <= wav::MAX_HEADER + 64 {
            if fresh {
                held.extend_from_slice(&data);
            }
            self.prelude = Some(held);
            return;
        }
        let bytes = if fresh { data } else { Bytes::from(held) };
        if let wav::Scan::Found(header) = scan {
            self.length_known = header.length_known;
            if let Some(rewrite) = header.rewrite {
                let rest = bytes.slice(rewrite.len()..);
                self.enqueue(Bytes::from(rewrite));
                return self.enqueue(rest);
            }
        }
        self.enqueue(bytes);
    }

    fn end(&mut self) {
        self.ended = true;
        if let Some(prelude) = self.prelude.take() {
            self.enqueue(Bytes::from(prelude));
        }
    }

    fn clear(&mut self) {
        self.prelude = None;
        self.queue.clear();
    }

    fn done(&self) -> bool {
        matches!(self.slot, Slot::Idle(Demux::Done(_)))
    }

    /// Bytes queued before a batch of packets starts.
    fn start(&self) -> usize {
        self.window + (self.window / 2).max(MIN_BATCH)
    }

    /// Above this, `feed` waits for the running batch.
    fn bound(&self) -> usize {
        2 * self.window
    }

    /// No more bytes will come: the stream ended, or was cut before
    /// damage.
    fn at_end(&self) -> bool {
        self.ended || self.cut.is_some()
    }
}

impl Stream {
    pub(super) fn start(detected: Detected) -> Self {
        let info = detected.unmeasured();
        let state = State {
            prelude: (detected.container == "wav").then(Vec::new),
            queue: Pieces::default(),
            ended: false,
            starved: false,
            peeked: None,
            open_at: FIRST_OPEN,
            guard: matches!(detected.container, "mkv" | "webm").then(ebml::Guard::default),
            cut: None,
            length_known: true,
            window: WINDOW,
            slot: Slot::Idle(Demux::Open(info)),
            noise: Noise::default(),
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                settled: Notify::new(),
            }),
        }
    }

    pub(super) async fn feed(&self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        loop {
            let settled = {
                let mut st = self.shared.lock();
                if st.done() {
                    // The demuxer has stopped (end of its data, or damage):
                    // nothing more to read.
                    return;
                }
                if st.queue.len() <= st.bound() || !matches!(st.slot, Slot::Busy) {
                    st.push(data);
                    kick(&self.shared, &mut st);
                    return;
                }
                // Created under the lock, so the batch's wake-up cannot be missed.
                self.shared.settled.notified()
            };
            settled.await;
        }
    }

    /// The stream's audio and what the demuxer reported about it.
    pub(super) async fn finish(&self) -> (AudioInfo, Noise) {
        loop {
            let settled = {
                let mut st = self.shared.lock();
                st.end();
                match std::mem::replace(&mut st.slot, Slot::Busy) {
                    Slot::Idle(Demux::Done(mut info)) => {
                        if let Some(why) = st.cut.take() {
                            let cut = format!(
                                "damaged Matroska stream: {why}; duration measured up to there"
                            );
                            info.warning = Some(match info.warning {
                                Some(w) => format!("{cut}; {w}"),
                                None => cut,
                            });
                        }
                        return (info, std::mem::take(&mut st.noise));
                    }
                    Slot::Idle(demux) => spawn_batch(self.shared.clone(), demux),
                    Slot::Busy => {}
                }
                self.shared.settled.notified()
            };
            settled.await;
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // An abandoned upload: free the queue now; a running batch finds it
        // empty and stops.
        self.shared.lock().clear();
    }
}

/// Starts a batch if enough is queued and none is running.
fn kick(shared: &Arc<Shared>, st: &mut State) {
    let start = match st.slot {
        Slot::Idle(Demux::Open(_)) => st.open_at,
        _ => st.start(),
    };
    if !(st.queue.len() >= start || st.at_end()) || st.done() {
        return;
    }
    // Busy stays Busy.
    if let Slot::Idle(demux) = std::mem::replace(&mut st.slot, Slot::Busy) {
        spawn_batch(shared.clone(), demux);
    }
}

fn spawn_batch(shared: Arc<Shared>, demux: Demux) {
    // Detached: the batch hands the reader back through the slot.
    drop(tokio::task::spawn_blocking(move || {
        run_batch(&shared, demux)
    }));
}

fn run_batch(shared: &Arc<Shared>, mut demux: Demux) {
    // What symphonia reports is counted per step and handed over with the
    // reader, before `finish` can see it done.
    let mut noise = Noise::default();
    loop {
        {
            let mut st = shared.lock();
            let finished = matches!(demux, Demux::Done(_));
            let ahead = match demux {
                Demux::Open(_) => st.queue.len() >= st.open_at,
                _ => st.queue.len() > st.window,
            };
            if finished || !(st.at_end() || ahead) {
                if finished {
                    st.clear();
                }
                st.noise.merge(noise);
                st.slot = Slot::Idle(demux);
                drop(st);
                shared.settled.notify_waiters();
                return;
            }
        }
        demux = noise::collect(&mut noise, || step(shared, demux));
    }
}

fn step(shared: &Arc<Shared>, demux: Demux) -> Demux {
    match demux {
        Demux::Open(info) => open(shared, info),
        Demux::Packets(mut p) => {
            let next = catch_unwind(AssertUnwindSafe(|| p.reader.next_packet()));
            let starved = {
                let st = shared.lock();
                st.starved.then_some(st.window)
            };
            if let Some(window) = starved {
                let at = p.ms(p.end_ts);
                return p.done(Some(format!(
                    "the demuxer needed more than {} KiB ahead at {at} ms (an oversized packet \
                     or a long damaged stretch); duration measured up to there",
                    window >> 10
                )));
            }
            match next {
                Ok(Ok(packet)) => {
                    if packet.track_id() == p.track_id {
                        let frames = p.frames(&packet);
                        p.end_ts = p.end_ts.max(packet.ts + frames);
                    }
                    Demux::Packets(p)
                }
                Ok(Err(SymError::IoError(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    p.done(None)
                }
                Ok(Err(SymError::ResetRequired)) => p.done(None),
                Ok(Err(e)) => p.done(Some(format!("damaged audio: {e}"))),
                Err(_) => {
                    let at = p.ms(p.end_ts);
                    p.done(Some(format!(
                        "the demuxer failed at {at} ms; duration measured up to there"
                    )))
                }
            }
        }
        done => done,
    }
}

fn open(shared: &Arc<Shared>, mut info: AudioInfo) -> Demux {
    shared.lock().peeked = Some(0);
    let source = QueueSource {
        shared: Arc::downgrade(shared),
        position: 0,
    };
    let opened = probe::open_reader(Box::new(source));
    let starved = {
        let mut st = shared.lock();
        let read = st.peeked.take().unwrap_or(0);
        match opened {
            // The header is read: what the reader took leaves the queue.
            Ok(_) => {
                st.queue.consume(read);
                false
            }
            Err(_) if st.starved && !st.at_end() && st.queue.len() < HEADER_WINDOW => {
                // Not all of the header yet: nothing was taken; try again
                // once the queue has doubled.
                st.starved = false;
                st.open_at = (2 * st.queue.len()).clamp(FIRST_OPEN, HEADER_WINDOW);
                return Demux::Open(info);
            }
            Err(_) => st.starved,
        }
    };
    let reader = match opened {
        Ok(reader) => reader,
        Err(_) if starved => {
            info.warning = Some(format!(
                "the stream's header is larger than the {} MiB the analyzer reads ahead",
                HEADER_WINDOW >> 20
            ));
            return Demux::Done(info);
        }
        Err(e) => {
            info.warning = Some(format!("could not demux the stream: {e}"));
            return Demux::Done(info);
        }
    };
    let Some(track) = probe::audio_track(reader.as_ref()) else {
        info.warning = Some("no audio track found while demuxing".into());
        return Demux::Done(info);
    };
    let length_known = {
        let mut st = shared.lock();
        if info.container == "wav" {
            st.window = wav_window(&track.codec_params);
        }
        st.length_known
    };
    Demux::Packets(Packets {
        track_id: track.id,
        time_base: track.codec_params.time_base,
        declared: track.codec_params.n_frames.filter(|_| length_known),
        end_ts: 0,
        frame_size: None,
        reader,
        info,
    })
}

impl Packets {
    /// The frames in `packet`. symphonia's WAV reader gives a short last
    /// packet (the stream ends mid-packet, or the data size is unknown) the
    /// duration of a full one; its bytes say how many frames it holds.
    fn frames(&mut self, packet: &Packet) -> u64 {
        let bytes = packet.buf().len() as u64;
        match self.frame_size {
            Some((first_bytes, first_frames)) if first_bytes > 0 => {
                packet.dur.min(bytes * first_frames / first_bytes)
            }
            None if self.info.container == "wav" => {
                self.frame_size = Some((bytes, packet.dur));
                packet.dur
            }
            _ => packet.dur,
        }
    }

    fn ms(&self, ts: u64) -> u64 {
        probe::to_ms(self.time_base, self.info.sample_rate_hz, ts)
    }

    fn done(self, warning: Option<String>) -> Demux {
        // A header that promises more audio than arrived: a truncated upload.
        let (duration_ms, truncated) = probe::measured(
            self.time_base,
            self.info.sample_rate_hz,
            self.end_ts,
            self.declared,
        );
        Demux::Done(AudioInfo {
            duration_ms,
            warning: warning.or(truncated),
            ..self.info
        })
    }
}

/// The demuxer's view of the queue. Never blocks: an empty queue before the
/// end of the stream is an error (and marks the stream starved). Holds the
/// queue weakly, since the reader that owns this source lives in the queue's
/// own slot between batches.
struct QueueSource {
    shared: Weak<Shared>,
    position: u64,
}

impl Read for QueueSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(0);
        };
        let mut st = shared.lock();
        if let Some(read) = st.peeked {
            let n = st.queue.peek(read, buf);
            if n > 0 {
                st.peeked = Some(read + n);
                self.position += n as u64;
                return Ok(n);
            }
        } else {
            let n = st.queue.read(buf);
            if n > 0 {
                self.position += n as u64;
                return Ok(n);
            }
        }
        if st.at_end() {
            return Ok(0);
        }
        st.starved = true;
        Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "the analyzer's read-ahead window ran dry",
        ))
    }
}

impl Seek for QueueSource {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::Current(0) => Ok(self.position),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "stream is not seekable",
            )),
        }
    }
}

impl MediaSource for QueueSource {
    fn is_seekable(&self) -> bool {
        false
    }
    fn byte_len(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::queue::{COALESCE_BELOW, TAIL_MAX};
    use crate::audio::tests::pcm_wav;

    /// Small pieces are copied together behind the large ones; whatever
    /// the reads leave at the front (a consumed piece, half a piece), every
    /// byte comes back once and in order, up to the end of the stream.
    #[test]
    fn mixed_pieces_are_read_back_in_order_to_the_end() {
        let wav = pcm_wav(8_000, 8_000, false);
        let stream = Stream::start(crate::audio::detect(&wav).unwrap());
        let mut next = 0u8;
        let mut expected = Vec::new();
        let mut feed = |sizes: &[usize]| {
            let mut st = stream.shared.lock();
            for &size in sizes {
                let piece: Vec<u8> = (0..size)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect();
                expected.extend_from_slice(&piece);
                st.enqueue(Bytes::from(piece));
            }
        };
        let mut source = QueueSource {
            shared: Arc::downgrade(&stream.shared),
            position: 0,
        };
        let mut got = Vec::new();
        let mut read = |source: &mut QueueSource, most: usize| {
            let mut buf = vec![0u8; 999];
            while got.len() < most {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                        break;
                    }
                }
            }
        };
        feed(&[20_000, 300, 160, 17_000, 800, 5]);
        // A read never crosses pieces: each read to its end stays at the
        // front, empty, until the next read. Here the first is read but
        // for its last 20 bytes.
        read(&mut source, 19_980);
        feed(&[70_000, 64, COALESCE_BELOW - 1, COALESCE_BELOW, 3]);
        for _ in 0..(TAIL_MAX / 160 + 2) {
            feed(&[160]);
        }
        stream.shared.lock().ended = true;
        read(&mut source, usize::MAX);
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes out of order");
        assert_eq!(source.position, expected.len() as u64);
        assert_eq!(stream.shared.lock().queue.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_stays_within_its_bound() {
        // 250 s at 16 kHz: 8 MB fed as fast as possible.
        let wav = Bytes::from(pcm_wav(16_000, 4_000_000, false));
        let stream = Stream::start(crate::audio::detect(&wav).unwrap());
        let piece = 64 << 10;
        let (mut peak, mut peak_packets) = (0, 0);
        for p in (0..wav.len()).step_by(piece) {
            stream.feed(wav.slice(p..wav.len().min(p + piece))).await;
            let queued = stream.shared.lock().queue.len();
            peak = peak.max(queued);
            // Once the header is read, only packets wait.
            if p >= 2 * HEADER_WINDOW {
                peak_packets = peak_packets.max(queued);
            }
        }
        assert!(peak <= HEADER_WINDOW + piece, "{peak} bytes queued");
        // A WAV's window is its largest packet plus the read-ahead.
        let window = stream.shared.lock().window;
        assert!(window < WINDOW / 2, "a {window}-byte window");
        assert!(
            peak_packets <= 2 * window + piece,
            "{peak_packets} bytes queued after the header"
        );
        let (info, noise) = stream.finish().await;
        assert_eq!((info.duration_ms, info.warning), (250_000, None));
        assert_eq!(noise.records, 0, "{noise:?}");
    }
}
