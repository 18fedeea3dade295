//! A writer of whole bbolt files: top-level buckets of plain key-value pairs
//! (the shape of etcd's backend), laid out as bbolt lays a freshly compacted
//! database: two meta pages, then each bucket's B+tree bottom-up, leaves
//! filled up to a page, small buckets inline in their parent's leaf, and no
//! persisted freelist (etcd's setting; bbolt rebuilds it from the tree).
//! Every page below the high-water mark is reachable, so `bbolt check` finds
//! nothing unreachable and nothing to free.

use crate::error::BboltError;
use crate::page::{
    BUCKET_HEADER_SIZE, ELEMENT_SIZE, FLAG_BRANCH, FLAG_LEAF, FLAG_META, LEAF_FLAG_BUCKET, MAGIC,
    PAGE_HEADER_SIZE, VERSION, fnv1a_64, is_plausible_page_size,
};

/// The page size bbolt takes from the OS on the machines etcd runs on.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// A meta record's freelist page id when the freelist is not persisted.
const NO_FREELIST: u64 = u64::MAX;

/// One top-level bucket to write: its name and its entries, in strictly
/// ascending key order (bbolt's byte order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketContents {
    pub name: Vec<u8>,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One leaf element before it is placed: flags, key, value.
struct LeafItem<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
}

/// The file being assembled: whole pages, page ids in allocation order.
struct PageWriter {
    page_size: usize,
    /// Pages 0 and 1 (the meta pages) are written last, into the first
    /// `2 * page_size` bytes.
    bytes: Vec<u8>,
}

impl PageWriter {
    fn next_pgid(&self) -> u64 {
        (self.bytes.len() / self.page_size) as u64
    }

    /// Appends a page (with overflow pages if `body` is longer than one) and
    /// returns its id. `body` starts with the page header, whose id and
    /// overflow fields are filled in here.
    fn append(&mut self, mut body: Vec<u8>) -> u64 {
        let pgid = self.next_pgid();
        let n_pages = body.len().div_ceil(self.page_size).max(1);
        let overflow = u32::try_from(n_pages - 1).expect("a page smaller than 16 TiB");
        body[0..8].copy_from_slice(&pgid.to_le_bytes());
        body[12..16].copy_from_slice(&overflow.to_le_bytes());
        body.resize(n_pages * self.page_size, 0);
        self.bytes.extend_from_slice(&body);
        pgid
    }

    /// Writes `items` as a tree of leaf and branch pages and returns the root
    /// page id. An empty list makes one empty leaf.
    fn tree(&mut self, items: &[LeafItem<'_>]) -> Result<u64, BboltError> {
        let mut level: Vec<(&[u8], u64)> = Vec::new();
        for chunk in chunks(items, self.page_size, |item| {
            item.key.len() + item.value.len()
        }) {
            level.push((chunk.first().map_or(&[][..], |item| item.key), {
                let body = leaf_page(chunk)?;
                self.append(body)
            }));
        }
        while level.len() > 1 {
            let mut parents = Vec::new();
            for chunk in chunks(&level, self.page_size, |(key, _)| key.len()) {
                let body = branch_page(chunk)?;
                parents.push((chunk[0].0, self.append(body)));
            }
            level = parents;
        }
        Ok(level[0].1)
    }
}

/// Splits `items` into runs that each fit one page (a single item larger than
/// a page gets a run, and overflow pages, of its own). Always at least one run.
fn chunks<T>(items: &[T], page_size: usize, data_size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut size = PAGE_HEADER_SIZE;
    for (index, item) in items.iter().enumerate() {
        let item_size = ELEMENT_SIZE + data_size(item);
        if index > start && size + item_size > page_size {
            runs.push(&items[start..index]);
            start = index;
            size = PAGE_HEADER_SIZE;
        }
        size += item_size;
    }
    runs.push(&items[start..]);
    runs
}

fn page_header(flags: u16, count: usize) -> Result<Vec<u8>, BboltError> {
    let count = u16::try_from(count).map_err(|_| {
        BboltError::Write(format!("{count} elements do not fit in one page's count"))
    })?;
    let mut bytes = Vec::with_capacity(PAGE_HEADER_SIZE);
    // The id and overflow fields are set when the page is placed.
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    Ok(bytes)
}

fn u32_field(value: usize, what: &str) -> Result<[u8; 4], BboltError> {
    u32::try_from(value)
        .map(u32::to_le_bytes)
        .map_err(|_| BboltError::Write(format!("{what} of {value} bytes is too large for bbolt")))
}

/// A leaf page: header, one element per item, then each key and its value.
/// An element's position is counted from the element itself.
fn leaf_page(items: &[LeafItem<'_>]) -> Result<Vec<u8>, BboltError> {
    let mut bytes = page_header(FLAG_LEAF, items.len())?;
    let mut data = Vec::new();
    let data_start = PAGE_HEADER_SIZE + items.len() * ELEMENT_SIZE;
    for (index, item) in items.iter().enumerate() {
        let position = data_start + data.len() - (PAGE_HEADER_SIZE + index * ELEMENT_SIZE);
        bytes.extend_from_slice(&item.flags.to_le_bytes());
        bytes.extend_from_slice(&u32_field(position, "a page")?);
        bytes.extend_from_slice(&u32_field(item.key.len(), "a key")?);
        bytes.extend_from_slice(&u32_field(item.value.len(), "a value")?);
        data.extend_from_slice(item.key);
        data.extend_from_slice(item.value);
    }
    bytes.extend_from_slice(&data);
    Ok(bytes)
}

/// A branch page: header, one element per child (position, key size, page
/// id), then the keys, each the first key under its child.
fn branch_page(children: &[(&[u8], u64)]) -> Result<Vec<u8>, BboltError> {
    let mut bytes = page_header(FLAG_BRANCH, children.len())?;
    let mut data = Vec::new();
    let data_start = PAGE_HEADER_SIZE + children.len() * ELEMENT_SIZE;
    for (index, (key, child)) in children.iter().enumerate() {
        let position = data_start + data.len() - (PAGE_HEADER_SIZE + index * ELEMENT_SIZE);
        bytes.extend_from_slice(&u32_field(position, "a page")?);
        bytes.extend_from_slice(&u32_field(key.len(), "a key")?);
        bytes.extend_from_slice(&child.to_le_bytes());
        data.extend_from_slice(key);
    }
    bytes.extend_from_slice(&data);
    Ok(bytes)
}

/// A meta page: the meta record with its FNV-1a checksum.
fn meta_page(page_size: usize, pgid: u64, root_pgid: u64, high_water: u64, txid: u64) -> Vec<u8> {
    let mut meta = Vec::with_capacity(64);
    meta.extend_from_slice(&MAGIC.to_le_bytes());
    meta.extend_from_slice(&VERSION.to_le_bytes());
    meta.extend_from_slice(&(page_size as u32).to_le_bytes());
    meta.extend_from_slice(&0u32.to_le_bytes());
    // The root bucket's header: its page and sequence.
    meta.extend_from_slice(&root_pgid.to_le_bytes());
    meta.extend_from_slice(&0u64.to_le_bytes());
    meta.extend_from_slice(&NO_FREELIST.to_le_bytes());
    meta.extend_from_slice(&high_water.to_le_bytes());
    meta.extend_from_slice(&txid.to_le_bytes());
    let checksum = fnv1a_64(&meta);
    meta.extend_from_slice(&checksum.to_le_bytes());
    let mut page = Vec::with_capacity(page_size);
    page.extend_from_slice(&pgid.to_le_bytes());
    page.extend_from_slice(&FLAG_META.to_le_bytes());
    page.extend_from_slice(&0u16.to_le_bytes());
    page.extend_from_slice(&0u32.to_le_bytes());
    page.extend_from_slice(&meta);
    page.resize(page_size, 0);
    page
}

/// Writes a bbolt file holding `buckets`, each a top-level bucket of plain
/// values. Bucket names must be distinct and every bucket's keys strictly
/// ascending, as in any bbolt file; a key must not be empty.
pub fn write_db(page_size: u32, buckets: &[BucketContents]) -> Result<Vec<u8>, BboltError> {
    if !is_plausible_page_size(page_size) {
        return Err(BboltError::Write(format!(
            "page size {page_size} is not a power of two in 512..=1048576"
        )));
    }
    let page_size = page_size as usize;
    let mut sorted: Vec<&BucketContents> = buckets.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(BboltError::Write(format!(
                "bucket {:?} is given twice",
                String::from_utf8_lossy(&pair[0].name)
            )));
        }
    }
    for bucket in &sorted {
        check_keys(bucket)?;
    }

