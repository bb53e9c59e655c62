//! The HTTP side door's server: axum routes on hyper, on the daemon's tokio runtime.
//!
//! Routes: `/` (index), `/api/state` (what the index shows, as JSON), `/metrics`,
//! `/healthz`, `/cameras/{name}/latest.jpg` and `/cameras/{name}/live.mjpeg`. Routing
//! looks at the path only (a query string such as `?t=123` is ignored), every route
//! answers `GET` and `HEAD` (anything else: 405 with `Allow`), and no answer may be
//! cached: each is a state of now.
//!
//! Bounds, as before the move: at most [`MAX_CONNECTIONS`] connections at once, request
//! heads of at most [`MAX_REQUEST`] bytes read within [`REQUEST_TIME`] (idle keep-alive
//! connections included), and a client that stops reading for [`super::stall::STALLED`]
//! loses its connection. When every connection is taken, a newcomer gets the slot of the
//! oldest one answering no request (`service::slots`): idle or slow clients cannot keep
//! `/healthz` out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::auth::Shared;
use super::http::Health;
use super::live;
use crate::config::HttpSettings;

/// Most connections served at once, so a flood of clients can never use up the process's
/// file descriptors; a newcomer, once accepted, evicts the oldest idle connection, or
/// waits (and the listener with it) while every connection is answering a request.
pub const MAX_CONNECTIONS: usize = 32;
/// How long an evicted connection may go on to finish a response it is sending (one with
/// nothing left to send is closed at once).
pub const LEAVING_TIME: Duration = Duration::from_secs(7);
/// Largest request head read (hyper's smallest buffer): anything longer is refused.
pub const MAX_REQUEST: usize = 8192;
/// A request head must arrive within this long; a keep-alive connection idle this long
/// is closed.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// How long a client is asked to wait after a 503.
pub const RETRY_AFTER_S: u32 = 5;

/// What every handler reads: the daemon's state and how pictures are shown.
#[derive(Clone)]
struct Side {
    health: Arc<Health>,
    blur_faces: bool,
}

/// Serves until the task is dropped. The credentials are read here, off the runtime's
/// threads, and again whenever their file changes; unreadable ones lock every route but
/// `/healthz` (logged), never open them.
pub async fn serve(listener: TcpListener, health: Arc<Health>, settings: HttpSettings) {
    let (gate, watch) = super::auth::watched(settings.auth.clone()).await;
    // Ends with the server: this task is its parent.
    let _watching = watch.map(|w| AbortOnDrop(tokio::spawn(w)));
    let app = router(health, settings.blur_faces, gate);
    let slots = super::slots::Slots::new(MAX_CONNECTIONS);
    let mut refused_logged = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                refused_logged = false;
                stream
            }
            Err(e) => {
                // Out of descriptors (EMFILE) and the like: back off instead of spinning.
                if !refused_logged {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    refused_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let hold = slots.take().await;
        let io = TokioIo::new(super::stall::Stalling::new(stream));
        tokio::spawn(connection(io, hold, app.clone()));
    }
}

/// Serves one connection on its slot until it ends or, evicted, has finished (in time)
/// what it was sending.
async fn connection<I>(io: I, hold: super::slots::Hold, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let slot = hold.slot().clone();
    let (io, unsent) = super::unsent::watch(io);
    let app = hyper_util::service::TowerToHyperService::new(app);
    // Each request counts as being answered (its connection not evictable) until its
    // response's body is handed to hyper.
    let service = hyper::service::service_fn(move |request| {
        let serving = slot.serving();
        let answer = hyper::service::Service::call(&app, request);
        async move { answer.await.map(|r| r.map(|body| super::slots::Counted::new(body, serving))) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIME)
        .max_buf_size(MAX_REQUEST)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let evicted = tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
            false
        }
        () = hold.slot().evicted() => true,
    };
    if !evicted {
        return;
    }
    // Its slot goes to the newcomer now. With nothing left to send (it sent nothing yet,
    // trickles a head, or waits between requests) it is closed at once: it holds no leave,
    // which is for connections mid-response only. One still sending a response whose body
    // hyper has let go of finishes it, in time, rather than be cut (when too many are
    // leaving already, it is cut).
    if !unsent.any() {
        drop(hold);
        tracing::debug!("idle HTTP connection closed to make room");
        return;
    }
    let Some(_leaving) = hold.leave() else {
        tracing::debug!("evicted HTTP connection cut: too many are finishing their responses");
        return;
    };
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(LEAVING_TIME, conn).await {
        Ok(_) => tracing::debug!("evicted HTTP connection closed once its response was sent"),
        Err(_) => tracing::debug!("evicted HTTP connection cut: its response took too long"),
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every route, with the credentials check on all but `/healthz` and `no-store` on all.
pub fn router(health: Arc<Health>, blur_faces: bool, gate: Shared) -> Router {
    let side = Side { health, blur_faces };
    let guarded = Router::new()
        .route("/", get(index))
        .route("/api/state", get(state))
        .route("/metrics", get(metrics))
        .route("/cameras/{camera}/latest.jpg", get(latest))
        .route("/cameras/{camera}/live.mjpeg", get(mjpeg))
        .merge(super::history_page::routes(side.health.clone()))
        .route_layer(axum::middleware::from_fn_with_state(gate, super::auth::check));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(no_store))
        .with_state(side)
}

/// Nothing the side door answers may be kept by a browser or a proxy.
async fn no_store(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A plain-text answer.
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

/// A 503 that says when to come back.
pub(super) fn unavailable(body: Response) -> Response {
    let mut response = body;
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    response
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "try /, /api/state, /metrics, /healthz, /cameras/NAME/latest.jpg or /cameras/NAME/live.mjpeg\n",
    )
}

async fn index(State(side): State<Side>) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], super::index::page(&side.health)).into_response()
}

