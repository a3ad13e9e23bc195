//! The pass-through baseline the benchmark runs as a child process.

use super::*;

/// The baseline: consume every input record and produce it unchanged to the actions topic,
/// with the same commit interval; under exactly_once in one transaction per interval.
pub(crate) fn passthrough() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let eos = var("ATTRIB_PROCESSING_GUARANTEE") == "exactly_once";
    let brokers = var("ATTRIB_BROKERS");
    let group = var("ATTRIB_APPLICATION_ID");
    let (clicks, conversions, out) = (
        var("ATTRIB_TOPICS_CLICKS"),
        var("ATTRIB_TOPICS_CONVERSIONS"),
        var("ATTRIB_TOPICS_ACTIONS"),
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", var("ATTRIB_KAFKA_FETCH_WAIT_MAX_MS"))
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&clicks, &conversions])
        .expect("subscribe");
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    if eos {
        pc.set("transactional.id", format!("{group}-passthrough"));
    }
    let producer: ThreadedProducer<DefaultProducerContext> = pc.create().expect("producer");
    let timeout = Duration::from_secs(30);
    if eos {
        producer
            .init_transactions(timeout)
            .expect("init transactions");
        producer.begin_transaction().expect("begin");
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook_flag(&stop);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&out);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(v) = m.payload() {
                rec = rec.payload(v);
            }
            attrib::tools::testkit::send_waiting(&producer, rec);
            offsets.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        }
        if last.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS) && !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in offsets.drain() {
                tpl.add_partition_offset(&t, p, Offset::Offset(o))
                    .expect("offset");
            }
            if eos {
                let gm = consumer.group_metadata().expect("group metadata");
                producer
                    .send_offsets_to_transaction(&tpl, &gm, timeout)
                    .expect("offsets");
                producer.commit_transaction(timeout).expect("commit");
                producer.begin_transaction().expect("begin");
            } else {
                // Not `flush`: on a ThreadedProducer it sleeps in 100 ms steps (attrib neither).
                while producer.in_flight_count() > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                consumer
                    .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                    .expect("commit");
            }
            last = Instant::now();
        }
    }
}

/// Sets `flag` on SIGTERM (a thread waiting on the signal through tokio).
pub(crate) fn signal_hook_flag(flag: &Arc<AtomicBool>) {
    let flag = flag.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal");
            term.recv().await;
        });
        flag.store(true, Ordering::Release);
    });
}
