//! The tables every instance reads whole: programs, contracts, cross-program settings and
//! promo-code assignments (docs/design.md §2 "Config" and "Promo-code assignment").
//!
//! Records are validated into checked types before they replace anything; a refused record
//! leaves the previous version in force.

use crate::model::money;
use crate::model::records::{
    CreditGroup, CreditPolicy, CustomerStatus, DlqReason, Invalid, Limits, ProgramKind,
    PromoPolicy, Scope, check_len, invalid, optional_id, parse_json, required, required_id,
};
use crate::model::time::{self, Millis};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The attribution window of a program that sets none, in days.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;
/// The locking period of a program that sets none, in days.
pub const DEFAULT_LOCKING_DAYS: i64 = 45;

#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub program_id: String,
    pub account_id: String,
    pub kind: ProgramKind,
    pub currency: Option<String>,
    pub referral_window_days: i64,
    pub credit_policy: CreditPolicy,
    pub time_decay_half_life_days: Decimal,
    pub locking_days: i64,
    pub min_click_to_conversion_secs: i64,
}

/// A payout rate: a percentage of each item's base, or a fixed amount once per action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rate {
    Percent(Decimal),
    Fixed(Decimal),
}

/// `when` of a payout group: every given condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct When {
    pub customer_status: Option<CustomerStatus>,
    pub categories: Option<Vec<String>>,
    pub skus: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutGroup {
    pub when: When,
    pub rate: Rate,
}

/// A contract's payout terms; stored with each credited order (modifications reuse them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Payout {
    pub default: Option<Rate>,
    pub groups: Vec<PayoutGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub program_id: String,
    pub partner_id: String,
    pub active_from: Millis,
    pub active_to: Option<Millis>,
    pub credit_group: CreditGroup,
    pub referral_window_days: Option<i64>,
    /// `None` covers every event type; an empty list covers none.
    pub event_types: Option<Vec<String>>,
    pub payout: Option<Payout>,
}

impl Contract {
    /// Active at `t`: the start is included, the end excluded.
    pub fn active_at(&self, t: Millis) -> bool {
        self.active_from <= t && self.active_to.is_none_or(|end| t < end)
    }

    pub fn covers(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|e| e == event_type))
    }

    pub fn applies(&self, t: Millis, event_type: &str) -> bool {
        self.active_at(t) && self.covers(event_type)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CrossProgram {
    pub account_id: String,
    pub enabled: bool,
    pub scope: Scope,
    pub programs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromoAssignment {
    pub program_id: String,
    pub code: String,
    pub partner_id: String,
    pub credit_policy: PromoPolicy,
    pub valid_from: Option<Millis>,
    pub valid_to: Option<Millis>,
}

impl PromoAssignment {
    pub fn valid_at(&self, t: Millis) -> bool {
        self.valid_from.is_none_or(|from| from <= t) && self.valid_to.is_none_or(|to| t < to)
    }
}

/// Which table a record key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TableKey {
    Program(String),
    Contract(String, String),
    CrossProgram(String),
    Promo(String, String),
}

/// All tables, as one value the engine reads.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    pub programs: HashMap<String, Program>,
    /// program → partner → contract
    pub contracts: HashMap<String, HashMap<String, Contract>>,
    /// account → setting
    pub cross_programs: HashMap<String, CrossProgram>,
    /// program → CODE (ASCII upper-case) → assignment
    pub promo_codes: HashMap<String, HashMap<String, PromoAssignment>>,
    /// record key → what it set, so a tombstone deletes exactly that entry
    keys: HashMap<String, TableKey>,
    /// The referral windows of all programs and contracts (days → how many), so that the
    /// longest is known without a scan: a table update costs O(log n).
    windows: std::collections::BTreeMap<i64, usize>,
}

/// What a table record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableChange {
    Upserted,
    Deleted,
    /// A tombstone for a key that holds nothing.
    Unchanged,
}

impl Tables {
    pub fn contract(&self, program: &str, partner: &str) -> Option<&Contract> {
        self.contracts.get(program)?.get(partner)
    }

    pub fn promo(&self, program: &str, code_upper: &str) -> Option<&PromoAssignment> {
        self.promo_codes.get(program)?.get(code_upper)
    }

    /// The longest window clicks may need to be kept for, in days.
    pub fn max_window_days(&self) -> i64 {
        let longest = self.windows.keys().next_back().copied().unwrap_or(0);
        longest.max(DEFAULT_WINDOW_DAYS)
    }

