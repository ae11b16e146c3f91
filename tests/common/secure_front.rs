//! A TLS and SASL front for librdkafka's mock cluster.
//!
//! The mock cluster speaks plaintext Kafka only: it has no TLS listener and
//! answers no SaslHandshake or SaslAuthenticate request. [`Front`] listens
//! on loopback in front of it and does what a secured broker does before it
//! serves a client: the TLS handshake (a certificate issued by a test
//! [`Authority`], for 127.0.0.1), then SASL PLAIN or SCRAM-SHA-256/512
//! (RFC 5802 and 7677, the client's proof checked against the password, the
//! server's signature sent back for the client to check). Until the client
//! has authenticated, it answers every request itself except ApiVersions,
//! whose answer it takes from the mock cluster and adds SaslHandshake and
//! SaslAuthenticate to. Once authenticated, requests go to the mock cluster
//! and its answers come back unchanged.
//!
//! The mock broker advertises the front's address in its metadata (see
//! [`MockBehindFront`]), so that every connection a client opens, to
//! bootstrap or to the partition leader, goes through the front. What the
//! front saw is kept in [`Seen`] for the tests to assert on.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Name, X509NameBuilder};
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};

// Kafka API keys and error codes the front deals with.
const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// How long a connection thread blocks on one read before it looks at the
/// other side of the connection and at the stop flag.
const POLL: Duration = Duration::from_millis(2);

/// A certificate authority made for one test: a P-256 key and a
/// self-signed CA certificate valid from an hour ago for a day.
pub struct Authority {
    pub certificate: X509,
    key: PKey<Private>,
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey")
}

fn name(common_name: &str) -> X509Name {
    let mut builder = X509NameBuilder::new().expect("name");
    builder
        .append_entry_by_text("O", "log-capturer tests")
        .expect("O");
    builder.append_entry_by_text("CN", common_name).expect("CN");
    builder.build()
}

fn certificate_builder(subject: &X509Name, key: &PKey<Private>) -> openssl::x509::X509Builder {
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("v3");
    let mut serial = BigNum::new().expect("bignum");
    serial
        .rand(127, MsbOption::MAYBE_ZERO, false)
        .expect("rand");
    builder
        .set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("serial");
    builder.set_subject_name(subject).expect("subject");
    builder.set_pubkey(key).expect("public key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    builder
        .set_not_before(&Asn1Time::from_unix(now - 3600).expect("time"))
        .expect("not before");
    builder
        .set_not_after(&Asn1Time::from_unix(now + 86_400).expect("time"))
        .expect("not after");
    builder
}

impl Authority {
    pub fn new(common_name: &str) -> Self {
        let key = new_key();
        let subject = name(common_name);
        let mut builder = certificate_builder(&subject, &key);
        builder.set_issuer_name(&subject).expect("issuer");
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("basic constraints");
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .expect("ku"),
            )
            .expect("key usage");
        let subject_key_id = SubjectKeyIdentifier::new()
            .build(&builder.x509v3_context(None, None))
            .expect("ski");
        builder
            .append_extension(subject_key_id)
            .expect("subject key id");
        builder.sign(&key, MessageDigest::sha256()).expect("sign");
        Self {
            certificate: builder.build(),
            key,
        }
    }

    /// Writes the CA certificate as PEM (what `ssl.ca.location` reads).
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.certificate.to_pem().expect("PEM")).expect("write CA");
    }

    /// A server certificate for 127.0.0.1 and `localhost`, signed by this
    /// authority, and its key.
    pub fn issue_server_certificate(&self) -> (X509, PKey<Private>) {
        let key = new_key();
        let mut builder = certificate_builder(&name("127.0.0.1"), &key);
        builder
            .set_issuer_name(self.certificate.subject_name())
            .expect("issuer");
        let context = builder.x509v3_context(Some(&self.certificate), None);
        let alternative_names = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&context)
            .expect("san");
        let authority_key_id = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&context)
            .expect("aki");
        builder
            .append_extension(alternative_names)
            .expect("subject alternative names");
        builder
            .append_extension(authority_key_id)
            .expect("authority key id");
        builder
            .append_extension(BasicConstraints::new().build().expect("bc"))
            .expect("basic constraints");
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_encipherment()
                    .build()
                    .expect("ku"),
            )
            .expect("key usage");
        builder
            .append_extension(ExtendedKeyUsage::new().server_auth().build().expect("eku"))
            .expect("extended key usage");
        builder
            .sign(&self.key, MessageDigest::sha256())
            .expect("sign");
        (builder.build(), key)
    }
}

