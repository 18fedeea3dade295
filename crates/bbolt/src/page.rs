//! bbolt's on-disk page layout: the 16-byte page header, the meta record of
//! pages 0 and 1, and the 16-byte branch and leaf elements. Every read is
//! bounds-checked against the page's own bytes.

use crate::error::BboltError;

pub(crate) const PAGE_HEADER_SIZE: usize = 16;
pub(crate) const ELEMENT_SIZE: usize = 16;
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;

pub(crate) const FLAG_BRANCH: u16 = 0x01;
pub(crate) const FLAG_LEAF: u16 = 0x02;
pub(crate) const FLAG_META: u16 = 0x04;
pub(crate) const FLAG_FREELIST: u16 = 0x10;

/// Set in a leaf element's flags when its value is a nested bucket.
pub(crate) const LEAF_FLAG_BUCKET: u32 = 0x01;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
/// magic, version, page_size, flags, root {pgid, sequence}, freelist, pgid,
/// txid: the bytes the checksum covers.
const META_CHECKSUMMED_SIZE: usize = 4 + 4 + 4 + 4 + 16 + 8 + 8 + 8;

pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(raw)
}

/// FNV-1a, 64 bits: the checksum bbolt keeps in its meta record.
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The decoded meta record of a bbolt file: where the root bucket and the
/// freelist live, and which transaction wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// Page id of the root bucket, whose entries are the top-level buckets.
    pub root_pgid: u64,
    pub root_sequence: u64,
    /// `u64::MAX` when the freelist is not persisted (etcd's default).
    pub freelist_pgid: u64,
    /// The high-water mark: one past the last page id in use.
    pub high_water_pgid: u64,
    pub txid: u64,
}

/// Decodes the meta record of the page starting at `page`, or says why it is
/// not one.
pub(crate) fn parse_meta(page: &[u8]) -> Result<Meta, String> {
    let meta_end = PAGE_HEADER_SIZE + META_CHECKSUMMED_SIZE + 8;
    if page.len() < meta_end {
        return Err(format!("{} bytes is too short for a meta page", page.len()));
    }
    let meta = &page[PAGE_HEADER_SIZE..meta_end];
    if u32_at(meta, 0) != MAGIC {
        return Err("bad magic".to_owned());
    }
    let flags = u16_at(page, 8);
    if flags & FLAG_META == 0 {
        return Err(format!("page flags {flags:#x} lack the meta flag"));
    }
    let version = u32_at(meta, 4);
    if version != VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let checksum = u64_at(meta, META_CHECKSUMMED_SIZE);
    if fnv1a_64(&meta[..META_CHECKSUMMED_SIZE]) != checksum {
        return Err("meta checksum mismatch".to_owned());
    }
    let page_size = u32_at(meta, 8);
    if !is_plausible_page_size(page_size) {
        return Err(format!("implausible page size {page_size}"));
    }
    Ok(Meta {
        page_size,
        flags: u32_at(meta, 12),
        root_pgid: u64_at(meta, 16),
        root_sequence: u64_at(meta, 24),
        freelist_pgid: u64_at(meta, 32),
        high_water_pgid: u64_at(meta, 40),
        txid: u64_at(meta, 48),
    })
}

/// bbolt takes its page size from the OS; anything outside 512 B..=1 MiB or
/// not a power of two is damage, not a real configuration.
pub(crate) fn is_plausible_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && (512..=1 << 20).contains(&page_size)
}

/// Where a page came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageOrigin {
    File(u64),
    /// The page embedded in an inline bucket's value.
    Inline,
}

impl std::fmt::Display for PageOrigin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageOrigin::File(pgid) => write!(formatter, "page {pgid}"),
            PageOrigin::Inline => write!(formatter, "inline bucket page"),
        }
    }
}

/// A branch or leaf page: its header is checked and its element table is
/// known to lie inside `bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page<'a> {
    /// The whole page, overflow pages included, header first.
    bytes: &'a [u8],
    flags: u16,
    count: u16,
    pub(crate) origin: PageOrigin,
}

