//! Unit tests of `Db` and `Bucket` over hand-built files: leaf, branch,
//! inline and overflow pages, meta selection, the snapshot trailer, and the
//! errors damaged files produce.

use sha2::{Digest, Sha256};

use crate::test_pages::{FileBuilder, LeafEntry};
use crate::{BboltError, Bucket, Db, Value, is_bbolt};

const PAGE_SIZE: usize = 4096;

fn entries<'a>(bucket: &Bucket<'a>) -> Vec<(Vec<u8>, Value<'a>)> {
    bucket
        .iter()
        .map(|entry| entry.map(|(key, value)| (key.to_vec(), value)))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn plain_entries(bucket: &Bucket<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries(bucket)
        .into_iter()
        .map(|(key, value)| (key, value.as_bytes().expect("a plain value").to_vec()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    items
        .iter()
        .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
        .collect()
}

/// Root bucket at page 2 holding one bucket "b" whose root is `b_root`.
fn file_with_bucket(file: &mut FileBuilder, b_root: u64) {
    file.leaf(
        2,
        &[LeafEntry::bucket(
            b"b",
            &FileBuilder::bucket_header(b_root, 7),
        )],
    );
}

#[test]
fn reads_a_leaf_bucket() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.leaf(
        3,
        &[
            LeafEntry::plain(b"a", b"1"),
            LeafEntry::plain(b"bb", b""),
            LeafEntry::plain(b"c", b"333"),
        ],
    );
    let bytes = file.build(2, 4);
    assert!(is_bbolt(&bytes));

    let db = Db::open(&bytes).unwrap();
    assert_eq!(db.meta().page_size, 4096);
    assert_eq!(db.n_pages(), 4);
    assert!(!db.had_snapshot_trailer());
    let bucket = db.bucket(b"b").unwrap().unwrap();
    assert_eq!(bucket.sequence(), 7);
    assert!(!bucket.is_inline());
    assert_eq!(bucket.depth().unwrap(), 1);
    assert_eq!(
        plain_entries(&bucket),
        pairs(&[("a", "1"), ("bb", ""), ("c", "333")])
    );
    assert_eq!(
        bucket.get(b"c").unwrap().unwrap().as_bytes(),
        Some(&b"333"[..])
    );
    assert!(bucket.get(b"d").unwrap().is_none());
    assert!(db.bucket(b"missing").unwrap().is_none());
}

#[test]
fn walks_branch_pages_in_key_order() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.branch(3, &[(b"a", 6), (b"m", 4), (b"t", 5)]);
    file.leaf(
        6,
        &[LeafEntry::plain(b"a", b"1"), LeafEntry::plain(b"f", b"2")],
    );
    file.leaf(
        4,
        &[LeafEntry::plain(b"m", b"3"), LeafEntry::plain(b"p", b"4")],
    );
    file.leaf(
        5,
        &[LeafEntry::plain(b"t", b"5"), LeafEntry::plain(b"z", b"6")],
    );
    let bytes = file.build(2, 7);

    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    assert_eq!(bucket.depth().unwrap(), 2);
    assert_eq!(
        plain_entries(&bucket),
        pairs(&[
            ("a", "1"),
            ("f", "2"),
            ("m", "3"),
            ("p", "4"),
            ("t", "5"),
            ("z", "6")
        ])
    );
    for (key, value) in [
        ("a", "1"),
        ("f", "2"),
        ("m", "3"),
        ("p", "4"),
        ("t", "5"),
        ("z", "6"),
    ] {
        let found = bucket.get(key.as_bytes()).unwrap().unwrap();
        assert_eq!(found.as_bytes(), Some(value.as_bytes()), "get {key}");
    }
    for absent in ["", "b", "n", "zz"] {
        assert!(
            bucket.get(absent.as_bytes()).unwrap().is_none(),
            "get {absent:?}"
        );
    }
}

#[test]
fn reads_inline_and_nested_buckets() {
    let inner =
        FileBuilder::inline_bucket(&[LeafEntry::plain(b"x", b"10"), LeafEntry::plain(b"y", b"20")]);
    let outer = FileBuilder::inline_bucket(&[
        LeafEntry::bucket(b"inner", &inner),
        LeafEntry::plain(b"v", b"30"),
    ]);
    let mut file = FileBuilder::new(PAGE_SIZE);
    file.leaf(
        2,
        &[
            LeafEntry::bucket(b"empty", &FileBuilder::inline_bucket(&[])),
            LeafEntry::bucket(b"outer", &outer),
        ],
    );
    let bytes = file.build(2, 3);

    let db = Db::open(&bytes).unwrap();
    let empty = db.bucket(b"empty").unwrap().unwrap();
    assert!(empty.is_inline());
    assert!(entries(&empty).is_empty());
    let outer = db.bucket(b"outer").unwrap().unwrap();
    assert!(outer.is_inline());
    let outer_entries = entries(&outer);
    assert_eq!(outer_entries.len(), 2);
    let (key, Value::Bucket(inner)) = &outer_entries[0] else {
        panic!("inner is not a bucket")
    };
    assert_eq!(key, b"inner");
    assert_eq!(plain_entries(inner), pairs(&[("x", "10"), ("y", "20")]));
    assert_eq!(
        outer
            .bucket(b"inner")
            .unwrap()
            .unwrap()
            .get(b"y")
            .unwrap()
            .unwrap()
            .as_bytes(),
        Some(&b"20"[..])
    );
    // A plain value is not a bucket.
    assert!(outer.bucket(b"v").unwrap().is_none());
}

#[test]
fn reads_values_spilling_into_overflow_pages() {
    let big: Vec<u8> = (0..10_000u32).map(|index| index as u8).collect();
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.leaf(
        3,
        &[
            LeafEntry::plain(b"big", &big),
            LeafEntry::plain(b"small", b"s"),
        ],
    );
    // 10 KB spans pages 3, 4 and 5; the next page is 6.
    file.leaf(6, &[]);
    let bytes = file.build(2, 7);

    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    let found = entries(&bucket);
    assert_eq!(found[0].1.as_bytes(), Some(&big[..]));
    assert_eq!(found[1].1.as_bytes(), Some(&b"s"[..]));
}

#[test]
fn uses_the_valid_meta_with_the_higher_txid() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file.leaf(2, &[LeafEntry::plain(b"old", b"")]);
    file.leaf(3, &[LeafEntry::plain(b"new", b"")]);
    file.txids = (10, 11);
    let mut bytes = file.build(2, 4);
    // Meta 1 (txid 11) names root page 3, meta 0 (txid 10) root page 2.
    bytes[PAGE_SIZE..2 * PAGE_SIZE].copy_from_slice(&file.meta_page(1, 3, 4, 11));
    let db = Db::open(&bytes).unwrap();
    assert_eq!((db.meta().txid, db.meta().root_pgid), (11, 3));

    // A torn meta 1 falls back to meta 0.
    bytes[PAGE_SIZE + 16 + 20] ^= 0xff;
    let db = Db::open(&bytes).unwrap();
    assert_eq!((db.meta().txid, db.meta().root_pgid), (10, 2));

    // A torn meta 0 still finds meta 1 one page in.
    let mut bytes = file.build(2, 4);
    bytes[16 + 8] ^= 0xff;
    let db = Db::open(&bytes).unwrap();
    assert_eq!(db.meta().txid, 11);
}

