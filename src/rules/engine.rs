//! The attribution rules of docs/design.md §3, as one pure function of (journey, tables, record, time).
//!
//! No IO and no clock: the caller passes the processing time (`processed_at`, which appears only
//! on the output) and the partition's stream time. `replay`, the Kafka pipeline and the tests
//! all call [`apply`]; nothing else decides credit.

use crate::model::journey::{CreditedOrder, Journey, StoredClick, StoredCredit, StoredOrder};
use crate::model::money::round6;
use crate::model::output::{
    Action, Change, Credit, InvalidAction, JourneyView, Output, Reason, ReferralType, State,
    Touchpoint, action_id,
};
use crate::model::records::{
    Click, Conversion, CreditGroup, CreditPolicy, Event, Modification, ProgramKind, PromoPolicy,
    Reversal, Scope,
};
use crate::model::tables::{Program, PromoAssignment, Tables};
use crate::model::time::{Millis, days_to_ms};
use crate::rules::payout;
use rust_decimal::Decimal;

pub use crate::model::tables::{DEFAULT_LOCKING_DAYS, DEFAULT_WINDOW_DAYS};
/// At most this many touchpoints are listed on an action: the first and the 49 latest.
pub const MAX_TOUCHPOINTS: usize = 50;

/// Engine settings that are not part of the tables.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// Most clicks kept per journey; the oldest are dropped first.
    pub max_clicks_per_journey: usize,
    /// Kept beyond the longest window (clicks) and beyond locking (orders), for late records.
    pub retention_margin_ms: Millis,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_clicks_per_journey: 1000,
            retention_margin_ms: days_to_ms(30),
        }
    }
}

/// The time inputs of one step.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock processing time, written as `processed_at` only.
    pub processed_at: Millis,
    /// The partition's stream time, including the record being applied.
    pub stream_time: Millis,
}

/// What a step did besides its outputs, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    pub clicks_dropped_by_limit: usize,
    pub clicks_expired: usize,
    pub duplicate_clicks: usize,
}

/// Applies one journey event; pushes its outputs to `out`.
pub fn apply(
    journey: &mut Journey,
    tables: &Tables,
    settings: &EngineSettings,
    event: &Event,
    clock: Clock,
    out: &mut Vec<Output>,
) -> Effects {
    let mut fx = Effects::default();
    fx.clicks_expired = journey.expire(clock.stream_time, click_keep_ms(tables, settings));
    match event {
        Event::Click(c) => add_click(journey, c, settings, &mut fx),
        Event::Conversion(c) => attribute(journey, tables, settings, c, clock, out),
        Event::Modification(m) => change_order(journey, m.into(), Some(m), clock, out),
        Event::Reversal(r) => change_order(journey, r.into(), None, clock, out),
        // A link changes no journey by itself (rules::stitching applies it).
        Event::Identify(_) => {}
    }
    fx
}

/// How long clicks are kept behind stream time: the longest window plus the margin; `None`
/// (keep all) while no program is configured.
pub fn click_keep_ms(tables: &Tables, settings: &EngineSettings) -> Option<Millis> {
    if tables.programs.is_empty() {
        return None;
    }
    Some(days_to_ms(tables.max_window_days()).saturating_add(settings.retention_margin_ms))
}

fn add_click(j: &mut Journey, c: &Click, settings: &EngineSettings, fx: &mut Effects) {
    if j.clicks.iter().any(|k| k.click_id == c.click_id) {
        fx.duplicate_clicks += 1;
        return;
    }
    let seq = j.next_seq;
    j.next_seq += 1;
    // Later records sort after earlier ones at the same time.
    let at = j.clicks.partition_point(|k| k.occurred_at <= c.occurred_at);
    j.insert_click(
        at,
        StoredClick {
            click_id: c.click_id.clone(),
            device_id: c.device_id.clone(),
            program_id: c.program_id.clone(),
            partner_id: c.partner_id.clone(),
            occurred_at: c.occurred_at,
            seq,
            shared_id: c.shared_id.clone(),
            sub_ids: c.sub_ids.iter().cloned().collect(),
        },
    );
    if j.clicks.len() > settings.max_clicks_per_journey {
        let n = j.clicks.len() - settings.max_clicks_per_journey;
        j.clicks.drain(..n);
        fx.clicks_dropped_by_limit += n;
    }
}

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

