//! Answering a `RangeRequest` exactly as etcd 3.4's applier does: the index picks the live
//! keys, then filters, sorting, limit and value loading follow in etcd's order.
//!
//! Work is split in two so a reader can release the index lock before touching the disk: the
//! first half needs only the index, the second only a redb table.

use bytes::Bytes;
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use proto::mvccpb::KeyValue;
use redb::ReadableTable;

use crate::MvccError;
use crate::index::{IndexEntry, KeyIndex, KeySpan};
use crate::record::{REVISIONS_TABLE, Record, Revision};

/// A key selected by the index. Its bytes are in [`Candidates::keys`]: for a
/// range over a whole store this list is most of what a range holds besides
/// the response, and a shared `Bytes` per key would be 32 bytes, plus a header
/// allocated the first time an index key is shared.
pub(crate) struct Candidate {
    pub entry: IndexEntry,
    key_start: usize,
    key_len: usize,
}

/// What the index part of a range produced.
pub(crate) struct Candidates {
    /// Live keys in the span at the read revision, before limit and filters (etcd's `count`).
    pub count: i64,
    pub selected: Vec<Candidate>,
    /// The selected keys, one after the other.
    keys: Vec<u8>,
}

fn key_of<'k>(keys: &'k [u8], candidate: &Candidate) -> &'k [u8] {
    &keys[candidate.key_start..candidate.key_start + candidate.key_len]
}

/// True when etcd fetches every key and applies the limit only after filtering and sorting.
fn fetches_everything(request: &RangeRequest) -> bool {
    request.sort_order() != SortOrder::None
        || request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0
}

/// The index half: counts the live keys and keeps those etcd's mvcc layer would return.
pub(crate) fn collect_candidates(
    index: &KeyIndex,
    request: &RangeRequest,
    read_revision: i64,
) -> Candidates {
    // etcd asks its mvcc layer for one key beyond the limit so it can tell whether there is more.
    let fetch_limit = if request.count_only {
        0
    } else if fetches_everything(request) || request.limit <= 0 {
        usize::MAX
    } else {
        usize::try_from(request.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    };
    let mut count = 0_i64;
    let mut selected = Vec::new();
    let mut keys = Vec::new();
    index.visit_live(
        KeySpan::new(&request.key, &request.range_end),
        read_revision,
        |key, entry| {
            count += 1;
            if selected.len() < fetch_limit {
                selected.push(Candidate {
                    entry: *entry,
                    key_start: keys.len(),
                    key_len: key.len(),
                });
                keys.extend_from_slice(key);
            }
        },
    );
    Candidates {
        count,
        selected,
        keys,
    }
}

/// Reads the stored value of a candidate's revision, checking that it belongs to the key.
pub(crate) fn load_value<T>(table: &T, key: &[u8], revision: Revision) -> Result<Bytes, MvccError>
where
    T: ReadableTable<u128, &'static [u8]>,
{
    read_value(table, key, revision, Bytes::copy_from_slice)
}

/// Hands the stored value of a candidate's revision to `use_value`, checking
/// that it belongs to the key.
fn read_value<T, R>(
    table: &T,
    key: &[u8],
    revision: Revision,
    use_value: impl FnOnce(&[u8]) -> R,
) -> Result<R, MvccError>
where
    T: ReadableTable<u128, &'static [u8]>,
{
    let stored = table.get(revision.to_table_key())?.ok_or_else(|| {
        MvccError::Storage(format!(
            "record of revision {}.{} is missing from {}",
            revision.main,
            revision.sub,
            redb::TableHandle::name(&REVISIONS_TABLE)
        ))
    })?;
    let record = Record::decode(stored.value())?;
    if record.key != key || record.tombstone {
        return Err(MvccError::Storage(format!(
            "record of revision {}.{} does not hold the live key the index expects",
            revision.main, revision.sub
        )));
    }
    Ok(use_value(record.value))
}

/// The keys a range returns, in order, with `more` and `count` as etcd reports them.
struct Selection {
    count: i64,
    more: bool,
    selected: Vec<Candidate>,
    keys: Vec<u8>,
    /// The value of each selected key, when sorting by value needed them.
    values: Option<Vec<Bytes>>,
}

impl Selection {
    fn key(&self, candidate: &Candidate) -> &[u8] {
        key_of(&self.keys, candidate)
    }
}

/// Filters, sorts and applies the limit (loading values only to sort by them).
fn select<T>(
    table: &T,
    request: &RangeRequest,
    candidates: Candidates,
) -> Result<Selection, MvccError>
where
    T: ReadableTable<u128, &'static [u8]>,
{
    let Candidates {
        count,
        mut selected,
        keys,
    } = candidates;

    // The same four prunes as etcd, each a no-op when its bound is 0.
    selected.retain(|candidate| {
        let entry = &candidate.entry;
        (request.max_mod_revision == 0 || entry.revision.main <= request.max_mod_revision)
            && (request.min_mod_revision == 0 || entry.revision.main >= request.min_mod_revision)
            && (request.max_create_revision == 0
                || entry.create_revision <= request.max_create_revision)
            && (request.min_create_revision == 0
                || entry.create_revision >= request.min_create_revision)
    });

    let sort_target = request.sort_target();
    let mut sort_order = request.sort_order();
    // The index yields keys in ascending order already, so etcd sorts by default only when
    // the target is something other than the key.
    if sort_order == SortOrder::None && sort_target != SortTarget::Key {
        sort_order = SortOrder::Ascend;
    }
    let mut values: Option<Vec<Bytes>> = None;
    if sort_order != SortOrder::None {
        let descending = sort_order == SortOrder::Descend;
        if sort_target == SortTarget::Value {
            let mut paired = selected
                .into_iter()
                .map(|candidate| {
                    let value =
                        load_value(table, key_of(&keys, &candidate), candidate.entry.revision)?;
                    Ok((candidate, value))
                })
                .collect::<Result<Vec<_>, MvccError>>()?;
            paired.sort_by(|a, b| directed(a.1.cmp(&b.1), descending));
            let (sorted, sorted_values) = paired.into_iter().unzip();
            selected = sorted;
            values = Some(sorted_values);
        } else {
            sort_candidates(&keys, &mut selected, sort_target, descending);
        }
    }

    let mut more = false;
    if let Ok(limit) = usize::try_from(request.limit)
        && limit > 0
        && selected.len() > limit
    {
        selected.truncate(limit);
        if let Some(values) = &mut values {
            values.truncate(limit);
        }
        more = true;
    }
    Ok(Selection {
        count,
        more,
        selected,
        keys,
        values,
    })
}

/// The disk half: filters, sorts, applies the limit, loads values and builds the response.
pub(crate) fn build_response<T>(
    table: &T,
    request: &RangeRequest,
    candidates: Candidates,
    header_revision: i64,
) -> Result<RangeResponse, MvccError>
where
    T: ReadableTable<u128, &'static [u8]>,
{
    let selection = select(table, request, candidates)?;
    let mut kvs = Vec::with_capacity(selection.selected.len());
    for (position, candidate) in selection.selected.iter().enumerate() {
        let key = selection.key(candidate);
        let value = if request.keys_only {
            Bytes::new()
        } else if let Some(values) = &selection.values {
            values[position].clone()
        } else {
            load_value(table, key, candidate.entry.revision)?
        };
        kvs.push(KeyValue {
            key: Bytes::copy_from_slice(key),
            create_revision: candidate.entry.create_revision,
            mod_revision: candidate.entry.revision.main,
            version: candidate.entry.version,
            value,
            lease: candidate.entry.lease,
        });
    }

    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision: header_revision,
            ..Default::default()
        }),
        kvs,
        more: selection.more,
        count: selection.count,
    })
}

