//! The guest's stdout and stderr: kept in memory up to `max_stdio_bytes` each and logged
//! after the call. Writes past the cap succeed and are counted, not kept, so a chatty
//! guest neither grows host memory nor fails its `print!`. Guest writes land here
//! directly (a WASI output stream, no task in between).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a guest may write in one go.
const WRITE_PERMIT: usize = 64 << 10;

/// A capped in-memory sink; clones share it.
#[derive(Debug, Clone)]
pub(super) struct Captured {
    cap: usize,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Captured {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            kept: Arc::default(),
        }
    }

    /// Keep what fits of `bytes`, count the rest.
    fn keep(&self, bytes: &[u8]) {
        let mut kept = self.kept.lock().expect("no panics under this lock");
        let room = self.cap.saturating_sub(kept.bytes.len()).min(bytes.len());
        kept.bytes.extend_from_slice(&bytes[..room]);
        kept.dropped += bytes.len() - room;
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub(super) fn contents(&self) -> (Vec<u8>, usize) {
        let kept = self.kept.lock().expect("no panics under this lock");
        (kept.bytes.clone(), kept.dropped)
    }
}

impl AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn keeps_up_to_the_cap_and_counts_the_rest() {
        let captured = Captured::new(5);
        let mut stream = Box::into_pin(captured.async_stream());
        stream.write_all(b"abc").await.unwrap();
        stream.write_all(b"defgh").await.unwrap();
        stream.write_all(b"ij").await.unwrap();
        assert_eq!(captured.contents(), (b"abcde".to_vec(), 5));
    }
}
