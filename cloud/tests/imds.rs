//! The IMDSv2 client against a small real HTTP server that speaks IMDSv2 as EC2 documents it
//! (PUT /latest/api/token with a TTL header; GETs carry the token; 401 for a missing, unknown or
//! expired token; 400 for a token request without TTL). moto has no usable metadata service,
//! so this tests our HTTP client logic (token caching, renewal, 401 recovery), not EC2.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bounded;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tdsvip_cloud::{CloudConfig, Identity, ImdsClient};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(30);
const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";

#[derive(Default)]
struct Imds {
    metadata: HashMap<String, String>,
    tokens: HashMap<String, Instant>,
    token_puts: usize,
    gets: usize,
    unauthorized: usize,
    /// Refuse every token on GET (a broken IMDS), to check the client does not loop.
    refuse_all: bool,
}

struct ImdsServer {
    addr: SocketAddr,
    state: Arc<Mutex<Imds>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImdsServer {
    async fn start(metadata: &[(&str, &str)]) -> ImdsServer {
        let state = Arc::new(Mutex::new(Imds {
            metadata: metadata
                .iter()
                .map(|(k, v)| (format!("/latest/meta-data/{k}"), (*v).to_owned()))
                .collect(),
            ..Imds::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| serve(request, Arc::clone(&state)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ImdsServer { addr, state, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn counts(&self) -> (usize, usize, usize) {
        let s = self.state.lock().unwrap();
        (s.token_puts, s.gets, s.unauthorized)
    }

    /// Forgets every token, as an IMDS restart would.
    fn revoke_all(&self) {
        self.state.lock().unwrap().tokens.clear();
    }
}

fn reply(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response
}

async fn serve(
    request: Request<Incoming>,
    state: Arc<Mutex<Imds>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut s = state.lock().unwrap();
    let path = request.uri().path().to_owned();
    if request.method() == Method::PUT && path == "/latest/api/token" {
        let ttl = request
            .headers()
            .get(TTL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ttl| (1..=21_600).contains(ttl));
        let Some(ttl) = ttl else {
            return Ok(reply(StatusCode::BAD_REQUEST, "missing or invalid TTL"));
        };
        s.token_puts += 1;
        let token = format!("token-{}", s.token_puts);
        s.tokens
            .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        let mut response = reply(StatusCode::OK, token);
        response
            .headers_mut()
            .insert(TTL, ttl.to_string().parse().unwrap());
        return Ok(response);
    }
    if request.method() != Method::GET {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, ""));
    }
    s.gets += 1;
    let valid = request
        .headers()
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|token| s.tokens.get(token))
        .is_some_and(|expiry| Instant::now() < *expiry);
    if !valid || s.refuse_all {
        s.unauthorized += 1;
        return Ok(reply(StatusCode::UNAUTHORIZED, ""));
    }
    Ok(match s.metadata.get(&path) {
        Some(value) => reply(StatusCode::OK, value.clone()),
        None => reply(StatusCode::NOT_FOUND, "Not Found"),
    })
}

const PRIMARY_MAC: &str = "0a:00:00:00:00:01";
const SECOND_MAC: &str = "0a:00:00:00:00:02";

async fn instance() -> ImdsServer {
    ImdsServer::start(&[
        ("instance-id", "i-0123456789abcdef0"),
        ("mac", PRIMARY_MAC),
        (
            &format!("network/interfaces/macs/{PRIMARY_MAC}/interface-id"),
            "eni-0000000000000000a",
        ),
        (
            &format!("network/interfaces/macs/{SECOND_MAC}/interface-id"),
            "eni-0000000000000000b",
        ),
    ])
    .await
}

#[tokio::test]
async fn identity_from_the_primary_and_a_chosen_interface_with_one_token() {
    bounded(LIMIT, async {
        let server = instance().await;
        let imds = ImdsClient::new(&server.endpoint()).unwrap();

        let primary = Identity::from_imds(&imds, None).await.unwrap();
        assert_eq!(primary.eni_id, "eni-0000000000000000a");
        assert_eq!(primary.instance_id.as_deref(), Some("i-0123456789abcdef0"));

        let second = Identity::from_imds(&imds, Some("0A:00:00:00:00:02"))
            .await
            .unwrap();
        assert_eq!(second.eni_id, "eni-0000000000000000b");

        let (puts, gets, unauthorized) = server.counts();
        assert_eq!(puts, 1, "the token is cached, not fetched per call");
        assert_eq!(gets, 5);
        assert_eq!(unauthorized, 0);
    })
    .await;
}

#[tokio::test]
async fn token_is_renewed_before_it_expires() {
    bounded(LIMIT, async {
        let server = instance().await;
        let imds = ImdsClient::new(&server.endpoint())
            .unwrap()
            .with_token_ttl(Duration::from_secs(2));
        imds.get("meta-data/instance-id").await.unwrap();
        assert_eq!(server.counts().0, 1);
        // Past three quarters of the 2 s lifetime, before its end.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        imds.get("meta-data/instance-id").await.unwrap();
        imds.get("meta-data/mac").await.unwrap();
        let (puts, _, unauthorized) = server.counts();
        assert_eq!(puts, 2);
        assert_eq!(unauthorized, 0, "renewed before IMDS refused it");
    })
    .await;
}

#[tokio::test]
async fn a_refused_token_is_replaced_once() {
    bounded(LIMIT, async {
        let server = instance().await;
        let imds = ImdsClient::new(&server.endpoint()).unwrap();
        imds.get("meta-data/instance-id").await.unwrap();
        server.revoke_all();
        assert_eq!(imds.get("meta-data/mac").await.unwrap(), PRIMARY_MAC);
        let (puts, _, unauthorized) = server.counts();
        assert_eq!((puts, unauthorized), (2, 1));
    })
    .await;
}

#[tokio::test]
async fn an_imds_that_refuses_every_token_fails_instead_of_looping() {
    bounded(LIMIT, async {
        let server = instance().await;
        server.state.lock().unwrap().refuse_all = true;
        let imds = ImdsClient::new(&server.endpoint()).unwrap();
        let err = imds.get("meta-data/instance-id").await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        let (puts, gets, unauthorized) = server.counts();
        assert_eq!((puts, gets, unauthorized), (2, 2, 2));
    })
    .await;
}

#[tokio::test]
async fn an_unknown_mac_is_a_clear_error() {
    bounded(LIMIT, async {
        let server = instance().await;
        let imds = ImdsClient::new(&server.endpoint()).unwrap();
        let err = Identity::from_imds(&imds, Some("0a:ff:ff:ff:ff:ff"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("macs/0a:ff:ff:ff:ff:ff/interface-id") && text.contains("404"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn resolve_reads_the_configured_interface_mac() {
    bounded(LIMIT, async {
        // The loopback interface exists everywhere; its MAC is all zeros.
        let lo_mac = tdsvip_cloud::identity::interface_mac("lo").unwrap();
        let server = ImdsServer::start(&[
            ("instance-id", "i-0123456789abcdef0"),
            ("mac", PRIMARY_MAC),
            (
                &format!("network/interfaces/macs/{lo_mac}/interface-id"),
                "eni-0000000000000000c",
            ),
        ])
        .await;
        let mut cfg = CloudConfig::route("us-east-1", &["rtb-89abcdef"]);
        cfg.imds_endpoint = Some(server.endpoint());
        cfg.interface = Some("lo".into());
        let identity = Identity::resolve(&cfg).await.unwrap();
        assert_eq!(identity.eni_id, "eni-0000000000000000c");
        assert_eq!(identity.instance_id.as_deref(), Some("i-0123456789abcdef0"));

        cfg.interface = Some("no-such-if0".into());
        let err = Identity::resolve(&cfg).await.unwrap_err();
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    })
    .await;
}
