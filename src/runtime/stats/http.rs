//! The stats port's HTTP server (hyper, HTTP/1.1). Health endpoints are
//! always open for probes; the others ask for basic auth when a user and
//! password are configured (scheme matched case-insensitively, user and
//! password compared in constant time).

use std::convert::Infallible;
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

use base64::Engine;
use subtle::ConstantTimeEq;

use super::render;
use crate::model::snapshot::{Credentials, StatsConfig};
use crate::runtime::reload;
use crate::runtime::router::Router;

struct State {
    router: Arc<Router>,
    status: Arc<reload::Status>,
    credentials: Option<Credentials>,
    recorder: PrometheusRecorder,
    /// One report is built at a time, on a blocking thread: rendering
    /// 10,000 backends never occupies a worker that relays traffic, and
    /// scrapes that pile up wait their turn instead of taking threads.
    rendering: Arc<tokio::sync::Semaphore>,
    /// Per-second history, fed by the sampler.
    history: Arc<std::sync::Mutex<crate::model::history::History>>,
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
    let history = Arc::default();
    tokio::spawn(super::sampler::run(
        Arc::clone(&router),
        Arc::clone(&history),
    ));
    let state = Arc::new(State {
        history,
        router,
        status,
        credentials: config.credentials,
        recorder,
        rendering: Arc::new(tokio::sync::Semaphore::new(1)),
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
                async move { Ok::<_, Infallible>(answer(state, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

async fn answer(state: Arc<State>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
        "/metrics" | "/stats" | "/stats.json" | "/stats;csv" | "/stats;json" => {
            if !authorized(&state, req) {
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
            let kind = path.to_string();
            let Ok(turn) = Arc::clone(&state.rendering).acquire_owned().await else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "stopping\n".into(),
                );
            };
            let worker = Arc::clone(&state);
            // The turn goes with the render: a client that hangs up does not
            // free it while the render still runs.
            let rendered = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                render(&worker, &kind)
            })
            .await;
            match rendered {
                Ok((content_type, body)) => text(StatusCode::OK, content_type, body),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("rendering failed: {e}\n"),
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

/// Builds the report and renders it for `path` (off the async workers).
fn render(state: &State, path: &str) -> (&'static str, String) {
    let mut report = render::report(&state.router, &state.status);
    if let Ok(history) = state.history.lock() {
        render::add_rates(&mut report, &history);
    }
    match path {
        "/metrics" => (
            "text/plain; version=0.0.4",
            render::prometheus(&report, &state.recorder),
        ),
        "/stats" => ("text/html; charset=utf-8", super::page::html(&report)),
        "/stats;csv" => ("text/csv; charset=utf-8", super::page::csv(&report)),
        _ => (
            "application/json",
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        ),
    }
}

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(expected) = &state.credentials else {
        return true;
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    check_basic(given, expected)
}

/// Whether an `Authorization` header value carries these credentials
/// (RFC 7617; the scheme name is case-insensitive).
fn check_basic(header: &[u8], expected: &Credentials) -> bool {
    let header = header.trim_ascii();
    let Some(space) = header.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, token) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim_ascii()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared whatever the first says, each in constant time.
    let user_ok = user.ct_eq(expected.user.as_bytes());
    let password_ok = password.ct_eq(expected.password.as_bytes());
    (user_ok & password_ok).into()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Credentials {
        Credentials {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        }
    }

    #[test]
    fn basic_scheme_any_case_and_exact_credentials() {
        let c = admin();
        // RFC 7617's example.
        assert!(check_basic(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", &c));
        assert!(check_basic(b"basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", &c));
        assert!(check_basic(b"BASIC  QWxhZGRpbjpvcGVuIHNlc2FtZQ== ", &c));
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for wrong in [
            "Aladdin:open sesam",
            "aladdin:open sesame",
            "Aladdin:",
            ":open sesame",
        ] {
            let header = format!("Basic {}", encode(wrong));
            assert!(!check_basic(header.as_bytes(), &c), "{wrong}");
        }
        for malformed in [
            &b""[..],
            b"Basic",
            b"Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            b"Basic !!!",
            b"Basic QWxhZGRpbg==",
        ] {
            assert!(!check_basic(malformed, &c));
        }
    }
}
