//! Kubernetes resource quantities, as rkt took them: `--cpu=750m` (millicores)
//! and `--memory=128M`, `--memory=1Gi` (bytes). Decimal suffixes are powers of
//! 1000 (`k M G T P E`), binary ones powers of 1024 (`Ki Mi Gi Ti Pi Ei`), and
//! `m` is a thousandth.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid quantity {text:?}: {reason}")]
pub struct InvalidQuantity {
    text: String,
    reason: &'static str,
}

/// A quantity as an exact fraction `numerator / denominator`.
struct Quantity {
    numerator: u128,
    denominator: u128,
}

fn parse(text: &str) -> Result<Quantity, InvalidQuantity> {
    let invalid = |reason| InvalidQuantity {
        text: text.to_string(),
        reason,
    };
    let number_len = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_len);
    let (integer_part, fraction_part) = number.split_once('.').unwrap_or((number, ""));
    if integer_part.is_empty() && fraction_part.is_empty() {
        return Err(invalid("expected a number, such as 750m, 0.5, 128M or 1Gi"));
    }
    if fraction_part.contains('.') || fraction_part.len() > 9 || integer_part.len() > 18 {
        return Err(invalid("malformed number"));
    }
    let digits = format!("{integer_part}{fraction_part}");
    let mut numerator: u128 = digits.parse().map_err(|_| invalid("malformed number"))?;
    let mut denominator: u128 = 10u128.pow(fraction_part.len() as u32);
    let (multiplier, divisor): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1000u128.pow(2), 1),
        "G" => (1000u128.pow(3), 1),
        "T" => (1000u128.pow(4), 1),
        "P" => (1000u128.pow(5), 1),
        "E" => (1000u128.pow(6), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        _ => {
            return Err(invalid(
                "unknown suffix: use m, k, M, G, T, Ki, Mi, Gi or Ti",
            ));
        }
    };
    numerator *= multiplier;
    denominator *= divisor;
    Ok(Quantity {
        numerator,
        denominator,
    })
}

/// Parses a CPU quantity into millicores (rounded up; at least 1).
pub fn parse_cpu_millis(text: &str) -> Result<u64, InvalidQuantity> {
    let quantity = parse(text)?;
    let millis = (quantity.numerator * 1000).div_ceil(quantity.denominator);
    if millis == 0 {
        return Err(InvalidQuantity {
            text: text.to_string(),
            reason: "must be more than zero",
        });
    }
    u64::try_from(millis).map_err(|_| InvalidQuantity {
        text: text.to_string(),
        reason: "too large",
    })
}

/// Parses a memory quantity into bytes (rounded up).
pub fn parse_memory_bytes(text: &str) -> Result<u64, InvalidQuantity> {
    let quantity = parse(text)?;
    let bytes = quantity.numerator.div_ceil(quantity.denominator);
    // Below a few pages no process can even start; say so instead of
    // letting every container die at exec.
    if bytes < 1 << 20 {
        return Err(InvalidQuantity {
            text: text.to_string(),
            reason: "must be at least 1Mi",
        });
    }
    u64::try_from(bytes).map_err(|_| InvalidQuantity {
        text: text.to_string(),
        reason: "too large",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu_millis("750m"), Ok(750));
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_cpu_millis("0.25"), Ok(250));
        assert_eq!(parse_cpu_millis(".5"), Ok(500));
        assert!(parse_cpu_millis("0").is_err());
        assert!(parse_cpu_millis("lots").is_err());
        assert!(parse_cpu_millis("1.2.3").is_err());
        assert!(parse_cpu_millis("-1").is_err());
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory_bytes("128M"), Ok(128_000_000));
        assert_eq!(parse_memory_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("2097152"), Ok(2 << 20));
        let error = parse_memory_bytes("lots").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid quantity \"lots\": expected a number, such as 750m, 0.5, 128M or 1Gi"
        );
        assert!(parse_memory_bytes("12X").is_err());
        assert!(parse_memory_bytes("1k").is_err());
    }
}
