//! One case: records/s, then latency at steady rates; and the journeys case.

use super::*;

pub(crate) fn case(
    brokers: &str,
    mock: Option<&Mock<'_>>,
    g: Guarantee,
    system: System,
    n: usize,
    parts: i32,
) -> anyhow::Result<Figures> {
    let s = settings_for(brokers, g);
    create_topics(&s, mock, parts)?;
    let w = workload::generate(7, n * 9 / 10, (n / 8).max(10));
    produce(&s, &w.tables)?;
    let mut input: Vec<GenRecord> = w
        .clicks
        .iter()
        .chain(&w.conversions)
        .chain(&w.changes)
        .cloned()
        .collect();
    if stitching().is_some() {
        workload::identify_one_in(10, &mut input);
    }
    produce(&s, &input)?;
    let total = end_offsets(&s, parts)?;
    let reader = group_reader(&s)?;
    let state = tempfile::tempdir()?;
    let child = start(&s, system, state.path())?;
    let pid = child.id();
    let measured = (|| -> anyhow::Result<(f64, f64)> {
        let (t0, n0, t1) = wait_committed(&reader, &s, parts, total, Duration::from_secs(600))?;
        anyhow::ensure!(
            n0 < total,
            "all {total} records were committed at the first commit seen: too few for a rate"
        );
        let secs = (t1 - t0).as_secs_f64().max(0.001);
        let rate = (total - n0) as f64 / secs;
        eprintln!(
            "   {} records in {secs:.2} s: {rate:.0} records/s",
            total - n0
        );
        Ok((rate, peak_rss_mib(pid)))
    })();
    stop(child);
    drop_topics(&s, mock);
    let (rate, rss) = measured?;
    let fresh = |r: f64| latency_case(brokers, mock, g, system, r, parts);
    let half = fresh((rate / 2.0).max(100.0))?;
    let low = fresh(LOW_RATE)?;
    let mut sweep = Vec::new();
    for r in extra_rates() {
        sweep.push((r, fresh(r)?));
    }
    Ok(Figures {
        rate,
        half,
        low,
        sweep,
        rss,
    })
}

/// A latency measurement on fresh topics with a freshly started system: the mock cluster's
/// fetch cost grows with the batches a partition holds (it looks a fetch offset up by walking
/// every stored batch), so a measurement after others on the same topics would measure the
/// broker's history. Kafka indexes offsets, but gets the same fresh start, so that the brokers'
/// figures compare.
pub(crate) fn latency_case(
    brokers: &str,
    mock: Option<&Mock<'_>>,
    g: Guarantee,
    system: System,
    rate: f64,
    parts: i32,
) -> anyhow::Result<(f64, f64)> {
    let s = settings_for(brokers, g);
    create_topics(&s, mock, parts)?;
    produce(&s, &workload::generate(7, 10, 10).tables)?;
    let state = tempfile::tempdir()?;
    let child = start(&s, system, state.path())?;
    let result = latency(&s, system, rate, parts);
    stop(child);
    drop_topics(&s, mock);
    result
}

/// A steady stream at `rate` records/s (90 % clicks, 10 % conversions) for a few seconds;
/// p50 and p99 of write → output received by a read_committed consumer, in ms.
pub(crate) fn latency(
    s: &Settings,
    system: System,
    rate: f64,
    parts: i32,
) -> anyhow::Result<(f64, f64)> {
    let out_topics = [&s.topics.actions, &s.topics.invalid_actions];
    let consumer: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", format!("{}-latency", s.application_id))
        .set("fetch.wait.max.ms", fetch_wait_ms().to_string())
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in out_topics {
        for p in 0..parts {
            let (_, hi) = consumer.fetch_watermarks(t, p, Duration::from_secs(10))?;
            tpl.add_partition_offset(t, p, Offset::Offset(hi))?;
        }
    }
    consumer.assign(&tpl)?;
    warm_up(s, &consumer)?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seconds = env_usize("ATTRIB_BENCH_LATENCY_SECONDS", 5) as f64;
    let count = (rate * seconds) as usize;
    let producer_thread = {
        let (sent, s) = (sent.clone(), s.clone());
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                .set("bootstrap.servers", &s.brokers)
                // librdkafka's default (part of every latency figure).
                .set("linger.ms", "5")
                .create()?;
            let start = Instant::now();
            let mut measured = 0;
            for i in 0..count {
                // Paced per millisecond (a sleep of tens of microseconds overshoots).
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now())
                    && wait >= Duration::from_millis(1)
                {
                    std::thread::sleep(wait);
                }
                let key = format!("lat-{i}");
                let conversion = i % 10 == 9;
                let (topic, value) = if conversion {
                    (&s.topics.conversions, conversion_json(&key))
                } else {
                    (
                        &s.topics.clicks,
                        format!(
                            r#"{{"type":"click","click_id":"{key}","program_id":"shoes","partner_id":"coupons-r-us","occurred_at":"2026-06-01T00:00:00Z","device_id":"{key}"}}"#
                        ),
                    )
                };
                // Pass-through outputs every record, attrib one per conversion.
                if conversion || system == System::PassThrough {
                    sent.lock().unwrap().insert(key.clone(), Instant::now());
                    measured += 1;
                }
                let rec = BaseRecord::to(topic).key(&key).payload(&value);
                attrib::tools::testkit::send_waiting(&producer, rec);
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(measured)
        })
    };
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds) + Duration::from_secs(60);
    let mut expected: Option<usize> = None;
    while Instant::now() < deadline {
        if expected.is_none() && producer_thread.is_finished() {
            expected = Some(0);
        }
        if let Some(m) = consumer.poll(Duration::from_millis(20)) {
            let m = m?;
            let now = Instant::now();
            let id = match system {
                System::PassThrough => m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                System::Attrib => m
                    .payload()
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                    .and_then(|v| v["order_id"].as_str().map(str::to_string)),
            };
            if let Some(t) = id.and_then(|id| sent.lock().unwrap().remove(&id)) {
                latencies.push((now - t).as_secs_f64() * 1000.0);
            }
        }
        if expected.is_some() && sent.lock().unwrap().is_empty() {
            break;
        }
    }
    let measured = producer_thread.join().expect("producer thread")?;
    anyhow::ensure!(!latencies.is_empty(), "no output received");
    if latencies.len() < measured {
        eprintln!(
            "   {} of {measured} outputs received in time",
            latencies.len()
        );
    }
    if std::env::var("ATTRIB_BENCH_DEBUG").is_ok() {
        let n = latencies.len();
        for k in 0..10 {
            let part = &latencies[k * n / 10..(k + 1) * n / 10];
            let avg = part.iter().sum::<f64>() / part.len().max(1) as f64;
            eprint!(" {avg:.0}");
        }
        eprintln!(" (mean ms by tenth, in order received)");
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| latencies[((latencies.len() - 1) as f64 * f).round() as usize];
    eprintln!(
        "   latency at {rate:.0} records/s: p50 {:.1} ms, p99 {:.1} ms",
        q(0.5),
        q(0.99)
    );
    Ok((q(0.5), q(0.99)))
}

