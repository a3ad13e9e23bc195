//! The wire forms of config and promo-code records, and their validation into the tables'
//! checked types.

use super::{Contract, CrossProgram, Payout, PayoutGroup, Program, Rate, When};
use crate::model::money;
use crate::model::records::{
    CreditGroup, CreditPolicy, CustomerStatus, DlqReason, Invalid, Limits, ProgramKind,
    PromoPolicy, Scope, check_len, invalid, optional_id, required, required_id,
};
use crate::model::time::{self, Millis};
use rust_decimal::Decimal;
use serde::Deserialize;

pub(super) fn table_key_str(key: Option<&[u8]>) -> Result<&str, Invalid> {
    let key = key.ok_or_else(|| Invalid::new(DlqReason::BadKey, "table record has a null key"))?;
    std::str::from_utf8(key)
        .map_err(|_| Invalid::new(DlqReason::BadKey, "table record key is not UTF-8"))
}

pub(super) fn expect_key(key: &str, expected: &str) -> Result<(), Invalid> {
    if key != expected {
        return Err(Invalid::new(
            DlqReason::BadKey,
            format!("record key `{key}` does not match its value (expected `{expected}`)"),
        ));
    }
    Ok(())
}

pub(super) fn check_period(
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
pub(super) struct RawPromo {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) program_id: Option<String>,
    pub(super) code: Option<String>,
    pub(super) partner_id: Option<String>,
    pub(super) credit_policy: Option<PromoPolicy>,
    #[serde(default, with = "time::rfc3339::option")]
    pub(super) valid_from: Option<Millis>,
    #[serde(default, with = "time::rfc3339::option")]
    pub(super) valid_to: Option<Millis>,
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
pub(super) struct RawConfig {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
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
    pub(super) fn into_program(self, limits: &Limits) -> Result<Program, Invalid> {
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

    pub(super) fn into_contract(self, limits: &Limits) -> Result<Contract, Invalid> {
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

    pub(super) fn into_cross_program(self, limits: &Limits) -> Result<CrossProgram, Invalid> {
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
