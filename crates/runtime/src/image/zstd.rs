//! Reading zstd-compressed layers (`application/vnd.oci.image.layer.v1.tar+zstd`)
//! with `ruzstd`, a pure-Rust decoder (no C library to build).
//!
//! A zstd stream is one or more frames (RFC 8878, section 3): `zstd -T0`,
//! `pzstd` and concatenated files make several, and skippable frames may
//! stand anywhere. [`ZstdDecoder`] decodes them in turn, skips skippable
//! frames, checks each frame's content checksum when it has one, and ends
//! where the source ends at a frame boundary; anything else is an error.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The first four bytes of a zstd frame.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Whether `bytes` start a zstd stream: a zstd frame, or a skippable frame
/// (magic 0x184D2A50 to 0x184D2A5F, little-endian).
pub fn is_zstd(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
        || (bytes.len() >= 4 && bytes[0] & 0xf0 == 0x50 && bytes[1..4] == [0x2a, 0x4d, 0x18])
}

pub struct ZstdDecoder<R: BufRead> {
    source: R,
    frame: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdDecoder<R> {
    pub fn new(source: R) -> ZstdDecoder<R> {
        ZstdDecoder {
            source,
            frame: FrameDecoder::new(),
            in_frame: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.source
    }

    /// Starts the next frame; `false` at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.frame.init(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(invalid("a skippable zstd frame is cut short"));
                    }
                }
                Err(error) => return Err(invalid(&format!("not a zstd frame: {error}"))),
            }
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

impl<R: BufRead> Read for ZstdDecoder<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.frame.can_collect() == 0 && !self.frame.is_finished() {
                self.frame
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|error| invalid(&format!("corrupt zstd data: {error}")))?;
            }
            let n_read = self.frame.read(buffer)?;
            if n_read > 0 {
                return Ok(n_read);
            }
            // The frame is done: its checksum (when it has one) covers all
            // it decoded.
            if let Some(expected) = self.frame.get_checksum_from_data()
                && Some(expected) != self.frame.get_calculated_checksum()
            {
                return Err(invalid("a zstd frame's content checksum does not match"));
            }
            self.in_frame = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(bytes: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn decode(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_are_decoded_in_turn_and_skippable_frames_skipped() {
        let first: Vec<u8> = (0..100_000u32).map(|n| (n % 251) as u8).collect();
        let second = b"and a second frame".to_vec();
        let mut stream = compress(&first);
        assert!(is_zstd(&stream));
        // A skippable frame: magic 0x184D2A53, length 5, five bytes.
        let skippable = [0x53, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5];
        assert!(is_zstd(&skippable));
        stream.extend_from_slice(&skippable);
        stream.extend(compress(&second));
        let mut expected = first.clone();
        expected.extend_from_slice(&second);
        assert_eq!(decode(&stream).unwrap(), expected);
        // A stream may start with a skippable frame.
        let mut leading = skippable.to_vec();
        leading.extend(compress(&second));
        assert_eq!(decode(&leading).unwrap(), second);
        assert_eq!(decode(&[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let stream = compress(b"some content, some content, some content");
        assert!(decode(&stream[..stream.len() - 3]).is_err());
        let mut trailing = stream.clone();
        trailing.extend_from_slice(b"trailing garbage");
        assert!(decode(&trailing).is_err());
        assert!(!is_zstd(b"\x1f\x8b gzip"));
        assert!(decode(b"not zstd at all").is_err());
    }
}
