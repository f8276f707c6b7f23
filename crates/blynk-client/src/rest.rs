//! The app REST API over HTTP/1.1 (hyper's client connection): the API key as a bearer token,
//! JSON both ways, refusals as [`Error::Refused`]. A [`Connection`] is kept alive for many calls
//! one after another; the calls on [`Client`] each open their own.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::{Endpoint, Error};

/// The largest response body read (the biggest answers are device lists).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long a call may take beyond any wait it asks the server for.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one server's app API with one API key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    bearer: HeaderValue,
    key: String,
    user_agent: HeaderValue,
}

impl Client {
    /// A client of the server at `endpoint` using the API `key`.
    pub fn new(endpoint: Endpoint, key: &str) -> Result<Self, Error> {
        let bearer = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            Error::InvalidRequest("the API key holds characters HTTP cannot carry".to_owned())
        })?;
        Ok(Client {
            endpoint,
            bearer,
            key: key.to_owned(),
            user_agent: HeaderValue::from_static(concat!(
                "blynk-client/",
                env!("CARGO_PKG_VERSION")
            )),
        })
    }

    /// The same client, naming itself `agent` in the `User-Agent` header.
    pub fn with_user_agent(mut self, agent: &'static str) -> Self {
        self.user_agent = HeaderValue::from_static(agent);
        self
    }

    /// The server's address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The API key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `Authorization: Bearer KEY`.
    pub(crate) fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// `User-Agent`.
    pub(crate) fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// A keep-alive connection for calls one after another.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let stream = self.endpoint.connect().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| self.broke("HTTP handshake".to_owned(), source))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            client: self.clone(),
            sender,
            driver,
        })
    }

    /// `GET path` on a connection of its own: the answer's JSON (`null` for an empty body).
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.connect().await?.get(path).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &(impl Serialize + ?Sized)) -> Result<Value, Error> {
        self.connect().await?.post(path, body).await
    }

    /// `PUT path` with a JSON body; `wait` is added to the time allowed (a server-side wait the
    /// body asks for, such as `wait_ms`).
    pub async fn put(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
        wait: Duration,
    ) -> Result<Value, Error> {
        self.connect().await?.put(path, body, wait).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, Error> {
        self.connect().await?.delete(path).await
    }

    /// `GET path`, handing the body to `on_line` a line at a time as it arrives (a long export
    /// is never held whole). Each part of the answer must come within [`REQUEST_TIMEOUT`].
    pub async fn get_lines(&self, path: &str, mut on_line: impl FnMut(&str)) -> Result<(), Error> {
        let what = format!("GET {path}");
        let mut connection = self.connect().await?;
        let request = self.request(Method::GET, path, None)?;
        let response =
            tokio::time::timeout(REQUEST_TIMEOUT, connection.sender.send_request(request))
                .await
                .map_err(|_| self.late(&what, REQUEST_TIMEOUT))?
                .map_err(|source| self.broke(what.clone(), source))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = self.collect(&what, body, REQUEST_TIMEOUT).await?;
            return Err(Error::refused(what, status, bytes));
        }
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
                .await
                .map_err(|_| self.late(&what, REQUEST_TIMEOUT))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|source| self.broke(what.clone(), source))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            // Every whole line so far; the rest waits for the next part.
            if let Some(end) = pending.iter().rposition(|&byte| byte == b'\n') {
                for line in String::from_utf8_lossy(&pending[..end]).split('\n') {
                    on_line(line);
                }
                pending.drain(..=end);
            }
        }
        if !pending.is_empty() {
            on_line(&String::from_utf8_lossy(&pending));
        }
        Ok(())
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint.prefix))
            .header(HOST, &self.endpoint.authority)
            .header(AUTHORIZATION, &self.bearer)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, &self.user_agent);
        let body = match body {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        request.body(body).map_err(|_| {
            Error::InvalidRequest(format!("`{path}` holds characters HTTP cannot carry"))
        })
    }

    async fn collect(&self, what: &str, body: Incoming, limit: Duration) -> Result<Bytes, Error> {
        let collected = tokio::time::timeout(limit, Limited::new(body, MAX_BODY).collect())
            .await
            .map_err(|_| self.late(what, limit))?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) => match error.downcast::<hyper::Error>() {
                Ok(source) => Err(self.broke(what.to_owned(), *source)),
                Err(_) => Err(Error::TooLarge {
                    what: what.to_owned(),
                    limit: MAX_BODY,
                }),
            },
        }
    }

    fn late(&self, what: &str, limit: Duration) -> Error {
        Error::Timeout {
            what: what.to_owned(),
            url: self.endpoint.url.clone(),
            seconds: limit.as_secs(),
        }
    }

    fn broke(&self, what: String, source: hyper::Error) -> Error {
        Error::Http {
            what,
            url: self.endpoint.url.clone(),
            source,
        }
    }
}

/// One keep-alive HTTP/1.1 connection to the server: calls go one after another on it. Dropping
/// it closes the connection.
pub struct Connection {
    client: Client,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Connection {
    /// `GET path`: the answer's JSON (`null` for an empty body).
    pub async fn get(&mut self, path: &str) -> Result<Value, Error> {
        self.call(Method::GET, path, None, Duration::ZERO).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &mut self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Value, Error> {
        let body = to_json(&format!("POST {path}"), body)?;
        self.call(Method::POST, path, Some(body), Duration::ZERO)
            .await
    }

    /// `PUT path` with a JSON body; `wait` is added to the time allowed.
    pub async fn put(
        &mut self,
        path: &str,
        body: &(impl Serialize + ?Sized),
        wait: Duration,
    ) -> Result<Value, Error> {
        let body = to_json(&format!("PUT {path}"), body)?;
        self.call(Method::PUT, path, Some(body), wait).await
    }

    /// `DELETE path`.
    pub async fn delete(&mut self, path: &str) -> Result<Value, Error> {
        self.call(Method::DELETE, path, None, Duration::ZERO).await
    }

    /// Any call: `body` is JSON text, `wait` added to [`REQUEST_TIMEOUT`]. A 2xx answer's JSON
    /// (`null` for an empty body); anything else is [`Error::Refused`].
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<Value, Error> {
        let what = format!("{method} {path}");
        let (status, bytes) = self.exchange(method, path, body, wait).await?;
        if !status.is_success() {
            return Err(Error::refused(what, status, bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::Json { what, source })
    }

    /// Any call, whatever its answer: the status and the body as they came (a refusal too, for
    /// a caller that looks at refusals themselves, such as a test of them).
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<(StatusCode, Bytes), Error> {
        let what = format!("{method} {path}");
        let response = self.send(method, path, body, wait).await?;
        let status = response.status();
        let bytes = self
            .client
            .collect(&what, response.into_body(), REQUEST_TIMEOUT + wait)
            .await?;
        Ok((status, bytes))
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<Response<Incoming>, Error> {
        let what = format!("{method} {path}");
        let request = self.client.request(method, path, body)?;
        let limit = REQUEST_TIMEOUT + wait;
        let exchange = async {
            // A keep-alive connection the server closed (idle, or after an error) says so here.
            self.sender.ready().await?;
            self.sender.send_request(request).await
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| self.client.late(&what, limit))?
            .map_err(|source| self.client.broke(what, source))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn to_json(what: &str, body: &(impl Serialize + ?Sized)) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body).map_err(|error| {
        Error::InvalidRequest(format!(
            "{what}: the body cannot be written as JSON: {error}"
        ))
    })
}
