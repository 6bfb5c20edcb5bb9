//! The HTTP client every workload uses: hyper-util's pooled HTTP/1.1 client (keep-alive
//! connections, as a browser's), JSON in and out, the status and the decoded answer.

use anyhow::{ensure, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Method;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::server::Server;

/// HTTP/1.1 client on hyper-util's pooled client (keep-alive connections).
#[derive(Clone)]
pub(crate) struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Api {
    pub(crate) fn new(server: &Server) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: server.address.clone(),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let (status, bytes) = self.request_bytes(method, path, headers, body).await?;
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{path} answered {status} with non-JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok((status, value))
    }

    async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Bytes)> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(body)?))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("cannot build a request")?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("{path}: the request failed"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{path}: cannot read the answer"))?
            .to_bytes();
        Ok((status, bytes))
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        self.request(Method::POST, path, headers, Some(body)).await
    }

    pub(crate) async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.request(Method::GET, path, &[], None).await
    }

    /// The value of the counter `name` (no labels) in the server's `GET /metrics`; 0 when
    /// the server has not counted one yet.
    pub(crate) async fn counter(&self, name: &str) -> Result<f64> {
        let (status, bytes) = self
            .request_bytes(Method::GET, "/metrics", &[], None)
            .await?;
        ensure!(status == 200, "GET /metrics answered {status}");
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            if let Some(value) = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
            {
                return value
                    .trim()
                    .parse()
                    .with_context(|| format!("{name} is not a number: {line}"));
            }
        }
        Ok(0.0)
    }
}
