//! A loopback HTTP server for a fake, stopped when dropped.

use std::future::Future;
use std::time::Duration;

use super::FakeError;

pub(crate) struct Server {
    pub(crate) base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serves `handler` on `127.0.0.1:0` on the current tokio runtime.
pub(crate) fn serve<F, Fut>(handler: F) -> Result<Server, FakeError>
where
    F: Fn(poem::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = poem::Response> + Send + 'static,
{
    let io = |e: std::io::Error| FakeError::new(format!("listen: {e}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let acceptor = poem::listener::TcpAcceptor::from_std(listener).map_err(io)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            poem::endpoint::make(handler),
            async move {
                let _ = rx.await;
            },
            Some(Duration::from_millis(200)),
        ),
    );
    Ok(Server {
        base_url: format!("http://{addr}"),
        stop: Some(tx),
    })
}
