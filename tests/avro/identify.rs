//! Identify records in Avro.

use super::*;
use crate::flood::valid_record;

/// Identify records (docs/design.md §6) in Avro: `schemas/identify.avsc`, single-object
/// encoded, link a device with stitching on; a record of another schema on the identities
/// topic goes to the DLQ; with stitching off the topic is not read at all.
#[test]
fn identify_records_in_avro_link_devices() {
    let base = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let (key, json) = valid_record(InputTopic::Identities, 8, base);
    let bytes = single_object("identify", &json);
    for stitching in [true, false] {
        let mut p = processor()
            .with_avro(Arc::new(input()))
            .with_stitching(stitching);
        let mut out = Vec::new();
        p.process(
            &rec(
                InputTopic::Identities,
                Some(key.as_bytes()),
                Some(&bytes),
                0,
            ),
            base,
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            p.stats.stitching.links_created,
            u64::from(stitching),
            "stitching {stitching}"
        );
        let (_, click) = valid_record(InputTopic::Clicks, 8, base);
        let wrong = single_object("click", &click);
        p.process(
            &rec(
                InputTopic::Identities,
                Some(key.as_bytes()),
                Some(&wrong),
                1,
            ),
            base,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), usize::from(stitching), "{out:?}");
    }
}
