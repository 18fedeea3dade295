//! RPM's package database in its SQLite form (`rpmdb.sqlite`, RHEL 9,
//! Rocky, Alma, Fedora): a read-only walk of the SQLite file format down
//! to the `Packages` table, and the RPM header blob each row holds, for the
//! fields the scanner needs (name, epoch, version, release, arch, source
//! RPM). Both formats are documented (sqlite.org's "Database File Format",
//! rpm's header format); reading one table is a few hundred lines, where
//! a SQLite library would add a C build to the scanner. Bounds are checked
//! everywhere: a corrupt file is an error naming what is wrong, never a
//! panic or a loop.

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// rpm's header tags and types the scanner reads.
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpmDbError {
    #[error("not an SQLite database")]
    NotSqlite,
    #[error("corrupt SQLite file: {0}")]
    Corrupt(String),
    #[error("no Packages table (not an rpm database)")]
    NoPackagesTable,
    #[error("package row {row}: {message}")]
    BadHeader { row: i64, message: String },
}

fn corrupt(message: impl Into<String>) -> RpmDbError {
    RpmDbError::Corrupt(message.into())
}

/// One installed RPM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// `glibc-2.34-100.el9.src.rpm`; empty for `gpg-pubkey` entries.
    pub source_rpm: String,
}

impl RpmPackage {
    /// `[EPOCH:]VERSION-RELEASE`, as advisories write fixed versions.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(epoch) if epoch > 0 => format!("{epoch}:{}-{}", self.version, self.release),
            _ => format!("{}-{}", self.version, self.release),
        }
    }

    /// The source package's name: the source RPM's file name without
    /// `-VERSION-RELEASE.src.rpm`; the package's own name without one.
    pub fn source_name(&self) -> String {
        let stem = self
            .source_rpm
            .strip_suffix(".src.rpm")
            .or_else(|| self.source_rpm.strip_suffix(".nosrc.rpm"));
        stem.and_then(|stem| stem.rsplitn(3, '-').nth(2))
            .filter(|name| !name.is_empty())
            .unwrap_or(&self.name)
            .to_string()
    }
}

/// The SQLite file: pages of `page_size` bytes, `usable` of each holding
/// content.
struct Sqlite<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
    n_pages: usize,
}