fn attribute(
    j: &mut Journey,
    tables: &Tables,
    settings: &EngineSettings,
    x: &Conversion,
    clock: Clock,
    out: &mut Vec<Output>,
) {
    let t = x.occurred_at;
    let invalid = |reason: Reason, detail: String| {
        Output::Invalid(Box::new(InvalidAction {
            kind: "invalid_action",
            program_id: x.program_id.clone(),
            event_type: x.event_type.clone(),
            order_id: x.order_id.clone(),
            occurred_at: t,
            device_id: x.device_id.clone(),
            customer_id: x.customer_id.clone(),
            promo_code: x.promo_code.clone(),
            reason,
            detail: Some(detail),
            test: x.test,
        }))
    };
    // Rule 7: an unknown program leaves no trace.
    let Some(p) = tables.programs.get(&x.program_id) else {
        out.push(invalid(
            Reason::UnknownProgram,
            format!("no program config for `{}`", x.program_id),
        ));
        return;
    };
    // Rule 8: duplicates leave the earlier outcome untouched.
    if j.order(&x.program_id, &x.event_type, &x.order_id).is_some() {
        out.push(invalid(
            Reason::DuplicateOrder,
            "an earlier conversion has the same order".into(),
        ));
        return;
    }
    let applies = |partner: &str| {
        tables
            .contract(&p.program_id, partner)
            .filter(|c| c.applies(t, &x.event_type))
    };

    // Rule 1: eligible clicks, and the journey's touchpoints.
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

    // Rule 2: one participation per partner; its standing click is the nearest to T
    // (first_click: the earliest). Clicks are sorted oldest first, ties by arrival.
    let first = p.credit_policy == CreditPolicy::FirstClick;
    let mut parts: Vec<Participation> = Vec::new();
    for c in &eligible {
        match parts
            .iter_mut()
            .find(|q| q.click.partner_id == c.partner_id)
        {
            Some(q) if !first => q.click = c,
            Some(_) => {}
            None => {
                let group = applies(&c.partner_id)
                    .map(|k| k.credit_group)
                    .unwrap_or_default();
                parts.push(Participation { click: c, group });
            }
        }
    }
    parts.sort_by_key(|q| (q.click.occurred_at, q.click.seq));
    // Rule 3: only the highest credit group present competes.
    let top = parts.iter().map(|q| q.group).max();

    // Rule 4: the promo code.
    let code = match &x.promo_code {
        None => Code::None,
        Some(code) => match tables
            .promo(&p.program_id, &code.to_ascii_uppercase())
            .filter(|a| a.valid_at(t))
        {
            None => Code::NotAssigned,
            Some(a) => match applies(&a.partner_id) {
                None => Code::PartnerNotActive,
                Some(k) => Code::Valid {
                    assignment: a,
                    group: k.credit_group,
                },
            },
        },
    };
    let promo_credit = match &code {
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
    };

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
        let competing: Vec<&StoredClick> = parts
            .iter()
            .filter(|q| Some(q.group) == top)
            .map(|q| q.click)
            .collect();
        let weights = payout::policy_weights(p, t, &competing);
        let winner_code = match &code {
            Code::Valid { assignment: a, .. } if a.credit_policy == PromoPolicy::IfWinner => {
                Some(a)
            }
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
    };

    let locking_at = t.saturating_add(days_to_ms(p.locking_days));
    let expires_at = locking_at.saturating_add(settings.retention_margin_ms);
    let mut order = StoredOrder {
        program_id: x.program_id.clone(),
        event_type: x.event_type.clone(),
        order_id: x.order_id.clone(),
        occurred_at: t,
        device_id: x.device_id.clone(),
        customer_id: x.customer_id.clone(),
        promo_code: x.promo_code.clone(),
        test: x.test,
        expires_at,
        credited: None,
    };

    if decided.is_empty() {
        // Rule 7: the first reason that applies.
        let (reason, detail) = match &code {
            Code::NotAssigned => (Reason::PromoCodeNotAssigned, "the promo code has no assignment valid at the conversion's time".to_string()),
            Code::PartnerNotActive => (Reason::PartnerNotActive, "the promo code's partner has no contract active at the conversion's time covering its event type".to_string()),
            _ if !any_program => (Reason::NoValidReferrer, "the journey has no click for this program".to_string()),
            _ if !any_time => (Reason::OutsideReferralWindow, "no click inside the referral window and minimum click-to-conversion time".to_string()),
            _ if !any_active => (Reason::PartnerNotActive, "no clicked partner has a contract active at the conversion's time".to_string()),
            _ => (Reason::EventTypeNotInContract, format!("no active contract covers event type `{}`", x.event_type)),
        };
        out.push(invalid(reason, detail));
        j.push_order(order);
        return;
    }

    let total = touch.len() as u32;
    let touchpoints: Vec<Touchpoint> = if touch.len() <= MAX_TOUCHPOINTS {
        touch.iter().map(|c| c.touchpoint()).collect()
    } else {
        std::iter::once(touch[0])
            .chain(touch[touch.len() - (MAX_TOUCHPOINTS - 1)..].iter().copied())
            .map(|c| c.touchpoint())
            .collect()
    };
    let credits: Vec<StoredCredit> = publish_weights(&decided)
        .into_iter()
        .zip(&decided)
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
        .collect();
    let mut credited = CreditedOrder {
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
    };
    let action = emit(&order, &mut credited, Change::Created, clock.processed_at);
    out.push(Output::Action(Box::new(action)));
    order.credited = Some(Box::new(credited));
    j.push_order(order);
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

/// Computes amounts and payouts of a credited order and the action that publishes them.
fn emit(
    order: &StoredOrder,
    c: &mut CreditedOrder,
    change: Change,
    processed_at: Millis,
) -> Action {
    let reversed = change == Change::Reversed;
    let (amount, credit_payouts, payout) = if reversed {
        (
            round6(Decimal::ZERO),
            vec![round6(Decimal::ZERO); c.credits.len()],
            round6(Decimal::ZERO),
        )
    } else {
        let bases = payout::item_bases(&c.items, c.order_discount);
        let exact: Vec<Decimal> = c
            .credits
            .iter()
            .map(|k| {
                k.exact_weight
                    * payout::contract_total(
                        k.terms.as_ref(),
                        &c.items,
                        &bases.bases,
                        c.customer_status,
                    )
            })
            .collect();
        let payout = round6(exact.iter().sum());
        let n = exact.len();
        let mut rounded: Vec<Decimal> = exact
            .iter()
            .take(n.saturating_sub(1))
            .map(|e| round6(*e))
            .collect();
        let rest: Decimal = rounded.iter().sum();
        rounded.push(round6(payout - rest));
        (round6(bases.amount), rounded, payout)
    };
    let (delta_amount, delta_payout) = match change {
        Change::Created => (amount, payout),
        _ => (round6(amount - c.amount), round6(payout - c.payout)),
    };
    c.amount = amount;
    c.payout = payout;
    c.reversed = reversed;
    Action {
        kind: "action",
        action_id: action_id(&order.program_id, &order.event_type, &order.order_id),
        change,
        state: if reversed {
            State::Reversed
        } else {
            State::Pending
        },
        program_id: order.program_id.clone(),
        event_type: order.event_type.clone(),
        order_id: order.order_id.clone(),
        occurred_at: order.occurred_at,
        processed_at,
        device_id: order.device_id.clone(),
        customer_id: order.customer_id.clone(),
        customer_status: c.customer_status,
        currency: c.currency.clone(),
        amount,
        delta_amount,
        payout,
        delta_payout,
        credits: c
            .credits
            .iter()
            .zip(credit_payouts)
            .map(|(k, payout)| Credit {
                partner_id: k.partner_id.clone(),
                weight: k.weight,
                payout,
                referral_type: k.referral_type,
                click_id: k.click_id.clone(),
                device_id: k.device_id.clone(),
                promo_code: k.promo_code.clone(),
                referring_at: k.referring_at,
                shared_id: k.shared_id.clone(),
                sub_ids: k.sub_ids.clone(),
            })
            .collect(),
        journey: JourneyView {
            touchpoints: c.touchpoints.clone(),
            total: c.touchpoints_total,
        },
        promo_code: order.promo_code.clone(),
        click_id: c.click_id.clone(),
        locking_at: c.locking_at,
        test: order.test,
    }
}

/// The order a modification or reversal points at.
struct OrderRef<'a> {
    device_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    program_id: &'a str,
    event_type: &'a str,
    order_id: &'a str,
    occurred_at: Millis,
}

