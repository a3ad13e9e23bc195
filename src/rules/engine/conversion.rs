//! Rules 1–8: a conversion's credit, or the reason it earns none.

use super::action::emit;
use super::{Clock, EngineSettings, MAX_TOUCHPOINTS};
use crate::model::journey::{CreditedOrder, Journey, StoredClick, StoredCredit, StoredOrder};
use crate::model::money::round6;
use crate::model::output::{Change, InvalidAction, Output, Reason, ReferralType, Touchpoint};
use crate::model::records::{
    Conversion, CreditGroup, CreditPolicy, ProgramKind, PromoPolicy, Scope,
};
use crate::model::tables::{Contract, Program, PromoAssignment, Tables};
use crate::model::time::{Millis, days_to_ms};
use crate::rules::payout;
use rust_decimal::Decimal;

/// One partner's participation: its standing click.
struct Participation<'a> {
    click: &'a StoredClick,
    group: CreditGroup,
}

/// The promo code's standing at T (rule 4).
enum Code<'a> {
    None,
    NotAssigned,
    PartnerNotActive,
    Valid {
        assignment: &'a PromoAssignment,
        group: CreditGroup,
    },
}

/// A decided credit before payout.
struct Decided<'a> {
    partner_id: &'a str,
    exact_weight: Decimal,
    referral_type: ReferralType,
    click: Option<&'a StoredClick>,
    promo_code: Option<&'a str>,
}

/// Rule 1's outcome: the journey's touchpoints, the eligible clicks, and what the clicks
/// lacked (for rule 7's reason).
struct Clicks<'a> {
    touch: Vec<&'a StoredClick>,
    eligible: Vec<&'a StoredClick>,
    any_program: bool,
    any_time: bool,
    any_active: bool,
}

fn program_condition(tables: &Tables, p: &Program, click_program: &str) -> bool {
    if click_program == p.program_id {
        return true;
    }
    if p.kind == ProgramKind::Creator {
        return false;
    }
    let Some(other) = tables.programs.get(click_program) else {
        return false;
    };
    if other.kind == ProgramKind::Creator || other.account_id != p.account_id {
        return false;
    }
    match tables.cross_programs.get(&p.account_id) {
        Some(x) if x.enabled => match x.scope {
            Scope::All => true,
            Scope::Specific => {
                x.programs.iter().any(|q| q == &p.program_id)
                    && x.programs.iter().any(|q| q == click_program)
            }
        },
        _ => false,
    }
}

/// The invalid action of a conversion that earns nobody credit.
fn invalid(x: &Conversion, reason: Reason, detail: String) -> Output {
    Output::Invalid(Box::new(InvalidAction {
        kind: "invalid_action",
        program_id: x.program_id.clone(),
        event_type: x.event_type.clone(),
        order_id: x.order_id.clone(),
        occurred_at: x.occurred_at,
        device_id: x.device_id.clone(),
        customer_id: x.customer_id.clone(),
        promo_code: x.promo_code.clone(),
        reason,
        detail: Some(detail),
        test: x.test,
    }))
}

/// The partner's contract of the program, if it applies to the conversion at its time.
fn applies<'t>(
    tables: &'t Tables,
    p: &Program,
    x: &Conversion,
    partner: &str,
) -> Option<&'t Contract> {
    tables
        .contract(&p.program_id, partner)
        .filter(|c| c.applies(x.occurred_at, &x.event_type))
}

