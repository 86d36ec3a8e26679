//! The stats port's HTTP server (hyper, HTTP/1.1). Health endpoints are
//! always open for probes; the others ask for basic auth when a user and
//! password are configured.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;

use super::render;
use crate::reload;
use crate::server::Router;

/// Where the stats port listens and who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// `None`: no stats port.
    pub bind: Option<SocketAddr>,
    /// `Basic …` header value required on `/metrics` and `/stats`.
    pub authorization: Option<String>,
}

struct State {
    router: Arc<Router>,
    status: Arc<reload::Status>,
    authorization: Option<String>,
    recorder: PrometheusRecorder,
}

/// Serves the stats port on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    status: Arc<reload::Status>,
    config: StatsConfig,
) {
    let recorder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(300)))
        .build_recorder();
    let state = Arc::new(State {
        router,
        status,
        authorization: config.authorization,
        recorder,
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

fn answer(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match path {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/healthz/ready" => {
            if state.router.is_ready() {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        "/metrics" | "/stats" | "/stats.json" => {
            if !authorized(state, req) {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "authentication required\n".into(),
                );
                if let Ok(v) = hyper::header::HeaderValue::from_str("Basic realm=\"switchyard\"") {
                    r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
                }
                return r;
            }
            let report = render::report(&state.router, &state.status);
            match path {
                "/metrics" => text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    render::prometheus(&report, &state.recorder),
                ),
                "/stats" => text(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    render::html(&report),
                ),
                _ => text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&report).unwrap_or_default(),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /stats, /metrics, /healthz\n".into(),
        ),
    }
}

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(expected) = &state.authorization else {
        return true;
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // Compare without stopping at the first differing byte.
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// `Basic <base64(user:password)>`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_authorization_is_rfc7617() {
        assert_eq!(
            super::basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(super::basic_authorization("a", "b"), "Basic YTpi");
    }
}