/// One leaf element: a key and its value, which may be a bucket header.
pub(crate) struct LeafElement<'a> {
    pub(crate) flags: u32,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

impl<'a> Page<'a> {
    /// Checks the header of a branch or leaf page spanning `bytes`.
    pub(crate) fn parse(bytes: &'a [u8], origin: PageOrigin) -> Result<Page<'a>, BboltError> {
        if bytes.len() < PAGE_HEADER_SIZE {
            return Err(corrupt(
                origin,
                format!("{} bytes is shorter than a page header", bytes.len()),
            ));
        }
        let flags = u16_at(bytes, 8);
        let count = u16_at(bytes, 10);
        let kind = flags & (FLAG_BRANCH | FLAG_LEAF | FLAG_META | FLAG_FREELIST);
        if kind != FLAG_BRANCH && kind != FLAG_LEAF {
            return Err(corrupt(
                origin,
                format!("flags {flags:#x} mark neither a branch nor a leaf page"),
            ));
        }
        let table_end = PAGE_HEADER_SIZE + usize::from(count) * ELEMENT_SIZE;
        if table_end > bytes.len() {
            return Err(corrupt(
                origin,
                format!("{count} elements do not fit in {} bytes", bytes.len()),
            ));
        }
        Ok(Page {
            bytes,
            flags,
            count,
            origin,
        })
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.flags & FLAG_LEAF != 0
    }

    pub(crate) fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// The bytes `[pos, pos + len)` counted from the start of element `index`.
    fn element_bytes(
        &self,
        index: usize,
        pos: u32,
        len: u32,
        what: &str,
    ) -> Result<&'a [u8], BboltError> {
        let element_start = PAGE_HEADER_SIZE + index * ELEMENT_SIZE;
        let start = element_start.checked_add(pos as usize);
        let end = start.and_then(|start| start.checked_add(len as usize));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.bytes.len() => Ok(&self.bytes[start..end]),
            _ => Err(corrupt(
                self.origin,
                format!(
                    "{what} of element {index} (pos {pos}, {len} bytes) runs past the page end ({} bytes)",
                    self.bytes.len()
                ),
            )),
        }
    }

    /// Element `index` of a leaf page. `index < count()`.
    pub(crate) fn leaf_element(&self, index: usize) -> Result<LeafElement<'a>, BboltError> {
        debug_assert!(self.is_leaf() && index < self.count());
        let element = &self.bytes[PAGE_HEADER_SIZE + index * ELEMENT_SIZE..];
        let flags = u32_at(element, 0);
        let pos = u32_at(element, 4);
        let key_size = u32_at(element, 8);
        let value_size = u32_at(element, 12);
        let key = self.element_bytes(index, pos, key_size, "key")?;
        // The value follows the key directly.
        let value_pos = pos.checked_add(key_size).ok_or_else(|| {
            corrupt(
                self.origin,
                format!("element {index} has an overflowing key position"),
            )
        })?;
        let value = self.element_bytes(index, value_pos, value_size, "value")?;
        Ok(LeafElement { flags, key, value })
    }

    /// Element `index` of a branch page: the first key under a child and the
    /// child's page id. `index < count()`.
    pub(crate) fn branch_element(&self, index: usize) -> Result<(&'a [u8], u64), BboltError> {
        debug_assert!(!self.is_leaf() && index < self.count());
        let element = &self.bytes[PAGE_HEADER_SIZE + index * ELEMENT_SIZE..];
        let pos = u32_at(element, 0);
        let key_size = u32_at(element, 4);
        let child = u64_at(element, 8);
        let key = self.element_bytes(index, pos, key_size, "key")?;
        Ok((key, child))
    }
}

pub(crate) fn corrupt(origin: PageOrigin, problem: String) -> BboltError {
    BboltError::CorruptPage {
        location: origin.to_string(),
        problem,
    }
}
