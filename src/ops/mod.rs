//! Operations: settings, metrics, the HTTP endpoints.

pub mod http;
pub mod metrics;
pub mod settings;
