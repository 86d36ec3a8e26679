//! The router's own responses: small HTML pages, never cached, and the
//! built-in 503.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Body;

/// The 503 page for a request no route serves (as the reference answers).
/// The built-in 503 page, when `[http] error_page_503` names none.
pub(super) fn unavailable() -> Response<Body> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Application is not available",
        "No route serves this address. Check the host name and path, and that the application is running.",
    )
}

/// A page after which the client's connection stays open when its
/// request was read `whole` (nothing of it is left to mistake for the
/// next request); otherwise it closes, and says so.
pub(super) fn keep_open(whole: bool, mut response: Response<Body>) -> Response<Body> {
    if whole {
        response.headers_mut().remove(header::CONNECTION);
    }
    response
}

/// A small HTML page with `status`, never cached; the client's connection
/// is closed after it (see [`keep_open`]).
pub(super) fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(html))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
