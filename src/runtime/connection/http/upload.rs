//! A request body on its way to a server in HTTP mode. It bounds the pauses
//! of a slow client (`http_request_timeout` while the router waits for the
//! next piece of body), counts progress so that a server that stops
//! reading is noticed, and says when the body has been read through, so
//! that the server timeout starts after the whole request was sent, not
//! while a client uploads.
//!
//! Requests without a body (most of them) carry nothing extra: no timer,
//! no allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Why an upload stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the client sent no request body for {0:?}")]
    Stalled(Duration),
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
}

/// The end of an upload, as the request's sender sees it.
#[derive(Debug, Default)]
pub(crate) struct UploadEnd {
    notify: Notify,
    /// Pieces of body passed on so far.
    progress: AtomicU64,
    stalled: AtomicBool,
    client_failed: AtomicBool,
}

impl UploadEnd {
    /// Waits until the body has been read through (or has failed).
    pub(crate) async fn finished(&self) {
        self.notify.notified().await;
    }

    /// Pieces of body passed on so far: unchanged over a while, with the
    /// upload unfinished, means the server stopped reading it.
    pub(crate) fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Whether the client paused for longer than allowed.
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Whether the client's body broke off (reset, closed, malformed).
    pub(crate) fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }
}

struct Watch {
    pause: Duration,
    /// Armed when the router starts waiting for the client, never while
    /// it is not reading (connect, a server's backpressure).
    timer: Pin<Box<Sleep>>,
    armed: bool,
    end: Arc<UploadEnd>,
}

/// The body of a request forwarded to a server.
pub(crate) struct Upload {
    body: Incoming,
    watch: Option<Watch>,
    /// The request's body bytes, for its backend's and server's counters.
    counted: Option<Uploaded>,
}

/// A request's body bytes as they go to the server: set on the request
/// (an extension) by the router when it has a body, read when its answer
/// ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Uploaded(Arc<AtomicU64>);

impl Uploaded {
    pub(crate) fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Upload {
    /// Wraps a client's request body; `None` as the end when there is no
    /// body to wait for.
    pub(crate) fn new(
        body: Incoming,
        pause: Duration,
        counted: Option<Uploaded>,
    ) -> (Self, Option<Arc<UploadEnd>>) {
        if body.is_end_stream() {
            let upload = Upload {
                body,
                watch: None,
                counted,
            };
            return (upload, None);
        }
        let end = Arc::new(UploadEnd::default());
        let watch = Watch {
            pause,
            timer: Box::pin(tokio::time::sleep(pause)),
            armed: false,
            end: Arc::clone(&end),
        };
        (
            Upload {
                body,
                watch: Some(watch),
                counted,
            },
            Some(end),
        )
    }

    fn finish(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.end.notify.notify_one();
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(counted), Some(data)) = (&this.counted, frame.data_ref()) {
                    counted.0.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if let Some(watch) = &mut this.watch {
                    watch.armed = false;
                    watch.end.progress.fetch_add(1, Ordering::Relaxed);
                }
                if this.body.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(watch) = &this.watch {
                    watch.end.client_failed.store(true, Ordering::Relaxed);
                }
                this.finish();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let Some(watch) = &mut this.watch else {
                    return Poll::Pending;
                };
                if !watch.armed {
                    watch.armed = true;
                    let at = Instant::now() + watch.pause;
                    watch.timer.as_mut().reset(at);
                }
                if watch.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let pause = watch.pause;
                watch.end.stalled.store(true, Ordering::Relaxed);
                this.finish();
                Poll::Ready(Some(Err(UploadError::Stalled(pause))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // A sender that gave up on the body still wakes whoever waits.
        self.finish();
    }
}
