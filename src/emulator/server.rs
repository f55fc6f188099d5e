//! The emulator's listener: plain HTTP or HTTPS with a self-signed certificate, HTTP/1.1
//! and HTTP/2.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use super::{State, reply, routes};

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the emulator's TLS certificate: {0}")]
    Tls(String),
    #[error("cannot load the emulator's app-token keys: {0}")]
    Keys(String),
}

pub(super) struct Running {
    pub addr: SocketAddr,
    pub ca_pem: Option<String>,
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Running {
    pub async fn start(
        state: Arc<State>,
        addr: SocketAddr,
        tls: bool,
    ) -> Result<Running, EmulatorError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let (acceptor, ca_pem) = if tls {
            let (acceptor, pem) = self_signed_acceptor()?;
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stopped.changed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let acceptor = acceptor.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    // A second handle on the socket: `Failure::Reset` sets SO_LINGER 0
                    // through it, so that closing the connection sends an RST.
                    let socket = socket2::SockRef::from(&stream).try_clone().ok();
                    let reset = Arc::new(Notify::new());
                    let service = {
                        let reset = Arc::clone(&reset);
                        service_fn(move |request| {
                            let state = Arc::clone(&state);
                            let reset = Arc::clone(&reset);
                            async move {
                                let reply = routes::handle(state, request).await?;
                                if reply.extensions().get::<reply::ResetConnection>().is_some() {
                                    // The connection task drops the connection, and this
                                    // reply with it.
                                    reset.notify_one();
                                    std::future::pending::<()>().await;
                                }
                                Ok::<_, Infallible>(reply)
                            }
                        })
                    };
                    let reset_now = || {
                        if let Some(socket) = &socket {
                            let _ = socket.set_linger(Some(Duration::ZERO));
                        }
                    };
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let served = async {
                        match acceptor {
                            Some(acceptor) => {
                                let Ok(stream) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                            None => {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = served => {},
                        _ = stopped.changed() => {},
                        _ = reset.notified() => reset_now(),
                    }
                });
            }
        });
        Ok(Running { addr, ca_pem, stop })
    }
}

fn self_signed_acceptor() -> Result<(tokio_rustls::TlsAcceptor, String), EmulatorError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| EmulatorError::Tls(e.to_string()))?;
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EmulatorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| EmulatorError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem))
}