    fn count_window(&mut self, days: Option<i64>, delta: isize) {
        let Some(days) = days else { return };
        let n = self.windows.entry(days).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.windows.remove(&days);
        }
    }

    /// The longest locking period, for order retention, in days.
    pub fn max_locking_days(&self) -> i64 {
        self.programs
            .values()
            .map(|p| p.locking_days)
            .max()
            .unwrap_or(0)
            .max(DEFAULT_LOCKING_DAYS)
    }

    /// Applies one record of the config topic (`value` None = tombstone).
    pub fn apply_config(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        limits: &Limits,
    ) -> Result<TableChange, Invalid> {
        let key = table_key_str(key)?;
        let Some(value) = value else {
            return self.delete(key, &["program/", "contract/", "cross_program/"]);
        };
        let kind = key.split('/').next().unwrap_or("");
        let r: RawConfig = parse_json("config record", value)?;
        let ty = r.kind.as_deref().unwrap_or(kind);
        if !matches!(ty, "program" | "contract" | "cross_program") {
            return Err(Invalid::new(
                DlqReason::WrongType,
                format!("record of type `{ty}` does not belong on the config topic"),
            ));
        }
        match ty {
            "program" => {
                let p = r.into_program(limits)?;
                expect_key(key, &format!("program/{}", p.program_id))?;
                self.check_program_account(&p)?;
                self.keys
                    .insert(key.to_string(), TableKey::Program(p.program_id.clone()));
                self.count_window(Some(p.referral_window_days), 1);
                if let Some(old) = self.programs.insert(p.program_id.clone(), p) {
                    self.count_window(Some(old.referral_window_days), -1);
                }
            }
            "contract" => {
                let c = r.into_contract(limits)?;
                expect_key(key, &format!("contract/{}/{}", c.program_id, c.partner_id))?;
                self.keys.insert(
                    key.to_string(),
                    TableKey::Contract(c.program_id.clone(), c.partner_id.clone()),
                );
                self.count_window(c.referral_window_days, 1);
                let old = self
                    .contracts
                    .entry(c.program_id.clone())
                    .or_default()
                    .insert(c.partner_id.clone(), c);
                if let Some(old) = old {
                    self.count_window(old.referral_window_days, -1);
                }
            }
            _ => {
                let x = r.into_cross_program(limits)?;
                expect_key(key, &format!("cross_program/{}", x.account_id))?;
                for p in &x.programs {
                    if let Some(prog) = self.programs.get(p) {
                        if prog.account_id != x.account_id {
                            return Err(invalid(format!(
                                "invalid cross_program: field `programs` lists program `{p}` of account `{}`, not `{}`",
                                prog.account_id, x.account_id
                            )));
                        }
                    }
                }
                self.keys.insert(
                    key.to_string(),
                    TableKey::CrossProgram(x.account_id.clone()),
                );
                self.cross_programs.insert(x.account_id.clone(), x);
            }
        }
        Ok(TableChange::Upserted)
    }

    /// A program may not move to another account while a cross-program list of its old
    /// account names it (that list would then link programs of two accounts).
    fn check_program_account(&self, p: &Program) -> Result<(), Invalid> {
        for x in self.cross_programs.values() {
            if x.account_id != p.account_id
                && x.scope == Scope::Specific
                && x.programs.contains(&p.program_id)
            {
                return Err(invalid(format!(
                    "invalid program: field `account_id` is `{}`, but the cross_program list of account `{}` holds program `{}`",
                    p.account_id, x.account_id, p.program_id
                )));
            }
        }
        Ok(())
    }

    /// Applies one record of the promo-codes topic (`value` None = revocation).
    pub fn apply_promo(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        limits: &Limits,
    ) -> Result<TableChange, Invalid> {
        let key = table_key_str(key)?;
        let Some(value) = value else {
            return self.delete(key, &[]);
        };
        let r: RawPromo = parse_json("promo_code", value)?;
        if let Some(t) = r.kind.as_deref() {
            if t != "promo_code" {
                return Err(Invalid::new(
                    DlqReason::WrongType,
                    format!("record of type `{t}` does not belong on the promo-codes topic"),
                ));
            }
        }
        let w = "promo_code";
        let a = PromoAssignment {
            program_id: required_id(w, "program_id", r.program_id, limits)?,
            code: required_id(w, "code", r.code, limits)?,
            partner_id: required_id(w, "partner_id", r.partner_id, limits)?,
            credit_policy: required(w, "credit_policy", r.credit_policy)?,
            valid_from: r.valid_from,
            valid_to: r.valid_to,
        };
        check_period(w, "valid_from", a.valid_from, "valid_to", a.valid_to)?;
        let upper = a.code.to_ascii_uppercase();
        expect_key(key, &format!("{}/{}", a.program_id, upper))?;
        self.keys.insert(
            key.to_string(),
            TableKey::Promo(a.program_id.clone(), upper.clone()),
        );
        self.promo_codes
            .entry(a.program_id.clone())
            .or_default()
            .insert(upper, a);
        Ok(TableChange::Upserted)
    }

    fn delete(&mut self, key: &str, allowed_prefixes: &[&str]) -> Result<TableChange, Invalid> {
        if !allowed_prefixes.is_empty() && !allowed_prefixes.iter().any(|p| key.starts_with(p)) {
            return Err(Invalid::new(
                DlqReason::BadKey,
                format!("config tombstone has key `{key}`, which names no config type"),
            ));
        }
        let Some(k) = self.keys.remove(key) else {
            return Ok(TableChange::Unchanged);
        };
        match k {
            TableKey::Program(p) => {
                if let Some(old) = self.programs.remove(&p) {
                    self.count_window(Some(old.referral_window_days), -1);
                }
            }
            TableKey::Contract(p, q) => {
                if let Some(old) = self.contracts.get_mut(&p).and_then(|m| m.remove(&q)) {
                    self.count_window(old.referral_window_days, -1);
                }
            }
            TableKey::CrossProgram(a) => {
                self.cross_programs.remove(&a);
            }
            TableKey::Promo(p, c) => {
                if let Some(m) = self.promo_codes.get_mut(&p) {
                    m.remove(&c);
                }
            }
        }
        Ok(TableChange::Deleted)
    }
}