#[test]
fn rejects_files_that_are_not_bbolt() {
    let zeros = vec![0u8; 3 * PAGE_SIZE];
    assert!(!is_bbolt(&zeros));
    assert_eq!(
        Db::open(&zeros).unwrap_err().to_string(),
        "not a bbolt file: bad magic on both meta pages"
    );
    assert!(matches!(Db::open(b"short"), Err(BboltError::NotBbolt(_))));

    let mut file = FileBuilder::new(PAGE_SIZE);
    file.leaf(2, &[]);
    let mut bytes = file.build(2, 3);
    bytes[16 + 20] ^= 1;
    bytes[PAGE_SIZE + 16 + 20] ^= 1;
    assert_eq!(
        Db::open(&bytes).unwrap_err().to_string(),
        "not a bbolt file: meta checksum mismatch on both meta pages"
    );
}

#[test]
fn verifies_and_strips_the_snapshot_trailer() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.leaf(3, &[LeafEntry::plain(b"k", b"v")]);
    let mut bytes = file.build(2, 4);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);

    let db = Db::open(&bytes).unwrap();
    assert!(db.had_snapshot_trailer());
    assert_eq!(db.n_pages(), 4);
    assert_eq!(
        plain_entries(&db.bucket(b"b").unwrap().unwrap()),
        pairs(&[("k", "v")])
    );

    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(Db::open(&bytes).unwrap_err(), BboltError::Sha256Mismatch);
    assert_eq!(
        BboltError::Sha256Mismatch.to_string(),
        "snapshot sha256 mismatch"
    );
}

#[test]
fn names_a_page_beyond_the_file() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 12);
    let bytes = file.build(2, 8);
    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    let error = bucket.iter().next().unwrap().unwrap_err();
    assert_eq!(
        error.to_string(),
        "page 12 is out of range (file has 8 pages)"
    );
    assert_eq!(bucket.get(b"x").unwrap_err(), error);
}