/// A SASL mechanism the front offers (one per front, as a broker listener
/// configured with one mechanism).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            Mechanism::ScramSha512 => MessageDigest::sha512(),
            _ => MessageDigest::sha256(),
        }
    }
}

/// The one user a front knows.
#[derive(Debug, Clone)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

/// What a front offers: TLS with this certificate and key (or plaintext),
/// and SASL with this user (or none).
pub struct FrontConfig {
    pub tls: Option<(X509, PKey<Private>)>,
    pub sasl: Option<Sasl>,
    pub upstream: SocketAddr,
}

/// What a front saw, for the tests to assert on.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed, with OpenSSL's reason.
    pub tls_failures: Vec<String>,
    /// The API key of the first request on each connection (after the TLS
    /// handshake).
    pub first_requests: Vec<i16>,
    /// Mechanisms named in SaslHandshake requests.
    pub mechanisms_asked: Vec<String>,
    /// Users who proved their password.
    pub authenticated: Vec<String>,
    /// Users who did not.
    pub refused: Vec<String>,
    /// Requests other than ApiVersions and SASL sent before authenticating
    /// (refused: the connection is closed).
    pub before_authentication: Vec<i16>,
    /// Requests passed on to the mock cluster, by API key.
    pub forwarded: BTreeMap<i16, u64>,
}

