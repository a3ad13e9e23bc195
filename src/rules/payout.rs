//! The arithmetic of rules 5 and 6: credit-policy weights, item bases and contract payouts.
//! Exact decimals throughout; rounding happens only where the engine publishes a value.

use crate::model::journey::StoredClick;
use crate::model::records::{CreditPolicy, CustomerStatus, Item};
use crate::model::tables::{Payout, Program, Rate, When};
use crate::model::time::{DAY_MS, Millis};
use rust_decimal::prelude::*;

/// Exact weights of the competing participations (ordered by their standing click's time).
/// `None` = not credited (last_click and first_click list only the winner).
pub fn policy_weights(p: &Program, t: Millis, competing: &[&StoredClick]) -> Vec<Option<Decimal>> {
    let n = competing.len();
    if n == 0 {
        return Vec::new();
    }
    let mut w = vec![None; n];
    match p.credit_policy {
        CreditPolicy::LastClick => w[n - 1] = Some(Decimal::ONE),
        CreditPolicy::FirstClick => w[0] = Some(Decimal::ONE),
        CreditPolicy::Linear => {
            let each = Decimal::ONE / Decimal::from(n);
            w.iter_mut().for_each(|x| *x = Some(each));
        }
        CreditPolicy::PositionBased => match n {
            1 => w[0] = Some(Decimal::ONE),
            2 => {
                w[0] = Some(Decimal::new(5, 1));
                w[1] = Some(Decimal::new(5, 1));
            }
            _ => {
                let middle = Decimal::new(2, 1) / Decimal::from(n - 2);
                w.iter_mut().for_each(|x| *x = Some(middle));
                w[0] = Some(Decimal::new(4, 1));
                w[n - 1] = Some(Decimal::new(4, 1));
            }
        },
        CreditPolicy::TimeDecay => {
            let raw: Vec<Decimal> = competing
                .iter()
                .map(|c| decay(t - c.occurred_at, p.time_decay_half_life_days))
                .collect();
            let sum: Decimal = raw.iter().sum();
            for (x, r) in w.iter_mut().zip(raw) {
                *x = Some(if sum.is_zero() {
                    Decimal::ONE / Decimal::from(n)
                } else {
                    r / sum
                });
            }
        }
    }
    w
}

/// 2^(−age/half-life), exact to the precision of `Decimal` (28 digits).
fn decay(age_ms: Millis, half_life_days: Decimal) -> Decimal {
    let half_life_ms = half_life_days * Decimal::from(DAY_MS);
    let exponent = Decimal::from(age_ms) / half_life_ms; // halvings
    // 2^-e = 2^-floor(e) · 2^-frac(e); the integer part is exact, the fraction via exp/ln.
    let whole = exponent.trunc();
    let frac = exponent - whole;
    if whole > Decimal::from(90) {
        return Decimal::ZERO;
    }
    let mut v = (-(frac * Decimal::TWO.ln())).exp();
    let halvings = whole.to_u32().unwrap_or(0);
    for _ in 0..halvings {
        v /= Decimal::TWO;
    }
    v
}

/// Item bases (quantity × unit price less the item's share of the discount) and their sum.
pub struct Bases {
    pub bases: Vec<Decimal>,
    pub amount: Decimal,
}

/// Shares the order's discount over the items in proportion to their amounts, never more than
/// their total.
pub fn item_bases(items: &[Item], order_discount: Decimal) -> Bases {
    let amounts: Vec<Decimal> = items.iter().map(|i| i.quantity * i.unit_price).collect();
    let total: Decimal = amounts.iter().sum();
    let discount = order_discount.min(total);
    if discount.is_zero() || total.is_zero() {
        return Bases {
            amount: total,
            bases: amounts,
        };
    }
    let bases = amounts.iter().map(|a| a - discount * a / total).collect();
    Bases {
        bases,
        amount: total - discount,
    }
}

