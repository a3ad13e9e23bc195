//! The processor's cross-device identity stitching (docs/design.md §6): links, moves, and — in
//! the two-stage Kafka topology — what the device stage forwards to the customer stage.
//!
//! In [`Stitching::InPlace`] (`replay`) one processor keeps links, anonymous journeys and
//! customers' journeys, and applies every record where it belongs. In [`Stitching::Forward`]
//! the processor of an input partition is the *device stage*: it keeps the links and the
//! anonymous journeys, attributes anonymous records itself, and forwards (see [`Forward`]) each
//! record that belongs to a customer, preceded at a device's first link by the device's
//! anonymous journey. The *customer stage* ([`Processor::process_forwarded`]) applies them to
//! the customers' journeys of its partition.

use super::*;

/// How a processor stitches devices to customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stitching {
    /// Every record under its own key (docs/design.md §1); identify records are not read.
    #[default]
    Off,
    /// docs/design.md §6 in one processor (`replay`).
    InPlace,
    /// docs/design.md §6 as the device stage of the Kafka topology: customers' records are
    /// forwarded, not applied.
    Forward,
}

/// What the device stage sends to the customer stage, keyed by the customer: the repartition
/// topic's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub customer: String,
    pub payload: ForwardPayload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ForwardPayload {
    /// A device's anonymous journey ([`Journey::encode`]), moved at the device's first link.
    Move(Vec<u8>),
    /// An input record that belongs to the customer, as it was read.
    Record {
        topic: InputTopic,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

/// Version byte of a forwarded record's value.
const FORWARD_VERSION: u8 = 1;

impl ForwardPayload {
    /// The repartition record's value: a version byte, a kind byte (`m` move, `c` click
    /// record, `v` conversions record), then for a record its key (a length, `u32::MAX` for
    /// none, and the bytes) and its value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ForwardPayload::Move(journey) => {
                let mut out = Vec::with_capacity(journey.len() + 2);
                out.extend_from_slice(&[FORWARD_VERSION, b'm']);
                out.extend_from_slice(journey);
                out
            }
            ForwardPayload::Record { topic, key, value } => {
                let kind = match topic {
                    InputTopic::Clicks => b'c',
                    _ => b'v',
                };
                let klen = key.as_ref().map_or(0, Vec::len);
                let mut out = Vec::with_capacity(value.len() + klen + 6);
                out.extend_from_slice(&[FORWARD_VERSION, kind]);
                match key {
                    Some(k) => {
                        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                        out.extend_from_slice(k);
                    }
                    None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                }
                out.extend_from_slice(value);
                out
            }
        }
    }

    /// Reads what [`ForwardPayload::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<ForwardPayload> {
        let &[version, kind, ref rest @ ..] = bytes else {
            anyhow::bail!("forwarded record is too short");
        };
        if version != FORWARD_VERSION {
            anyhow::bail!("forwarded record has unknown version {version}");
        }
        let topic = match kind {
            b'm' => return Ok(ForwardPayload::Move(rest.to_vec())),
            b'c' => InputTopic::Clicks,
            b'v' => InputTopic::Conversions,
            other => anyhow::bail!("forwarded record has unknown kind {other}"),
        };
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| anyhow::anyhow!("forwarded record is too short"))?;
        let (key, value) = match u32::from_le_bytes(*len) {
            u32::MAX => (None, rest),
            n if n as usize <= rest.len() => {
                let (k, v) = rest.split_at(n as usize);
                (Some(k.to_vec()), v)
            }
            _ => anyhow::bail!("forwarded record's key is cut short"),
        };
        Ok(ForwardPayload::Record {
            topic,
            key,
            value: value.to_vec(),
        })
    }
}

impl Processor {
    /// Turns cross-device identity stitching on (in place) or off (off by default).
    pub fn with_stitching(self, on: bool) -> Self {
        self.with_stitching_mode(if on {
            Stitching::InPlace
        } else {
            Stitching::Off
        })
    }

    pub fn with_stitching_mode(mut self, mode: Stitching) -> Self {
        self.mode = mode;
        self
    }

