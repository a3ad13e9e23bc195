//! A synthetic but realistic workload: one account with several programs (one a creator
//! program), cross-program tracking, partners with contracts and payout groups, promo codes,
//! clicks over many devices, and conversions with items, duplicates, modifications, reversals,
//! test conversions and a few malformed records. Used by `demo`, the tests and the benchmarks.

use crate::model::records::InputTopic;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write;

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRecord {
    pub topic: InputTopic,
    pub key: Option<String>,
    pub value: Option<String>,
}

impl GenRecord {
    fn new(topic: InputTopic, key: impl Into<String>, value: String) -> GenRecord {
        GenRecord {
            topic,
            key: Some(key.into()),
            value: Some(value),
        }
    }

    /// The `replay` line for this record.
    pub fn replay_line(&self) -> String {
        let key = match &self.key {
            Some(k) => serde_json::to_string(k).expect("string"),
            None => "null".into(),
        };
        let value = match &self.value {
            Some(v) if serde_json::from_str::<serde_json::Value>(v).is_ok() => v.clone(),
            Some(v) => serde_json::to_string(v).expect("string"),
            None => "null".into(),
        };
        format!(
            "{{\"topic\":\"{}\",\"key\":{key},\"value\":{value}}}",
            self.topic.replay_name()
        )
    }
}

/// The workload, in phases (tables, then clicks, then identify records, then conversions,
/// then changes).
#[derive(Debug, Default, Clone)]
pub struct Workload {
    pub tables: Vec<GenRecord>,
    pub clicks: Vec<GenRecord>,
    /// Identify records (read with identity stitching on); only [`cross_device`] makes them.
    pub identities: Vec<GenRecord>,
    pub conversions: Vec<GenRecord>,
    pub changes: Vec<GenRecord>,
}

impl Workload {
    pub fn all(&self) -> impl Iterator<Item = &GenRecord> {
        self.tables
            .iter()
            .chain(&self.clicks)
            .chain(&self.identities)
            .chain(&self.conversions)
            .chain(&self.changes)
    }
}

/// Keeps the `customer_id` of device `d-N`'s records (from [`generate`]) only for N a multiple
/// of `n`: one device in `n` is identified (its first conversion links it, with identity
/// stitching on), the others stay anonymous. For comparing stitching on and off.
pub fn identify_one_in(n: u64, records: &mut [GenRecord]) {
    for r in records {
        let Some(d) = r.key.as_deref().and_then(|k| k.strip_prefix("d-")) else {
            continue;
        };
        if d.parse::<u64>().is_ok_and(|d| d % n == 0) {
            continue;
        }
        if let Some(v) = &mut r.value {
            *v = v.replace(
                &format!(r#""customer_id":"cu-{d}""#),
                r#""customer_id":null"#,
            );
        }
    }
}

/// Customers who click on one device and buy on another (docs/design.md §6), for the demo
/// with identity stitching on, to add to [`generate`]'s workload (its programs and contracts):
/// each customer clicks anonymously on a laptop, logs in there (an identify record), and buys
/// on a phone with the customer id on the conversion; every third one also clicks on a tablet
/// while logged in.
pub fn cross_device(seed: u64, customers: usize) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = Workload::default();
    // Partners with a contract in `shoes` active for the first 20 days (see `generate`).
    let partners = [0, 1, 2, 3, 6].map(|i| PARTNERS[i]);
    for c in 0..customers {
        let (laptop, phone, tablet, cust) = (
            format!("xl-{c}"),
            format!("xp-{c}"),
            format!("xt-{c}"),
            format!("xc-{c}"),
        );
        let t0 = START_MS + rng.gen_range(0..15 * 86_400_000i64);
        for k in 0..rng.gen_range(1..4) {
            let q = partners[rng.gen_range(0..partners.len())];
            w.clicks.push(GenRecord::new(InputTopic::Clicks, &laptop, format!(
                r#"{{"type":"click","click_id":"xk-{c}-{k}","program_id":"shoes","partner_id":"{q}","occurred_at":"{}","device_id":"{laptop}","source":"tracking_link"}}"#,
                ts(t0 + k * 3_600_000)
            )));
        }
        if c % 3 == 0 {
            let q = partners[rng.gen_range(0..partners.len())];
            w.clicks.push(GenRecord::new(InputTopic::Clicks, &tablet, format!(
                r#"{{"type":"click","click_id":"xk-{c}-t","program_id":"shoes","partner_id":"{q}","occurred_at":"{}","device_id":"{tablet}","customer_id":"{cust}","source":"app"}}"#,
                ts(t0 + 5 * 3_600_000)
            )));
        }
        w.identities.push(GenRecord::new(InputTopic::Identities, &laptop, format!(
            r#"{{"type":"identify","device_id":"{laptop}","customer_id":"{cust}","occurred_at":"{}"}}"#,
            ts(t0 + 6 * 3_600_000)
        )));
        w.conversions.push(GenRecord::new(InputTopic::Conversions, &phone, format!(
            r#"{{"type":"conversion","program_id":"shoes","event_type":"sale","order_id":"xo-{c}","occurred_at":"{}","device_id":"{phone}","customer_id":"{cust}","currency":"USD","items":[{{"sku":"SKU-{}","category":"jackets","quantity":1,"unit_price":"{}.00"}}]}}"#,
            ts(t0 + rng.gen_range(1..4) * 86_400_000),
            c % 7,
            40 + c % 60
        )));
    }
    w
}