fn matches(when: &When, item: &Item, status: CustomerStatus) -> bool {
    when.customer_status.is_none_or(|s| s == status)
        && when
            .categories
            .as_ref()
            .is_none_or(|cs| item.category.as_ref().is_some_and(|c| cs.contains(c)))
        && when
            .skus
            .as_ref()
            .is_none_or(|ss| item.sku.as_ref().is_some_and(|s| ss.contains(s)))
}

/// A contract's exact payout for the order: percent rates per item base, fixed rates once per
/// group (or the default) that at least one item took.
pub fn contract_total(
    terms: Option<&Payout>,
    items: &[Item],
    bases: &[Decimal],
    status: CustomerStatus,
) -> Decimal {
    let Some(terms) = terms else {
        return Decimal::ZERO;
    };
    let n = terms.groups.len();
    let mut fixed_taken = vec![false; n + 1];
    let mut total = Decimal::ZERO;
    for (item, base) in items.iter().zip(bases) {
        if item.quantity.is_zero() {
            continue;
        }
        let taken = terms
            .groups
            .iter()
            .position(|g| matches(&g.when, item, status))
            .map(|i| (i, terms.groups[i].rate))
            .or(terms.default.map(|r| (n, r)));
        match taken {
            Some((_, Rate::Percent(pct))) => total += pct * base / Decimal::ONE_HUNDRED,
            Some((i, Rate::Fixed(_))) => fixed_taken[i] = true,
            None => {}
        }
    }
    for (i, taken) in fixed_taken.iter().enumerate() {
        if !taken {
            continue;
        }
        let rate = if i == n {
            terms.default
        } else {
            Some(terms.groups[i].rate)
        };
        if let Some(Rate::Fixed(f)) = rate {
            total += f;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tables::PayoutGroup;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn item(sku: &str, cat: &str, q: &str, p: &str) -> Item {
        Item {
            sku: Some(sku.into()),
            category: Some(cat.into()),
            quantity: d(q),
            unit_price: d(p),
        }
    }

    #[test]
    fn discount_is_shared_by_amount() {
        let items = [item("A", "shoes", "2", "30"), item("B", "hats", "1", "20")];
        let b = item_bases(&items, d("8"));
        assert_eq!(b.amount, d("72"));
        assert_eq!(b.bases, vec![d("54"), d("18")]);
    }

    #[test]
    fn fixed_rates_pay_once_per_group_taken() {
        let items = [
            item("A", "shoes", "2", "30"),
            item("B", "shoes", "1", "20"),
            item("C", "hats", "1", "10"),
        ];
        let terms = Payout {
            default: Some(Rate::Percent(d("10"))),
            groups: vec![PayoutGroup {
                when: When {
                    customer_status: Some(CustomerStatus::New),
                    categories: Some(vec!["shoes".into()]),
                    skus: None,
                },
                rate: Rate::Fixed(d("5.00")),
            }],
        };
        let b = item_bases(&items, Decimal::ZERO);
        assert_eq!(
            contract_total(Some(&terms), &items, &b.bases, CustomerStatus::New),
            d("6")
        );
        assert_eq!(
            contract_total(Some(&terms), &items, &b.bases, CustomerStatus::Returning),
            d("9")
        );
        assert_eq!(
            contract_total(None, &items, &b.bases, CustomerStatus::New),
            Decimal::ZERO
        );
    }

    #[test]
    fn time_decay_halves_per_half_life() {
        assert_eq!(decay(0, d("7")), Decimal::ONE);
        assert_eq!(
            crate::model::money::round6(decay(7 * DAY_MS, d("7"))),
            d("0.5")
        );
        assert_eq!(
            crate::model::money::round6(decay(14 * DAY_MS, d("7"))),
            d("0.25")
        );
        assert!(
            (decay(DAY_MS * 7 / 2, d("7")) - d("0.70710678118654752440")).abs()
                < d("0.000000000001")
        );
    }
}
