//! `Db`: a bbolt file opened from a byte slice (meta selection, the optional
//! `etcdctl snapshot save` sha256 trailer), and `Bucket`, a read-only view of
//! one bucket's B+tree with in-order iteration and point lookups.

use sha2::{Digest, Sha256};

use crate::error::BboltError;
pub use crate::page::Meta;
use crate::page::{
    BUCKET_HEADER_SIZE, LEAF_FLAG_BUCKET, MAGIC, PAGE_HEADER_SIZE, Page, PageOrigin, corrupt,
    is_plausible_page_size, parse_meta, u32_at, u64_at,
};

/// The length of the sha256 trailer etcd's Snapshot stream appends to the
/// database file.
const SNAPSHOT_TRAILER_SIZE: usize = 32;

/// Deeper trees than this are taken for a page cycle: a bbolt tree with 4 KiB
/// pages holding billions of keys is still under ten levels.
const MAX_TREE_DEPTH: usize = 64;

/// A cheap check that `bytes` starts like a bbolt file: the meta magic on
/// page 0 (or, if page 0 is torn, on a 4 KiB page 1).
pub fn is_bbolt(bytes: &[u8]) -> bool {
    let magic_at = |offset: usize| {
        bytes.len() >= offset + PAGE_HEADER_SIZE + 4
            && u32_at(bytes, offset + PAGE_HEADER_SIZE) == MAGIC
    };
    magic_at(0) || magic_at(4096)
}

/// The page store of an open file: which bytes, cut into how many pages.
#[derive(Debug, Clone, Copy)]
struct Pages<'a> {
    data: &'a [u8],
    page_size: usize,
    n_pages: u64,
}

impl<'a> Pages<'a> {
    /// The branch or leaf page `pgid`, with its overflow pages.
    fn page(&self, pgid: u64) -> Result<Page<'a>, BboltError> {
        if pgid >= self.n_pages {
            return Err(BboltError::PageOutOfRange {
                pgid,
                n_pages: self.n_pages,
            });
        }
        // pgid < n_pages = data.len() / page_size, so this cannot overflow.
        let start = pgid as usize * self.page_size;
        let origin = PageOrigin::File(pgid);
        let header_id = u64_at(self.data, start);
        if header_id != pgid {
            return Err(corrupt(
                origin,
                format!("header says it is page {header_id}"),
            ));
        }
        let overflow = u64::from(u32_at(self.data, start + 12));
        let last = pgid + overflow;
        if last >= self.n_pages {
            return Err(corrupt(
                origin,
                format!(
                    "{overflow} overflow pages run past the end of the file ({} pages)",
                    self.n_pages
                ),
            ));
        }
        let end = (last as usize + 1) * self.page_size;
        Page::parse(&self.data[start..end], origin)
    }
}

/// An open, read-only bbolt database over a byte slice.
#[derive(Debug, Clone)]
pub struct Db<'a> {
    pages: Pages<'a>,
    meta: Meta,
    had_snapshot_trailer: bool,
}