    pub fn stitching(&self) -> Stitching {
        self.mode
    }

    /// Takes the records forwarded since the last call, in the order they must reach the
    /// customer stage.
    pub fn take_forwards(&mut self) -> std::vec::Drain<'_, Forward> {
        self.forwards.drain(..)
    }

    /// Applies an event that stitching routed: its link first (moving the device's anonymous
    /// journey on a first link), then the event on the journey it belongs to — or, in the device
    /// stage, forwards it when that journey is a customer's.
    /// `rec` is the record as read (`None` when the caller decoded it itself, in place only).
    pub(super) fn apply_routed(
        &mut self,
        partition: i32,
        rec: Option<&InRecord>,
        route: Route,
        event: &Event,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        self.advance(partition, event)?;
        let t = event.occurred_at();
        if let Some((device, customer)) = route.link {
            self.link(partition, device, customer, t)?;
        }
        let linked = match route.target {
            Target::Device(d) => self.linked_customer(partition, d, t)?,
            _ => None,
        };
        let Some(journey) = route.target.journey(linked.as_deref()) else {
            return Ok(());
        };
        if let (JourneyRef::Customer(customer), Stitching::Forward, Some(rec)) =
            (journey, self.mode, rec)
        {
            self.stats.stitching.records_forwarded += 1;
            self.forwards.push(Forward {
                customer: customer.to_string(),
                payload: ForwardPayload::Record {
                    topic: rec.topic,
                    key: rec.key.map(<[u8]>::to_vec),
                    value: rec.value.unwrap_or_default().to_vec(),
                },
            });
            return Ok(());
        }
        let mut key = std::mem::take(&mut self.key_buf);
        journey.store_key(&mut key);
        let result = self.apply_to_journey(partition, &key, event, processed_at, out);
        self.key_buf = key;
        result
    }

    /// The customer stage: applies a record the device stage forwarded (`rec`: the repartition
    /// record, keyed by the customer) to the customer's journey of `rec.partition`.
    pub fn process_forwarded(
        &mut self,
        rec: &InRecord,
        forward: ForwardPayload,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        self.stats.stitching.forwarded_applied += 1;
        let customer = String::from_utf8_lossy(rec.key.unwrap_or_default()).into_owned();
        let mut key = std::mem::take(&mut self.key_buf);
        JourneyRef::Customer(&customer).store_key(&mut key);
        let result = self.apply_forwarded(rec, &key, forward, processed_at, out);
        self.key_buf = key;
        result
    }

    fn apply_forwarded(
        &mut self,
        rec: &InRecord,
        key: &[u8],
        forward: ForwardPayload,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        match forward {
            ForwardPayload::Move(bytes) => {
                let src = Journey::decode(&bytes).context("a moved journey cannot be decoded")?;
                let state = load_partition(&mut self.partitions, &*self.store, rec.partition)?;
                state.meta_dirty = true;
                let dst = journey_mut(state, &*self.store, rec.partition, key)?;
                let moved = stitching::merge(dst, src, &self.settings);
                self.count_move(moved);
                Ok(())
            }
            ForwardPayload::Record {
                topic,
                key: original_key,
                value,
            } => {
                let original = InRecord {
                    topic,
                    key: original_key.as_deref(),
                    value: Some(&value),
                    ..*rec
                };
                let event = match decode_event(&original, &self.limits, self.avro.as_deref()) {
                    Ok(e) => e,
                    Err(e) => {
                        out.push(OutRecord::Dlq(Box::new(dlq(&original, e))));
                        return Ok(());
                    }
                };
                self.advance(rec.partition, &event)?;
                self.apply_to_journey(rec.partition, key, &event, processed_at, out)
            }
        }
    }

    /// Links `device` to `customer` unless it is linked already (the first link stands; another
    /// customer is a conflict). A first link moves the device's anonymous journey into the
    /// customer's (in place), or forwards it to the customer stage.
    fn link(&mut self, partition: i32, device: &[u8], customer: &str, t: Millis) -> Result<()> {
        let slot = self.link_of(partition, device)?;
        if let Some(l) = &mut slot.link {
            let conflict = l.customer_id != customer;
            if !conflict && l.needs_touch(t) {
                l.seen_at = t;
                slot.dirty = true;
            }
            if conflict {
                self.stats.stitching.link_conflicts += 1;
            }
            return Ok(());
        }
        slot.link = Some(Link {
            customer_id: customer.into(),
            seen_at: t,
        });
        slot.dirty = true;
        self.stats.stitching.links_created += 1;
        let state = load_partition(&mut self.partitions, &*self.store, partition)?;
        let src = std::mem::take(journey_mut(state, &*self.store, partition, device)?);
        if src.is_empty() {
            return Ok(());
        }
        if self.mode == Stitching::Forward {
            self.stats.stitching.records_forwarded += 1;
            self.forwards.push(Forward {
                customer: customer.to_string(),
                payload: ForwardPayload::Move(src.encode()),
            });
            return Ok(());
        }
        let mut key = std::mem::take(&mut self.key_buf);
        JourneyRef::Customer(customer).store_key(&mut key);
        let dst = journey_mut(state, &*self.store, partition, &key);
        self.key_buf = key;
        let moved = stitching::merge(dst?, src, &self.settings);
        self.count_move(moved);
        Ok(())
    }

    fn count_move(&mut self, moved: stitching::Moved) {
        let s = &mut self.stats.stitching;
        s.journeys_moved += 1;
        s.clicks_moved += moved.clicks as u64;
        s.clicks_dropped_in_moves += moved.clicks_dropped as u64;
        s.orders_dropped_in_moves += moved.orders_dropped as u64;
        self.stats.clicks_dropped_by_limit += moved.clicks_dropped_by_limit as u64;
    }

    /// The customer `device` is linked to, if any (a record at `t` routed through the link
    /// keeps it alive).
    fn linked_customer(
        &mut self,
        partition: i32,
        device: &[u8],
        t: Millis,
    ) -> Result<Option<crate::model::records::Id>> {
        let slot = self.link_of(partition, device)?;
        Ok(slot.link.as_mut().map(|l| {
            if l.needs_touch(t) {
                l.seen_at = t;
                slot.dirty = true;
            }
            l.customer_id.clone()
        }))
    }
}