/// A range response with its key-values already in protobuf form: what
/// `build_response` would return, encoded straight from the stored records,
/// without a copy of each value and a `KeyValue` for each key in between.
/// For large responses (etcdctl get --prefix over a whole store) that is most
/// of the memory a range holds.
pub struct EncodedRange {
    pub header_revision: i64,
    pub count: i64,
    pub more: bool,
    /// Field 2 (`kvs`) of a `RangeResponse`, every `KeyValue` encoded as prost
    /// encodes it, in chunks of about `KVS_CHUNK_BYTES`.
    kvs: Vec<Vec<u8>>,
}

/// Encoded key-values are gathered in chunks of this size, so a large
/// response neither reallocates nor over-allocates by much.
const KVS_CHUNK_BYTES: usize = 1024 * 1024;

/// Candidate lists at least this long are shrunk while they are encoded.
const SHRINK_FROM: usize = 4096;

impl EncodedRange {
    /// The encoded length of the whole `RangeResponse` with this header.
    pub fn encoded_len(&self, header: &ResponseHeader) -> usize {
        use prost::encoding::{bool, int64, message};
        message::encoded_len(1, header)
            + self.kvs.iter().map(Vec::len).sum::<usize>()
            + if self.more {
                bool::encoded_len(3, &true)
            } else {
                0
            }
            + if self.count != 0 {
                int64::encoded_len(4, &self.count)
            } else {
                0
            }
    }

    /// Writes the whole `RangeResponse`, byte for byte as prost would encode
    /// the equivalent message.
    pub fn encode(&self, header: &ResponseHeader, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{bool, int64, message};
        message::encode(1, header, buf);
        for chunk in &self.kvs {
            buf.put_slice(chunk);
        }
        if self.more {
            bool::encode(3, &true, buf);
        }
        if self.count != 0 {
            int64::encode(4, &self.count, buf);
        }
    }

    /// The same bytes as [`EncodedRange::encode`], handed over in pieces and
    /// by value: the header field, then the key-values in the chunks they were
    /// gathered in, then `more` and `count` (a piece that would be empty is
    /// left out). A sender can write each piece as it is and free it once
    /// written, so the response never needs a second, contiguous copy.
    pub fn into_pieces(self, header: &ResponseHeader) -> impl Iterator<Item = Vec<u8>> + use<> {
        use prost::encoding::{bool, int64, message};
        let mut head = Vec::with_capacity(message::encoded_len(1, header));
        message::encode(1, header, &mut head);
        let mut tail = Vec::new();
        if self.more {
            bool::encode(3, &true, &mut tail);
        }
        if self.count != 0 {
            int64::encode(4, &self.count, &mut tail);
        }
        std::iter::once(head)
            .chain(self.kvs)
            .chain(std::iter::once(tail))
            .filter(|piece| !piece.is_empty())
    }
}

