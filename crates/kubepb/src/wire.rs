//! Finds where a message that failed to decode goes wrong, to name the field
//! in the error: prost reports a length that overruns its buffer at the outer
//! field without saying which one ("buffer underflow").

use prost_reflect::{Kind, MessageDescriptor};

/// The first fault in `bytes` read as `descriptor`, as "spec.containers[0]: …",
/// or `None` when the scan finds none.
pub(crate) fn first_fault(descriptor: &MessageDescriptor, bytes: &[u8]) -> Option<String> {
    scan(descriptor, bytes, 0).err()
}

/// Deeper than prost's own recursion limit is a fault anyway.
const MAX_DEPTH: u32 = 100;

fn scan(descriptor: &MessageDescriptor, mut bytes: &[u8], depth: u32) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("nested too deep".to_owned());
    }
    // Repeated fields count their elements so that the path can name one.
    let mut counts: Vec<(u32, usize)> = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes).ok_or("truncated field key")?;
        let number =
            u32::try_from(key >> 3).map_err(|_| format!("invalid field number {}", key >> 3))?;
        let wire_type = key & 7;
        let field = descriptor.get_field(number);
        let name = match &field {
            Some(field) if field.is_list() => {
                let idx = match counts.iter_mut().find(|(seen, _)| *seen == number) {
                    Some((_, count)) => {
                        *count += 1;
                        *count - 1
                    }
                    None => {
                        counts.push((number, 1));
                        0
                    }
                };
                format!("{}[{idx}]", field.name())
            }
            Some(field) => field.name().to_owned(),
            None => format!("field {number}"),
        };
        let at = |problem: String| format!("{name}: {problem}");
        match wire_type {
            0 => {
                varint(&mut bytes).ok_or_else(|| at("truncated varint".to_owned()))?;
            }
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                bytes = bytes
                    .get(width..)
                    .ok_or_else(|| at(format!("truncated {}-byte value", width)))?;
            }
            2 => {
                let length = varint(&mut bytes).ok_or_else(|| at("truncated length".to_owned()))?;
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                if length > bytes.len() {
                    return Err(at(format!(
                        "length {length} overruns the {} bytes left",
                        bytes.len()
                    )));
                }
                let (inner, rest) = bytes.split_at(length);
                bytes = rest;
                if let Some(Kind::Message(inner_descriptor)) =
                    field.as_ref().map(|field| field.kind())
                {
                    if inner_descriptor.is_map_entry() {
                        continue;
                    }
                    scan(&inner_descriptor, inner, depth + 1)
                        .map_err(|fault| format!("{name}.{fault}"))?;
                } else if let Some(Kind::String) = field.as_ref().map(|field| field.kind()) {
                    std::str::from_utf8(inner)
                        .map_err(|_| at("string is not valid UTF-8".to_owned()))?;
                }
            }
            other => return Err(at(format!("unsupported wire type {other}"))),
        }
    }
    Ok(())
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (idx, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * idx);
        if byte & 0x80 == 0 {
            *bytes = &bytes[idx + 1..];
            return Some(value);
        }
    }
    None
}