/// A running front; stops (and joins its threads) when dropped.
pub struct Front {
    pub address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Front {
    pub fn start(config: FrontConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind front");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let acceptor = config.tls.as_ref().map(|(certificate, key)| {
            let mut builder =
                SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
            builder.set_certificate(certificate).expect("certificate");
            builder.set_private_key(key).expect("key");
            builder.check_private_key().expect("key matches");
            Arc::new(builder.build())
        });
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(config);
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            seen.lock().expect("seen").connections += 1;
                            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
                            let (config, acceptor) = (Arc::clone(&config), acceptor.clone());
                            connections.push(std::thread::spawn(move || {
                                let _ = serve(stream, &config, acceptor.as_deref(), &seen, &stop);
                            }));
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(error) => panic!("front accept: {error}"),
                    }
                }
                for connection in connections {
                    let _ = connection.join();
                }
            })
        };
        Self {
            address,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Per-connection SASL progress.
enum Auth {
    Waiting,
    /// SCRAM between the client's first message and its final one.
    Scram {
        client_first_bare: String,
        server_first: String,
        nonce: String,
        salt: Vec<u8>,
        username: String,
    },
    Done,
}

const SCRAM_ITERATIONS: usize = 4096;

/// Serves one client connection until either side closes it or the front
/// stops.
fn serve(
    tcp: TcpStream,
    config: &FrontConfig,
    acceptor: Option<&SslAcceptor>,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut client: Box<dyn Stream> = match acceptor {
        Some(acceptor) => match acceptor.accept(tcp) {
            Ok(stream) => {
                seen.lock().expect("seen").tls_handshakes += 1;
                stream.get_ref().set_read_timeout(Some(POLL))?;
                Box::new(stream)
            }
            Err(error) => {
                seen.lock()
                    .expect("seen")
                    .tls_failures
                    .push(error.to_string());
                return Ok(());
            }
        },
        None => {
            tcp.set_read_timeout(Some(POLL))?;
            Box::new(tcp)
        }
    };
    let mut upstream = TcpStream::connect(config.upstream)?;
    upstream.set_nodelay(true)?;
    upstream.set_read_timeout(Some(POLL))?;

    let mut auth = if config.sasl.is_some() {
        Auth::Waiting
    } else {
        Auth::Done
    };
    let mut first_request = true;
    let mut inbound = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match client.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => inbound.extend_from_slice(&buffer[..read]),
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
        while let Some(frame) = take_frame(&mut inbound) {
            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
            if first_request {
                first_request = false;
                seen.lock().expect("seen").first_requests.push(api_key);
            }
            if matches!(auth, Auth::Done) {
                upstream.write_all(&frame)?;
                *seen
                    .lock()
                    .expect("seen")
                    .forwarded
                    .entry(api_key)
                    .or_default() += 1;
                continue;
            }
            let sasl = config.sasl.as_ref().expect("SASL configured");
            match api_key {
                API_VERSIONS => {
                    upstream.write_all(&frame)?;
                    let answer = read_frame(&mut upstream, Duration::from_secs(10))?;
                    let version = i16::from_be_bytes([frame[6], frame[7]]);
                    client.write_all(&with_sasl_apis(&answer, version))?;
                }
                SASL_HANDSHAKE => {
                    let request = Request::parse(&frame);
                    let asked = request.body_string();
                    seen.lock()
                        .expect("seen")
                        .mechanisms_asked
                        .push(asked.clone());
                    let mut body = Vec::new();
                    let error = if asked == sasl.mechanism.name() {
                        0
                    } else {
                        UNSUPPORTED_SASL_MECHANISM
                    };
                    body.extend_from_slice(&error.to_be_bytes());
                    body.extend_from_slice(&1i32.to_be_bytes());
                    put_string(&mut body, sasl.mechanism.name());
                    client.write_all(&response(request.correlation, &body))?;
                }
                SASL_AUTHENTICATE => {
                    let request = Request::parse(&frame);
                    let bytes = request.body_bytes();
                    let (answer, outcome) = authenticate(sasl, &mut auth, bytes, seen);
                    let mut body = Vec::new();
                    match &answer {
                        Ok(bytes) => {
                            body.extend_from_slice(&0i16.to_be_bytes());
                            body.extend_from_slice(&(-1i16).to_be_bytes());
                            put_bytes(&mut body, bytes);
                        }
                        Err(message) => {
                            body.extend_from_slice(&SASL_AUTHENTICATION_FAILED.to_be_bytes());
                            put_string(&mut body, message);
                            put_bytes(&mut body, b"");
                        }
                    }
                    if request.version >= 1 {
                        // session_lifetime_ms: no re-authentication.
                        body.extend_from_slice(&0i64.to_be_bytes());
                    }
                    client.write_all(&response(request.correlation, &body))?;
                    client.flush()?;
                    if !outcome {
                        // A broker closes the connection after a failed
                        // authentication.
                        return Ok(());
                    }
                }
                other => {
                    seen.lock().expect("seen").before_authentication.push(other);
                    return Ok(());
                }
            }
            client.flush()?;
        }
        match upstream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => {
                client.write_all(&buffer[..read])?;
                client.flush()?;
            }
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// One SASL step: the bytes to answer with, or the error message; and
/// whether the connection goes on.
fn authenticate(
    sasl: &Sasl,
    auth: &mut Auth,
    bytes: &[u8],
    seen: &Mutex<Seen>,
) -> (Result<Vec<u8>, String>, bool) {
    let refuse = |username: &str, message: String| {
        seen.lock()
            .expect("seen")
            .refused
            .push(username.to_string());
        (Err(message), false)
    };
    let accept = |username: &str, answer: Vec<u8>| {
        seen.lock()
            .expect("seen")
            .authenticated
            .push(username.to_string());
        (Ok(answer), true)
    };
    let text = String::from_utf8_lossy(bytes).into_owned();
    match (sasl.mechanism, std::mem::replace(auth, Auth::Done)) {
        (Mechanism::Plain, Auth::Waiting) => {
            // authzid NUL authcid NUL password
            let mut parts = bytes.split(|&byte| byte == 0);
            let (_, username, password) = (parts.next(), parts.next(), parts.next());
            let username = String::from_utf8_lossy(username.unwrap_or_default()).into_owned();
            if username == sasl.username && password == Some(sasl.password.as_bytes()) {
                accept(&username, Vec::new())
            } else {
                refuse(
                    &username,
                    "Authentication failed: Invalid username or password".to_string(),
                )
            }
        }
        (_, Auth::Waiting) => {
            // client-first-message: gs2 header "n,," then n=USER,r=NONCE
            let Some(client_first_bare) = text.strip_prefix("n,,") else {
                return refuse(
                    "",
                    format!("unexpected SCRAM client-first message {text:?}"),
                );
            };
            let username = attribute(client_first_bare, "n").unwrap_or_default();
            let client_nonce = attribute(client_first_bare, "r").unwrap_or_default();
            let mut random = [0u8; 18];
            openssl::rand::rand_bytes(&mut random).expect("random");
            let nonce = format!("{client_nonce}{}", openssl::base64::encode_block(&random));
            let mut salt = vec![0u8; 16];
            openssl::rand::rand_bytes(&mut salt).expect("random");
            let server_first = format!(
                "r={nonce},s={},i={SCRAM_ITERATIONS}",
                openssl::base64::encode_block(&salt)
            );
            *auth = Auth::Scram {
                client_first_bare: client_first_bare.to_string(),
                server_first: server_first.clone(),
                nonce,
                salt,
                username,
            };
            (Ok(server_first.into_bytes()), true)
        }
        (
            mechanism,
            Auth::Scram {
                client_first_bare,
                server_first,
                nonce,
                salt,
                username,
            },
        ) => {
            // client-final-message: c=biws,r=NONCE,p=PROOF
            let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
                return refuse(&username, format!("no proof in {text:?}"));
            };
            let failed = format!(
                "Authentication failed during authentication due to invalid credentials \
                 with SASL mechanism {}",
                mechanism.name()
            );
            if attribute(without_proof, "c").as_deref() != Some("biws")
                || attribute(without_proof, "r").as_deref() != Some(nonce.as_str())
            {
                return refuse(&username, failed);
            }
            let digest = mechanism.digest();
            let mut salted = vec![0u8; digest.size()];
            openssl::pkcs5::pbkdf2_hmac(
                sasl.password.as_bytes(),
                &salt,
                SCRAM_ITERATIONS,
                digest,
                &mut salted,
            )
            .expect("pbkdf2");
            let client_key = hmac(digest, &salted, b"Client Key");
            let stored_key = openssl::hash::hash(digest, &client_key).expect("hash");
            let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
            let client_signature = hmac(digest, &stored_key, auth_message.as_bytes());
            let proof = openssl::base64::decode_block(proof).unwrap_or_default();
            let recovered: Vec<u8> = proof
                .iter()
                .zip(&client_signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let proven = proof.len() == client_signature.len()
                && *openssl::hash::hash(digest, &recovered).expect("hash") == *stored_key;
            if username != sasl.username || !proven {
                return refuse(&username, failed);
            }
            let server_key = hmac(digest, &salted, b"Server Key");
            let server_signature = hmac(digest, &server_key, auth_message.as_bytes());
            accept(
                &username,
                format!("v={}", openssl::base64::encode_block(&server_signature)).into_bytes(),
            )
        }
        (_, Auth::Done) => refuse("", "already authenticated".to_string()),
    }
}

/// The value of `key=` in a SCRAM message.
fn attribute(message: &str, key: &str) -> Option<String> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

fn hmac(digest: MessageDigest, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = PKey::hmac(key).expect("HMAC key");
    let mut signer = Signer::new(digest, &key).expect("signer");
    signer.update(data).expect("HMAC");
    signer.sign_to_vec().expect("HMAC")
}

/// A request's header fields and body (request header v1: the SASL
/// requests the front answers are not flexible versions).
struct Request<'a> {
    version: i16,
    correlation: i32,
    body: &'a [u8],
}

impl<'a> Request<'a> {
    fn parse(frame: &'a [u8]) -> Self {
        let version = i16::from_be_bytes([frame[6], frame[7]]);
        let correlation = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
        let client_id = i16::from_be_bytes([frame[12], frame[13]]).max(0) as usize;
        Self {
            version,
            correlation,
            body: &frame[14 + client_id..],
        }
    }

    /// A body that is one STRING.
    fn body_string(&self) -> String {
        let length = i16::from_be_bytes([self.body[0], self.body[1]]).max(0) as usize;
        String::from_utf8_lossy(&self.body[2..2 + length]).into_owned()
    }

    /// A body that is one BYTES.
    fn body_bytes(&self) -> &'a [u8] {
        let length =
            i32::from_be_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]).max(0);
        &self.body[4..4 + length as usize]
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as i16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A response frame (response header v0: the correlation id).
fn response(correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Removes and returns the first whole size-prefixed frame of `buffer`.
fn take_frame(buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buffer.len() < 4 {
        return None;
    }
    let length = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]).max(0) as usize;
    if buffer.len() < 4 + length {
        return None;
    }
    let rest = buffer.split_off(4 + length);
    Some(std::mem::replace(buffer, rest))
}

