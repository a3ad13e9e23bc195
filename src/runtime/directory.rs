//! Which instance owns which partition, for `GET /journeys/{key}` on any instance.
//!
//! Kafka Streams puts each instance's `application.server` in its group subscription; librdkafka
//! has no hook for that, so an instance with the journeys API on appends its advertised URL to
//! its group consumer's `client.id` (`attrib-pod-0@http://10.0.0.5:9464`). Any instance can
//! then describe the group (`DescribeGroups`) and read, for each member, its URL and its
//! assignment: the directory of owners. A lookup that misses locally asks the other owners.

use super::clients::{LogContext, reader_config};
use crate::ops::settings::Settings;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a described group is reused before it is described again.
const CACHE_FOR: Duration = Duration::from_secs(2);

/// The separator between a group consumer's client id and its advertised URL.
const URL_MARK: &str = "@http";

/// The base URL other instances reach this one at: `journeys_api.advertised_url`, else
/// `http_addr` when it names one address, else the host name with `http_addr`'s port.
pub fn advertised_url(s: &Settings) -> String {
    if let Some(u) = &s.journeys_api.advertised_url {
        return u.trim_end_matches('/').to_string();
    }
    if s.http_addr.ip().is_unspecified() {
        let host = crate::ops::settings::host_name().unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{}", s.http_addr.port())
    } else {
        format!("http://{}", s.http_addr)
    }
}

/// The group consumer's `client.id` with the advertised URL appended.
pub fn client_id_with_url(client_id: &str, url: &str) -> String {
    format!("{client_id}@{url}")
}

/// The advertised URL in a group member's client id, if it has one.
pub fn url_of_client_id(client_id: &str) -> Option<&str> {
    let at = client_id.rfind(URL_MARK)?;
    Some(&client_id[at + 1..])
}

/// One group member: its advertised URL and the partitions of the first input topic it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub url: String,
    pub partitions: Vec<i32>,
}

/// Describes the consumer group on demand, at most every [`CACHE_FOR`].
pub struct Directory {
    group: String,
    topic: String,
    client: BaseConsumer<LogContext>,
    cache: Mutex<Option<(Instant, Vec<Owner>)>>,
}

impl Directory {
    pub fn new(s: &Settings) -> Result<Directory> {
        Ok(Directory {
            group: s.application_id.clone(),
            topic: s.topics.clicks.clone(),
            client: reader_config(s, "directory").create_with_context(LogContext)?,
            cache: Mutex::new(None),
        })
    }

    /// The group's members that advertise a URL, with the partitions they own.
    pub fn owners(&self) -> Result<Vec<Owner>> {
        let mut cache = self.cache.lock().expect("directory cache");
        if let Some((at, owners)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return Ok(owners.clone());
            }
        }
        let groups = self
            .client
            .fetch_group_list(Some(&self.group), Duration::from_secs(5))
            .with_context(|| format!("cannot describe the consumer group {}", self.group))?;
        let mut owners = Vec::new();
        for group in groups.groups().iter().filter(|g| g.name() == self.group) {
            for member in group.members() {
                let Some(url) = url_of_client_id(member.client_id()) else {
                    continue;
                };
                let partitions = member
                    .assignment()
                    .and_then(|a| parse_assignment(a).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(t, _)| *t == self.topic)
                    .flat_map(|(_, ps)| ps)
                    .collect();
                owners.push(Owner {
                    url: url.to_string(),
                    partitions,
                });
            }
        }
        *cache = Some((Instant::now(), owners.clone()));
        Ok(owners)
    }
}

/// A consumer-protocol assignment (`version: int16, [topic: string, [partition: int32]],
/// user_data: bytes`, all big-endian): the topics and their partitions.
pub fn parse_assignment(b: &[u8]) -> Result<Vec<(String, Vec<i32>)>> {
    let mut r = Reader(b);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = r.i16()?;
        let name = String::from_utf8(r.take(usize::try_from(len.max(0))?)?.to_vec())?;
        let n = r.i32()?;
        let mut partitions = Vec::new();
        for _ in 0..n.max(0) {
            partitions.push(r.i32()?);
        }
        out.push((name, partitions));
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        anyhow::ensure!(self.0.len() >= n, "assignment truncated");
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 0i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn assignments_parse() {
        let b = assignment(&[("attrib.clicks", &[0, 2]), ("attrib.conversions", &[0, 2])]);
        assert_eq!(
            parse_assignment(&b).unwrap(),
            vec![
                ("attrib.clicks".to_string(), vec![0, 2]),
                ("attrib.conversions".to_string(), vec![0, 2])
            ]
        );
        assert!(parse_assignment(&b[..b.len() - 9]).is_err());
        assert_eq!(parse_assignment(&assignment(&[])).unwrap(), vec![]);
    }

    #[test]
    fn urls_travel_in_client_ids() {
        let id = client_id_with_url("attrib-pod-0", "http://10.0.0.5:9464");
        assert_eq!(url_of_client_id(&id), Some("http://10.0.0.5:9464"));
        let id = client_id_with_url("me@example", "https://h:1");
        assert_eq!(url_of_client_id(&id), Some("https://h:1"));
        assert_eq!(url_of_client_id("attrib-pod-0"), None);
    }
}
