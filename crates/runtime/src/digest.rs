//! Content digests (`sha256:<64 hex digits>`), as OCI writes them, and hashing
//! helpers that compute a digest while data streams through.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest. Only sha256 is accepted: it is what every OCI
/// image and docker archive in practice uses, and one algorithm keeps blob
/// paths unambiguous.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// Lower-case hex, 64 characters.
    hex: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {text:?}: expected sha256:<64 hex digits>")]
pub struct InvalidDigest {
    text: String,
}

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        let bytes = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in bytes {
            hex.push_str(&format!("{byte:02x}"));
        }
        Digest { hex }
    }

    /// Builds a digest from its 64 hex digits (no algorithm prefix).
    pub fn from_hex(hex: &str) -> Result<Digest, InvalidDigest> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(InvalidDigest {
                text: hex.to_string(),
            })
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as listings show ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(text: &str) -> Result<Digest, InvalidDigest> {
        match text.strip_prefix("sha256:") {
            Some(hex) => Digest::from_hex(hex).map_err(|_| InvalidDigest {
                text: text.to_string(),
            }),
            None => Err(InvalidDigest {
                text: text.to_string(),
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    n_bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            n_bytes: 0,
        }
    }

    /// Reads what is left (so the digest covers the whole stream) and returns
    /// the digest and the number of bytes.
    pub fn finish(self) -> io::Result<(Digest, u64)> {
        let (_, digest, n_bytes) = self.finish_into_inner()?;
        Ok((digest, n_bytes))
    }

    /// Like `finish`, and gives the inner reader back.
    pub fn finish_into_inner(mut self) -> io::Result<(R, Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.inner, Digest::from_hasher(self.hasher), self.n_bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n_read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..n_read]);
        self.n_bytes += n_read as u64;
        Ok(n_read)
    }
}

/// A writer that hashes and counts what is written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    n_bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            n_bytes: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.n_bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let n_written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..n_written]);
        self.n_bytes += n_written as u64;
        Ok(n_written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of_bytes(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parsing_rejects_other_algorithms_and_bad_hex() {
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:XYZ".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        let text = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(text.parse::<Digest>().unwrap().to_string(), text);
    }

    #[test]
    fn hashing_reader_matches_one_shot_digest() {
        let data = b"hello, shoal".repeat(1000);
        let reader = HashingReader::new(&data[..]);
        let (digest, n_bytes) = reader.finish().unwrap();
        assert_eq!(digest, Digest::of_bytes(&data));
        assert_eq!(n_bytes, data.len() as u64);
    }
}
