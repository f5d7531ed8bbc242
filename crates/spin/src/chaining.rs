//! Service chaining, as Spin does it: a request a component sends to
//! `http://<component>.spin.internal/<path>` goes to that component of the same app, in this
//! process, without touching the network. The sender must allow it in its
//! `allowed_outbound_hosts` (`http://<component>.spin.internal`, or `http://*.spin.internal`
//! for every component). Any component of an HTTP trigger can be reached, among them those
//! whose trigger has a private route (`route = { private = true }`), which nothing else
//! reaches.
//!
//! The target sees the request as if it had matched the route `/...`, from client
//! `0.0.0.0:0`: `spin-path-info` is the whole path and `spin-component-route` is empty.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};

use kwasi_core::http::ClientAddr;
use kwasi_engine_wasmtime::ResponseBody;
use wasmtime_wasi_http::{Error as ErrorCode, WasiBody};

use crate::trigger::{set_spin_headers, ComponentService, RouteInfo};

/// The domain of service chaining hosts.
pub const DOMAIN: &str = "spin.internal";

/// The client address a chained request comes from (as in Spin).
const CHAINED_CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// The component that `host` (`<component>.spin.internal`, without a port) names, if it is a
/// service chaining host. `*` names every component, as in `allowed_outbound_hosts`.
pub fn target(host: &str) -> Option<&str> {
    let (component, domain) = host.split_once('.')?;
    (domain.eq_ignore_ascii_case(DOMAIN) && !component.is_empty()).then_some(component)
}

/// Why a chained request got no response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The app has no HTTP component of that name.
    #[error("the app has no component {0} behind an HTTP trigger")]
    NoSuchComponent(String),
    /// The component failed.
    #[error("component {component} failed: {reason}")]
    Failed {
        /// The component.
        component: String,
        /// What went wrong.
        reason: String,
    },
}

impl ChainError {
    /// The `wasi:http` error the sender gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            ChainError::NoSuchComponent(_) => ErrorCode::DestinationNotFound,
            ChainError::Failed { reason, .. } => ErrorCode::InternalError(Some(reason.clone())),
        }
    }
}

/// The components that chained requests reach. Each component's outbound hooks hold a
/// `Chain`; it is filled once every component of the app is loaded. It holds them weakly: the
/// app keeps them, and the components keep their hooks.
#[derive(Clone, Default)]
pub struct Chain {
    components: Arc<OnceLock<Weak<BTreeMap<String, ComponentService>>>>,
}

impl Chain {
    /// Makes `components` the ones this chain reaches. Only the first call counts.
    pub fn complete(&self, components: &Arc<BTreeMap<String, ComponentService>>) {
        let _ = self.components.set(Arc::downgrade(components));
    }

    /// Sends `request` to `component` and returns its response.
    pub async fn send(
        &self,
        component: &str,
        mut request: hyper::Request<WasiBody>,
    ) -> Result<hyper::Response<ResponseBody>, ChainError> {
        let service = self
            .components
            .get()
            .and_then(Weak::upgrade)
            .and_then(|components| components.get(component).cloned())
            .ok_or_else(|| ChainError::NoSuchComponent(component.to_string()))?;
        let path = request.uri().path().to_string();
        request.extensions_mut().insert(ClientAddr(CHAINED_CLIENT));
        set_spin_headers(&mut request, &RouteInfo::chained(&path));
        service
            .serve(request, None)
            .await
            .map_err(|reason| ChainError::Failed {
                component: component.to_string(),
                reason,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chaining_host_names_its_component() {
        assert_eq!(target("backend.spin.internal"), Some("backend"));
        assert_eq!(target("*.spin.internal"), Some("*"));
        assert_eq!(target("Backend.SPIN.internal"), Some("Backend"));
    }

    #[test]
    fn other_hosts_are_not_chaining_hosts() {
        for host in [
            "spin.internal",
            ".spin.internal",
            "a.b.spin.internal",
            "backend.spin.internal.example.com",
            "example.com",
        ] {
            assert_eq!(target(host), None, "{host}");
        }
    }

    #[test]
    fn a_chain_not_yet_completed_reaches_no_component() {
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let sent = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Chain::default().send("backend", hyper::Request::new(body)));
        assert_eq!(
            sent.unwrap_err(),
            ChainError::NoSuchComponent("backend".into())
        );
    }
}
