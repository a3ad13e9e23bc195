use super::*;

/// Compact ids (and inline sub ids) encode as plain strings and vectors: journeys stored
/// before ids were compact still decode (version 1, without `device_id`), and a stored click
/// of this version encodes to the same bytes as its plain form.
#[test]
fn stored_clicks_keep_their_encoding() {
    #[derive(Serialize)]
    struct PlainClickV1 {
        click_id: String,
        program_id: String,
        partner_id: String,
        occurred_at: Millis,
        seq: u64,
        shared_id: Option<String>,
        sub_ids: Vec<String>,
    }
    #[derive(Serialize)]
    struct PlainClick {
        click_id: String,
        device_id: Option<String>,
        program_id: String,
        partner_id: String,
        occurred_at: Millis,
        seq: u64,
        shared_id: Option<String>,
        sub_ids: Vec<String>,
    }
    let long = "a-sub-id-longer-than-twenty-four-bytes".to_string();
    for sub_ids in [vec![], vec!["s1".to_string()], vec!["s1".to_string(), long]] {
        let plain = PlainClickV1 {
            click_id: "c-1".into(),
            program_id: "shoes".into(),
            partner_id: "a-partner-id-longer-than-twenty-four".into(),
            occurred_at: 1_790_812_800_000,
            seq: 3,
            shared_id: Some("post-1".into()),
            sub_ids: sub_ids.clone(),
        };
        let bytes = bincode::serialize(&plain).unwrap();
        let stored: v1::StoredClick = bincode::deserialize(&bytes).unwrap();
        assert_eq!(stored.sub_ids.len(), sub_ids.len());
        assert_eq!(stored.partner_id, plain.partner_id);

        for device_id in [None, Some("d-1".to_string())] {
            let plain = PlainClick {
                click_id: plain.click_id.clone(),
                device_id,
                program_id: plain.program_id.clone(),
                partner_id: plain.partner_id.clone(),
                occurred_at: plain.occurred_at,
                seq: plain.seq,
                shared_id: plain.shared_id.clone(),
                sub_ids: sub_ids.clone(),
            };
            let bytes = bincode::serialize(&plain).unwrap();
            let stored: StoredClick = bincode::deserialize(&bytes).unwrap();
            assert_eq!(stored.sub_ids.len(), sub_ids.len());
            assert_eq!(stored.device_id.as_deref(), plain.device_id.as_deref());
            assert_eq!(bincode::serialize(&stored).unwrap(), bytes);
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `tests/data/journey.v1.hex` was written by the version before `device_id` was kept (two
/// clicks, c-1 on d-1 and c-2 on d-2; o-1 credited to both, o-2 to a promo code, o-3 not
/// credited; an expiry mark). It still decodes, with the clicks', credits' and touchpoints'
/// `device_id` `None`, and encodes again in this version's form.
#[test]
fn journeys_stored_by_version_1_still_decode() {
    let bytes = unhex(include_str!("../../../tests/data/journey.v1.hex"));
    assert_ne!(bytes[..8], HEADER);
    let j = Journey::decode(&bytes).unwrap();
    let clicks: Vec<_> = j
        .clicks
        .iter()
        .map(|c| {
            (
                c.click_id.as_str(),
                c.partner_id.as_str(),
                c.device_id.clone(),
                c.seq,
                c.shared_id.as_deref(),
                c.sub_ids.to_vec(),
            )
        })
        .collect();
    assert_eq!(
        clicks,
        [
            (
                "c-1",
                "pa1",
                None,
                0,
                Some("post-1"),
                vec!["a".into(), "b".into()]
            ),
            ("c-2", "pa2", None, 1, None, vec![]),
        ]
    );
    assert_eq!(j.next_seq, 2);
    assert_eq!(j.expired.len(), 1);
    assert_eq!(j.expired[0].program_id, "p0");
    let orders: Vec<_> = j.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(orders, ["o-1", "o-2", "o-3"]);
    assert_eq!(j.orders[0].device_id.as_deref(), Some("d-1"));
    assert_eq!(j.orders[0].customer_id.as_deref(), Some("cu-1"));
    assert!(j.orders[2].credited.is_none());

    let o1 = j.orders[0].credited.as_ref().unwrap();
    let credits: Vec<_> = o1
        .credits
        .iter()
        .map(|k| {
            (
                k.partner_id.as_str(),
                k.click_id.as_deref(),
                k.device_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        credits,
        [("pa1", Some("c-1"), None), ("pa2", Some("c-2"), None)]
    );
    assert_eq!(o1.credits[0].weight.to_string(), "0.500000");
    assert_eq!(o1.credits[0].sub_ids, ["a", "b"]);
    assert!(o1.credits.iter().all(|k| k.terms.is_some()));
    assert_eq!(o1.touchpoints.len(), 2);
    assert_eq!(o1.touchpoints_total, 2);
    assert!(o1.touchpoints.iter().all(|t| t.device_id.is_none()));
    assert_eq!(o1.touchpoints[1].click_id, "c-2");
    assert_eq!(o1.payout.to_string(), "6.250000");
    let o2 = j.orders[1].credited.as_ref().unwrap();
    assert_eq!(o2.credits.len(), 1);
    assert_eq!(o2.credits[0].referral_type, ReferralType::PromoCode);
    assert_eq!(o2.credits[0].promo_code.as_deref(), Some("save10"));
    assert_eq!(o2.credits[0].device_id, None);

    let again = j.encode();
    assert_eq!(again[..8], HEADER);
    assert_eq!(Journey::decode(&again).unwrap(), j);
}

/// A journey of this version keeps the `device_id`s through encode and decode.
#[test]
fn device_ids_survive_encoding() {
    let click = StoredClick {
        click_id: "c-1".into(),
        device_id: Some("d-1".into()),
        program_id: "p1".into(),
        partner_id: "pa1".into(),
        occurred_at: 1_790_812_800_000,
        seq: 0,
        shared_id: None,
        sub_ids: SubIds::new(),
    };
    let j = Journey {
        clicks: vec![
            click.clone(),
            StoredClick {
                click_id: "c-2".into(),
                device_id: None,
                seq: 1,
                ..click.clone()
            },
        ],
        orders: Vec::new(),
        next_seq: 2,
        expired: Vec::new(),
    };
    let back = Journey::decode(&j.encode()).unwrap();
    assert_eq!(back, j);
    assert_eq!(back.clicks[0].device_id.as_deref(), Some("d-1"));
    assert_eq!(
        back.clicks[0].touchpoint().device_id.as_deref(),
        Some("d-1")
    );
    assert_eq!(back.clicks[1].touchpoint().device_id, None);
    assert!(
        Journey::decode(&Journey::default().encode())
            .unwrap()
            .is_empty()
    );
}
