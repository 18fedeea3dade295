//! Keys and values as the etcd benchmark tool makes them: a key is a
//! `--key-size` buffer of zeros holding the key number as a zig-zag varint
//! (Go's `binary.PutVarint`), so both tools write the same key space.

use bytes::Bytes;

/// How a workload picks key numbers.
#[derive(Clone, Copy, Debug)]
pub struct KeySpace {
    pub key_size: usize,
    pub key_space_size: u64,
    pub sequential: bool,
}

impl KeySpace {
    /// Checks the flags: every key number must fit in `--key-size` bytes.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.key_space_size >= 1,
            "--key-space-size must be at least 1"
        );
        let needed = varint_len(self.key_space_size - 1);
        anyhow::ensure!(
            self.key_size >= needed,
            "--key-size {} cannot hold {} distinct keys (needs at least {needed} bytes)",
            self.key_size,
            self.key_space_size
        );
        Ok(())
    }

    /// The key number for request `request_idx`.
    pub fn key_number(&self, request_idx: u64) -> u64 {
        if self.sequential {
            request_idx % self.key_space_size
        } else {
            rand::random_range(0..self.key_space_size)
        }
    }

    /// The key for request `request_idx`.
    pub fn key(&self, request_idx: u64) -> Bytes {
        key_bytes(self.key_number(request_idx), self.key_size)
    }
}

/// Key number `number` written as Go's `binary.PutVarint` into `key_size` zero bytes.
pub fn key_bytes(number: u64, key_size: usize) -> Bytes {
    let mut key = vec![0u8; key_size];
    let mut zigzag = number << 1; // Non-negative numbers only: zig-zag is a shift.
    let mut position = 0;
    while zigzag >= 0x80 {
        key[position] = (zigzag as u8) | 0x80;
        zigzag >>= 7;
        position += 1;
    }
    key[position] = zigzag as u8;
    Bytes::from(key)
}

fn varint_len(number: u64) -> usize {
    let mut zigzag = number << 1;
    let mut length = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        length += 1;
    }
    length
}

/// `size` random bytes: the value every request of a run writes.
pub fn random_value(size: usize) -> Bytes {
    let mut value = vec![0u8; size];
    rand::fill(&mut value[..]);
    Bytes::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_go_put_varint() {
        // binary.PutVarint(k, 1) writes 0x02; 64 needs two bytes: 0x80 0x01.
        assert_eq!(&key_bytes(0, 4)[..], &[0, 0, 0, 0]);
        assert_eq!(&key_bytes(1, 4)[..], &[2, 0, 0, 0]);
        assert_eq!(&key_bytes(64, 4)[..], &[0x80, 0x01, 0, 0]);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
    }

    #[test]
    fn key_size_must_hold_the_key_space() {
        let space = KeySpace {
            key_size: 1,
            key_space_size: 1000,
            sequential: true,
        };
        assert!(space.check().is_err());
        let space = KeySpace {
            key_size: 2,
            ..space
        };
        assert!(space.check().is_ok());
        assert_eq!(space.key_number(1001), 1);
    }
}
