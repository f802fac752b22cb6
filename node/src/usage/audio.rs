//! Seconds of audio from the start of an uploaded file, read by symphonia from the container's
//! header (WAV, FLAC, Ogg, MP4/M4A, MKV/WebM, MP3 with a Xing/Info header). Only the start of
//! the file is at hand (it was streamed through), so formats whose length is known only by
//! reading to the end give `None`, and the usage record counts the request as unmetered.

use std::io::Cursor;

use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

/// The duration the file's header declares, in seconds. CPU-bound: call it on a blocking
/// thread.
pub(crate) fn seconds_from_header(head: &[u8], filename: Option<&str>) -> Option<f64> {
    let mut hint = Hint::new();
    if let Some(extension) = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e) {
        hint.with_extension(extension);
    }
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(head.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    let reader = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .ok()?;
    let track = reader.default_track(TrackType::Audio)?;
    let time_base = track.time_base?;
    let seconds = match (track.duration, track.num_frames) {
        (Some(duration), _) => time_base.calc_duration(duration)?.as_secs_f64(),
        (None, Some(frames)) => {
            let rate = track
                .codec_params
                .as_ref()
                .and_then(|p| p.audio())
                .and_then(|a| a.sample_rate)?;
            frames as f64 / f64::from(rate)
        }
        (None, None) => return None,
    };
    (seconds.is_finite() && seconds > 0.0).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mono 16-bit PCM WAV of `seconds` at `rate`.
    pub(crate) fn wav(seconds: u32, rate: u32) -> Vec<u8> {
        let data_len = seconds * rate * 2;
        let mut out = Vec::with_capacity(44 + data_len as usize);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&1u16.to_le_bytes()); // mono
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2).to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.resize(44 + data_len as usize, 0);
        out
    }

    #[test]
    fn a_wav_header_gives_its_duration_even_when_the_file_is_cut_short() {
        let file = wav(10, 16_000);
        let whole = seconds_from_header(&file, Some("a.wav")).unwrap();
        assert!((whole - 10.0).abs() < 1e-6, "{whole}");
        let head = seconds_from_header(&file[..64 * 1024], Some("a.wav")).unwrap();
        assert!((head - 10.0).abs() < 1e-6, "{head}");
    }

    #[test]
    fn bytes_that_are_not_audio_give_nothing() {
        assert_eq!(seconds_from_header(b"not audio at all", None), None);
    }
}
