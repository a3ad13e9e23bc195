//! Topics, the systems under test as child processes, and reading their progress back.

use super::*;

pub(crate) type Mock<'a> = MockCluster<'a, DefaultProducerContext>;

pub(crate) fn create_topics(
    s: &Settings,
    mock: Option<&Mock<'_>>,
    partitions: i32,
) -> anyhow::Result<()> {
    let t = &s.topics;
    let changelog = s.changelog_topic();
    let repartition = attrib::runtime::topology::repartition_topic(&s.application_id);
    let mut spec = vec![
        (&t.clicks, partitions, false),
        (&t.conversions, partitions, false),
        (&changelog, partitions, true),
        (&t.actions, partitions, false),
        (&t.invalid_actions, partitions, false),
        (&t.dlq, partitions, false),
        (&t.config, 1, true),
        (&t.promo_codes, 1, true),
    ];
    if s.identity.stitching {
        spec.push((&t.identities, partitions, false));
        // attrib creates it on Kafka; the mock cluster gets it here.
        if mock.is_some() {
            spec.push((&repartition, partitions, false));
        }
    }
    if let Some(cluster) = mock {
        for (n, p, _) in spec {
            cluster.create_topic(n, p, 1)?;
        }
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()?;
    let new: Vec<NewTopic> = spec
        .iter()
        .map(|(n, p, compact)| {
            let nt = NewTopic::new(n, *p, TopicReplication::Fixed(1));
            if *compact {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    for r in futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create {t}: {e}"))?;
    }
    // Kafka answers CreateTopics once the controller has recorded them; the broker takes the
    // partitions' leadership a moment later (until then: NOT_LEADER_OR_FOLLOWER).
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (n, p, _) in spec {
        for p in 0..p {
            while let Err(e) = c.fetch_watermarks(n, p, Duration::from_secs(10)) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{n} [{p}] has no leader after 30 s: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Deletes a measurement's topics on Kafka once it is done, so that a run does not pile up
/// hundreds of partitions and gigabytes of logs on the broker (the mock cluster's go with it).
pub(crate) fn drop_topics(s: &Settings, mock: Option<&Mock<'_>>) {
    if mock.is_some() {
        return;
    }
    let t = &s.topics;
    let changelog = s.changelog_topic();
    let names = [
        t.clicks.as_str(),
        &t.conversions,
        &changelog,
        &t.actions,
        &t.invalid_actions,
        &t.dlq,
        &t.config,
        &t.promo_codes,
    ];
    let result = (|| -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &s.brokers)
            .create()?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in futures::executor::block_on(admin.delete_topics(&names, &opts))? {
            r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("   cannot delete the topics: {e}");
    }
}

/// Starts `attrib run` or the pass-through as a child process.
pub(crate) fn start(
    s: &Settings,
    system: System,
    state: &std::path::Path,
) -> anyhow::Result<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let g = guarantee_name(s.processing_guarantee);
    let env = [
        ("ATTRIB_BROKERS", s.brokers.clone()),
        ("ATTRIB_APPLICATION_ID", s.application_id.clone()),
        ("ATTRIB_INSTANCE_ID", "bench-0".to_string()),
        ("ATTRIB_STATE_DIR", state.display().to_string()),
        ("ATTRIB_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("ATTRIB_PROCESSING_GUARANTEE", g.to_string()),
        ("ATTRIB_COMMIT_INTERVAL_MS", COMMIT_INTERVAL_MS.to_string()),
        ("ATTRIB_LOG_LEVEL", "warn".to_string()),
        (
            "ATTRIB_IDENTITY_STITCHING",
            s.identity.stitching.to_string(),
        ),
        // The mock cluster answers an empty fetch only after fetch.wait.max.ms (librdkafka's
        // default 500 ms) even when records arrive meanwhile; Kafka answers as soon as they
        // do, and after fetch.wait.max.ms when none do. One short wait on every broker keeps
        // the figures comparable.
        (
            "ATTRIB_KAFKA_FETCH_WAIT_MAX_MS",
            fetch_wait_ms().to_string(),
        ),
    ];
    let mut cmd = match system {
        System::Attrib => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_attrib"));
            c.arg("run");
            c
        }
        System::PassThrough => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("passthrough");
            c
        }
    };
    cmd.envs(env)
        .envs(s.topics.variables())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Ok(cmd.spawn()?)
}

/// Writes `records` in order, stamped with the wall clock at the write (librdkafka's
/// `CreateTime`), like the latency generator; not with `testkit::produce`'s distinct milliseconds,
/// which run ahead of the clock at these rates (a broker refuses timestamps more than
/// `log.message.timestamp.after.max.ms` ahead). Every click is written before every
/// conversion, and attrib takes the click on a tie.
pub(crate) fn produce(s: &Settings, records: &[GenRecord]) -> anyhow::Result<()> {
    let producer = attrib::tools::testkit::input_producer(&s.brokers)?;
    attrib::tools::testkit::send_records(
        &producer,
        s,
        records,
        attrib::tools::testkit::Stamp::WallClock,
    )
}

/// A client that reads the consumer group's committed offsets (kept for the whole case, so
/// that each reading is one round trip).
pub(crate) fn group_reader(s: &Settings) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.application_id)
        .create()?)
}

/// The sum of the consumer group's committed offsets over the input topics.
pub(crate) fn committed(c: &BaseConsumer, s: &Settings, parts: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition(&s.topics.clicks, p);
        tpl.add_partition(&s.topics.conversions, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|t| {
            t.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn end_offsets(s: &Settings, parts: i32) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()?;
    let mut sum = 0;
    for p in 0..parts {
        for t in [&s.topics.clicks, &s.topics.conversions] {
            sum += c.fetch_watermarks(t, p, Duration::from_secs(10))?.1;
        }
    }
    Ok(sum)
}

pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn stop(mut child: Child) {
    if let Err(e) = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
    {
        eprintln!("SIGTERM to attrib {}: {e}", child.id());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(e) = child.kill() {
        eprintln!("SIGKILL to attrib {}: {e}", child.id());
    }
    if let Err(e) = child.wait() {
        eprintln!("waiting for attrib {}: {e}", child.id());
    }
}

/// Waits until the committed offsets reach `target`; returns (first commit time, its sum,
/// last commit time).
pub(crate) fn wait_committed(
    c: &BaseConsumer,
    s: &Settings,
    parts: i32,
    target: i64,
    timeout: Duration,
) -> anyhow::Result<(Instant, i64, Instant)> {
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, i64)> = None;
    let (mut last, mut moved) = (-1, Instant::now());
    loop {
        let got = committed(c, s, parts);
        let now = Instant::now();
        if got > 0 && first.is_none() {
            first = Some((now, got));
        }
        if got != last {
            (last, moved) = (got, now);
        }
        anyhow::ensure!(
            now - moved < Duration::from_secs(30),
            "no progress for 30 s at {got} of {target} committed"
        );
        if got >= target {
            let (t0, n0) = first.unwrap_or((now, 0));
            return Ok((t0, n0, now));
        }
        anyhow::ensure!(
            now < deadline,
            "committed {got} of {target} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