/// A SQLite varint at `at`: its value and length.
fn varint(bytes: &[u8], at: usize) -> Result<(u64, usize), RpmDbError> {
    let mut value: u64 = 0;
    for idx in 0..9 {
        let byte = *bytes
            .get(at + idx)
            .ok_or_else(|| corrupt("a varint runs past its page"))?;
        if idx == 8 {
            return Ok(((value << 8) | u64::from(byte), 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok((value, idx + 1));
        }
    }
    unreachable!("the ninth byte returns")
}

fn be_u16(bytes: &[u8], at: usize) -> Result<usize, RpmDbError> {
    bytes
        .get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| corrupt("a page header runs past its page"))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// One column value of a record.
enum Value<'a> {
    Null,
    Integer(i64),
    Bytes(&'a [u8]),
}

impl<'a> Sqlite<'a> {
    fn open(bytes: &'a [u8]) -> Result<Sqlite<'a>, RpmDbError> {
        if bytes.len() < 100 || &bytes[..16] != SQLITE_MAGIC {
            return Err(RpmDbError::NotSqlite);
        }
        let page_size = match be_u16(bytes, 16)? {
            1 => 65536,
            size if size >= 512 && size.is_power_of_two() => size,
            size => return Err(corrupt(format!("page size {size}"))),
        };
        let reserved = usize::from(bytes[20]);
        if reserved + 480 > page_size {
            return Err(corrupt(format!("{reserved} reserved bytes per page")));
        }
        Ok(Sqlite {
            bytes,
            page_size,
            usable: page_size - reserved,
            n_pages: bytes.len() / page_size,
        })
    }

    fn page(&self, number: u32) -> Result<&'a [u8], RpmDbError> {
        let number = number as usize;
        if number == 0 || number > self.n_pages {
            return Err(corrupt(format!(
                "page {number} is outside the file's {} pages",
                self.n_pages
            )));
        }
        let start = (number - 1) * self.page_size;
        Ok(&self.bytes[start..start + self.page_size])
    }

    /// Every row of the table whose B-tree starts at `root`: its rowid and
    /// its record's payload (overflow pages joined).
    fn table_rows(&self, root: u32) -> Result<Vec<(i64, Vec<u8>)>, RpmDbError> {
        let mut rows = Vec::new();
        let mut pending = vec![root];
        let mut n_visited = 0;
        while let Some(number) = pending.pop() {
            n_visited += 1;
            // A well-formed tree visits each page once; more is a cycle.
            if n_visited > self.n_pages {
                return Err(corrupt("the table's pages form a cycle"));
            }
            let page = self.page(number)?;
            let header_at = if number == 1 { 100 } else { 0 };
            let kind = page[header_at];
            let n_cells = be_u16(page, header_at + 3)?;
            let (cell_pointers_at, interior) = match kind {
                0x0d => (header_at + 8, false),
                0x05 => (header_at + 12, true),
                other => return Err(corrupt(format!("page {number} has type {other:#x}"))),
            };
            if interior {
                let right = be_u32(page, header_at + 8)
                    .ok_or_else(|| corrupt("an interior page header runs past its page"))?;
                pending.push(right);
            }
            for cell_idx in 0..n_cells {
                let cell_at = be_u16(page, cell_pointers_at + 2 * cell_idx)?;
                if cell_at >= self.usable {
                    return Err(corrupt(format!(
                        "page {number}: a cell starts past its end"
                    )));
                }
                if interior {
                    let left = be_u32(page, cell_at)
                        .ok_or_else(|| corrupt("an interior cell runs past its page"))?;
                    pending.push(left);
                    continue;
                }
                let (payload_size, size_length) = varint(page, cell_at)?;
                let (rowid, rowid_length) = varint(page, cell_at + size_length)?;
                let payload_at = cell_at + size_length + rowid_length;
                rows.push((rowid as i64, self.payload(page, payload_at, payload_size)?));
            }
        }
        rows.sort_by_key(|(rowid, _)| *rowid);
        Ok(rows)
    }

    /// A table leaf cell's payload: the part on the page, then the
    /// overflow chain.
    fn payload(&self, page: &[u8], at: usize, size: u64) -> Result<Vec<u8>, RpmDbError> {
        let size = usize::try_from(size).map_err(|_| corrupt("a payload size overflows"))?;
        if size > self.bytes.len() {
            return Err(corrupt("a payload is larger than the file"));
        }
        let usable = self.usable;
        let max_local = usable - 35;
        let local = if size <= max_local {
            size
        } else {
            let min_local = (usable - 12) * 32 / 255 - 23;
            let spill = min_local + (size - min_local) % (usable - 4);
            if spill <= max_local { spill } else { min_local }
        };
        let mut payload = page
            .get(at..at + local)
            .ok_or_else(|| corrupt("a cell runs past its page"))?
            .to_vec();
        if local == size {
            return Ok(payload);
        }
        let mut next =
            be_u32(page, at + local).ok_or_else(|| corrupt("a cell runs past its page"))?;
        let mut n_followed = 0;
        while payload.len() < size {
            n_followed += 1;
            if next == 0 || n_followed > self.n_pages {
                return Err(corrupt("an overflow chain ends early or loops"));
            }
            let overflow = self.page(next)?;
            next = be_u32(overflow, 0).unwrap_or(0);
            let wanted = (size - payload.len()).min(usable - 4);
            payload.extend_from_slice(&overflow[4..4 + wanted]);
        }
        Ok(payload)
    }
}

/// A record's column values.
fn record_values(payload: &[u8]) -> Result<Vec<Value<'_>>, RpmDbError> {
    let (header_size, mut at) = varint(payload, 0)?;
    let header_size =
        usize::try_from(header_size).map_err(|_| corrupt("a record header overflows"))?;
    if header_size > payload.len() {
        return Err(corrupt("a record header runs past its payload"));
    }
    let mut body_at = header_size;
    let mut values = Vec::new();
    while at < header_size {
        let (serial_type, length) = varint(payload, at)?;
        at += length;
        let (value_length, integer) = match serial_type {
            0 => (0, false),
            1..=4 => (serial_type as usize, true),
            5 => (6, true),
            6 => (8, true),
            7 => (8, false),
            8 | 9 => (0, true),
            10 | 11 => return Err(corrupt(format!("reserved serial type {serial_type}"))),
            _ => (((serial_type - 12) / 2) as usize, false),
        };
        let bytes = payload
            .get(body_at..body_at + value_length)
            .ok_or_else(|| corrupt("a record value runs past its payload"))?;
        body_at += value_length;
        values.push(match serial_type {
            0 | 7 => Value::Null,
            8 => Value::Integer(0),
            9 => Value::Integer(1),
            _ if integer => {
                // Big-endian two's complement of 1-8 bytes.
                let mut value: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
                for byte in bytes {
                    value = (value << 8) | i64::from(*byte);
                }
                Value::Integer(value)
            }
            _ => Value::Bytes(bytes),
        });
    }
    Ok(values)
}

/// The string at `offset` in a header's data store (up to its NUL).
fn header_string(data: &[u8], offset: usize) -> Option<String> {
    let rest = data.get(offset..)?;
    let end = rest.iter().position(|byte| *byte == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Reads the fields the scanner needs from an rpm header blob (as the
/// database stores it: index count, data length, index entries, data).
pub fn parse_header(blob: &[u8]) -> Result<RpmPackage, String> {
    let n_entries = be_u32(blob, 0).ok_or("the header is shorter than 8 bytes")? as usize;
    let data_length = be_u32(blob, 4).ok_or("the header is shorter than 8 bytes")? as usize;
    let data_at = n_entries
        .checked_mul(16)
        .and_then(|length| length.checked_add(8))
        .filter(|at| {
            at.checked_add(data_length)
                .is_some_and(|end| end <= blob.len())
        })
        .ok_or_else(|| {
            format!(
                "{n_entries} index entries and {data_length} data bytes do not fit in {} bytes",
                blob.len()
            )
        })?;
    let data = &blob[data_at..data_at + data_length];
    let mut package = RpmPackage {
        name: String::new(),
        epoch: None,
        version: String::new(),
        release: String::new(),
        arch: String::new(),
        source_rpm: String::new(),
    };
    for entry_idx in 0..n_entries {
        let entry_at = 8 + 16 * entry_idx;
        let field = |offset: usize| be_u32(blob, entry_at + offset).unwrap_or(0);
        let (tag, kind, offset) = (field(0), field(4), field(8) as usize);
        let text = || match kind {
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING => header_string(data, offset),
            _ => None,
        };
        match tag {
            TAG_NAME => package.name = text().ok_or("its name is unreadable")?,
            TAG_VERSION => package.version = text().ok_or("its version is unreadable")?,
            TAG_RELEASE => package.release = text().ok_or("its release is unreadable")?,
            TAG_ARCH => package.arch = text().unwrap_or_default(),
            TAG_SOURCERPM => package.source_rpm = text().unwrap_or_default(),
            TAG_EPOCH if kind == TYPE_INT32 => package.epoch = be_u32(data, offset),
            _ => {}
        }
    }
    if package.name.is_empty() || package.version.is_empty() {
        return Err("it has no name or version".to_string());
    }
    Ok(package)
}

/// Every package in an `rpmdb.sqlite` file, in row order.
pub fn read_sqlite(bytes: &[u8]) -> Result<Vec<RpmPackage>, RpmDbError> {
    let db = Sqlite::open(bytes)?;
    let mut packages_root = None;
    for (_, payload) in db.table_rows(1)? {
        let values = record_values(&payload)?;
        if let [
            Value::Bytes(b"table"),
            Value::Bytes(b"Packages"),
            _,
            Value::Integer(root),
            ..,
        ] = values.as_slice()
        {
            packages_root = Some(u32::try_from(*root).map_err(|_| corrupt("a bad root page"))?);
        }
    }
    let root = packages_root.ok_or(RpmDbError::NoPackagesTable)?;
    let mut packages = Vec::new();
    for (row, payload) in db.table_rows(root)? {
        let values = record_values(&payload)?;
        // (hnum INTEGER PRIMARY KEY, blob BLOB): the key is the rowid.
        let Some(Value::Bytes(blob)) = values.get(1) else {
            return Err(RpmDbError::BadHeader {
                row,
                message: "no header blob".to_string(),
            });
        };
        let package =
            parse_header(blob).map_err(|message| RpmDbError::BadHeader { row, message })?;
        // gpg-pubkey entries are keys rpm imported, not software.
        if package.name != "gpg-pubkey" {
            packages.push(package);
        }
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_source_names() {
        assert_eq!(varint(&[0x05], 0).unwrap(), (5, 1));
        assert_eq!(varint(&[0x81, 0x00], 0).unwrap(), (128, 2));
        assert!(varint(&[0x81], 0).is_err());
        let package = RpmPackage {
            name: "glibc-common".into(),
            epoch: None,
            version: "2.34".into(),
            release: "100.el9".into(),
            arch: "x86_64".into(),
            source_rpm: "glibc-2.34-100.el9.src.rpm".into(),
        };
        assert_eq!(package.source_name(), "glibc");
        assert_eq!(package.evr(), "2.34-100.el9");
    }

    #[test]
    fn bad_files_are_errors() {
        assert_eq!(read_sqlite(b"hello"), Err(RpmDbError::NotSqlite));
        let mut header = vec![0u8; 4096];
        header[..16].copy_from_slice(SQLITE_MAGIC);
        header[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert!(matches!(read_sqlite(&header), Err(RpmDbError::Corrupt(_))));
        assert!(parse_header(&[0, 0, 0, 200, 0, 0, 0, 0]).is_err());
    }
}
