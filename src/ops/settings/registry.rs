//! `[schema_registry]`: the Confluent Schema Registry that Confluent-framed Avro input is read
//! through and Avro output is registered in.

use super::REDACTED;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the subject an output schema is registered (or looked up) under is named, as the
/// Confluent serializers' `value.subject.name.strategy` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (Confluent's `TopicNameStrategy`): one record type per topic.
    Topic,
    /// `<record full name>` (`RecordNameStrategy`), e.g. `io.attrib.Action`, shared by every
    /// topic.
    Record,
    /// `<topic>-<record full name>` (`TopicRecordNameStrategy`), e.g.
    /// `attrib.actions-io.attrib.Action`: works on topics that carry several record types.
    #[default]
    TopicRecord,
}

impl SubjectNameStrategy {
    /// The subject of the value schema named `record` (its full name) on `topic`.
    pub fn subject(self, topic: &str, record: &str) -> String {
        match self {
            SubjectNameStrategy::Topic => format!("{topic}-value"),
            SubjectNameStrategy::Record => record.to_string(),
            SubjectNameStrategy::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

/// The Schema Registry (`[schema_registry]`); unused without `url`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistry {
    /// Base URL. Credentials may be given as `https://KEY:SECRET@host` or, better, in `user`
    /// and `password`.
    pub url: Option<String>,
    /// PEM file of the CA certificate(s) the registry's TLS certificate must chain to, instead
    /// of the system's CA store.
    pub ca_file: Option<PathBuf>,
    /// HTTP basic auth user (a Confluent Cloud API key).
    pub user: Option<String>,
    /// HTTP basic auth password (the API secret).
    pub password: Option<String>,
    /// The subjects attrib's output schemas go under.
    pub subject_name_strategy: SubjectNameStrategy,
    /// Register attrib's output schemas at start (needs write access). When false, they must
    /// be registered already under their subjects, and attrib only looks their ids up (read
    /// access is enough); a missing one stops the start with its subject named.
    pub auto_register: bool,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        SchemaRegistry {
            url: None,
            ca_file: None,
            user: None,
            password: None,
            subject_name_strategy: SubjectNameStrategy::default(),
            auto_register: true,
        }
    }
}

impl SchemaRegistry {
    /// An empty variable unsets an optional setting.
    pub(super) fn normalize(&mut self) {
        for v in [&mut self.url, &mut self.user, &mut self.password] {
            if v.as_deref().is_some_and(|u| u.trim().is_empty()) {
                *v = None;
            }
        }
        if self
            .ca_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            self.ca_file = None;
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        match &self.url {
            Some(u) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    bail!(
                        "invalid config: `schema_registry.url` must start with http:// or https://"
                    );
                }
                if self.ca_file.is_some() && !u.starts_with("https://") {
                    bail!(
                        "invalid config: `schema_registry.ca_file` is set but `schema_registry.url` is not https://"
                    );
                }
                let has_userinfo = u
                    .split_once("://")
                    .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
                    .is_some_and(|authority| authority.contains('@'));
                if has_userinfo && self.user.is_some() {
                    bail!(
                        "invalid config: `schema_registry.user` is set and `schema_registry.url` has credentials too; keep one"
                    );
                }
            }
            None => {
                for (field, set) in [
                    ("ca_file", self.ca_file.is_some()),
                    ("user", self.user.is_some()),
                    ("password", self.password.is_some()),
                ] {
                    if set {
                        bail!(
                            "invalid config: `schema_registry.{field}` is set but `schema_registry.url` is not"
                        );
                    }
                }
            }
        }
        if self.user.is_some() != self.password.is_some() {
            bail!(
                "invalid config: `schema_registry.user` and `schema_registry.password` go together"
            );
        }
        Ok(())
    }

    /// The password, also in the URL, as `***`.
    pub(super) fn redact(&mut self) {
        if let Some(secret) = self.password.as_mut().filter(|t| !t.is_empty()) {
            *secret = REDACTED.into();
        }
        if let Some(url) = &mut self.url {
            *url = redact_url_password(url);
        }
    }
}

/// `scheme://user:***@host/…` for a URL with a password in it (`scheme://***@host/…` for one
/// with only a user part, often a token); other URLs unchanged.
pub(super) fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_string(),
    };
    format!("{scheme}://{userinfo}@{host}{path}")
}
