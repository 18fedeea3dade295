//! How an advisory is stored in the vulnerability database: a compact
//! binary record (length-prefixed strings, one byte per enum), read back
//! without a parser. A match reads every advisory of every package in an
//! image, and decoding JSON was most of that time (BENCHMARKS.md, issue
//! 21's matching row). Records written as JSON by earlier versions start
//! with `{` and are still read.

use crate::severity::{Cvss, Severity};
use crate::vulndb::{Advisory, RangeEvent};

/// The first byte of a binary record (JSON records start with `{`).
const FORMAT_1: u8 = 1;

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, texts: &[String]) {
    out.extend_from_slice(&(texts.len() as u32).to_le_bytes());
    for text in texts {
        put_str(out, text);
    }
}

fn severity_byte(severity: Severity) -> u8 {
    match severity {
        Severity::Unknown => 0,
        Severity::Negligible => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn severity_of(byte: u8) -> Option<Severity> {
    Some(match byte {
        0 => Severity::Unknown,
        1 => Severity::Negligible,
        2 => Severity::Low,
        3 => Severity::Medium,
        4 => Severity::High,
        5 => Severity::Critical,
        _ => return None,
    })
}

/// The stored form of `advisory`.
pub fn encode(advisory: &Advisory) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_1);
    put_str(&mut out, &advisory.id);
    put_strs(&mut out, &advisory.aliases);
    put_str(&mut out, &advisory.release);
    put_str(&mut out, &advisory.package);
    out.extend_from_slice(&(advisory.events.len() as u32).to_le_bytes());
    for event in &advisory.events {
        let (tag, version) = match event {
            RangeEvent::Introduced(version) => (0u8, version),
            RangeEvent::Fixed(version) => (1, version),
            RangeEvent::LastAffected(version) => (2, version),
        };
        out.push(tag);
        put_str(&mut out, version);
    }
    put_strs(&mut out, &advisory.versions);
    out.push(u8::from(advisory.not_affected));
    out.push(severity_byte(advisory.severity));
    match &advisory.cvss {
        None => out.push(0),
        Some(cvss) => {
            out.push(1);
            put_str(&mut out, &cvss.vector);
            out.extend_from_slice(&cvss.base_score.to_bits().to_le_bytes());
        }
    }
    put_str(&mut out, &advisory.source);
    out
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        if length > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.take(4)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Option<String> {
        let length = self.u32()? as usize;
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }

    fn strings(&mut self) -> Option<Vec<String>> {
        let count = self.u32()? as usize;
        // Each string takes at least its 4-byte length: a count larger than
        // what is left is a corrupt record, not an allocation to attempt.
        if count > self.bytes.len() / 4 {
            return None;
        }
        (0..count).map(|_| self.string()).collect()
    }
}

/// An advisory from its stored form; `None` when the record is damaged.
pub fn decode(bytes: &[u8]) -> Option<Advisory> {
    match bytes.first()? {
        b'{' => return serde_json::from_slice(bytes).ok(),
        &FORMAT_1 => {}
        _ => return None,
    }
    let mut cursor = Cursor { bytes: &bytes[1..] };
    let id = cursor.string()?;
    let aliases = cursor.strings()?;
    let release = cursor.string()?;
    let package = cursor.string()?;
    let n_events = cursor.u32()? as usize;
    if n_events > cursor.bytes.len() / 5 {
        return None;
    }
    let mut events = Vec::with_capacity(n_events);
    for _ in 0..n_events {
        let tag = cursor.byte()?;
        let version = cursor.string()?;
        events.push(match tag {
            0 => RangeEvent::Introduced(version),
            1 => RangeEvent::Fixed(version),
            2 => RangeEvent::LastAffected(version),
            _ => return None,
        });
    }
    let versions = cursor.strings()?;
    let not_affected = cursor.byte()? != 0;
    let severity = severity_of(cursor.byte()?)?;
    let cvss = match cursor.byte()? {
        0 => None,
        1 => {
            let vector = cursor.string()?;
            let base_score = f32::from_bits(cursor.u32()?);
            Some(Cvss { vector, base_score })
        }
        _ => return None,
    };
    let source = cursor.string()?;
    if !cursor.bytes.is_empty() {
        return None;
    }
    Some(Advisory {
        id,
        aliases,
        release,
        package,
        events,
        versions,
        not_affected,
        severity,
        cvss,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let advisory = Advisory {
            id: "CVE-2024-0001".into(),
            aliases: vec!["DSA-1".into(), "GHSA-x".into()],
            release: "debian:12".into(),
            package: "openssl".into(),
            events: vec![
                RangeEvent::Introduced("0".into()),
                RangeEvent::Fixed("3.0.1-1".into()),
                RangeEvent::LastAffected("2.9".into()),
            ],
            versions: vec!["1.0".into()],
            not_affected: false,
            severity: Severity::High,
            cvss: Some(
                Cvss::from_v3_vector("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap(),
            ),
            source: "osv".into(),
        };
        let bytes = encode(&advisory);
        assert_eq!(decode(&bytes), Some(advisory.clone()));
        // Older databases hold JSON.
        assert_eq!(
            decode(&serde_json::to_vec(&advisory).unwrap()),
            Some(advisory)
        );
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge_count = bytes.clone();
        huge_count[1 + 4 + 13..1 + 4 + 13 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge_count), None);
    }
}
