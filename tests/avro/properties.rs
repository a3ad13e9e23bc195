//! Property tests: arbitrary bytes never panic a decoder.

use super::*;
use crate::registry::TestRegistry;

fn prefixes() -> Vec<Vec<u8>> {
    let mut p = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0, 0, 0, 1],
        vec![0xC3, 0x01],
        vec![0xC3],
    ];
    for s in avro::own_schemas() {
        p.push(single_object_header(s.fingerprint).to_vec());
    }
    p
}

pub(crate) const TOPICS: [InputTopic; 4] = [
    InputTopic::Clicks,
    InputTopic::Conversions,
    InputTopic::PromoCodes,
    InputTopic::Config,
];

static REG: std::sync::OnceLock<(TestRegistry, Arc<AvroInput>)> = std::sync::OnceLock::new();

fn registry_input() -> &'static Arc<AvroInput> {
    &REG.get_or_init(|| {
        let reg = TestRegistry::start();
        reg.add(own_schema("conversion").unwrap().text);
        let a = Arc::new(AvroInput::new(Some(&reg.url()), &[]).unwrap());
        (reg, a)
    })
    .1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decode_to_json_never_panics(prefix in 0usize..15, body in proptest::collection::vec(any::<u8>(), 0..256), t in 0usize..4) {
        let prefixes = prefixes();
        let mut bytes = prefixes[prefix % prefixes.len()].clone();
        bytes.extend(&body);
        let avro = registry_input();
        match avro.decode_to_json(TOPICS[t], &bytes) {
            Ok(None) => prop_assert!(!bytes.starts_with(&[0xC3, 0x01]) && bytes.first() != Some(&0)),
            Ok(Some(j)) => { serde_json::from_slice::<Json>(&j).map_err(|e| TestCaseError::fail(e.to_string()))?; }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    #[test]
    fn datum_to_json_never_panics(stem in 0usize..10, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let s = avro::SCHEMA_FILES[stem].0;
        if let Ok(j) = datum_to_json(s, &body) {
            serde_json::from_slice::<Json>(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }

    #[test]
    fn processor_never_panics_on_arbitrary_values(prefix in 0usize..15, body in proptest::collection::vec(any::<u8>(), 0..200), t in 0usize..4, key in proptest::option::of("[a-z/0-9]{0,12}")) {
        let prefixes = prefixes();
        let mut bytes = prefixes[prefix % prefixes.len()].clone();
        bytes.extend(&body);
        let mut p = processor().with_avro(registry_input().clone());
        let mut out = Vec::new();
        p.process(&rec(TOPICS[t], key.as_deref().map(str::as_bytes), Some(&bytes), 0), 0, &mut out).unwrap();
        for o in &out {
            if let OutRecord::Dlq(d) = o {
                prop_assert!(!d.error.is_empty());
                prop_assert_eq!(d.value.as_deref(), Some(&bytes[..]));
            }
        }
    }
}

/// Mutations of valid records (bit flips, byte changes, cuts, splices): many decode deep into
/// the plan before failing, which random bytes rarely do.
#[test]
fn mutated_records_never_panic() {
    let avro = registry_input();
    let mut rng = StdRng::seed_from_u64(7);
    let valid: Vec<(InputTopic, Vec<u8>)> = SAMPLES
        .iter()
        .map(|s| (s.topic, single_object(s.stem, s.json)))
        .collect();
    let (mut ok, mut err) = (0u64, 0u64);
    // ATTRIB_FUZZ_ITERATIONS=N runs longer.
    let n_iter: usize = std::env::var("ATTRIB_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    for _ in 0..n_iter {
        let (topic, base) = &valid[rng.gen_range(0..valid.len())];
        let mut b = base.clone();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..4) {
                0 => {
                    let i = rng.gen_range(10..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
                1 => {
                    let i = rng.gen_range(10..b.len());
                    b[i] = rng.r#gen();
                }
                2 => {
                    let n = rng.gen_range(10..=b.len());
                    b.truncate(n.max(10));
                }
                _ => {
                    let i = rng.gen_range(10..=b.len());
                    let junk: Vec<u8> = (0..rng.gen_range(1..8)).map(|_| rng.r#gen()).collect();
                    b.splice(i..i, junk);
                }
            }
            if b.len() <= 10 {
                break;
            }
        }
        match avro.decode_to_json(*topic, &b) {
            Ok(Some(j)) => {
                parse(&j);
                ok += 1;
            }
            Ok(None) => unreachable!(),
            Err(e) => {
                assert!(!e.0.is_empty());
                err += 1;
            }
        }
    }
    eprintln!("mutated records: {n_iter} ({ok} decoded, {err} refused)");
    assert!(ok > 0 && err > 0);
}
