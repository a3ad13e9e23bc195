//! The action that publishes a credited order: amounts, payouts and deltas.

use crate::model::journey::{CreditedOrder, StoredOrder};
use crate::model::money::round6;
use crate::model::output::{Action, Change, Credit, JourneyView, State, action_id};
use crate::model::time::Millis;
use crate::rules::payout;
use rust_decimal::Decimal;

/// Computes amounts and payouts of a credited order and the action that publishes them.
pub(super) fn emit(
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