    let mut writer = PageWriter {
        page_size,
        bytes: vec![0; 2 * page_size],
    };
    // Each bucket's value in the root bucket: a header naming its root page,
    // or, for a small bucket, a zero header followed by its one leaf page.
    let mut bucket_values = Vec::with_capacity(sorted.len());
    for bucket in &sorted {
        let items: Vec<LeafItem<'_>> = bucket
            .entries
            .iter()
            .map(|(key, value)| LeafItem {
                flags: 0,
                key,
                value,
            })
            .collect();
        let inline_size = PAGE_HEADER_SIZE
            + items
                .iter()
                .map(|item| ELEMENT_SIZE + item.key.len() + item.value.len())
                .sum::<usize>();
        // bbolt keeps a bucket inline while it fits in a quarter page.
        let value = if BUCKET_HEADER_SIZE + inline_size <= page_size / 4 {
            let mut value = vec![0; BUCKET_HEADER_SIZE];
            value.extend_from_slice(&leaf_page(&items)?);
            value
        } else {
            let root = writer.tree(&items)?;
            let mut value = root.to_le_bytes().to_vec();
            value.extend_from_slice(&0u64.to_le_bytes());
            value
        };
        bucket_values.push(value);
    }
    let root_items: Vec<LeafItem<'_>> = sorted
        .iter()
        .zip(&bucket_values)
        .map(|(bucket, value)| LeafItem {
            flags: LEAF_FLAG_BUCKET,
            key: &bucket.name,
            value,
        })
        .collect();
    let root_pgid = writer.tree(&root_items)?;
    let high_water = writer.next_pgid();
    // Two valid meta records, as a fresh bbolt file has; the later one wins.
    let meta_0 = meta_page(page_size, 0, root_pgid, high_water, 1);
    let meta_1 = meta_page(page_size, 1, root_pgid, high_water, 2);
    writer.bytes[..page_size].copy_from_slice(&meta_0);
    writer.bytes[page_size..2 * page_size].copy_from_slice(&meta_1);
    Ok(writer.bytes)
}

fn check_keys(bucket: &BucketContents) -> Result<(), BboltError> {
    let name = || String::from_utf8_lossy(&bucket.name).into_owned();
    if bucket.name.is_empty() {
        return Err(BboltError::Write("a bucket name is empty".to_owned()));
    }
    if bucket.entries.iter().any(|(key, _)| key.is_empty()) {
        return Err(BboltError::Write(format!(
            "bucket {:?} has an empty key",
            name()
        )));
    }
    if bucket.entries.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(BboltError::Write(format!(
            "bucket {:?}'s keys are not strictly ascending",
            name()
        )));
    }
    Ok(())
}
