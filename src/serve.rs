//! Assembles the Pingora server from a compiled registry: the proxy service on every listener,
//! the admin listener, and the background DNS refresh.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::dns::DnsRefresher;
use crate::drain::DrainWatch;
use crate::gateway::{Gateway, GatewayApp};
use crate::health::HealthChecker;
use crate::registry::Registry;
use crate::reload::{FileWatchReload, Reloader, SighupReload};

/// Why the server could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The Pingora server configuration could not be read.
    #[error("pingora server configuration: {0}")]
    ServerConf(String),
    /// A TLS listener could not be set up.
    #[error("TLS listener {addr}: {message}")]
    Tls {
        /// The listener.
        addr: String,
        /// What failed.
        message: String,
    },
}

/// Process-level options from the command line.
#[derive(Debug, Default, Clone)]
pub struct ProcessOptions {
    /// Take the listening sockets over from a running instance (zero-downtime upgrade).
    pub upgrade: bool,
    /// Run in the background.
    pub daemon: bool,
    /// Pingora server configuration file (threads, pid file, upgrade socket, grace periods…).
    pub server_conf: Option<String>,
}

/// Builds the Pingora server for `registry`, loaded from `config_path` (reloaded from there on
/// SIGHUP, file changes and `POST /reload`); call `run_forever` on the result.
pub fn build_server(
    registry: Registry,
    config_path: PathBuf,
    options: &ProcessOptions,
) -> Result<Server, ServeError> {
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        conf: options.server_conf.clone(),
        ..Opt::default()
    };
    let conf = match &options.server_conf {
        Some(path) => ServerConf::load_yaml_with_opt_override(&opt)
            .map_err(|e| ServeError::ServerConf(format!("{path}: {e}")))?,
        // Without a server conf: per-thread runtimes without work stealing. Each request stays on
        // its thread, which in the load harness cost ~15% less CPU per request than stealing.
        None => ServerConf { daemon: options.daemon, work_stealing: false, ..ServerConf::default() },
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let phases = server.watch_execution_phase();
    server.bootstrap();

    let listeners = registry.listeners.clone();
    let admin_addr = registry.admin_addr;
    let registry = Arc::new(ArcSwap::from_pointee(registry));

    let app = GatewayApp::new(
        &server.configuration,
        Gateway::new(registry.clone()),
        Gateway::new(registry.clone()),
    );
    let mut proxy = Service::new("portcullis".to_owned(), app);
    for listener in &listeners {
        let addr = listener.addr.to_string();
        match &listener.tls {
            // Without Pingora's socket buffers: the HTTP/1 driver reads into its own buffer and
            // writes each response in one piece, so a 64 KiB read buffer per connection would
            // only add a copy of every byte (TLS keeps them: it reads records in small pieces).
            None => proxy.add_listener(ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::unbuffered())),
            Some((cert, key)) => {
                let mut tls = TlsSettings::intermediate(cert, key)
                    .map_err(|e| ServeError::Tls { addr: addr.clone(), message: e.to_string() })?;
                tls.enable_h2();
                proxy.add_tls_with_settings(&addr, None, tls);
            }
        }
    }
    server.add_service(proxy);

    let reloader = Arc::new(Reloader::new(config_path, registry.clone()));
    let mut admin = Service::new("portcullis-admin".to_owned(), AdminApp::new(reloader.clone()));
    admin.add_tcp(&admin_addr.to_string());
    server.add_service(admin);

    server.add_service(background_service("portcullis-dns", DnsRefresher::new(registry.clone())));
    server.add_service(background_service("portcullis-health", HealthChecker::new(registry)));
    server.add_service(background_service("portcullis-sighup", SighupReload(reloader.clone())));
    server.add_service(background_service("portcullis-drain", DrainWatch::new(phases)));
    server.add_service(background_service("portcullis-watch", FileWatchReload(reloader)));
    Ok(server)
}
