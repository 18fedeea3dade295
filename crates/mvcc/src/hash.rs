//! CRC-32C (Castagnoli), the checksum etcd uses for HashKV; also guards snapshots.

const CASTAGNOLI_REFLECTED: u32 = 0x82F6_3B78;

/// Byte-at-a-time lookup table, built at compile time so there is no lazy initialisation.
const TABLE: [u32; 256] = {
    let mut table = [0_u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CASTAGNOLI_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// An incremental CRC-32C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32c {
    state: u32,
}

impl Crc32c {
    pub fn new() -> Crc32c {
        Crc32c { state: !0 }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.state;
        for &byte in bytes {
            crc = TABLE[((crc ^ byte as u32) & 0xFF) as usize] ^ (crc >> 8);
        }
        self.state = crc;
    }

    pub fn finish(&self) -> u32 {
        !self.state
    }

    pub fn checksum(bytes: &[u8]) -> u32 {
        let mut crc = Crc32c::new();
        crc.update(bytes);
        crc.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Crc32c;

    #[test]
    fn matches_published_check_values() {
        // The standard CRC-32C check value, and a vector from RFC 3720 (iSCSI).
        assert_eq!(Crc32c::checksum(b"123456789"), 0xE306_9283);
        assert_eq!(Crc32c::checksum(&[0_u8; 32]), 0x8A91_36AA);
        assert_eq!(Crc32c::checksum(b""), 0);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut crc = Crc32c::new();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.finish(), Crc32c::checksum(b"123456789"));
    }
}