fn table_key_str(key: Option<&[u8]>) -> Result<&str, Invalid> {
    let key = key.ok_or_else(|| Invalid::new(DlqReason::BadKey, "table record has a null key"))?;
    std::str::from_utf8(key)
        .map_err(|_| Invalid::new(DlqReason::BadKey, "table record key is not UTF-8"))
}

fn expect_key(key: &str, expected: &str) -> Result<(), Invalid> {
    if key != expected {
        return Err(Invalid::new(
            DlqReason::BadKey,
            format!("record key `{key}` does not match its value (expected `{expected}`)"),
        ));
    }
    Ok(())
}

fn check_period(
    what: &str,
    from_name: &str,
    from: Option<Millis>,
    to_name: &str,
    to: Option<Millis>,
) -> Result<(), Invalid> {
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            return Err(invalid(format!(
                "invalid {what}: field `{to_name}` is before `{from_name}`"
            )));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct RawPromo {
    #[serde(rename = "type")]
    kind: Option<String>,
    program_id: Option<String>,
    code: Option<String>,
    partner_id: Option<String>,
    credit_policy: Option<PromoPolicy>,
    #[serde(default, with = "time::rfc3339::option")]
    valid_from: Option<Millis>,
    #[serde(default, with = "time::rfc3339::option")]
    valid_to: Option<Millis>,
}

#[derive(Deserialize)]
struct RawRate {
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    percent: Option<Decimal>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    fixed: Option<Decimal>,
}

#[derive(Deserialize, Default)]
struct RawWhen {
    customer_status: Option<CustomerStatus>,
    categories: Option<Vec<String>>,
    skus: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawGroup {
    when: Option<RawWhen>,
    rate: Option<RawRate>,
}

#[derive(Deserialize)]
struct RawPayout {
    default: Option<RawRate>,
    groups: Option<Vec<RawGroup>>,
}

/// The union of the three config record types' fields.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    program_id: Option<String>,
    account_id: Option<String>,
    #[serde(rename = "kind")]
    program_kind: Option<ProgramKind>,
    currency: Option<String>,
    referral_window_days: Option<i64>,
    credit_policy: Option<CreditPolicy>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    time_decay_half_life_days: Option<Decimal>,
    locking_days: Option<i64>,
    min_click_to_conversion_secs: Option<i64>,
    partner_id: Option<String>,
    #[serde(default, with = "time::rfc3339::option")]
    active_from: Option<Millis>,
    #[serde(default, with = "time::rfc3339::option")]
    active_to: Option<Millis>,
    credit_group: Option<CreditGroup>,
    event_types: Option<Vec<String>>,
    payout: Option<RawPayout>,
    enabled: Option<bool>,
    scope: Option<Scope>,
    programs: Option<Vec<String>>,
}

fn non_negative_int(what: &str, field: &str, v: Option<i64>, default: i64) -> Result<i64, Invalid> {
    let v = v.unwrap_or(default);
    if v < 0 {
        return Err(invalid(format!(
            "invalid {what}: field `{field}` is negative ({v})"
        )));
    }
    Ok(v)
}

fn rate(what: &str, field: &str, r: RawRate) -> Result<Rate, Invalid> {
    match (r.percent, r.fixed) {
        (Some(p), None) => {
            if p < Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                return Err(invalid(format!(
                    "invalid {what}: field `{field}.percent` is {p}, outside 0–100"
                )));
            }
            Ok(Rate::Percent(p))
        }
        (None, Some(f)) => {
            if f < Decimal::ZERO {
                return Err(invalid(format!(
                    "invalid {what}: field `{field}.fixed` is negative ({f})"
                )));
            }
            Ok(Rate::Fixed(f))
        }
        _ => Err(invalid(format!(
            "invalid {what}: field `{field}` must have exactly one of `percent` or `fixed`"
        ))),
    }
}