/// Rules 1–8: credits a conversion, or publishes why it earns none.
pub(super) fn attribute(
    j: &mut Journey,
    tables: &Tables,
    settings: &EngineSettings,
    x: &Conversion,
    clock: Clock,
    out: &mut Vec<Output>,
) {
    let t = x.occurred_at;
    // Rule 7: an unknown program leaves no trace.
    let Some(p) = tables.programs.get(&x.program_id) else {
        out.push(invalid(
            x,
            Reason::UnknownProgram,
            format!("no program config for `{}`", x.program_id),
        ));
        return;
    };
    // Rule 8: duplicates leave the earlier outcome untouched.
    if j.order(&x.program_id, &x.event_type, &x.order_id).is_some() {
        out.push(invalid(
            x,
            Reason::DuplicateOrder,
            "an earlier conversion has the same order".into(),
        ));
        return;
    }

    // Rule 1: eligible clicks, and the journey's touchpoints.
    let clicks = eligible_clicks(j, tables, p, x);

    // Rule 2: one participation per partner; its standing click is the nearest to T
    // (first_click: the earliest). Clicks are sorted oldest first, ties by arrival.
    let parts = participations(tables, p, x, &clicks.eligible);
    // Rule 3: only the highest credit group present competes.
    let top = parts.iter().map(|q| q.group).max();

    // Rule 4: the promo code.
    let code = promo_code(tables, p, x);
    let promo_credit = promo_takes_credit(&code, &parts, top);

    let decided: Vec<Decided> = if promo_credit {
        let Code::Valid { assignment: a, .. } = &code else {
            unreachable!()
        };
        vec![Decided {
            partner_id: &a.partner_id,
            exact_weight: Decimal::ONE,
            referral_type: ReferralType::PromoCode,
            click: None,
            promo_code: x.promo_code.as_deref(),
        }]
    } else {
        click_credits(p, x, &code, &parts, top)
    };

    let locking_at = t.saturating_add(days_to_ms(p.locking_days));
    let expires_at = locking_at.saturating_add(settings.retention_margin_ms);
    let mut order = stored_order(x, expires_at);

    if decided.is_empty() {
        // Rule 7: the first reason that applies.
        let (reason, detail) = no_credit_reason(x, &code, &clicks);
        out.push(invalid(x, reason, detail));
        j.push_order(order);
        return;
    }

    let mut credited = credited_order(tables, p, x, &clicks.touch, &decided, locking_at);
    let action = emit(&order, &mut credited, Change::Created, clock.processed_at);
    out.push(Output::Action(Box::new(action)));
    order.credited = Some(Box::new(credited));
    j.push_order(order);
}

/// Rule 1: the clicks of the program (or of a cross program) inside their referral window
/// and minimum click-to-conversion time are the touchpoints; those whose partner has an active
/// contract covering the event type are eligible.
fn eligible_clicks<'a>(j: &'a Journey, tables: &Tables, p: &Program, x: &Conversion) -> Clicks<'a> {
    let t = x.occurred_at;
    let min_gap = p.min_click_to_conversion_secs.saturating_mul(1000);
    // Clicks that expired (retention) were outside every window: they still count as clicks of
    // their program for the reason.
    let mut any_program = j
        .expired
        .iter()
        .any(|e| program_condition(tables, p, &e.program_id));
    let (mut any_time, mut any_active) = (false, false);
    let mut touch: Vec<&StoredClick> = Vec::new();
    let mut eligible: Vec<&StoredClick> = Vec::new();
    for c in &j.clicks {
        if !program_condition(tables, p, &c.program_id) {
            continue;
        }
        any_program = true;
        let contract = tables.contract(&p.program_id, &c.partner_id);
        let window_days = contract
            .and_then(|k| k.referral_window_days)
            .unwrap_or(p.referral_window_days);
        let age = t.saturating_sub(c.occurred_at);
        if c.occurred_at > t || age > days_to_ms(window_days) || age < min_gap {
            continue;
        }
        any_time = true;
        touch.push(c);
        let Some(contract) = contract.filter(|k| k.active_at(t)) else {
            continue;
        };
        any_active = true;
        if contract.covers(&x.event_type) {
            eligible.push(c);
        }
    }
    Clicks {
        touch,
        eligible,
        any_program,
        any_time,
        any_active,
    }
}

