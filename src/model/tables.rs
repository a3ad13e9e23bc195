//! The tables every instance reads whole: programs, contracts, cross-program settings and
//! promo-code assignments (docs/design.md §2 "Config" and "Promo-code assignment").
//!
//! Records are validated into checked types before they replace anything; a refused record
//! leaves the previous version in force.

use crate::model::records::{
    CreditGroup, CreditPolicy, CustomerStatus, DlqReason, Invalid, Limits, ProgramKind,
    PromoPolicy, Scope, invalid, parse_json, required, required_id,
};
use crate::model::time::Millis;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
#[cfg(test)]
mod tests;
mod wire;

use wire::{RawConfig, RawPromo, check_period, expect_key, table_key_str};

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