#[test]
fn rejects_elements_running_past_their_page() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    let mut leaf = FileBuilder::leaf_bytes(3, 0, &[LeafEntry::plain(b"k", b"v")]);
    // Value size of element 0.
    leaf[16 + 12..16 + 16].copy_from_slice(&5000u32.to_le_bytes());
    file.raw(3, leaf);
    let bytes = file.build(2, 4);
    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    assert_eq!(
        bucket.iter().next().unwrap().unwrap_err().to_string(),
        "page 3: value of element 0 (pos 17, 5000 bytes) runs past the page end (4096 bytes)"
    );
}

#[test]
fn rejects_meta_and_mislabelled_pages_as_tree_pages() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 1);
    let bytes = file.build(2, 3);
    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    assert_eq!(
        bucket.iter().next().unwrap().unwrap_err().to_string(),
        "page 1: flags 0x4 mark neither a branch nor a leaf page"
    );

    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.leaf(3, &[]);
    let mut bytes = file.build(2, 4);
    bytes[3 * PAGE_SIZE] = 9;
    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    assert_eq!(
        bucket.depth().unwrap_err().to_string(),
        "page 3: header says it is page 9"
    );
}

#[test]
fn a_page_cycle_is_an_error_not_a_hang() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.branch(3, &[(b"a", 3)]);
    let bytes = file.build(2, 4);
    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    assert!(matches!(
        bucket.iter().last(),
        Some(Err(BboltError::CorruptPage { .. }))
    ));
    assert!(matches!(
        bucket.get(b"a"),
        Err(BboltError::CorruptPage { .. })
    ));
    assert!(matches!(
        bucket.depth(),
        Err(BboltError::CorruptPage { .. })
    ));
}

#[test]
fn keys_out_of_order_are_an_error() {
    let mut file = FileBuilder::new(PAGE_SIZE);
    file_with_bucket(&mut file, 3);
    file.leaf(
        3,
        &[LeafEntry::plain(b"b", b""), LeafEntry::plain(b"a", b"")],
    );
    let bytes = file.build(2, 4);
    let bucket = Db::open(&bytes).unwrap().bucket(b"b").unwrap().unwrap();
    let results: Vec<_> = bucket.iter().collect();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[1].as_ref().unwrap_err().to_string(),
        "page 3: key of element 1 is not above the key before it"
    );
}

/// Reads everything reachable from `bucket`, nested buckets to `depth`.
fn walk(bucket: &Bucket<'_>, depth: usize) -> Result<usize, BboltError> {
    let mut n_entries = 0;
    for entry in bucket {
        let (key, value) = entry?;
        n_entries += 1;
        bucket.get(key)?;
        if let (Value::Bucket(nested), true) = (value, depth > 0) {
            n_entries += walk(&nested, depth - 1)?;
        }
    }
    bucket.depth()?;
    Ok(n_entries)
}

/// Damage of any single byte gives an error or a readable file, never a
/// panic or a hang: every byte of a small file with branch, leaf, overflow
/// and inline pages is flipped in turn.
#[test]
fn single_byte_damage_never_panics() {
    let page_size = 512;
    let mut file = FileBuilder::new(page_size);
    let inline = FileBuilder::inline_bucket(&[LeafEntry::plain(b"i", b"1")]);
    file.leaf(
        2,
        &[
            LeafEntry::bucket(b"b", &FileBuilder::bucket_header(3, 0)),
            LeafEntry::bucket(b"inline", &inline),
        ],
    );
    // Page 4 spills into page 5.
    file.branch(3, &[(b"a", 4), (b"m", 6)]);
    file.leaf(
        4,
        &[
            LeafEntry::plain(b"a", b"1"),
            LeafEntry::plain(b"f", &[7; 700]),
        ],
    );
    file.leaf(
        6,
        &[LeafEntry::plain(b"m", b"3"), LeafEntry::plain(b"z", b"4")],
    );
    let pristine = file.build(2, 7);
    let pristine_db = Db::open(&pristine).unwrap();
    assert_eq!(walk(&pristine_db.root(), 4).unwrap(), 7);
    let b = pristine_db.bucket(b"b").unwrap().unwrap();
    assert_eq!(
        b.get(b"f").unwrap().unwrap().as_bytes(),
        Some(&[7; 700][..])
    );

    for position in 0..pristine.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = pristine.clone();
            damaged[position] ^= flip;
            if let Ok(db) = Db::open(&damaged) {
                let _ = walk(&db.root(), 4);
            }
            let _ = crate::read_etcd_backend(&damaged);
        }
    }
}