/// Reads one whole frame from `stream` (which has a short read timeout).
fn read_frame(stream: &mut TcpStream, timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = take_frame(&mut buffer) {
            assert!(buffer.is_empty(), "one answer to one request");
            return Ok(frame);
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
    }
}

fn read_uvarint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    panic!("truncated varint");
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The mock cluster's ApiVersions answer (a whole frame, for a request of
/// `version`) with SaslHandshake v0-1 and SaslAuthenticate v0-1 added.
/// An answer with an error is returned as it is.
fn with_sasl_apis(answer: &[u8], version: i16) -> Vec<u8> {
    let flexible = version >= 3;
    let mut at = 8; // size, correlation id
    let error = i16::from_be_bytes([answer[at], answer[at + 1]]);
    if error != 0 {
        return answer.to_vec();
    }
    at += 2;
    let (count, count_bytes) = if flexible {
        let (value, used) = read_uvarint(&answer[at..]);
        (
            value.checked_sub(1).expect("not a null array") as usize,
            used,
        )
    } else {
        let value =
            i32::from_be_bytes([answer[at], answer[at + 1], answer[at + 2], answer[at + 3]]);
        (value as usize, 4)
    };
    let entries = at + count_bytes;
    let mut end = entries;
    for _ in 0..count {
        let key = i16::from_be_bytes([answer[end], answer[end + 1]]);
        assert!(
            key != SASL_HANDSHAKE && key != SASL_AUTHENTICATE,
            "the mock cluster offers SASL itself"
        );
        end += 6;
        if flexible {
            let (tags, used) = read_uvarint(&answer[end..]);
            end += used;
            for _ in 0..tags {
                let (_, used) = read_uvarint(&answer[end..]);
                end += used;
                let (size, used) = read_uvarint(&answer[end..]);
                end += used + size as usize;
            }
        }
    }
    let mut body = answer[8..at].to_vec();
    if flexible {
        put_uvarint(&mut body, count as u64 + 3);
    } else {
        body.extend_from_slice(&(count as i32 + 2).to_be_bytes());
    }
    body.extend_from_slice(&answer[entries..end]);
    for key in [SASL_HANDSHAKE, SASL_AUTHENTICATE] {
        for value in [key, 0, 1] {
            body.extend_from_slice(&value.to_be_bytes());
        }
        if flexible {
            body.push(0); // no tagged fields
        }
    }
    body.extend_from_slice(&answer[end..]);
    let correlation = i32::from_be_bytes([answer[4], answer[5], answer[6], answer[7]]);
    response(correlation, &body)
}

