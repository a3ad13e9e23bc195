//! The Confluent Schema Registry client and the Confluent wire format's header.

use crate::ops::settings::{Settings, SubjectNameStrategy};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::time::Duration;

/// First byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Registry calls give up after this long (the record then goes to the DLQ).
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);

/// The 5-byte Confluent header for a schema id.
pub fn confluent_header(id: u32) -> [u8; 5] {
    let mut h = [0u8; 5];
    h[0] = CONFLUENT_MAGIC;
    h[1..].copy_from_slice(&id.to_be_bytes());
    h
}

/// How to reach a Confluent Schema Registry: base URL, TLS trust and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// Base URL, `http://` or `https://`; credentials may be given as `https://KEY:SECRET@host`.
    pub url: String,
    /// PEM file of the CA certificate(s) an `https://` registry's certificate must chain to,
    /// in place of the system's CA store.
    pub ca_file: Option<PathBuf>,
    /// HTTP basic auth: user (Confluent Cloud API key) and password (API secret).
    pub basic_auth: Option<(String, String)>,
    /// The subjects attrib's output schemas go under.
    pub subjects: SubjectNameStrategy,
    /// Register the output schemas (else only look their ids up).
    pub auto_register: bool,
}

impl RegistryConfig {
    pub fn url(url: &str) -> RegistryConfig {
        RegistryConfig {
            url: url.to_string(),
            ..RegistryConfig::default()
        }
    }

    /// The `[schema_registry]` settings; `None` without a URL.
    pub fn from_settings(s: &Settings) -> Option<RegistryConfig> {
        let url = s
            .schema_registry
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())?;
        Some(RegistryConfig {
            url: url.to_string(),
            ca_file: s.schema_registry.ca_file.clone(),
            basic_auth: s
                .schema_registry
                .user
                .clone()
                .zip(s.schema_registry.password.clone()),
            subjects: s.schema_registry.subject_name_strategy,
            auto_register: s.schema_registry.auto_register,
        })
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: String::new(),
            ca_file: None,
            basic_auth: None,
            subjects: SubjectNameStrategy::default(),
            auto_register: true,
        }
    }
}

/// A Confluent Schema Registry client (blocking; called from the processing thread only).
pub struct Registry {
    base: String,
    subjects: SubjectNameStrategy,
    auto_register: bool,
    agent: ureq::Agent,
    /// `Basic …`, from [`RegistryConfig::basic_auth`] (credentials in the URL are sent by
    /// `ureq` itself).
    authorization: Option<String>,
}