/// A sale of 10.00 by the device `key`, order id `key`.
pub(crate) fn conversion_json(key: &str) -> String {
    format!(
        r#"{{"type":"conversion","program_id":"shoes","event_type":"sale","order_id":"{key}","occurred_at":"2026-06-01T00:00:00Z","device_id":"{key}","order_subtotal":"10.00"}}"#
    )
}

/// Waits until the system answers (started, partitions assigned, tables read): a conversion
/// and its output, which the reader then skips.
pub(crate) fn warm_up(
    s: &Settings,
    reader: &BaseConsumer<DefaultConsumerContext>,
) -> anyhow::Result<()> {
    let warm = GenRecord {
        topic: attrib::model::records::InputTopic::Conversions,
        key: Some("warm-up".into()),
        value: Some(conversion_json("warm-up")),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next_send = Instant::now();
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the system did not answer within 120 s"
        );
        if Instant::now() >= next_send {
            produce(s, std::slice::from_ref(&warm))?;
            next_send = Instant::now() + Duration::from_secs(5);
        }
        if let Some(m) = reader.poll(Duration::from_millis(50)) {
            m?;
            // Whatever else the warm-up left comes within a moment.
            while let Some(m) = reader.poll(Duration::from_millis(200)) {
                m?;
            }
            return Ok(());
        }
    }
}

/// One click on each of `devices` devices through attrib (mock, at_least_once), fed in chunks
/// the mock cluster can hold; prints attrib's peak RSS and the journeys it stores.
pub(crate) fn journeys_rss(cluster: &Mock<'_>, devices: usize) {
    let s = settings_for(&cluster.bootstrap_servers(), Guarantee::AtLeastOnce);
    let parts = 16;
    if let Err(e) = (|| -> anyhow::Result<()> {
        let admin_topics = [
            (&s.topics.clicks, parts),
            (&s.topics.conversions, parts),
            (&s.changelog_topic(), parts),
        ];
        for (t, p) in admin_topics {
            cluster.create_topic(t, p, 1)?;
        }
        for t in [
            &s.topics.actions,
            &s.topics.invalid_actions,
            &s.topics.dlq,
            &s.topics.config,
            &s.topics.promo_codes,
        ] {
            cluster.create_topic(t, 1, 1)?;
        }
        let w = workload::generate(7, 10, 10);
        produce(&s, &w.tables)?;
        let state = tempfile::tempdir()?;
        let child = start(&s, System::Attrib, state.path())?;
        let pid = child.id();
        let reader = group_reader(&s)?;
        let started = Instant::now();
        let chunk = 100_000;
        let mut sent = 0;
        let result = (|| -> anyhow::Result<()> {
            while sent < devices {
                let n = chunk.min(devices - sent);
                let clicks: Vec<GenRecord> = (sent..sent + n)
                    .map(|i| {
                        let key = format!("rss-{i}");
                        GenRecord {
                            topic: attrib::model::records::InputTopic::Clicks,
                            key: Some(key.clone()),
                            value: Some(format!(
                                r#"{{"type":"click","click_id":"{key}","program_id":"shoes","partner_id":"coupons-r-us","occurred_at":"2026-06-01T00:00:00Z","device_id":"{key}"}}"#
                            )),
                        }
                    })
                    .collect();
                produce(&s, &clicks)?;
                sent += n;
                let end = end_offsets(&s, parts)?;
                wait_committed(&reader, &s, parts, end, Duration::from_secs(300))?;
            }
            Ok(())
        })();
        let rss = peak_rss_mib(pid);
        stop(child);
        result?;
        println!();
        println!(
            "attrib with {devices} journeys (mock, at_least_once, {parts} partitions): peak RSS {rss:.0} MiB, {:.0} clicks/s including the feeding",
            devices as f64 / started.elapsed().as_secs_f64()
        );
        Ok(())
    })() {
        println!("journeys RSS: failed: {e}");
    }
}