impl RawConfig {
    fn into_program(self, limits: &Limits) -> Result<Program, Invalid> {
        let w = "program";
        let half_life = self.time_decay_half_life_days.unwrap_or(Decimal::from(7));
        if half_life <= Decimal::ZERO {
            return Err(invalid(format!(
                "invalid program: field `time_decay_half_life_days` must be positive ({half_life})"
            )));
        }
        Ok(Program {
            program_id: required_id(w, "program_id", self.program_id, limits)?,
            account_id: required_id(w, "account_id", self.account_id, limits)?,
            kind: self.program_kind.unwrap_or_default(),
            currency: optional_id(w, "currency", self.currency, limits)?,
            referral_window_days: non_negative_int(
                w,
                "referral_window_days",
                self.referral_window_days,
                30,
            )?,
            credit_policy: self.credit_policy.unwrap_or_default(),
            time_decay_half_life_days: half_life,
            locking_days: non_negative_int(w, "locking_days", self.locking_days, 45)?,
            min_click_to_conversion_secs: non_negative_int(
                w,
                "min_click_to_conversion_secs",
                self.min_click_to_conversion_secs,
                0,
            )?,
        })
    }

    fn into_contract(self, limits: &Limits) -> Result<Contract, Invalid> {
        let w = "contract";
        let c = Contract {
            program_id: required_id(w, "program_id", self.program_id, limits)?,
            partner_id: required_id(w, "partner_id", self.partner_id, limits)?,
            active_from: required(w, "active_from", self.active_from)?,
            active_to: self.active_to,
            credit_group: self.credit_group.unwrap_or_default(),
            referral_window_days: match self.referral_window_days {
                Some(d) => Some(non_negative_int(w, "referral_window_days", Some(d), 0)?),
                None => None,
            },
            event_types: self.event_types,
            payout: match self.payout {
                None => None,
                Some(p) => {
                    let default = match p.default {
                        Some(r) => Some(rate(w, "payout.default", r)?),
                        None => None,
                    };
                    let mut groups = Vec::new();
                    for (i, g) in p.groups.unwrap_or_default().into_iter().enumerate() {
                        let f = format!("payout.groups[{i}].rate");
                        let r = required(w, &f, g.rate)?;
                        let when = g.when.unwrap_or_default();
                        groups.push(PayoutGroup {
                            when: When {
                                customer_status: when.customer_status,
                                categories: when.categories,
                                skus: when.skus,
                            },
                            rate: rate(w, &f, r)?,
                        });
                    }
                    Some(Payout { default, groups })
                }
            },
        };
        check_period(
            w,
            "active_from",
            Some(c.active_from),
            "active_to",
            c.active_to,
        )?;
        if let Some(ts) = &c.event_types {
            for (i, t) in ts.iter().enumerate() {
                check_len(w, &format!("event_types[{i}]"), t, limits.max_id_len)?;
            }
        }
        Ok(c)
    }

