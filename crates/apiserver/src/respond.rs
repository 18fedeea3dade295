//! Building responses: JSON bodies, `Status` errors, and streamed bodies.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::Value;

use crate::server::Body;
use crate::status::ApiError;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A JSON answer with `code`.
pub fn json(code: u16, value: &Value) -> hyper::Response<Body> {
    json_typed(code, value, "application/json")
}

/// A JSON answer whose Content-Type names its shape (aggregated discovery).
pub fn json_typed(code: u16, value: &Value, content_type: &str) -> hyper::Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    hyper::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("Cache-Control", "no-cache, private")
        .body(full(bytes))
        .unwrap_or_else(|_| hyper::Response::new(full(Bytes::new())))
}

pub fn error(error: &ApiError) -> hyper::Response<Body> {
    json(error.code, &error.to_status())
}

pub fn text(code: u16, text: &str) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(text.to_string()))
        .unwrap_or_else(|_| hyper::Response::new(full(Bytes::new())))
}