pub const PROGRAMS: [(&str, &str, &str); 4] = [
    ("shoes", "standard", "last_click"),
    ("apparel", "standard", "linear"),
    ("outdoor", "standard", "position_based"),
    ("creators", "creator", "time_decay"),
];
pub const PARTNERS: [&str; 8] = [
    "coupons-r-us",
    "techblog",
    "dealfinder",
    "styleguru",
    "cashback-co",
    "newsdaily",
    "influencer-amy",
    "podcast-max",
];
const CATEGORIES: [&str; 4] = ["shoes", "hats", "jackets", "socks"];
/// 2026-10-01T00:00:00Z
const START_MS: i64 = 1_790_812_800_000;

fn ts(ms: i64) -> String {
    crate::model::time::format_rfc3339(ms)
}

/// Generates the workload deterministically from `seed`.
pub fn generate(seed: u64, clicks: usize, devices: usize) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = Workload::default();
    for (p, kind, policy) in PROGRAMS {
        w.tables.push(GenRecord::new(
            InputTopic::Config,
            format!("program/{p}"),
            format!(
                r#"{{"type":"program","program_id":"{p}","account_id":"acme","kind":"{kind}","currency":"USD","referral_window_days":30,"credit_policy":"{policy}","time_decay_half_life_days":7,"locking_days":45,"min_click_to_conversion_secs":0}}"#
            ),
        ));
    }
    w.tables.push(GenRecord::new(
        InputTopic::Config,
        "cross_program/acme",
        r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"specific","programs":["shoes","apparel"]}"#.into(),
    ));
    for (pi, (p, _, _)) in PROGRAMS.iter().enumerate() {
        for (qi, q) in PARTNERS.iter().enumerate() {
            if (pi + qi) % 5 == 4 {
                continue; // not every partner works with every program
            }
            let group = ["preferred", "standard", "non_preferred"][(pi * 3 + qi) % 3];
            let window = if qi % 4 == 0 { "14" } else { "null" };
            let active_to = if qi == 7 {
                format!("\"{}\"", ts(START_MS + 20 * 86_400_000))
            } else {
                "null".into()
            };
            let events = if qi == 5 { r#"["lead"]"# } else { "null" };
            w.tables.push(GenRecord::new(
                InputTopic::Config,
                format!("contract/{p}/{q}"),
                format!(
                    r#"{{"type":"contract","program_id":"{p}","partner_id":"{q}","active_from":"2026-01-01T00:00:00Z","active_to":{active_to},"credit_group":"{group}","referral_window_days":{window},"event_types":{events},"payout":{{"default":{{"percent":"{}"}},"groups":[{{"when":{{"customer_status":"new","categories":["shoes"]}},"rate":{{"fixed":"5.00"}}}},{{"when":{{"categories":["jackets"]}},"rate":{{"percent":"12.5"}}}}]}}}}"#,
                    5 + qi
                ),
            ));
        }
    }
    let codes = [
        ("SAVE10", "coupons-r-us", "always"),
        ("AMY15", "influencer-amy", "if_involved"),
        ("DEAL5", "dealfinder", "if_winner"),
        ("OLD20", "cashback-co", "always"),
    ];
    for (code, partner, policy) in codes {
        let valid_to = if code == "OLD20" {
            format!("\"{}\"", ts(START_MS))
        } else {
            "null".into()
        };
        w.tables.push(GenRecord::new(
            InputTopic::PromoCodes,
            format!("shoes/{code}"),
            format!(
                r#"{{"type":"promo_code","program_id":"shoes","code":"{code}","partner_id":"{partner}","credit_policy":"{policy}","valid_from":"2026-01-01T00:00:00Z","valid_to":{valid_to}}}"#
            ),
        ));
    }
    // Malformed table records.
    w.tables.push(GenRecord::new(
        InputTopic::Config,
        "program/broken",
        r#"{"type":"program","program_id":"broken","account_id":"acme","referral_window_days":-3}"#
            .into(),
    ));
    w.tables.push(GenRecord::new(
        InputTopic::PromoCodes,
        "shoes/NOPE",
        r#"{"type":"promo_code","program_id":"shoes","code":"NOPE"}"#.into(),
    ));

    // Clicks over 30 days.
    let span = 30 * 86_400_000i64;
    let mut click_times: Vec<i64> = (0..clicks)
        .map(|_| START_MS + rng.gen_range(0..span))
        .collect();
    click_times.sort_unstable();
    let mut last_click: Vec<i64> = vec![0; devices];
    for (i, t) in click_times.iter().enumerate() {
        let d = rng.gen_range(0..devices);
        last_click[d] = last_click[d].max(*t);
        let p = PROGRAMS[rng.gen_range(0..PROGRAMS.len())].0;
        let q = PARTNERS[rng.gen_range(0..PARTNERS.len())];
        let mut v = String::with_capacity(320);
        write!(
            v,
            r#"{{"type":"click","click_id":"c-{i}","program_id":"{p}","partner_id":"{q}","occurred_at":"{}","device_id":"d-{d}","customer_id":null,"media_id":"m-{}","shared_id":"post-{}","sub_ids":["s{}"],"source":"tracking_link","landing_url":"https://shop.example/?irclickid=c-{i}"}}"#,
            ts(*t),
            i % 17,
            i % 5,
            i % 3
        )
        .expect("write to string");
        w.clicks
            .push(GenRecord::new(InputTopic::Clicks, format!("d-{d}"), v));
        if i % 4000 == 17 {
            // A duplicate click id: ignored.
            let v = w
                .clicks
                .last()
                .expect("pushed")
                .value
                .clone()
                .expect("value");
            w.clicks
                .push(GenRecord::new(InputTopic::Clicks, format!("d-{d}"), v));
        }
    }
    w.clicks.push(GenRecord::new(
        InputTopic::Clicks,
        "d-0",
        r#"{"type":"click","program_id":"shoes""#.into(),
    ));
    w.clicks.push(GenRecord::new(InputTopic::Clicks, "d-1", r#"{"type":"click","click_id":"x","program_id":"shoes","partner_id":"techblog","occurred_at":"last tuesday"}"#.into()));

    // Conversions: about one per five devices, after the device's last click (or without any).
    let conversions = devices / 5;
    let mut orders = Vec::new();
    for n in 0..conversions {
        let d = rng.gen_range(0..devices);
        let base = if last_click[d] > 0 {
            last_click[d]
        } else {
            START_MS + span / 2
        };
        let t = base + rng.gen_range(60_000..3 * 86_400_000);
        let p = if n % 10 == 9 {
            "creators"
        } else {
            PROGRAMS[n % 3].0
        };
        let code = match n % 13 {
            0 => r#""save10""#,
            1 => r#""AMY15""#,
            2 => r#""deal5""#,
            3 => r#""old20""#,
            4 => r#""BOGUS""#,
            _ => "null",
        };
        let status = ["new", "returning", "unknown"][n % 3];
        let test = n % 97 == 5;
        let items = if n % 11 == 3 {
            String::from("null")
        } else {
            let k = rng.gen_range(1..4);
            let mut s = String::from("[");
            for j in 0..k {
                if j > 0 {
                    s.push(',');
                }
                write!(
                    s,
                    r#"{{"sku":"SKU-{j}","category":"{}","quantity":{},"unit_price":"{}.{:02}"}}"#,
                    CATEGORIES[(n + j) % 4],
                    rng.gen_range(1..4),
                    rng.gen_range(5..120),
                    rng.gen_range(0..100)
                )
                .expect("write to string");
            }
            s.push(']');
            s
        };
        let event = if n % 23 == 7 { "lead" } else { "sale" };
        let v = format!(
            r#"{{"type":"conversion","program_id":"{p}","event_type":"{event}","order_id":"o-{n}","occurred_at":"{}","device_id":"d-{d}","customer_id":"cu-{d}","click_id":null,"promo_code":{code},"customer_status":"{status}","currency":"USD","order_subtotal":"49.90","order_discount":"{}","order_tax":"2.00","order_shipping":"4.00","items":{items},"test":{test}}}"#,
            ts(t),
            if items == "null" { "0" } else { "1.00" }
        );
        w.conversions.push(GenRecord::new(
            InputTopic::Conversions,
            format!("d-{d}"),
            v.clone(),
        ));
        if n % 40 == 11 {
            w.conversions
                .push(GenRecord::new(InputTopic::Conversions, format!("d-{d}"), v)); // duplicate order
        }
        orders.push((d, p, event, n, t));
    }
    w.conversions.push(GenRecord::new(InputTopic::Conversions, "d-2", r#"{"type":"conversion","program_id":"shoes","event_type":"sale","order_id":"bad","occurred_at":"2026-10-10T00:00:00Z","items":[{"sku":"A","quantity":-1,"unit_price":"3"}]}"#.into()));
    w.conversions.push(GenRecord::new(
        InputTopic::Conversions,
        "d-3",
        "\u{1}\u{2}not json at all".into(),
    ));
    for (i, (d, p, event, n, t)) in orders.iter().enumerate() {
        if i % 15 == 2 {
            w.changes.push(GenRecord::new(
                InputTopic::Conversions,
                format!("d-{d}"),
                format!(r#"{{"type":"modification","program_id":"{p}","event_type":"{event}","order_id":"o-{n}","occurred_at":"{}","device_id":"d-{d}","items":[{{"sku":"SKU-0","quantity":0}}],"order_subtotal":"20.00","reason":"item_returned"}}"#, ts(t + 86_400_000)),
            ));
        } else if i % 25 == 4 {
            w.changes.push(GenRecord::new(
                InputTopic::Conversions,
                format!("d-{d}"),
                format!(r#"{{"type":"reversal","program_id":"{p}","event_type":"{event}","order_id":"o-{n}","occurred_at":"{}","device_id":"d-{d}","reason":"cons_fraud"}}"#, ts(t + 2 * 86_400_000)),
            ));
        } else if i % 101 == 6 {
            // Too late: after locking.
            w.changes.push(GenRecord::new(
                InputTopic::Conversions,
                format!("d-{d}"),
                format!(r#"{{"type":"reversal","program_id":"{p}","event_type":"{event}","order_id":"o-{n}","occurred_at":"{}","device_id":"d-{d}","reason":"late"}}"#, ts(t + 50 * 86_400_000)),
            ));
        }
    }
    w.changes.push(GenRecord::new(InputTopic::Conversions, "d-4", r#"{"type":"reversal","program_id":"shoes","event_type":"sale","order_id":"never-seen","occurred_at":"2026-10-20T00:00:00Z","device_id":"d-4"}"#.into()));
    w
}
