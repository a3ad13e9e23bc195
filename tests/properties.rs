//! Property tests of the engine over generated streams (proptest picks the seeds and sizes).

use attrib::model::records::Limits;
use attrib::rules::engine::EngineSettings;
use attrib::stage::attribution::Processor;
use attrib::state::store::MemoryStore;
use attrib::tools::replay::replay_into;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn stream(seed: u64, clicks: usize) -> Vec<String> {
    let w = attrib::tools::workload::generate(seed, clicks, (clicks / 6).max(5));
    w.all().map(|r| r.replay_line()).collect()
}

fn run(p: &mut Processor, lines: &[String]) -> String {
    let input = lines.join("\n") + "\n";
    let mut out = Vec::new();
    replay_into(p, input.as_bytes(), &mut out, || 0).unwrap();
    String::from_utf8(out).unwrap()
}

fn processor() -> Processor {
    Processor::new(
        Box::new(MemoryStore::default()),
        EngineSettings::default(),
        Limits::default(),
    )
}

fn dec(v: &serde_json::Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Weights sum to exactly 1 and credit payouts to the action's payout; only partners with a
    /// contract active at the conversion's time are credited; a creator program never gives or
    /// receives cross-program credit.
    #[test]
    fn actions_are_consistent(seed in 0u64..1_000_000, clicks in 200usize..2_000) {
        let lines = stream(seed, clicks);
        let out = run(&mut processor(), &lines);
        let w = attrib::tools::workload::generate(seed, clicks, (clicks / 6).max(5));
        let mut contracts = std::collections::HashSet::new();
        for r in &w.tables {
            if let Some(k) = r.key.as_deref().and_then(|k| k.strip_prefix("contract/")) {
                contracts.insert(k.to_string());
            }
        }
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["topic"] != "actions" { continue; }
            let a = &v["value"];
            let credits = a["credits"].as_array().unwrap();
            prop_assert!(!credits.is_empty());
            let weights: Decimal = credits.iter().map(|c| dec(&c["weight"])).sum();
            prop_assert_eq!(weights, Decimal::ONE);
            let payouts: Decimal = credits.iter().map(|c| dec(&c["payout"])).sum();
            prop_assert_eq!(payouts, dec(&a["payout"]));
            let program = a["program_id"].as_str().unwrap();
            for c in credits {
                let partner = c["partner_id"].as_str().unwrap();
                prop_assert!(contracts.contains(&format!("{program}/{partner}")), "{program}/{partner} has no contract");
                if program == "creators" {
                    prop_assert!(c["referral_type"] != "cross_program_click");
                }
            }
            for t in a["journey"]["touchpoints"].as_array().unwrap() {
                if t["program_id"] == "creators" { prop_assert_eq!(program, "creators"); }
            }
        }
    }

    /// Splitting a stream at any record and resuming from the saved state (journeys flushed to
    /// the store, the processor's cache dropped) gives the same output as running it whole; and
    /// the same stream twice gives the same bytes.
    #[test]
    fn split_and_resume_equals_whole(seed in 0u64..1_000_000, clicks in 100usize..1_000, cut in 0.0f64..1.0) {
        let lines = stream(seed, clicks);
        let whole = run(&mut processor(), &lines);
        prop_assert_eq!(&whole, &run(&mut processor(), &lines));
        let k = ((lines.len() as f64) * cut) as usize;
        let mut p = processor();
        let mut split = run(&mut p, &lines[..k]);
        p.flush().unwrap();
        // The line numbers of the second part start at 0 again: compare without DLQ offsets.
        split.push_str(&run(&mut p, &lines[k..]));
        let strip = |s: &str| s.lines().map(|l| match l.find("\"attrib.source.offset\"") { Some(i) => l[..i].to_string(), None => l.to_string() }).collect::<Vec<_>>();
        prop_assert_eq!(strip(&whole), strip(&split));
    }
}
