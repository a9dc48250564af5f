//! Simulated twins of the services funnelfix talks to. Each one is an HTTP
//! server on loopback that speaks the real API's paths, JSON and errors, and
//! keeps state where the real service does. `funnelfix demo` runs against them,
//! and so do the tests, through the same adapters production uses.

pub mod events;
pub mod github;
pub mod github_app;
pub mod llm;
pub mod posthog;
pub mod posthog_evidence;
pub mod site;
pub mod telegram;
pub mod world;

use std::net::SocketAddr;

use tokio::sync::oneshot;

/// A running twin: its base URL, and a guard that stops it when dropped.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Serves `router` on an ephemeral loopback port until the `Server` is dropped.
    pub async fn start(router: axum::Router) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "sandbox server stopped");
            }
        });
        Ok(Server {
            addr,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