impl Processor {
    /// A device's link, from the cache or else the store; a link retention has forgotten reads
    /// as none (and is deleted). How long links are kept is worked out only for a device that
    /// has one: most records are anonymous devices' without.
    fn link_of(&mut self, partition: i32, device: &[u8]) -> Result<&mut LinkSlot> {
        let state = load_partition(&mut self.partitions, &*self.store, partition)?;
        if !state.links.contains_key(device) {
            let key = &mut self.link_buf;
            identity::link_key(device, key);
            let link = match self.store.get(partition, key)? {
                Some(bytes) => Some(Link::decode(&bytes).context("stored link cannot be decoded")?),
                None => None,
            };
            let slot = LinkSlot { link, dirty: false };
            state.links.insert(CacheKey::from_slice(device), slot);
        }
        let stream_time = state.meta.stream_time;
        let slot = state.links.get_mut(device).expect("just inserted");
        if let Some(l) = &slot.link {
            let keep = stitching::link_keep_ms(&self.tables, &self.settings);
            if l.expired(stream_time, keep) {
                slot.link = None;
                slot.dirty = true;
            }
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_payloads_round_trip() {
        for p in [
            ForwardPayload::Move(vec![1, 2, 3]),
            ForwardPayload::Record {
                topic: InputTopic::Clicks,
                key: Some(b"d-1".to_vec()),
                value: b"{}".to_vec(),
            },
            ForwardPayload::Record {
                topic: InputTopic::Conversions,
                key: None,
                value: Vec::new(),
            },
        ] {
            assert_eq!(ForwardPayload::decode(&p.encode()).unwrap(), p);
        }
        assert!(ForwardPayload::decode(b"").is_err());
        assert!(ForwardPayload::decode(b"\x02m").is_err());
        assert!(ForwardPayload::decode(b"\x01c\x09\x00\x00\x00ab").is_err());
    }
}
