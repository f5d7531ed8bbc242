//! The HTTP/1.1 server: listener, keep-alive connections, admission, limits and the drain on
//! SIGTERM.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body::RequestBody;
use super::config::HttpConfig;

/// How long a client may take to send a request head before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What an engine does with each request: typically, instantiate the component and call its
/// `wasi:http/incoming-handler` export.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: Body<Data = Bytes, Error = Self::BodyError> + Send + 'static;
    /// The response body's error.
    type BodyError: std::error::Error + Send + Sync + 'static;

    /// Answers `request`. The handler keeps `admission` for as long as the request holds
    /// resources (its instance): until it is dropped, the slot counts against
    /// [`HttpConfig::max_concurrency`].
    ///
    /// An `Err` becomes a 500 for this request alone; its text goes to the task's stderr.
    fn handle(
        &self,
        request: Request<RequestBody>,
        admission: Admission,
    ) -> impl Future<Output = Result<Response<Self::Body>, String>> + Send;

    /// Called once SIGTERM or SIGINT has come, when the server has stopped taking
    /// connections and before in-flight requests drain: a workload with other work beside
    /// the server (another trigger) starts winding it down here, so that both drain at once.
    fn draining(&self) {}
}

/// The address of the client that sent a request: an extension of every request a
/// [`Handler`] gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// A request's place among the ones running at once; dropping it lets the next one in.
#[derive(Debug)]
pub struct Admission {
    _queued: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM or SIGINT came and every in-flight request finished within the drain time.
    Drained,
    /// The drain time ran out with requests still in flight; they were cut.
    DeadlineExceeded,
}

impl Shutdown {
    /// The task's exit status: 0 after a complete drain; 128 + SIGTERM when requests had to
    /// be cut, as if the signal had ended the task.
    pub fn exit_code(self) -> i32 {
        match self {
            Shutdown::Drained => 0,
            Shutdown::DeadlineExceeded => 128 + libc::SIGTERM,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The runtime or the signal handlers could not be set up.
    #[error("setting up the HTTP server: {0}")]
    Setup(std::io::Error),
    /// The address is taken or not this task's to use.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

struct Server<H> {
    handler: H,
    config: HttpConfig,
    queued: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

type ServerBody<H> = Either<Full<Bytes>, <H as Handler>::Body>;

/// Serves HTTP/1.1 on [`HttpConfig::addr`] with `handler` until SIGTERM or SIGINT, then lets
/// in-flight requests finish for at most [`HttpConfig::drain`].
///
/// Blocks the calling thread; the server runs on its own tokio runtime with one worker per
/// CPU the task may use.
pub fn serve<H: Handler>(config: &HttpConfig, handler: H) -> Result<Shutdown, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Setup)?;
    let server = Arc::new(Server {
        handler,
        config: config.clone(),
        queued: Arc::new(Semaphore::new(config.max_concurrency + config.max_queue)),
        running: Arc::new(Semaphore::new(config.max_concurrency)),
    });
    let outcome = runtime.block_on(server.run());
    // Requests cut by the deadline may still hold instances on the workers: do not wait.
    runtime.shutdown_background();
    outcome
}

impl<H: Handler> Server<H> {
    async fn run(self: Arc<Self>) -> Result<Shutdown, ServeError> {
        let addr = self.config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let eventfd = crate::signals::termination_as_event().map_err(ServeError::Setup)?;
        // SAFETY: the `OwnedFd` moves into the `AsyncFd` and stays open as long as it.
        let termination =
            unsafe { AsyncFd::register(eventfd) }.map_err(|e| ServeError::Setup(e.into()))?;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true)
            .max_buf_size(self.config.max_header_bytes)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let graceful = GracefulShutdown::new();
        eprintln!("serving HTTP on http://{addr}/");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of descriptors, most likely: let connections close first.
                            log::warn!("accepting a connection on {addr}: {err}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let server = Arc::clone(&self);
                    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                        request.extensions_mut().insert(ClientAddr(peer));
                        Arc::clone(&server).respond(request)
                    });
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        // A client that goes away mid-request is its own business.
                        let _ = connection.await;
                    });
                }
                _ = termination.readable() => break,
            }
        }
        drop(listener);
        self.handler.draining();
        match tokio::time::timeout(self.config.drain, graceful.shutdown()).await {
            Ok(()) => Ok(Shutdown::Drained),
            Err(_) => {
                eprintln!(
                    "requests still in flight after the drain time of {} s: cut",
                    self.config.drain.as_secs()
                );
                Ok(Shutdown::DeadlineExceeded)
            }
        }
    }

    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ServerBody<H>>, Infallible> {
        let limit = self.config.max_body_bytes;
        if content_length(&request).is_some_and(|len| len > limit) {
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes\n"),
            ));
        }
        let Ok(queued) = Arc::clone(&self.queued).try_acquire_owned() else {
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "server busy\n".into());
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, 1.into());
            return Ok(response);
        };
        let Ok(running) = Arc::clone(&self.running).acquire_owned().await else {
            return Ok(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down\n".into(),
            ));
        };
        let admission = Admission {
            _queued: queued,
            _running: running,
        };
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let request = request.map(|body| RequestBody::new(body, limit));
        match self.handler.handle(request, admission).await {
            Ok(response) => Ok(response.map(Either::Right)),
            Err(err) => {
                eprintln!("{method} {path}: {err}");
                Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error\n".into(),
                ))
            }
        }
    }
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn plain<B>(status: StatusCode, text: String) -> Response<Either<Full<Bytes>, B>> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}
