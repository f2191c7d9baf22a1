//! An HTTP/1.1 client that sends the request target and headers exactly as given: no path
//! normalization, repeated headers allowed, redirects not followed.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// For responses from the echo upstream: the value of a header it received.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let json = self.json();
        let headers = json["headers"].as_array()?;
        headers
            .iter()
            .find(|pair| pair[0].as_str() == Some(name))
            .and_then(|pair| pair[1].as_str().map(String::from))
    }

    /// For responses from the echo upstream: every header name it received.
    pub fn upstream_header_names(&self) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p[0].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the echo upstream answered (as opposed to a denial from the proxy).
    pub fn reached_upstream(&self) -> bool {
        self.status == 200 && self.header("x-echo").is_some_and(|v| v == "upstream")
    }
}

/// Sends one request on a fresh connection. `Host` defaults to `addr`.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Response {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    send_bytes(addr, method, target, &headers, body).await
}

/// Like [`send`], with header values as raw bytes (to send invalid UTF-8).
pub async fn send_bytes(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: Option<(&str, Vec<u8>)>,
) -> Response {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder().method(method).uri(target);
    let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    if !has_host {
        builder = builder.header("host", addr.to_string());
    }
    for (name, value) in headers {
        builder = builder.header(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(value).expect("header value"),
        );
    }
    let bytes = match body {
        Some((content_type, bytes)) => {
            builder = builder.header("content-type", content_type);
            bytes
        }
        None => Vec::new(),
    };
    let request = builder
        .body(Full::new(Bytes::from(bytes)))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: timed out"))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One kept-alive HTTP/1.1 connection, reopened when the server closes it: for load loops,
/// where a fresh connection per request would spend the machine's ephemeral ports.
pub struct KeepAlive {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    /// A GET with these headers: the status and the response headers (the body is read and
    /// dropped), or why the exchange failed.
    pub async fn get(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, HeaderMap), String> {
        let reused = self.sender.is_some();
        let mut result = self.try_get(target, headers).await;
        if result.is_err() {
            self.sender = None;
            // The server may close a kept-alive connection just as a request goes out; like
            // any client, try a GET once more on a fresh one.
            if reused {
                result = self.try_get(target, headers).await;
                if result.is_err() {
                    self.sender = None;
                }
            }
        }
        result
    }

    async fn try_get(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, HeaderMap), String> {
        // A kept connection is used once it is ready for the next request (just after a
        // response it may not have said so yet); a closed one is replaced.
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(connection);
                self.sender.insert(sender)
            }
        };
        let mut builder = Request::builder()
            .method("GET")
            .uri(target)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("request: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
            .await
            .map_err(|_| format!("GET {target}: timed out"))?
            .map_err(|e| format!("GET {target}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok((status, headers))
    }
}
