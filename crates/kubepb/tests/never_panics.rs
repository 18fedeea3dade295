//! Bad input is an ordinary case: random bytes, every truncation and
//! single-byte corruption of the real kubectl bodies must give `Ok` or a
//! `DecodeError`, never a panic. The random part is seeded, so a failure
//! prints the seed and case that reproduce it.

use std::path::Path;

fn fixture_bodies() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut bodies: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "pb").then(|| {
                (
                    path.display().to_string(),
                    std::fs::read(&path).expect("fixture reads"),
                )
            })
        })
        .collect();
    bodies.sort();
    bodies
}

/// xorshift64*: enough randomness for inputs, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

fn must_not_panic(case: &str, body: &[u8]) {
    let outcome = std::panic::catch_unwind(|| kubepb::decode(body).map(|_| ()));
    assert!(outcome.is_ok(), "decode panicked on {case}: {body:?}");
}

#[test]
fn truncations_and_corruptions_of_real_bodies() {
    for (name, body) in fixture_bodies() {
        for len in 0..body.len() {
            must_not_panic(&format!("{name} cut to {len} bytes"), &body[..len]);
        }
        for idx in 4..body.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff, body[idx] ^ 0x08] {
                let mut corrupt = body.clone();
                corrupt[idx] = value;
                must_not_panic(
                    &format!("{name} with byte {idx} set to {value:#04x}"),
                    &corrupt,
                );
            }
        }
    }
}

#[test]
fn random_bytes_after_the_prefix() {
    let seed = 0x5eed_cafe_u64;
    let mut rng = Rng(seed);
    let bodies = fixture_bodies();
    for case in 0..20_000 {
        let mut body = b"k8s\0".to_vec();
        if case % 2 == 0 {
            let len = rng.below(64);
            body.extend((0..len).map(|_| rng.next() as u8));
        } else {
            // A real body with a few random bytes spliced in keeps most of the
            // envelope valid, which reaches the object decoder and JSON walk.
            let (_, real) = &bodies[rng.below(bodies.len())];
            body = real.clone();
            for _ in 0..1 + rng.below(4) {
                let idx = 4 + rng.below(body.len() - 4);
                body[idx] = rng.next() as u8;
            }
        }
        must_not_panic(&format!("seed {seed:#x} case {case}"), &body);
    }
}