/// Appends one `KeyValue` as field 2 of a `RangeResponse`.
fn encode_key_value(kv: &KeyValueRef<'_>, out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let bytes_len = |tag: u32, len: usize| {
        if len == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(len as u64) + len
        }
    };
    let int_len = |tag: u32, value: i64| {
        if value == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(value as u64)
        }
    };
    let len = bytes_len(1, kv.key.len())
        + int_len(2, kv.create_revision)
        + int_len(3, kv.mod_revision)
        + int_len(4, kv.version)
        + bytes_len(5, kv.value.len())
        + int_len(6, kv.lease);
    out.reserve(key_len(2) + encoded_len_varint(len as u64) + len);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    let put_bytes = |tag: u32, bytes: &[u8], out: &mut Vec<u8>| {
        if !bytes.is_empty() {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
    };
    let put_int = |tag: u32, value: i64, out: &mut Vec<u8>| {
        if value != 0 {
            encode_key(tag, WireType::Varint, out);
            encode_varint(value as u64, out);
        }
    };
    put_bytes(1, kv.key, out);
    put_int(2, kv.create_revision, out);
    put_int(3, kv.mod_revision, out);
    put_int(4, kv.version, out);
    put_bytes(5, kv.value, out);
    put_int(6, kv.lease, out);
}

/// A `KeyValue` whose key and value are borrowed.
struct KeyValueRef<'a> {
    key: &'a [u8],
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    value: &'a [u8],
    lease: i64,
}

/// `build_response`, encoded: see [`EncodedRange`].
pub(crate) fn encode_response<T>(
    table: &T,
    request: &RangeRequest,
    candidates: Candidates,
    header_revision: i64,
) -> Result<EncodedRange, MvccError>
where
    T: ReadableTable<u128, &'static [u8]>,
{
    let Selection {
        count,
        more,
        mut selected,
        keys,
        values,
    } = select(table, request, candidates)?;
    // The candidate list is freed as the chunks grow: it is walked from the back of its
    // reversed self and shrunk each time half of it is done.
    selected.reverse();
    let mut values = values.map(|mut values| {
        values.reverse();
        values
    });
    let mut kvs = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let remaining_estimate = |kv_len: usize, left: usize| (kv_len + 64).saturating_mul(left);
    while let Some(candidate) = selected.pop() {
        let entry = &candidate.entry;
        let key = key_of(&keys, &candidate);
        let left = selected.len() + 1;
        let mut emit = |value: &[u8]| {
            if !current.is_empty() && current.len() + key.len() + value.len() + 64 > KVS_CHUNK_BYTES
            {
                kvs.push(std::mem::take(&mut current));
            }
            if current.capacity() == 0 {
                current.reserve(
                    KVS_CHUNK_BYTES.min(remaining_estimate(key.len() + value.len(), left)),
                );
            }
            encode_key_value(
                &KeyValueRef {
                    key,
                    create_revision: entry.create_revision,
                    mod_revision: entry.revision.main,
                    version: entry.version,
                    value,
                    lease: entry.lease,
                },
                &mut current,
            );
        };
        if request.keys_only {
            emit(&[]);
        } else if let Some(value) = values.as_mut().and_then(Vec::pop) {
            emit(&value);
        } else {
            read_value(table, key, entry.revision, emit)?;
        }
        if selected.capacity() >= SHRINK_FROM && selected.len() <= selected.capacity() / 2 {
            selected.shrink_to_fit();
        }
    }
    if !current.is_empty() {
        kvs.push(current);
    }
    Ok(EncodedRange {
        header_revision,
        count,
        more,
        kvs,
    })
}

fn directed(ordering: std::cmp::Ordering, descending: bool) -> std::cmp::Ordering {
    if descending {
        ordering.reverse()
    } else {
        ordering
    }
}

/// A stable sort, so keys that tie on the target stay in ascending key order in both
/// directions. Sorting by value is `select`'s, which loads the values first.
fn sort_candidates(
    keys: &[u8],
    candidates: &mut [Candidate],
    target: SortTarget,
    descending: bool,
) {
    match target {
        SortTarget::Key => {
            candidates.sort_by(|a, b| directed(key_of(keys, a).cmp(key_of(keys, b)), descending))
        }
        SortTarget::Version => {
            candidates.sort_by(|a, b| directed(a.entry.version.cmp(&b.entry.version), descending))
        }
        SortTarget::Create => candidates.sort_by(|a, b| {
            directed(
                a.entry.create_revision.cmp(&b.entry.create_revision),
                descending,
            )
        }),
        SortTarget::Mod => candidates.sort_by(|a, b| {
            directed(
                a.entry.revision.main.cmp(&b.entry.revision.main),
                descending,
            )
        }),
        SortTarget::Value => unreachable!("select sorts by value itself"),
    }
}
