//! The redb tables owned by this crate and the byte layout of one stored revision.
//!
//! A record is written once and never updated: a revision is immutable history.

use redb::TableDefinition;

use crate::MvccError;

/// revision -> encoded record. Keys are `Revision::to_table_key`, so redb's order is revision order.
pub(crate) const REVISIONS_TABLE: TableDefinition<'static, u128, &'static [u8]> =
    TableDefinition::new("mvcc_revisions");

/// Small named values persisted alongside the data, in the same transactions.
pub(crate) const META_TABLE: TableDefinition<'static, &'static str, u64> =
    TableDefinition::new("mvcc_meta");

pub(crate) const META_CONSISTENT_INDEX: &str = "consistent_index";
pub(crate) const META_COMPACT_REVISION: &str = "compact_revision";

/// etcd's revision pair: `main` counts write transactions, `sub` counts changes inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// Packs the pair into one integer whose numeric order is the revision order. Both halves
    /// are never negative, so reinterpreting them as unsigned keeps the order.
    pub fn to_table_key(self) -> u128 {
        debug_assert!(
            self.main >= 0 && self.sub >= 0,
            "revisions are never negative"
        );
        ((self.main as u64 as u128) << 64) | (self.sub as u64 as u128)
    }

    pub fn from_table_key(table_key: u128) -> Revision {
        Revision {
            main: (table_key >> 64) as u64 as i64,
            sub: table_key as u64 as i64,
        }
    }

    /// The largest table key of main revision `main`, used as an inclusive upper scan bound.
    pub fn last_table_key_of(main: i64) -> u128 {
        ((main as u64 as u128) << 64) | u64::MAX as u128
    }
}

const FLAG_TOMBSTONE: u8 = 1;

/// flags (1) + create_revision (8) + version (8) + lease (8) + key length (4).
const RECORD_HEADER_LEN: usize = 1 + 8 + 8 + 8 + 4;

/// The decoded form of a stored revision; borrows the stored bytes, so decoding never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub tombstone: bool,
}

impl Record<'_> {
    /// Appends the encoding to `buffer`, so one buffer can be reused across many writes.
    pub fn encode_into(&self, buffer: &mut Vec<u8>) {
        buffer.reserve(RECORD_HEADER_LEN + self.key.len() + self.value.len());
        buffer.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        buffer.extend_from_slice(&self.create_revision.to_le_bytes());
        buffer.extend_from_slice(&self.version.to_le_bytes());
        buffer.extend_from_slice(&self.lease.to_le_bytes());
        let key_len = u32::try_from(self.key.len()).expect("etcd keys are far below 4 GiB");
        buffer.extend_from_slice(&key_len.to_le_bytes());
        buffer.extend_from_slice(self.key);
        buffer.extend_from_slice(self.value);
    }

    pub fn decode(bytes: &[u8]) -> Result<Record<'_>, MvccError> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(MvccError::Storage(format!(
                "corrupt record: {} bytes is shorter than the {RECORD_HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let flags = bytes[0];
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err(MvccError::Storage(format!(
                "corrupt record: unknown flags {flags:#x}"
            )));
        }
        let read_i64 = |offset: usize| {
            i64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8-byte slice"))
        };
        let key_len = u32::from_le_bytes(bytes[25..29].try_into().expect("4-byte slice")) as usize;
        let rest = &bytes[RECORD_HEADER_LEN..];
        if rest.len() < key_len {
            return Err(MvccError::Storage(format!(
                "corrupt record: key length {key_len} exceeds the {} bytes left",
                rest.len()
            )));
        }
        let (key, value) = rest.split_at(key_len);
        Ok(Record {
            key,
            value,
            create_revision: read_i64(1),
            version: read_i64(9),
            lease: read_i64(17),
            tombstone: flags & FLAG_TOMBSTONE != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_key_order_is_revision_order() {
        let revisions = [
            Revision { main: 0, sub: 0 },
            Revision { main: 1, sub: 0 },
            Revision { main: 1, sub: 1 },
            Revision {
                main: 1,
                sub: i64::MAX,
            },
            Revision { main: 2, sub: 0 },
            Revision {
                main: i64::MAX,
                sub: 3,
            },
        ];
        for pair in revisions.windows(2) {
            assert!(pair[0].to_table_key() < pair[1].to_table_key());
        }
        for revision in revisions {
            assert_eq!(Revision::from_table_key(revision.to_table_key()), revision);
            assert!(revision.to_table_key() <= Revision::last_table_key_of(revision.main));
        }
    }

    #[test]
    fn record_round_trips() {
        let record = Record {
            key: b"foo",
            value: b"bar\0baz",
            create_revision: 7,
            version: 3,
            lease: -5,
            tombstone: false,
        };
        let mut buffer = vec![0xAA];
        record.encode_into(&mut buffer);
        assert_eq!(Record::decode(&buffer[1..]).unwrap(), record);

        let tombstone = Record {
            key: b"",
            value: b"",
            create_revision: 0,
            version: 0,
            lease: 0,
            tombstone: true,
        };
        let mut buffer = Vec::new();
        tombstone.encode_into(&mut buffer);
        assert_eq!(Record::decode(&buffer).unwrap(), tombstone);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert!(Record::decode(b"short").is_err());
        let mut buffer = Vec::new();
        Record {
            key: b"key",
            value: b"",
            create_revision: 1,
            version: 1,
            lease: 0,
            tombstone: false,
        }
        .encode_into(&mut buffer);
        let mut bad_flags = buffer.clone();
        bad_flags[0] = 0x80;
        assert!(Record::decode(&bad_flags).is_err());
        let truncated = &buffer[..buffer.len() - 1];
        assert!(Record::decode(truncated).is_err());
    }
}
