//! A Schema Registry inside the test (a tiny HTTP server), and attrib's input and output
//! through it.

use super::*;
use crate::evolution::click_schema_with;

#[derive(Default)]
pub(crate) struct RegistryState {
    pub(crate) schemas: Vec<String>,
    pub(crate) subjects: Vec<(String, u32)>,
    pub(crate) gets: usize,
    pub(crate) posts: usize,
    /// `POST /subjects/{subject}` lookups.
    pub(crate) lookups: usize,
    /// While true, `GET` requests are held unanswered (a registry that is slow to answer).
    pub(crate) hold: bool,
    /// `GET` requests received, held or not.
    pub(crate) gets_received: usize,
    pub(crate) last_auth: Option<String>,
}

pub(crate) struct TestRegistry {
    addr: std::net::SocketAddr,
    pub(crate) state: Arc<Mutex<RegistryState>>,
    stop: Arc<AtomicBool>,
    tls: bool,
}

impl TestRegistry {
    pub(crate) fn start() -> TestRegistry {
        TestRegistry::start_with(None)
    }

    /// Over HTTPS, with this server identity.
    pub(crate) fn start_tls(identity: native_tls::Identity) -> TestRegistry {
        TestRegistry::start_with(Some(native_tls::TlsAcceptor::new(identity).unwrap()))
    }

    fn start_with(tls: Option<native_tls::TlsAcceptor>) -> TestRegistry {
        TestRegistry::serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), tls)
    }

    pub(crate) fn serve_on(
        listener: TcpListener,
        tls: Option<native_tls::TlsAcceptor>,
    ) -> TestRegistry {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RegistryState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let tls_on = tls.is_some();
        std::thread::spawn(move || {
            // Bounded: at most 10,000 connections, and it stops when the test drops it.
            for conn in listener.incoming().take(10_000) {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                if let Err(e) = c.set_read_timeout(Some(Duration::from_secs(5))) {
                    eprintln!("test registry: read timeout not set: {e}");
                }
                let served = match &tls {
                    // A client that refuses the certificate ends the handshake: no request.
                    Some(acceptor) => match acceptor.accept(c) {
                        Ok(t) => serve(t, &s),
                        Err(_) => Ok(()),
                    },
                    None => serve(c, &s),
                };
                if let Err(e) = served {
                    eprintln!("test registry: {e}");
                }
            }
        });
        TestRegistry {
            addr,
            state,
            stop,
            tls: tls_on,
        }
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub(crate) fn add(&self, schema: &str) -> u32 {
        let mut s = self.state.lock().unwrap();
        s.schemas.push(schema.to_string());
        s.schemas.len() as u32
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        if let Err(e) = TcpStream::connect(self.addr) {
            eprintln!("test registry at {}: {e}", self.addr);
        }
    }
}

