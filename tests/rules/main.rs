//! Table tests, one group per rule of docs/design.md §3, with hand-computed expectations.

mod changes;
mod devices;
mod eligibility;
mod journeys;
mod participations;
mod payouts;
mod promo_codes;
mod reasons;

use attrib::model::journey::Journey;
use attrib::model::output::{Action, InvalidAction, Output};
use attrib::model::records::{Event, Limits, decode_click, decode_conversion_topic};
use attrib::model::tables::Tables;
use attrib::model::time::parse_rfc3339;
use attrib::rules::engine::{self, Clock, EngineSettings};

struct World {
    tables: Tables,
    journey: Journey,
    settings: EngineSettings,
    stream_time: i64,
}

fn t(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

impl World {
    fn new() -> World {
        let mut w = World {
            tables: Tables::default(),
            journey: Journey::default(),
            settings: EngineSettings::default(),
            stream_time: 0,
        };
        w.program("p1", r#""account_id":"acme""#);
        w
    }

    fn config(&mut self, key: &str, value: &str) {
        self.tables
            .apply_config(
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &Limits::default(),
            )
            .unwrap();
    }

    fn program(&mut self, id: &str, extra: &str) {
        self.config(
            &format!("program/{id}"),
            &format!(r#"{{"type":"program","program_id":"{id}",{extra}}}"#),
        );
    }

    fn contract(&mut self, program: &str, partner: &str, extra: &str) {
        let sep = if extra.is_empty() { "" } else { "," };
        self.config(
            &format!("contract/{program}/{partner}"),
            &format!(r#"{{"type":"contract","program_id":"{program}","partner_id":"{partner}","active_from":"2026-01-01T00:00:00Z"{sep}{extra}}}"#),
        );
    }

    fn promo(&mut self, program: &str, code: &str, partner: &str, policy: &str, extra: &str) {
        let v = format!(
            r#"{{"type":"promo_code","program_id":"{program}","code":"{code}","partner_id":"{partner}","credit_policy":"{policy}"{extra}}}"#
        );
        self.tables
            .apply_promo(
                Some(format!("{program}/{}", code.to_ascii_uppercase()).as_bytes()),
                Some(v.as_bytes()),
                &Limits::default(),
            )
            .unwrap();
    }

    fn apply(&mut self, e: Event) -> Vec<Output> {
        self.stream_time = self.stream_time.max(e.occurred_at());
        let mut out = Vec::new();
        engine::apply(
            &mut self.journey,
            &self.tables,
            &self.settings,
            &e,
            Clock {
                processed_at: 0,
                stream_time: self.stream_time,
            },
            &mut out,
        );
        out
    }

    fn click(&mut self, id: &str, program: &str, partner: &str, at: &str) {
        let v = format!(
            r#"{{"click_id":"{id}","program_id":"{program}","partner_id":"{partner}","occurred_at":"{at}","shared_id":"s-{id}","sub_ids":["x"]}}"#
        );
        let out = self.apply(Event::Click(
            decode_click(v.as_bytes(), &Limits::default()).unwrap(),
        ));
        assert!(out.is_empty());
    }

    fn record(&mut self, json: &str) -> Output {
        let e = decode_conversion_topic(json.as_bytes(), &Limits::default()).unwrap();
        let mut out = self.apply(e);
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    /// A conversion of 100.00 (one item) in p1 at `at`, with extra fields.
    fn convert(&mut self, order: &str, at: &str, extra: &str) -> Output {
        self.record(&format!(
            r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{at}","items":[{{"sku":"A","category":"shoes","quantity":1,"unit_price":"100.00"}}]{extra}}}"#
        ))
    }
}

fn action(o: Output) -> Box<Action> {
    match o {
        Output::Action(a) => a,
        Output::Invalid(i) => panic!(
            "expected an action, got invalid {:?}: {:?}",
            i.reason, i.detail
        ),
    }
}

fn invalid(o: Output) -> Box<InvalidAction> {
    match o {
        Output::Invalid(i) => i,
        Output::Action(a) => panic!("expected an invalid action, got credits {:?}", a.credits),
    }
}

fn reason(o: Output) -> &'static str {
    invalid(o).reason.as_str()
}

fn partners(a: &Action) -> Vec<(&str, String)> {
    a.credits
        .iter()
        .map(|c| (c.partner_id.as_str(), c.weight.to_string()))
        .collect()
}
