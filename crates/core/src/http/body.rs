//! The request body a handler reads: hyper's, cut off at the configured size.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or the client sent a malformed body.
    #[error("reading the request body: {0}")]
    Hyper(#[from] hyper::Error),
    /// The body is larger than the server accepts.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit ([`HttpConfig::max_body_bytes`](super::HttpConfig::max_body_bytes)).
        limit: u64,
    },
}

/// A request body that ends with [`BodyError::TooLarge`] once more than its limit has arrived.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    remaining: u64,
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, limit: u64) -> Self {
        RequestBody {
            inner,
            limit,
            remaining: limit,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.remaining = 0;
                let limit = self.limit;
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