/// librdkafka's mock cluster with one broker that advertises another
/// address (a [`Front`]'s) in its metadata.
pub struct MockBehindFront {
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    /// Where the mock broker really listens.
    pub upstream: SocketAddr,
    // Owns the librdkafka handle the cluster runs in; dropped after it.
    _handle: BaseProducer,
}

// SAFETY: the mock cluster's functions lock the cluster themselves; the
// pointer is only used through them.
unsafe impl Send for MockBehindFront {}
unsafe impl Sync for MockBehindFront {}

impl MockBehindFront {
    pub fn new(topic: &str, partitions: i32) -> Self {
        // No bootstrap servers: this handle never connects anywhere.
        let handle: BaseProducer = rdkafka::ClientConfig::new()
            .set("log_level", "3")
            .create()
            .expect("librdkafka handle");
        // SAFETY: a valid handle, which outlives the cluster (dropped after
        // it, see `Drop`).
        let cluster = unsafe { rdsys::rd_kafka_mock_cluster_new(handle.client().native_ptr(), 1) };
        assert!(!cluster.is_null(), "mock cluster");
        // SAFETY: a live cluster; the string is owned by it.
        let bootstrap = unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        let topic = CString::new(topic).expect("topic");
        // SAFETY: a live cluster and a NUL-terminated name.
        let created =
            unsafe { rdsys::rd_kafka_mock_topic_create(cluster, topic.as_ptr(), partitions, 1) };
        assert_eq!(
            created,
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        Self {
            cluster,
            upstream: bootstrap.parse().expect("one host:port"),
            _handle: handle,
        }
    }

    /// Makes the broker advertise `address` in metadata answers.
    pub fn advertise(&self, address: SocketAddr) {
        let host = CString::new(address.ip().to_string()).expect("host");
        // SAFETY: a live cluster and a NUL-terminated host, copied by the call.
        unsafe {
            rdsys::rd_kafka_mock_broker_set_host_port(
                self.cluster,
                1,
                host.as_ptr(),
                i32::from(address.port()),
            )
        };
    }
}

impl Drop for MockBehindFront {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_mock_cluster_new`, destroyed once,
        // before its handle.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}