const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl Registry {
    /// `url` is the registry's base URL; credentials may be given as `https://KEY:SECRET@host`.
    pub fn new(url: &str) -> Result<Registry> {
        Registry::connect(&RegistryConfig::url(url))
    }

    /// From the settings; `None` without `schema_registry.url`.
    pub fn from_settings(s: &Settings) -> Result<Option<Registry>> {
        RegistryConfig::from_settings(s)
            .map(|c| Registry::connect(&c))
            .transpose()
    }

    /// Sets up the client (no request is made): a CA file is read and checked now.
    pub fn connect(c: &RegistryConfig) -> Result<Registry> {
        let base = c.url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("schema registry URL `{base}` must start with http:// or https://");
        }
        let roots = match &c.ca_file {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read schema_registry.ca_file {}", path.display())
                })?;
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(&pem) {
                    match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                        Ok(_) => {}
                        Err(e) => bail!(
                            "schema_registry.ca_file {} is not valid PEM: {e}",
                            path.display()
                        ),
                    }
                }
                if certs.is_empty() {
                    bail!(
                        "schema_registry.ca_file {} holds no PEM certificate",
                        path.display()
                    );
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REGISTRY_TIMEOUT))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("attrib/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let authorization = c.basic_auth.as_ref().map(|(user, password)| {
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
        });
        Ok(Registry {
            base,
            subjects: c.subjects,
            auto_register: c.auto_register,
            agent,
            authorization,
        })
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => req.header("Authorization", a.as_str()),
            None => req,
        }
    }

    /// The base URL without credentials, for messages.
    pub(super) fn shown(&self) -> String {
        match (self.base.find("://"), self.base.find('@')) {
            (Some(s), Some(at)) if at > s => {
                format!("{}{}", &self.base[..s + 3], &self.base[at + 1..])
            }
            _ => self.base.clone(),
        }
    }

    fn read(resp: ureq::http::Response<ureq::Body>) -> Result<(u16, String), String> {
        let status = resp.status().as_u16();
        let mut resp = resp;
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    fn failure(status: u16, body: &str) -> String {
        let msg = serde_json::from_str::<Json>(body)
            .ok()
            .and_then(|j| j.get("message").and_then(Json::as_str).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        format!("HTTP {status}: {msg}")
    }

    /// `GET /schemas/ids/{id}`: the schema text.
    pub fn schema_by_id(&self, id: u32) -> Result<String, String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let resp = self
            .with_auth(self.agent.get(&url))
            .header("Accept", REGISTRY_CONTENT_TYPE)
            .call()
            .map_err(|e| e.to_string())?;
        let (status, body) = Self::read(resp)?;
        if status != 200 {
            return Err(Self::failure(status, &body));
        }
        let j: Json = serde_json::from_str(&body).map_err(|e| format!("bad response: {e}"))?;
        if let Some(t) = j.get("schemaType").and_then(Json::as_str) {
            if t != "AVRO" {
                return Err(format!("schema id {id} is a {t} schema, not Avro"));
            }
        }
        j.get("schema")
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| "bad response: no `schema`".to_string())
    }

    /// `POST /subjects/{subject}/versions`: registers (or finds) a schema, returning its id.
    /// The id of one of attrib's output schemas (record `full_name`, text `schema`) on
    /// `topic`, under the subject the strategy names: registered there, or, with
    /// `auto_register` off, looked up there (read access is enough).
    pub fn output_schema_id(&self, topic: &str, full_name: &str, schema: &str) -> Result<u32> {
        let subject = self.subjects.subject(topic, full_name);
        if self.auto_register {
            self.register(&subject, schema)
        } else {
            self.lookup(&subject, schema)
        }
    }

    /// `POST /subjects/{subject}`: the id of a schema registered under the subject already.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}", self.base);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let what = || {
            format!(
                "cannot look up the schema of subject `{subject}` at {} (schema_registry.auto_register is off: register it there first, or turn auto_register on)",
                self.shown()
            )
        };
        let resp = self
            .with_auth(self.agent.post(&url))
            .header("Content-Type", REGISTRY_CONTENT_TYPE)
            .header("Accept", REGISTRY_CONTENT_TYPE)
            .send(body)
            .map_err(|e| anyhow!("{}: {e}", what()))?;
        let (status, body) = Self::read(resp).map_err(|e| anyhow!(e))?;
        if status != 200 {
            bail!("{}: {}", what(), Self::failure(status, &body));
        }
        schema_id(&body)
    }

    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let resp = self
            .with_auth(self.agent.post(&url))
            .header("Content-Type", REGISTRY_CONTENT_TYPE)
            .header("Accept", REGISTRY_CONTENT_TYPE)
            .send(body)
            .map_err(|e| {
                anyhow!(
                    "cannot register the schema of subject `{subject}` at {}: {e}",
                    self.shown()
                )
            })?;
        let (status, body) = Self::read(resp).map_err(|e| anyhow!(e))?;
        if status != 200 {
            bail!(
                "cannot register the schema of subject `{subject}` at {}: {}",
                self.shown(),
                Self::failure(status, &body)
            );
        }
        schema_id(&body)
    }
}

/// The `id` of a registry answer.
fn schema_id(body: &str) -> Result<u32> {
    serde_json::from_str::<Json>(body)
        .ok()
        .and_then(|j| j.get("id").and_then(Json::as_u64))
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| anyhow!("registry answered without an `id`: {body}"))
}

/// Standard base64 with padding (RFC 4648), for the basic auth header.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | (b[2] as u32);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