fn serve<S: Read + Write>(c: S, state: &Mutex<RegistryState>) -> std::io::Result<()> {
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    let mut auth = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    if method == "GET" {
        state.lock().unwrap().gets_received += 1;
        while state.lock().unwrap().hold {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut s = state.lock().unwrap();
    s.last_auth = auth;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (code, reply) = match (method.as_str(), segs.as_slice()) {
        ("GET", ["schemas", "ids", id]) => {
            s.gets += 1;
            match id
                .parse::<usize>()
                .ok()
                .and_then(|i| s.schemas.get(i.wrapping_sub(1)))
            {
                Some(text) => (200, json!({ "schema": text })),
                None => (
                    404,
                    json!({"error_code": 40403, "message": "Schema not found"}),
                ),
            }
        }
        ("POST", ["subjects", subject, "versions"]) => {
            s.posts += 1;
            let text = serde_json::from_slice::<Json>(&body)
                .ok()
                .and_then(|j| j["schema"].as_str().map(str::to_string));
            match text {
                Some(text) => {
                    let id = match s.schemas.iter().position(|x| *x == text) {
                        Some(i) => i as u32 + 1,
                        None => {
                            s.schemas.push(text);
                            s.schemas.len() as u32
                        }
                    };
                    s.subjects.push((subject.to_string(), id));
                    (200, json!({ "id": id }))
                }
                None => (
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                ),
            }
        }
        ("POST", ["subjects", subject]) => {
            s.lookups += 1;
            let text = serde_json::from_slice::<Json>(&body)
                .ok()
                .and_then(|j| j["schema"].as_str().map(str::to_string));
            let id = s
                .subjects
                .iter()
                .filter(|(sub, _)| sub == subject)
                .map(|(_, id)| *id)
                .find(|id| s.schemas.get(*id as usize - 1) == text.as_ref());
            match (id, s.subjects.iter().any(|(sub, _)| sub == subject)) {
                (Some(id), _) => (200, json!({ "subject": subject, "id": id, "version": 1 })),
                (None, true) => (
                    404,
                    json!({"error_code": 40403, "message": "Schema not found"}),
                ),
                (None, false) => (
                    404,
                    json!({"error_code": 40401, "message": format!("Subject '{subject}' not found.")}),
                ),
            }
        }
        _ => (
            404,
            json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
        ),
    };
    drop(s);
    let reply = reply.to_string();
    let c = r.get_mut();
    write!(
        c,
        "HTTP/1.1 {code} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    c.flush()
}

#[test]
fn confluent_input_through_a_schema_registry() {
    let reg = TestRegistry::start();
    let click_id = reg.add(own_schema("click").unwrap().text);
    let newer = click_schema_with(|f| {
        f.push(json!({"name":"campaign","type":["null","string"],"default":null}))
    });
    let newer_id = reg.add(&newer);
    let reversal_id = reg.add(own_schema("reversal").unwrap().text);
    let avro = AvroInput::new(Some(&reg.url()), &[]).unwrap();

    let c = sample("click");
    for i in 0..10 {
        let mut b = confluent_header(click_id).to_vec();
        b.extend(datum("click", c.json));
        let j = avro
            .decode_to_json(InputTopic::Clicks, &b)
            .unwrap()
            .unwrap();
        assert_eq!(
            norm("click", &parse(&j)),
            norm("click", &serde_json::from_str(c.json).unwrap()),
            "{i}"
        );
    }
    assert_eq!(
        reg.state.lock().unwrap().gets,
        1,
        "the schema is fetched once per id"
    );

    let mut v: Json = serde_json::from_str(c.json).unwrap();
    v["campaign"] = json!("x");
    let mut b = confluent_header(newer_id).to_vec();
    JsonEncoder::new(apache_avro::Schema::parse_str(&newer).unwrap())
        .encode(&v, &mut b)
        .unwrap();
    let j = parse(
        &avro
            .decode_to_json(InputTopic::Clicks, &b)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["click_id"], "c-1");
    assert!(j.get("campaign").is_none());

    // One of several record types of a topic, matched by name.
    let mut b = confluent_header(reversal_id).to_vec();
    b.extend(datum("reversal", sample("reversal").json));
    let j = parse(
        &avro
            .decode_to_json(InputTopic::Conversions, &b)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["type"], "reversal");
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(
        e.0.contains("Reversal is not a record of the clicks topic"),
        "{}",
        e.0
    );

    // An unknown id goes to the DLQ, and is not asked for again at once.
    let gets = reg.state.lock().unwrap().gets;
    let mut b = confluent_header(999).to_vec();
    b.extend(datum("click", c.json));
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(
        e.0.contains("cannot fetch writer schema id 999")
            && e.0.contains("HTTP 404: Schema not found"),
        "{}",
        e.0
    );
    let e2 = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert_eq!(e, e2);
    assert_eq!(reg.state.lock().unwrap().gets, gets + 1);

    // Through the processor: the record is processed, a bad one goes to the DLQ with a reason.
    let mut p = processor().with_avro(Arc::new(avro));
    let mut out = Vec::new();
    let mut good = confluent_header(click_id).to_vec();
    good.extend(datum("click", c.json));
    p.process(
        &rec(InputTopic::Clicks, Some(&b"d-1"[..]), Some(&good), 0),
        0,
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty(), "{out:?}");
    p.process(
        &rec(InputTopic::Clicks, Some(&b"d-1"[..]), Some(&b), 1),
        0,
        &mut out,
    )
    .unwrap();
    match &out[..] {
        [OutRecord::Dlq(d)] => {
            assert_eq!(d.value.as_deref(), Some(&b[..]));
            assert!(d.error.contains("schema id 999"), "{}", d.error);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreachable_registry_sends_records_to_the_dlq() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let avro = AvroInput::new(Some(&format!("http://user:secret@127.0.0.1:{port}")), &[]).unwrap();
    let mut b = confluent_header(1).to_vec();
    b.extend(datum("click", sample("click").json));
    let started = std::time::Instant::now();
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(e.0.contains("cannot fetch writer schema id 1"), "{}", e.0);
    assert!(
        !e.0.contains("secret"),
        "credentials leak into the reason: {}",
        e.0
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Output: registration fails at start, naming the registry.
    let e = AvroOutput::new(Some(&format!("http://127.0.0.1:{port}")), "a", "i")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot register the schema of subject `a-io.attrib.Action`"),
        "{e}"
    );
}

#[test]
fn confluent_output_registers_its_schemas() {
    let reg = TestRegistry::start();
    let url = format!("http://user:pass@{}", reg.addr);
    let out = AvroOutput::new(Some(&url), "attrib.actions", "attrib.invalid-actions").unwrap();
    {
        let s = reg.state.lock().unwrap();
        assert_eq!(s.posts, 2);
        assert_eq!(
            s.subjects,
            vec![
                ("attrib.actions-io.attrib.Action".to_string(), 1),
                (
                    "attrib.invalid-actions-io.attrib.InvalidAction".to_string(),
                    2
                )
            ]
        );
        assert_eq!(s.schemas[0], own_schema("action").unwrap().text);
        assert_eq!(s.last_auth.as_deref(), Some("Basic dXNlcjpwYXNz"));
    }
    assert_eq!(out.action_framing(), Some(Framing::Confluent(1)));
    assert_eq!(out.invalid_framing(), Some(Framing::Confluent(2)));
    let b = out.encode_action(&sample_action()).unwrap();
    assert_eq!(b[..5], [0, 0, 0, 0, 1]);
    let back = parse(&datum_to_json("action", &b[5..]).unwrap());
    assert_eq!(back, serde_json::to_value(sample_action()).unwrap());
    // Registering again finds the same ids.
    let again =
        AvroOutput::new(Some(&reg.url()), "attrib.actions", "attrib.invalid-actions").unwrap();
    assert_eq!(again.action_framing(), Some(Framing::Confluent(1)));
    // And attrib's input reads what a Confluent producer wrote with the registered id.
    let avro = AvroInput::new(Some(&reg.url()), &[]).unwrap();
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(
        e.0.contains("io.attrib.Action is not a record of the clicks topic"),
        "{}",
        e.0
    );
}

/// Each subject name strategy registers under its own subjects; with `auto_register` off,
/// attrib only looks the ids up (no registration), and a schema that is not registered stops
/// the start naming its subject.
#[test]
fn output_subjects_follow_the_strategy_and_can_be_read_only() {
    use attrib::ops::settings::SubjectNameStrategy::{Record, Topic, TopicRecord};
    let reg = TestRegistry::start();
    let config = |subjects, auto_register| avro::RegistryConfig {
        subjects,
        auto_register,
        ..avro::RegistryConfig::url(&format!("http://{}", reg.addr))
    };
    let topics = (Some("attrib.actions"), Some("attrib.invalid-actions"));
    for (strategy, want) in [
        (
            Topic,
            ["attrib.actions-value", "attrib.invalid-actions-value"],
        ),
        (Record, ["io.attrib.Action", "io.attrib.InvalidAction"]),
        (
            TopicRecord,
            [
                "attrib.actions-io.attrib.Action",
                "attrib.invalid-actions-io.attrib.InvalidAction",
            ],
        ),
    ] {
        let r = avro::Registry::connect(&config(strategy, true)).unwrap();
        AvroOutput::for_topics(Some(&r), topics.0, topics.1).unwrap();
        let mut s = reg.state.lock().unwrap();
        let got: Vec<&str> = s.subjects.iter().map(|(sub, _)| sub.as_str()).collect();
        assert_eq!(got, want, "{strategy:?}");
        s.subjects.clear();
    }
    // Read-only: registered beforehand (here by a run with auto_register on), looked up.
    let r = avro::Registry::connect(&config(Topic, true)).unwrap();
    let registered = AvroOutput::for_topics(Some(&r), topics.0, topics.1).unwrap();
    let posts = reg.state.lock().unwrap().posts;
    let r = avro::Registry::connect(&config(Topic, false)).unwrap();
    let looked_up = AvroOutput::for_topics(Some(&r), topics.0, topics.1).unwrap();
    assert_eq!(looked_up.action_framing(), registered.action_framing());
    assert_eq!(looked_up.invalid_framing(), registered.invalid_framing());
    {
        let s = reg.state.lock().unwrap();
        assert_eq!(
            (s.posts, s.lookups),
            (posts, 2),
            "looked up, nothing registered"
        );
    }
    // Not registered under the strategy's subject: start-up stops naming it.
    let r = avro::Registry::connect(&config(TopicRecord, false)).unwrap();
    reg.state.lock().unwrap().subjects.clear();
    let e = format!(
        "{:#}",
        AvroOutput::for_topics(Some(&r), topics.0, None)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("cannot look up the schema of subject `attrib.actions-io.attrib.Action`")
            && e.contains("auto_register is off")
            && e.contains("not found"),
        "{e}"
    );
    assert_eq!(
        reg.state.lock().unwrap().posts,
        posts,
        "still nothing registered"
    );
}

/// Writer schemas are fetched off the caller's thread: `prefetch` (called when a record is
/// read from Kafka) returns while the registry holds its answer back, and decoding the record
/// then waits for that fetch instead of making its own request.
#[test]
fn writer_schemas_are_fetched_off_the_processing_thread() {
    let reg = TestRegistry::start();
    let click_id = reg.add(own_schema("click").unwrap().text);
    let avro = Arc::new(AvroInput::new(Some(&reg.url()), &[]).unwrap());
    let c = sample("click");
    let mut record = confluent_header(click_id).to_vec();
    record.extend(datum("click", c.json));
    reg.state.lock().unwrap().hold = true;

    let (done, returned) = std::sync::mpsc::channel();
    let (a, r) = (avro.clone(), record.clone());
    std::thread::spawn(move || {
        a.prefetch(&r);
        a.prefetch(&r);
        done.send(()).unwrap();
    });
    returned
        .recv_timeout(Duration::from_secs(30))
        .expect("prefetch waited for the registry");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reg.state.lock().unwrap().gets_received == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetcher never asked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let (a, r) = (avro.clone(), record.clone());
    let decoding = std::thread::spawn(move || a.decode_to_json(InputTopic::Clicks, &r));
    reg.state.lock().unwrap().hold = false;
    let j = decoding.join().unwrap().unwrap().unwrap();
    assert_eq!(
        norm("click", &parse(&j)),
        norm("click", &serde_json::from_str(c.json).unwrap())
    );
    let s = reg.state.lock().unwrap();
    assert_eq!(
        (s.gets_received, s.gets),
        (1, 1),
        "one request for the id: two prefetches and the decode shared it"
    );
}