impl<'a> Db<'a> {
    /// Opens a bbolt file held in memory: either a database file as bbolt
    /// wrote it, or an `etcdctl snapshot save` file, whose trailing sha256 of
    /// the database is verified and stripped.
    pub fn open(bytes: &'a [u8]) -> Result<Db<'a>, BboltError> {
        let meta = select_meta(bytes)?;
        let page_size = meta.page_size as usize;
        let mut data = bytes;
        let mut had_snapshot_trailer = false;
        // A database file is a whole number of pages, so 32 extra bytes can
        // only be the snapshot trailer.
        if data.len() % page_size == SNAPSHOT_TRAILER_SIZE {
            let (database, trailer) = data.split_at(data.len() - SNAPSHOT_TRAILER_SIZE);
            if Sha256::digest(database).as_slice() != trailer {
                return Err(BboltError::Sha256Mismatch);
            }
            data = database;
            had_snapshot_trailer = true;
        }
        let n_pages = (data.len() / page_size) as u64;
        Ok(Db {
            pages: Pages {
                data,
                page_size,
                n_pages,
            },
            meta,
            had_snapshot_trailer,
        })
    }

    /// The meta record in force: the valid one with the higher transaction id.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Whole pages in the file (without the snapshot trailer).
    pub fn n_pages(&self) -> u64 {
        self.pages.n_pages
    }

    /// Whether the file carried a (verified) `etcdctl snapshot save` trailer.
    pub fn had_snapshot_trailer(&self) -> bool {
        self.had_snapshot_trailer
    }

    /// The root bucket, whose entries are the top-level buckets.
    pub fn root(&self) -> Bucket<'a> {
        Bucket {
            pages: self.pages,
            root: Root::Page(self.meta.root_pgid),
            sequence: self.meta.root_sequence,
        }
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, BboltError> {
        self.root().bucket(name)
    }
}

/// Reads both meta pages and picks the valid one with the higher txid, as
/// bbolt does at open.
fn select_meta(bytes: &[u8]) -> Result<Meta, BboltError> {
    let meta_0 = parse_meta(bytes);
    // Page 1 sits one page size in; if page 0 is damaged its page size field
    // is a guess, so fall back to the usual sizes.
    let mut offsets = Vec::new();
    match &meta_0 {
        Ok(meta) => offsets.push(meta.page_size as usize),
        Err(_) => {
            if bytes.len() >= PAGE_HEADER_SIZE + 12 {
                let claimed = u32_at(bytes, PAGE_HEADER_SIZE + 8);
                if is_plausible_page_size(claimed) {
                    offsets.push(claimed as usize);
                }
            }
            offsets.extend((9..=16).map(|shift| 1usize << shift));
        }
    }
    // Report the problem at the most likely offset, the first one tried.
    let mut meta_1 = Err("file ends before page 1".to_owned());
    for (attempt, offset) in offsets.into_iter().enumerate() {
        let Some(page) = bytes.get(offset..) else {
            continue;
        };
        let found = parse_meta(page).and_then(|meta| {
            if meta.page_size as usize == offset {
                Ok(meta)
            } else {
                Err(format!(
                    "page size {} does not match its offset {offset}",
                    meta.page_size
                ))
            }
        });
        if found.is_ok() || attempt == 0 {
            meta_1 = found;
        }
        if meta_1.is_ok() {
            break;
        }
    }
    match (meta_0, meta_1) {
        (Ok(meta_0), Ok(meta_1)) => Ok(if meta_1.txid > meta_0.txid {
            meta_1
        } else {
            meta_0
        }),
        (Ok(meta), Err(_)) | (Err(_), Ok(meta)) => Ok(meta),
        (Err(problem_0), Err(problem_1)) if problem_0 == problem_1 => Err(BboltError::NotBbolt(
            format!("{problem_0} on both meta pages"),
        )),
        (Err(problem_0), Err(problem_1)) => Err(BboltError::NotBbolt(format!(
            "meta page 0: {problem_0}; meta page 1: {problem_1}"
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
enum Root<'a> {
    Page(u64),
    /// An inline bucket: its single leaf page lives inside the parent's value.
    Inline(Page<'a>),
}

/// A read-only view of one bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    pages: Pages<'a>,
    root: Root<'a>,
    sequence: u64,
}

/// A bucket entry's value: plain bytes or a nested bucket.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Bucket(Bucket<'a>),
}

impl<'a> Value<'a> {
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(bytes) => Some(bytes),
            Value::Bucket(_) => None,
        }
    }
}

impl<'a> Bucket<'a> {
    /// The bucket's sequence counter (bbolt's `NextSequence`).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the bucket is stored inline in its parent's leaf.
    pub fn is_inline(&self) -> bool {
        matches!(self.root, Root::Inline(_))
    }

    /// Every entry in ascending key order. Iteration stops after the first
    /// error, which names the damaged page.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            pages: self.pages,
            pending_root: Some(self.root),
            stack: Vec::new(),
            previous_key: None,
            n_pages_visited: 0,
            finished: false,
        }
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value<'a>>, BboltError> {
        let mut page = self.root_page()?;
        for _ in 0..MAX_TREE_DEPTH {
            if page.is_leaf() {
                for index in 0..page.count() {
                    let element = page.leaf_element(index)?;
                    if element.key == key {
                        return value_of(self.pages, page, element.flags, element.value).map(Some);
                    }
                }
                return Ok(None);
            }
            // Each branch key is the smallest key under its child: descend
            // into the last child whose key is <= the one sought.
            let mut child = None;
            for index in 0..page.count() {
                let (first_key, pgid) = page.branch_element(index)?;
                if index > 0 && first_key > key {
                    break;
                }
                child = Some(pgid);
            }
            let Some(child) = child else { return Ok(None) };
            page = self.pages.page(child)?;
        }
        Err(too_deep(page.origin))
    }

