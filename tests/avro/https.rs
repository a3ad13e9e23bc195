//! The registry over HTTPS, with a private CA made in the test.

use super::*;
use crate::registry::TestRegistry;

/// A certificate authority made for the test (EC P-256, valid for two days).
struct TestCa {
    cert: openssl::x509::X509,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
}

fn ec_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    use openssl::ec::{EcGroup, EcKey};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    openssl::pkey::PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn x509_name(cn: &str) -> openssl::x509::X509Name {
    let mut b = openssl::x509::X509NameBuilder::new().unwrap();
    b.append_entry_by_text("CN", cn).unwrap();
    b.build()
}

fn x509_builder(
    cn: &str,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> openssl::x509::X509Builder {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&x509_name(cn)).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b
}

impl TestCa {
    fn new(cn: &str) -> TestCa {
        use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
        let key = ec_key();
        let mut b = x509_builder(cn, &key);
        b.set_issuer_name(&x509_name(cn)).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        TestCa {
            cert: b.build(),
            key,
        }
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap()
    }

    /// A server identity for 127.0.0.1 and localhost, signed by this CA.
    fn server_identity(&self) -> native_tls::Identity {
        use openssl::x509::extension::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage,
            SubjectAlternativeName,
        };
        let key = ec_key();
        let mut b = x509_builder("localhost", &key);
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(Some(&*self.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&*self.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&self.key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        native_tls::Identity::from_pkcs8(
            &b.build().to_pem().unwrap(),
            &key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap()
    }
}

#[test]
fn schema_registry_over_https_with_a_private_ca_and_basic_auth() {
    let ca = TestCa::new("attrib test CA");
    let reg = TestRegistry::start_tls(ca.server_identity());
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let click_id = reg.add(own_schema("click").unwrap().text);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("registry-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    // A Confluent Cloud style secret, with characters a URL could not carry as they are.
    let (user, password) = ("SRKEY7", "s3cr/t+x=:y@z");
    let url = reg.url();
    let s = Settings::parse(
        "[output_formats]\nactions = \"avro\"\n",
        env(&[
            ("ATTRIB_SCHEMA_REGISTRY_URL", url.as_str()),
            ("ATTRIB_SCHEMA_REGISTRY_CA_FILE", ca_file.to_str().unwrap()),
            ("ATTRIB_SCHEMA_REGISTRY_USER", user),
            ("ATTRIB_SCHEMA_REGISTRY_PASSWORD", password),
        ]),
    )
    .unwrap();
    let basic = format!(
        "Basic {}",
        openssl::base64::encode_block(format!("{user}:{password}").as_bytes())
    );

    // Output: the actions schema (only: invalid actions stay JSON) is registered at start.
    let out = AvroOutput::from_settings(&s).unwrap().unwrap();
    {
        let st = reg.state.lock().unwrap();
        assert_eq!(
            st.subjects,
            vec![(format!("{}-io.attrib.Action", s.topics.actions), 2)]
        );
        assert_eq!(st.last_auth.as_deref(), Some(basic.as_str()));
    }
    assert_eq!(out.action_framing(), Some(Framing::Confluent(2)));
    assert_eq!(out.invalid_framing(), None);

    // Input: a Confluent-framed record's writer schema is fetched over HTTPS.
    let input = AvroInput::from_settings(&s).unwrap();
    let mut b = confluent_header(click_id).to_vec();
    b.extend(datum("click", sample("click").json));
    let j = parse(
        &input
            .decode_to_json(InputTopic::Clicks, &b)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["click_id"], "c-1");
    {
        let st = reg.state.lock().unwrap();
        assert_eq!(st.gets, 1);
        assert_eq!(st.last_auth.as_deref(), Some(basic.as_str()));
    }

    // Trusting only the system's CAs, or another private CA, attrib refuses the server's
    // certificate: start-up fails naming the registry, and no request reaches it.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, TestCa::new("another CA").pem()).unwrap();
    for trusted in [None, Some(other)] {
        let s = Settings {
            schema_registry: attrib::ops::settings::SchemaRegistry {
                ca_file: trusted.clone(),
                ..s.schema_registry.clone()
            },
            ..s.clone()
        };
        let e = format!("{:#}", AvroOutput::from_settings(&s).err().unwrap());
        assert!(
            e.contains(&format!(
                "cannot register the schema of subject `{}-io.attrib.Action` at {}",
                s.topics.actions,
                reg.url()
            )),
            "{trusted:?}: {e}"
        );
        assert!(e.contains("certificate verify failed"), "{trusted:?}: {e}");
        let input = AvroInput::from_settings(&s).unwrap();
        let mut b = confluent_header(click_id).to_vec();
        b.extend(datum("click", sample("click").json));
        let e = input.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
        assert!(e.0.contains("cannot fetch writer schema id 1"), "{}", e.0);
    }
    let st = reg.state.lock().unwrap();
    assert_eq!((st.posts, st.gets), (1, 1), "a refused server got requests");
}
