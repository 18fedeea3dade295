//! Builds tiny bbolt files by hand for unit tests: meta, branch and leaf
//! pages (with overflow), and inline buckets, laid out as bbolt lays them.

use std::collections::BTreeMap;

use crate::page::{
    BUCKET_HEADER_SIZE, ELEMENT_SIZE, FLAG_BRANCH, FLAG_LEAF, FLAG_META, LEAF_FLAG_BUCKET, MAGIC,
    PAGE_HEADER_SIZE, VERSION, fnv1a_64,
};

/// One leaf element to write.
pub(crate) struct LeafEntry {
    flags: u32,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl LeafEntry {
    pub(crate) fn plain(key: &[u8], value: &[u8]) -> LeafEntry {
        LeafEntry {
            flags: 0,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    /// `value` is a bucket header, or an inline bucket.
    pub(crate) fn bucket(key: &[u8], value: &[u8]) -> LeafEntry {
        LeafEntry {
            flags: LEAF_FLAG_BUCKET,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
}

pub(crate) struct FileBuilder {
    page_size: usize,
    /// Page bytes by first page id, padded to whole pages.
    pages: BTreeMap<u64, Vec<u8>>,
    /// Transaction ids written to meta pages 0 and 1.
    pub(crate) txids: (u64, u64),
}

fn header(pgid: u64, flags: u16, count: usize, overflow: u32) -> Vec<u8> {
    let mut bytes = pgid.to_le_bytes().to_vec();
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&u16::try_from(count).unwrap().to_le_bytes());
    bytes.extend_from_slice(&overflow.to_le_bytes());
    bytes
}

impl FileBuilder {
    pub(crate) fn new(page_size: usize) -> FileBuilder {
        FileBuilder {
            page_size,
            pages: BTreeMap::new(),
            txids: (4, 5),
        }
    }

    /// A leaf page's bytes, unpadded, with `overflow` in its header.
    pub(crate) fn leaf_bytes(pgid: u64, overflow: u32, entries: &[LeafEntry]) -> Vec<u8> {
        let mut bytes = header(pgid, FLAG_LEAF, entries.len(), overflow);
        let mut data = Vec::new();
        let data_start = PAGE_HEADER_SIZE + entries.len() * ELEMENT_SIZE;
        for (index, entry) in entries.iter().enumerate() {
            let element_start = PAGE_HEADER_SIZE + index * ELEMENT_SIZE;
            let pos = data_start + data.len() - element_start;
            bytes.extend_from_slice(&entry.flags.to_le_bytes());
            bytes.extend_from_slice(&u32::try_from(pos).unwrap().to_le_bytes());
            bytes.extend_from_slice(&u32::try_from(entry.key.len()).unwrap().to_le_bytes());
            bytes.extend_from_slice(&u32::try_from(entry.value.len()).unwrap().to_le_bytes());
            data.extend_from_slice(&entry.key);
            data.extend_from_slice(&entry.value);
        }
        bytes.extend_from_slice(&data);
        bytes
    }

    /// Adds a leaf page at `pgid`, spilling into overflow pages as needed.
    pub(crate) fn leaf(&mut self, pgid: u64, entries: &[LeafEntry]) {
        let unpadded = Self::leaf_bytes(pgid, 0, entries).len();
        let overflow = unpadded.div_ceil(self.page_size) - 1;
        let bytes = Self::leaf_bytes(pgid, u32::try_from(overflow).unwrap(), entries);
        self.raw(pgid, bytes);
    }

    /// Adds a branch page at `pgid`: (first key under the child, child).
    pub(crate) fn branch(&mut self, pgid: u64, children: &[(&[u8], u64)]) {
        let mut bytes = header(pgid, FLAG_BRANCH, children.len(), 0);
        let mut data = Vec::new();
        let data_start = PAGE_HEADER_SIZE + children.len() * ELEMENT_SIZE;
        for (index, (key, child)) in children.iter().enumerate() {
            let pos = data_start + data.len() - (PAGE_HEADER_SIZE + index * ELEMENT_SIZE);
            bytes.extend_from_slice(&u32::try_from(pos).unwrap().to_le_bytes());
            bytes.extend_from_slice(&u32::try_from(key.len()).unwrap().to_le_bytes());
            bytes.extend_from_slice(&child.to_le_bytes());
            data.extend_from_slice(key);
        }
        bytes.extend_from_slice(&data);
        self.raw(pgid, bytes);
    }

    /// Places `bytes` at `pgid`, padded to whole pages.
    pub(crate) fn raw(&mut self, pgid: u64, mut bytes: Vec<u8>) {
        let padded = bytes.len().div_ceil(self.page_size).max(1) * self.page_size;
        bytes.resize(padded, 0);
        self.pages.insert(pgid, bytes);
    }

    pub(crate) fn bucket_header(root_pgid: u64, sequence: u64) -> Vec<u8> {
        let mut bytes = root_pgid.to_le_bytes().to_vec();
        bytes.extend_from_slice(&sequence.to_le_bytes());
        bytes
    }

    /// The value of an inline bucket holding `entries`.
    pub(crate) fn inline_bucket(entries: &[LeafEntry]) -> Vec<u8> {
        let mut bytes = Self::bucket_header(0, 0);
        debug_assert_eq!(bytes.len(), BUCKET_HEADER_SIZE);
        bytes.extend_from_slice(&Self::leaf_bytes(0, 0, entries));
        bytes
    }

    pub(crate) fn meta_page(
        &self,
        pgid: u64,
        root_pgid: u64,
        high_water: u64,
        txid: u64,
    ) -> Vec<u8> {
        let mut meta = MAGIC.to_le_bytes().to_vec();
        meta.extend_from_slice(&VERSION.to_le_bytes());
        meta.extend_from_slice(&u32::try_from(self.page_size).unwrap().to_le_bytes());
        meta.extend_from_slice(&0u32.to_le_bytes());
        meta.extend_from_slice(&Self::bucket_header(root_pgid, 0));
        meta.extend_from_slice(&u64::MAX.to_le_bytes());
        meta.extend_from_slice(&high_water.to_le_bytes());
        meta.extend_from_slice(&txid.to_le_bytes());
        let checksum = fnv1a_64(&meta);
        meta.extend_from_slice(&checksum.to_le_bytes());
        let mut bytes = header(pgid, FLAG_META, 0, 0);
        bytes.extend_from_slice(&meta);
        bytes.resize(self.page_size, 0);
        bytes
    }

    /// The whole file: both meta pages naming `root_pgid`, then the pages,
    /// `n_pages` pages long (or longer if the pages need it).
    pub(crate) fn build(&self, root_pgid: u64, n_pages: u64) -> Vec<u8> {
        let mut file = self.meta_page(0, root_pgid, n_pages, self.txids.0);
        file.extend_from_slice(&self.meta_page(1, root_pgid, n_pages, self.txids.1));
        for (&pgid, bytes) in &self.pages {
            let start = usize::try_from(pgid).unwrap() * self.page_size;
            assert!(
                file.len() <= start,
                "page {pgid} overlaps the page before it"
            );
            if file.len() < start + bytes.len() {
                file.resize(start + bytes.len(), 0);
            }
            file[start..start + bytes.len()].copy_from_slice(bytes);
        }
        let total = usize::try_from(n_pages).unwrap() * self.page_size;
        if file.len() < total {
            file.resize(total, 0);
        }
        file
    }
}
