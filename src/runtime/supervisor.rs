//! `attrib run`: start-up checks, signals, and the supervisor that restarts the pipeline after errors.

use super::{clients::*, handles::*, poll::*, task::*};
use crate::ops::http::HttpState;
use crate::ops::settings::{Guarantee, Settings};
use anyhow::{Result, anyhow};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::ThreadedProducer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, info};

/// Runs `attrib run`: HTTP server, signal handling and the supervised processing thread.
pub fn run_until_signal(settings: Settings) -> Result<()> {
    let handles = Handles::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let addr = settings.http_addr;
    // Fatal before anything starts: an HTTP address in use (no probes, no metrics) and
    // settings librdkafka refuses.
    let listener = rt.block_on(crate::ops::http::bind(addr))?;
    check_client_settings(&settings)?;
    let journeys = match settings.journeys_api.enabled {
        true => {
            let token = settings.journeys_api.token.clone().unwrap_or_default();
            let directory = super::directory::Directory::new(&settings)?;
            let url = super::directory::advertised_url(&settings);
            info!(
                url,
                "journeys API on; other instances reach this one at its advertised URL"
            );
            Some((
                token.clone(),
                handles.journey_lookup_anywhere(directory, url, token),
            ))
        }
        false => None,
    };
    let http_state = HttpState {
        metrics: handles.metrics.clone(),
        ready: handles.ready.clone(),
        heartbeat: handles.heartbeat.clone(),
        journeys,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = rt.spawn(async move {
        let stop = async move {
            // An error means the sender is gone: the process is stopping anyway.
            if http_stop.wait_for(|s| *s).await.is_err() {
                info!("http server stops with the process");
            }
        };
        if let Err(e) = crate::ops::http::serve_on(listener, http_state, stop).await {
            error!("http server failed: {e:#}");
        }
    });
    let shutdown = handles.shutdown.clone();
    rt.spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested; committing and closing");
        shutdown.request();
    });
    let h = handles.clone();
    let worker = std::thread::Builder::new()
        .name("attrib-processor".into())
        .spawn(move || supervise(&settings, &h))?;
    let result = worker
        .join()
        .map_err(|_| anyhow!("processing thread panicked"))?;
    if stop_tx.send(true).is_err() {
        info!("http server stopped already");
    }
    if let Err(e) = rt.block_on(http) {
        error!("http server task ended abnormally: {e}");
    }
    result
}

pub(super) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Creates (and drops) every kind of client attrib uses, so that an option librdkafka refuses
/// stops start-up with librdkafka's message, which names it.
pub(super) fn check_client_settings(s: &Settings) -> Result<()> {
    let refused = |e: KafkaError| anyhow!("invalid Kafka client settings (`kafka`): {e}");
    let consumer: BaseConsumer<LogContext> = consumer_config(s)
        .create_with_context(LogContext)
        .map_err(refused)?;
    drop(consumer);
    let id = task_transactional_id(s, 0);
    let tx = (s.processing_guarantee == Guarantee::ExactlyOnce).then_some(id.as_str());
    let producer: ThreadedProducer<ProducerCtx> = producer_config(s, tx)
        .create_with_context(ProducerCtx::new(Arc::new(AtomicU64::new(0)), None))
        .map_err(refused)?;
    drop(producer);
    Ok(())
}

/// Runs the pipeline until shutdown, restarting it (with backoff) after errors.
pub fn supervise(settings: &Settings, h: &Handles) -> Result<()> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        match run_pipeline(settings, h) {
            Ok(()) => return Ok(()),
            Err(e) => {
                h.ready.store(false, Ordering::Release);
                if h.shutdown.requested() {
                    // Asked to stop (also during start-up): what was open is closed.
                    info!("stopped: {e:#}");
                    return Ok(());
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                error!("pipeline failed, restarting in {backoff:?}: {e:#}");
                if h.shutdown.sleep_or_stop(backoff, &h.heartbeat) {
                    return Ok(());
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// librdkafka contexts
// ---------------------------------------------------------------------------------------------