/// Rule 2: one participation per partner, sorted by its standing click.
fn participations<'a>(
    tables: &Tables,
    p: &Program,
    x: &Conversion,
    eligible: &[&'a StoredClick],
) -> Vec<Participation<'a>> {
    let first = p.credit_policy == CreditPolicy::FirstClick;
    let mut parts: Vec<Participation> = Vec::new();
    for c in eligible {
        match parts
            .iter_mut()
            .find(|q| q.click.partner_id == c.partner_id)
        {
            Some(q) if !first => q.click = c,
            Some(_) => {}
            None => {
                let group = applies(tables, p, x, &c.partner_id)
                    .map(|k| k.credit_group)
                    .unwrap_or_default();
                parts.push(Participation { click: c, group });
            }
        }
    }
    parts.sort_by_key(|q| (q.click.occurred_at, q.click.seq));
    parts
}

/// Rule 4: the promo code's standing at T.
fn promo_code<'t>(tables: &'t Tables, p: &Program, x: &Conversion) -> Code<'t> {
    match &x.promo_code {
        None => Code::None,
        Some(code) => match tables
            .promo(&p.program_id, &code.to_ascii_uppercase())
            .filter(|a| a.valid_at(x.occurred_at))
        {
            None => Code::NotAssigned,
            Some(a) => match applies(tables, p, x, &a.partner_id) {
                None => Code::PartnerNotActive,
                Some(k) => Code::Valid {
                    assignment: a,
                    group: k.credit_group,
                },
            },
        },
    }
}

/// Rule 4: whether the promo code's partner takes the whole credit.
fn promo_takes_credit(code: &Code, parts: &[Participation], top: Option<CreditGroup>) -> bool {
    match code {
        Code::Valid {
            assignment: a,
            group,
        } => match a.credit_policy {
            PromoPolicy::Always => top.is_none_or(|g| g <= *group),
            PromoPolicy::IfInvolved => {
                parts.iter().any(|q| q.click.partner_id == a.partner_id)
                    && top.is_none_or(|g| g <= *group)
            }
            PromoPolicy::IfWinner => false,
        },
        _ => false,
    }
}

/// The credits of the competing clicks (the top credit group's), weighted by the program's
/// credit policy; an `if_winner` promo code is named on its partner's credit.
fn click_credits<'a>(
    p: &Program,
    x: &'a Conversion,
    code: &Code<'a>,
    parts: &[Participation<'a>],
    top: Option<CreditGroup>,
) -> Vec<Decided<'a>> {
    let t = x.occurred_at;
    let competing: Vec<&StoredClick> = parts
        .iter()
        .filter(|q| Some(q.group) == top)
        .map(|q| q.click)
        .collect();
    let weights = payout::policy_weights(p, t, &competing);
    let winner_code = match code {
        Code::Valid { assignment: a, .. } if a.credit_policy == PromoPolicy::IfWinner => Some(a),
        _ => None,
    };
    competing
        .iter()
        .zip(weights)
        .filter(|(_, w)| w.is_some())
        .map(|(c, w)| Decided {
            partner_id: &c.partner_id,
            exact_weight: w.unwrap_or_default(),
            referral_type: if c.program_id == p.program_id {
                ReferralType::Click
            } else {
                ReferralType::CrossProgramClick
            },
            click: Some(c),
            promo_code: winner_code
                .filter(|a| a.partner_id == c.partner_id)
                .and(x.promo_code.as_deref()),
        })
        .collect()
}

/// The order as the journey keeps it, not yet credited.
fn stored_order(x: &Conversion, expires_at: Millis) -> StoredOrder {
    StoredOrder {
        program_id: x.program_id.clone(),
        event_type: x.event_type.clone(),
        order_id: x.order_id.clone(),
        occurred_at: x.occurred_at,
        device_id: x.device_id.clone(),
        customer_id: x.customer_id.clone(),
        promo_code: x.promo_code.clone(),
        test: x.test,
        expires_at,
        credited: None,
    }
}

