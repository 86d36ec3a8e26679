//! A request body on its way to a server in HTTP mode. It bounds the pauses
//! of a slow client (`http_request_timeout` between two pieces of body) and
//! says when the body has been read through, so that the server timeout
//! starts after the whole request was sent, not while a client uploads.
//!
//! Requests without a body (most of them) carry nothing extra: no timer,
//! no allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Why an upload stopped early.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the client sent no request body for {0:?}")]
    Stalled(Duration),
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
}

/// The end of an upload, as the request's sender sees it.
#[derive(Debug, Default)]
pub struct UploadEnd {
    notify: Notify,
    stalled: AtomicBool,
}

impl UploadEnd {
    /// Waits until the body has been read through (or has failed).
    pub async fn finished(&self) {
        self.notify.notified().await;
    }

    /// Whether the client paused for longer than allowed.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

struct Watch {
    pause: Duration,
    timer: Pin<Box<Sleep>>,
    end: Arc<UploadEnd>,
}

/// The body of a request forwarded to a server.
pub struct Upload {
    body: Incoming,
    watch: Option<Watch>,
}

impl Upload {
    /// Wraps a client's request body; `None` as the end when there is no
    /// body to wait for.
    pub fn new(body: Incoming, pause: Duration) -> (Self, Option<Arc<UploadEnd>>) {
        if body.is_end_stream() {
            return (Upload { body, watch: None }, None);
        }
        let end = Arc::new(UploadEnd::default());
        let watch = Watch {
            pause,
            timer: Box::pin(tokio::time::sleep(pause)),
            end: Arc::clone(&end),
        };
        (
            Upload {
                body,
                watch: Some(watch),
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
                if this.body.is_end_stream() {
                    this.finish();
                } else if let Some(watch) = &mut this.watch {
                    watch.timer.as_mut().reset(Instant::now() + watch.pause);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let Some(watch) = &mut this.watch else {
                    return Poll::Pending;
                };
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