async fn state(State(side): State<Side>) -> Response {
    let body = super::index::state(&side.health).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(side): State<Side>) -> Response {
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], super::metrics::render(&side.health)).into_response()
}

async fn healthz(State(side): State<Side>) -> Response {
    let (ok, body) = super::http::healthz(&side.health);
    let response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if ok { response } else { unavailable(response) }
}

async fn latest(State(side): State<Side>, Path(camera): Path<String>) -> Response {
    if !live::known(&side.health, &camera) {
        return text(StatusCode::NOT_FOUND, format!("no camera '{camera}': see /\n"));
    }
    match live::latest(&side.health, &camera, side.blur_faces).await {
        Some(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg")], Body::from(jpeg)).into_response(),
        None => unavailable(text(StatusCode::OK, "no frame analysed yet: is the camera streaming?\n")),
    }
}

async fn mjpeg(State(side): State<Side>, Path(camera): Path<String>) -> Response {
    if !live::known(&side.health, &camera) {
        return text(StatusCode::NOT_FOUND, format!("no camera '{camera}': see /\n"));
    }
    let Some(stream) = live::stream(side.health.clone(), camera, side.blur_faces) else {
        let body = format!("at most {} live viewers at once: try again later\n", live::MAX_VIEWERS);
        return unavailable(text(StatusCode::OK, body));
    };
    (
        [
            (header::CONTENT_TYPE, "multipart/x-mixed-replace; boundary=frame"),
            // The stream ends with its camera: the connection goes with it.
            (header::CONNECTION, "close"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper lets go of a body once it is queued, long before a slow client has it all: the
    /// connection then looks idle and a newcomer evicts it. It must finish the response.
    #[tokio::test]
    async fn an_evicted_connection_finishes_the_response_it_is_sending() {
        const BIG: usize = 256 * 1024;
        let slots = super::super::slots::Slots::new(1);
        let hold = slots.take().await;
        // A pipe that holds 1 KiB: the client reads the response as slowly as it likes.
        let (client, server) = tokio::io::duplex(1024);
        let app = Router::new().route("/big", get(|| async { vec![b'x'; BIG] }));
        let serving = tokio::spawn(connection(TokioIo::new(server), hold, app));
        let (mut from, mut to) = tokio::io::split(client);
        to.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut start = [0u8; 64];
        from.read_exact(&mut start).await.unwrap();
        // The newcomer waits until the body is out of the count, evicts, and has the slot.
        let newcomer = tokio::time::timeout(Duration::from_secs(30), slots.take()).await.expect("the slot, at once");
        assert_eq!(slots.leaving(), 1, "mid-response: it holds a leave while it finishes");
        let mut all = start.to_vec();
        tokio::time::timeout(Duration::from_secs(30), from.read_to_end(&mut all))
            .await
            .expect("the response ends")
            .unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
        let head = String::from_utf8_lossy(&all[..split]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains(&format!("content-length: {BIG}")), "{head}");
        assert_eq!(all.len() - split, BIG, "the whole body, though evicted");
        assert!(all[split..].iter().all(|b| *b == b'x'));
        tokio::time::timeout(Duration::from_secs(30), serving).await.expect("the connection ends").unwrap();
        drop(newcomer);
    }

    /// A connection still sending its head has nothing to finish: evicted, it is closed at
    /// once and takes none of the leaves kept for responses under way. (Clients trickling
    /// their heads in a flood used to hold every leave until their heads timed out, and a
    /// slow download evicted meanwhile was cut.)
    #[tokio::test]
    async fn an_evicted_connection_with_nothing_to_send_is_closed_at_once_and_takes_no_leave() {
        let slots = super::super::slots::Slots::new(1);
        let hold = slots.take().await;
        let (mut client, server) = tokio::io::duplex(1024);
        let app = Router::new().route("/", get(|| async { "x" }));
        let serving = tokio::spawn(connection(TokioIo::new(server), hold, app));
        // Part of a head, more than the pipe holds: once it is in, the server has read some.
        let part = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n", "s".repeat(2000));
        client.write_all(part.as_bytes()).await.unwrap();
        // The newcomer has the slot only once the silent connection gave it back.
        let newcomer = tokio::time::timeout(Duration::from_secs(30), slots.take()).await.expect("the slot, at once");
        assert_eq!(slots.leaving(), 0, "the connection sending its head holds no leave");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut rest))
            .await
            .expect("the connection is closed")
            .unwrap();
        assert!(rest.is_empty(), "nothing was sent to it: {}", String::from_utf8_lossy(&rest));
        tokio::time::timeout(Duration::from_secs(30), serving).await.expect("the connection ends").unwrap();
        assert_eq!(slots.leaving(), 0);
        drop(newcomer);
    }
}