/// Rule 7: the first reason that applies.
fn no_credit_reason(x: &Conversion, code: &Code, clicks: &Clicks) -> (Reason, String) {
    match code {
        Code::NotAssigned => (Reason::PromoCodeNotAssigned, "the promo code has no assignment valid at the conversion's time".to_string()),
        Code::PartnerNotActive => (Reason::PartnerNotActive, "the promo code's partner has no contract active at the conversion's time covering its event type".to_string()),
        _ if !clicks.any_program => (Reason::NoValidReferrer, "the journey has no click for this program".to_string()),
        _ if !clicks.any_time => (Reason::OutsideReferralWindow, "no click inside the referral window and minimum click-to-conversion time".to_string()),
        _ if !clicks.any_active => (Reason::PartnerNotActive, "no clicked partner has a contract active at the conversion's time".to_string()),
        _ => (Reason::EventTypeNotInContract, format!("no active contract covers event type `{}`", x.event_type)),
    }
}

/// The credited part of the order: its credits, touchpoints and items, before payout.
fn credited_order(
    tables: &Tables,
    p: &Program,
    x: &Conversion,
    touch: &[&StoredClick],
    decided: &[Decided],
    locking_at: Millis,
) -> CreditedOrder {
    let total = touch.len() as u32;
    let touchpoints = touchpoints(touch);
    let credits = stored_credits(tables, p, x, decided);
    CreditedOrder {
        customer_status: x.customer_status,
        currency: x.currency.clone().or_else(|| p.currency.clone()),
        click_id: x.click_id.clone(),
        locking_at,
        items: x.items.clone(),
        itemless: x.itemless,
        order_discount: x.order_discount,
        credits,
        touchpoints,
        touchpoints_total: total,
        amount: Decimal::ZERO,
        payout: Decimal::ZERO,
        reversed: false,
    }
}

/// The touchpoints listed on the action: all of them, or the first and the latest.
fn touchpoints(touch: &[&StoredClick]) -> Vec<Touchpoint> {
    if touch.len() <= MAX_TOUCHPOINTS {
        touch.iter().map(|c| c.touchpoint()).collect()
    } else {
        std::iter::once(touch[0])
            .chain(touch[touch.len() - (MAX_TOUCHPOINTS - 1)..].iter().copied())
            .map(|c| c.touchpoint())
            .collect()
    }
}

/// The decided credits with their published weights and their contracts' payout terms.
fn stored_credits(
    tables: &Tables,
    p: &Program,
    x: &Conversion,
    decided: &[Decided],
) -> Vec<StoredCredit> {
    let t = x.occurred_at;
    publish_weights(decided)
        .into_iter()
        .zip(decided)
        .map(|(weight, d)| StoredCredit {
            partner_id: d.partner_id.to_string(),
            exact_weight: d.exact_weight,
            weight,
            referral_type: d.referral_type,
            click_id: d.click.map(|c| c.click_id.to_string()),
            device_id: d
                .click
                .and_then(|c| c.device_id.as_ref().map(|s| s.to_string())),
            promo_code: d.promo_code.map(str::to_string),
            referring_at: d.click.map_or(t, |c| c.occurred_at),
            shared_id: d
                .click
                .and_then(|c| c.shared_id.as_ref().map(|s| s.to_string())),
            sub_ids: d
                .click
                .map(|c| c.sub_ids.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            terms: tables
                .contract(&p.program_id, d.partner_id)
                .and_then(|k| k.payout.clone()),
        })
        .collect()
}

/// Rounds weights half-even to 6 decimals; the latest takes 1 − Σ others.
fn publish_weights(decided: &[Decided]) -> Vec<Decimal> {
    let n = decided.len();
    let mut out: Vec<Decimal> = decided
        .iter()
        .take(n.saturating_sub(1))
        .map(|d| round6(d.exact_weight))
        .collect();
    let rest: Decimal = out.iter().sum();
    out.push(round6(Decimal::ONE - rest));
    out
}
