//! Answers repeated questions from their earlier encoded answers: a plain
//! query (one question, class IN, at most an OPT record without options)
//! is read straight from the packet, and its answer, encoded once from the
//! zones, is copied with the new id, flags and question letters patched in.
//! Each UDP worker keeps its own cache, emptied when the zones change, so
//! the hot path takes no lock and decodes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::resolve::{EDNS_PAYLOAD, Zones};

/// The most answers one worker keeps; past it new ones are not kept (a
/// flood of random names cannot grow it).
const MAX_ENTRIES: usize = 100_000;

/// A query read by [`read_query`]: the key its answer is cached under
/// (written into the caller's buffer) and where its question name ends.
pub struct PlainQuery {
    question_name_end: usize,
}

/// Reads `packet` as a plain query, filling `key` with what its answer
/// depends on: the question's type and lower-cased name, EDNS or not,
/// and the most bytes the answer may take. `None` for anything else (it
/// then takes the full path).
pub fn read_query(packet: &[u8], over_udp: bool, key: &mut Vec<u8>) -> Option<PlainQuery> {
    let header = packet.get(..12)?;
    // A query (QR 0), opcode QUERY.
    if header[2] & 0xf8 != 0 {
        return None;
    }
    let count = |index: usize| u16::from_be_bytes([header[index], header[index + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    key.clear();
    key.extend_from_slice(&[0; 6]);
    let mut offset = 12;
    loop {
        let length = usize::from(*packet.get(offset)?);
        if length & 0xc0 != 0 {
            return None;
        }
        let label = packet.get(offset..offset + 1 + length)?;
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        offset += 1 + length;
        if offset - 12 > 255 {
            return None;
        }
        if length == 0 {
            break;
        }
    }
    let question_name_end = offset;
    let fixed = packet.get(offset..offset + 4)?;
    // Class IN only.
    if fixed[2..4] != [0, 1] {
        return None;
    }
    key[4..6].copy_from_slice(&fixed[..2]);
    offset += 4;
    let mut edns_payload = None;
    if count(10) == 1 {
        // OPT: root name, type 41, class = payload size, version 0, no
        // options.
        let opt = packet.get(offset..offset + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 || opt[9..11] != [0, 0] {
            return None;
        }
        edns_payload = Some(u16::from_be_bytes([opt[3], opt[4]]));
        offset += 11;
    }
    if offset != packet.len() {
        return None;
    }
    let limit = match (over_udp, edns_payload) {
        (false, _) => u16::MAX,
        (true, None) => 512,
        (true, Some(payload)) => payload.clamp(512, EDNS_PAYLOAD),
    };
    key[0] = u8::from(edns_payload.is_some());
    key[1] = u8::from(over_udp);
    key[2..4].copy_from_slice(&limit.to_be_bytes());
    Some(PlainQuery { question_name_end })
}

/// One worker's answers, for one version of the zones.
#[derive(Default)]
pub struct AnswerCache {
    zones: Option<Arc<Zones>>,
    answers: HashMap<Vec<u8>, Vec<u8>>,
}

impl AnswerCache {
    /// Forgets every answer if `zones` are not the ones they came from.
    pub fn follow(&mut self, zones: &Arc<Zones>) {
        let same = self
            .zones
            .as_ref()
            .is_some_and(|cached| Arc::ptr_eq(cached, zones));
        if !same {
            self.answers.clear();
            self.zones = Some(Arc::clone(zones));
        }
    }

    /// The cached answer to `packet`, patched for it, into `reply`.
    pub fn answer(
        &self,
        key: &[u8],
        query: &PlainQuery,
        packet: &[u8],
        reply: &mut Vec<u8>,
    ) -> bool {
        let Some(cached) = self.answers.get(key) else {
            return false;
        };
        reply.clear();
        reply.extend_from_slice(cached);
        patch(reply, packet, query.question_name_end);
        true
    }

    /// Keeps `answer` (the full path's, to this very `packet`) for `key`.
    pub fn keep(&mut self, key: &[u8], answer: &[u8], query: &PlainQuery) {
        if self.answers.len() >= MAX_ENTRIES
            || answer.len() < query.question_name_end
            // The answer must open with the question as asked.
            || !answer[12..query.question_name_end]
                .eq_ignore_ascii_case(&key[6..6 + query.question_name_end - 12])
        {
            return;
        }
        self.answers.insert(key.to_vec(), answer.to_vec());
    }
}

/// Puts `packet`'s id, RD and CD bits and question letters into `reply`.
fn patch(reply: &mut [u8], packet: &[u8], question_name_end: usize) {
    reply[..2].copy_from_slice(&packet[..2]);
    reply[2] = (reply[2] & !0x01) | (packet[2] & 0x01);
    reply[3] = (reply[3] & !0x10) | (packet[3] & 0x10);
    reply[12..question_name_end].copy_from_slice(&packet[12..question_name_end]);
}
