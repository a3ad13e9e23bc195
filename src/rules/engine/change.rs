//! Rule 9: modifications and reversals of a credited order.

use super::Clock;
use super::action::emit;
use crate::model::journey::{Journey, StoredOrder};
use crate::model::output::{Change, InvalidAction, Output, Reason};
use crate::model::records::{Modification, Reversal};
use crate::model::time::Millis;

/// The order a modification or reversal points at.
pub(super) struct OrderRef<'a> {
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
pub(super) fn change_order(
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