    fn into_cross_program(self, limits: &Limits) -> Result<CrossProgram, Invalid> {
        let w = "cross_program";
        let x = CrossProgram {
            account_id: required_id(w, "account_id", self.account_id, limits)?,
            enabled: required(w, "enabled", self.enabled)?,
            scope: self.scope.unwrap_or_default(),
            programs: self.programs.unwrap_or_default(),
        };
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(t: &mut Tables, key: &str, v: &str) -> Result<TableChange, Invalid> {
        t.apply_config(Some(key.as_bytes()), Some(v.as_bytes()), &Limits::default())
    }

    #[test]
    fn bad_config_is_refused_and_the_previous_version_stays() {
        let mut t = Tables::default();
        apply(
            &mut t,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":10}"#,
        )
        .unwrap();
        let e = apply(
            &mut t,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":-1}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("referral_window_days"), "{}", e.0);
        assert_eq!(t.programs["p1"].referral_window_days, 10);
        let e = apply(
            &mut t,
            "program/p2",
            r#"{"type":"program","program_id":"p1","account_id":"acme"}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("does not match"), "{}", e.0);
        let c = r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"120"}}}"#;
        let e = apply(&mut t, "contract/p1/pa1", c).unwrap_err();
        assert!(e.0.contains("payout.default.percent"), "{}", e.0);
        let c = r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","active_to":"2025-01-01T00:00:00Z"}"#;
        assert!(
            apply(&mut t, "contract/p1/pa1", c)
                .unwrap_err()
                .0
                .contains("active_to")
        );
        apply(
            &mut t,
            "program/q1",
            r#"{"type":"program","program_id":"q1","account_id":"other"}"#,
        )
        .unwrap();
        let x = r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"specific","programs":["p1","q1"]}"#;
        assert!(
            apply(&mut t, "cross_program/acme", x)
                .unwrap_err()
                .0
                .contains("q1")
        );
        assert_eq!(
            t.apply_config(Some(b"program/p1"), None, &Limits::default())
                .unwrap(),
            TableChange::Deleted
        );
        assert!(t.programs.is_empty() || !t.programs.contains_key("p1"));
    }

    #[test]
    fn the_longest_window_follows_upserts_and_deletes() {
        let mut t = Tables::default();
        let base = t.max_window_days();
        let program = |w: i64| {
            format!(
                r#"{{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":{w}}}"#
            )
        };
        let contract = |partner: &str, w: i64| {
            format!(
                r#"{{"type":"contract","program_id":"p1","partner_id":"{partner}","active_from":"2026-01-01T00:00:00Z","referral_window_days":{w}}}"#
            )
        };
        apply(&mut t, "program/p1", &program(base + 10)).unwrap();
        assert_eq!(t.max_window_days(), base + 10);
        apply(&mut t, "contract/p1/a", &contract("a", base + 20)).unwrap();
        apply(&mut t, "contract/p1/b", &contract("b", base + 20)).unwrap();
        assert_eq!(t.max_window_days(), base + 20);
        // Replacing one of two equal windows keeps the other.
        apply(&mut t, "contract/p1/a", &contract("a", base + 5)).unwrap();
        assert_eq!(t.max_window_days(), base + 20);
        t.apply_config(Some(b"contract/p1/b"), None, &Limits::default())
            .unwrap();
        assert_eq!(t.max_window_days(), base + 10);
        apply(&mut t, "program/p1", &program(base + 1)).unwrap();
        assert_eq!(t.max_window_days(), base + 5);
        t.apply_config(Some(b"contract/p1/a"), None, &Limits::default())
            .unwrap();
        t.apply_config(Some(b"program/p1"), None, &Limits::default())
            .unwrap();
        assert_eq!(t.max_window_days(), base);
        assert!(t.windows.is_empty());
    }

    #[test]
    fn promo_keys_are_upper_case() {
        let mut t = Tables::default();
        let v = r#"{"type":"promo_code","program_id":"p1","code":"Save10","partner_id":"pa2","credit_policy":"always"}"#;
        assert!(
            t.apply_promo(Some(b"p1/Save10"), Some(v.as_bytes()), &Limits::default())
                .is_err()
        );
        t.apply_promo(Some(b"p1/SAVE10"), Some(v.as_bytes()), &Limits::default())
            .unwrap();
        assert_eq!(t.promo("p1", "SAVE10").unwrap().partner_id, "pa2");
        t.apply_promo(Some(b"p1/SAVE10"), None, &Limits::default())
            .unwrap();
        assert!(t.promo("p1", "SAVE10").is_none());
    }
}