impl<'a> From<&'a Modification> for OrderRef<'a> {
    fn from(m: &'a Modification) -> Self {
        OrderRef {
            device_id: m.device_id.as_deref(),
            customer_id: m.customer_id.as_deref(),
            program_id: &m.program_id,
            event_type: &m.event_type,
            order_id: &m.order_id,
            occurred_at: m.occurred_at,
        }
    }
}

impl<'a> From<&'a Reversal> for OrderRef<'a> {
    fn from(r: &'a Reversal) -> Self {
        OrderRef {
            device_id: r.device_id.as_deref(),
            customer_id: r.customer_id.as_deref(),
            program_id: &r.program_id,
            event_type: &r.event_type,
            order_id: &r.order_id,
            occurred_at: r.occurred_at,
        }
    }
}

/// Rule 9: modifications (`m` is Some) and reversals of a credited order.
fn change_order(
    j: &mut Journey,
    r: OrderRef,
    m: Option<&Modification>,
    clock: Clock,
    out: &mut Vec<Output>,
) {
    let order = j.order_mut(r.program_id, r.event_type, r.order_id);
    let invalid = |order: Option<&StoredOrder>, reason: Reason, detail: &str| {
        Output::Invalid(Box::new(InvalidAction {
            kind: "invalid_action",
            program_id: r.program_id.to_string(),
            event_type: r.event_type.to_string(),
            order_id: r.order_id.to_string(),
            occurred_at: r.occurred_at,
            // The stored order's fields where there is one, else the change's own.
            device_id: order.map_or(r.device_id.map(str::to_string), |o| o.device_id.clone()),
            customer_id: order.map_or(r.customer_id.map(str::to_string), |o| o.customer_id.clone()),
            promo_code: order.and_then(|o| o.promo_code.clone()),
            reason,
            detail: Some(detail.to_string()),
            test: order.is_some_and(|o| o.test),
        }))
    };
    let Some(order) = order else {
        out.push(invalid(
            None,
            Reason::UnknownOrder,
            "no credited order with this id in the journey",
        ));
        return;
    };
    let Some(mut credited) = order.credited.take() else {
        out.push(invalid(
            Some(order),
            Reason::UnknownOrder,
            "the order earned nobody credit",
        ));
        return;
    };
    let verdict = if credited.reversed {
        Some((Reason::AlreadyReversed, "the action is already reversed"))
    } else if r.occurred_at >= credited.locking_at {
        Some((
            Reason::ActionLocked,
            "the change occurred at or after the action's locking time",
        ))
    } else {
        None
    };
    if let Some((reason, detail)) = verdict {
        out.push(invalid(Some(order), reason, detail));
        order.credited = Some(credited);
        return;
    }
    let change = match m {
        Some(m) => {
            for (sku, q) in &m.items {
                if let Some(item) = credited
                    .items
                    .iter_mut()
                    .find(|i| i.sku.as_deref() == Some(sku.as_str()))
                {
                    item.quantity = *q;
                }
            }
            if let (true, Some(sub)) = (credited.itemless, m.order_subtotal) {
                credited.items[0].unit_price = sub;
            }
            Change::Modified
        }
        None => Change::Reversed,
    };
    let action = emit(order, &mut credited, change, clock.processed_at);
    order.credited = Some(credited);
    out.push(Output::Action(Box::new(action)));
}