    /// The nested bucket `name`; `None` if absent or if `name` holds bytes.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, BboltError> {
        Ok(match self.get(name)? {
            Some(Value::Bucket(bucket)) => Some(bucket),
            _ => None,
        })
    }

    /// Levels in the bucket's tree along its leftmost path: 1 for a bucket
    /// whose root is a leaf.
    pub fn depth(&self) -> Result<usize, BboltError> {
        let mut page = self.root_page()?;
        for depth in 1..=MAX_TREE_DEPTH {
            if page.is_leaf() || page.count() == 0 {
                return Ok(depth);
            }
            let (_, child) = page.branch_element(0)?;
            page = self.pages.page(child)?;
        }
        Err(too_deep(page.origin))
    }

    fn root_page(&self) -> Result<Page<'a>, BboltError> {
        match self.root {
            Root::Page(pgid) => self.pages.page(pgid),
            Root::Inline(page) => Ok(page),
        }
    }
}

impl<'a> IntoIterator for &Bucket<'a> {
    type Item = Result<(&'a [u8], Value<'a>), BboltError>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Decodes a leaf value: bytes, or the bucket header of a nested bucket.
fn value_of<'a>(
    pages: Pages<'a>,
    page: Page<'a>,
    flags: u32,
    value: &'a [u8],
) -> Result<Value<'a>, BboltError> {
    if flags & LEAF_FLAG_BUCKET == 0 {
        return Ok(Value::Bytes(value));
    }
    if value.len() < BUCKET_HEADER_SIZE {
        return Err(corrupt(
            page.origin,
            format!(
                "bucket value of {} bytes is shorter than a bucket header",
                value.len()
            ),
        ));
    }
    let root_pgid = u64_at(value, 0);
    let sequence = u64_at(value, 8);
    let root = if root_pgid == 0 {
        let inline = Page::parse(&value[BUCKET_HEADER_SIZE..], PageOrigin::Inline)?;
        if !inline.is_leaf() {
            return Err(corrupt(
                PageOrigin::Inline,
                "inline bucket page is not a leaf".to_owned(),
            ));
        }
        Root::Inline(inline)
    } else {
        Root::Page(root_pgid)
    };
    Ok(Value::Bucket(Bucket {
        pages,
        root,
        sequence,
    }))
}

fn too_deep(origin: PageOrigin) -> BboltError {
    corrupt(
        origin,
        format!("bucket tree is deeper than {MAX_TREE_DEPTH} levels (a page cycle?)"),
    )
}

/// In-order iterator over a bucket's entries: a depth-first walk of its tree.
#[derive(Debug)]
pub struct Iter<'a> {
    pages: Pages<'a>,
    pending_root: Option<Root<'a>>,
    /// The pages from the root to the current leaf, each with the index of
    /// its next element.
    stack: Vec<(Page<'a>, usize)>,
    previous_key: Option<&'a [u8]>,
    /// A well-formed tree visits each page once, so a walk that loads more
    /// pages than the file holds is following a cycle.
    n_pages_visited: u64,
    finished: bool,
}

impl<'a> Iter<'a> {
    fn advance(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>, BboltError> {
        if let Some(root) = self.pending_root.take() {
            let page = match root {
                Root::Page(pgid) => self.load(pgid)?,
                Root::Inline(page) => page,
            };
            self.stack.push((page, 0));
        }
        loop {
            let Some((page, next_index)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let page = *page;
            if *next_index >= page.count() {
                self.stack.pop();
                continue;
            }
            let index = *next_index;
            *next_index += 1;
            if page.is_leaf() {
                let element = page.leaf_element(index)?;
                if self
                    .previous_key
                    .is_some_and(|previous| previous >= element.key)
                {
                    return Err(corrupt(
                        page.origin,
                        format!("key of element {index} is not above the key before it"),
                    ));
                }
                self.previous_key = Some(element.key);
                let value = value_of(self.pages, page, element.flags, element.value)?;
                return Ok(Some((element.key, value)));
            }
            let (_, child) = page.branch_element(index)?;
            if self.stack.len() >= MAX_TREE_DEPTH {
                return Err(too_deep(page.origin));
            }
            let child = self.load(child)?;
            self.stack.push((child, 0));
        }
    }

    fn load(&mut self, pgid: u64) -> Result<Page<'a>, BboltError> {
        self.n_pages_visited += 1;
        if self.n_pages_visited > self.pages.n_pages {
            return Err(corrupt(
                PageOrigin::File(pgid),
                "reached again while walking a bucket (a page cycle)".to_owned(),
            ));
        }
        self.pages.page(pgid)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(&'a [u8], Value<'a>), BboltError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.advance() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }
}
