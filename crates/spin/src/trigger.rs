//! The HTTP trigger: each request goes to the component of its route, with the headers Spin
//! sets, through [`kwasi_core::http`]'s server (its concurrency bounds, limits and drain).

use std::net::SocketAddr;

use hyper::header::{HeaderName, HeaderValue};
use kwasi_core::http::{Admission, ClientAddr, Handler, HttpConfig, RequestBody, Resources};
use kwasi_core::workload::env_var;
use kwasi_engine_wasmtime::{
    fixed_response, wasi_request, HttpService, LinkedComponent, ResponseBody, ResponseBodyError,
};
use wasmtime_wasi_http::WasiBody;

use crate::inbound_http::InboundHttp;

use crate::host::SpinHost;
use crate::routes::{Match, Router, WELL_KNOWN_PREFIX};

/// Where the trigger listens unless `SPIN_HTTP_LISTEN_ADDR` says otherwise (as Spin's shim).
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:80";

/// The health route, answered 200 `OK` by the host.
pub const HEALTH_ROUTE: &str = "/.well-known/spin/health";

/// The server settings of an app's HTTP trigger: kwasi's, from the task's environment, with
/// the address from `SPIN_HTTP_LISTEN_ADDR`.
pub fn http_config(env: &[(String, String)]) -> Result<HttpConfig, String> {
    let mut config =
        HttpConfig::from_env(env, Resources::of_this_process()).map_err(|e| e.to_string())?;
    let addr = env_var(env, "SPIN_HTTP_LISTEN_ADDR").unwrap_or(DEFAULT_LISTEN_ADDR);
    config.addr = addr.parse::<SocketAddr>().map_err(|e| {
        format!("SPIN_HTTP_LISTEN_ADDR={addr}: {e} (give an address and port, like 0.0.0.0:80)")
    })?;
    Ok(config)
}

/// The variable that limits each instance's memory, in bytes (as Spin's shim reads it).
pub const MAX_INSTANCE_MEMORY: &str = "SPIN_MAX_INSTANCE_MEMORY";

/// The memory limit of each instance that `env` sets, if it sets one.
pub fn max_instance_memory(env: &[(String, String)]) -> Result<Option<usize>, String> {
    let Some(value) = env_var(env, MAX_INSTANCE_MEMORY) else {
        return Ok(None);
    };
    match value.trim().parse::<usize>() {
        Ok(bytes) if bytes > 0 => Ok(Some(bytes)),
        _ => Err(format!(
            "{MAX_INSTANCE_MEMORY}={value}: give a number of bytes, like 134217728 for 128 MiB"
        )),
    }
}

/// A component that answers HTTP requests, by the interface it exports.
#[derive(Clone)]
pub enum ComponentService {
    /// `wasi:http/incoming-handler`.
    Wasi(HttpService<SpinHost>),
    /// The legacy `fermyon:spin/inbound-http`.
    Legacy(InboundHttp),
}

impl ComponentService {
    /// The service of `linked`, by the HTTP interface it exports.
    pub fn new(linked: LinkedComponent<SpinHost>) -> Result<ComponentService, String> {
        match HttpService::new(linked.clone()) {
            Ok(service) => Ok(ComponentService::Wasi(service)),
            Err(_) => InboundHttp::new(linked)
                .map(ComponentService::Legacy)
                .map_err(|_| {
                    "exports neither wasi:http/incoming-handler nor fermyon:spin/inbound-http, \
                 which an HTTP trigger calls"
                        .to_string()
                }),
        }
    }

    /// Answers `request` (its Spin headers set) in a fresh instance. `admission` is the
    /// request's slot in the server, if it came through the server rather than from another
    /// component.
    pub async fn serve(
        &self,
        request: hyper::Request<WasiBody>,
        admission: Option<Admission>,
    ) -> Result<hyper::Response<ResponseBody>, String> {
        match self {
            ComponentService::Wasi(service) => service.serve(request, admission).await,
            ComponentService::Legacy(service) => {
                let _admission = admission;
                service.handle(request).await
            }
        }
    }
}

/// An app's HTTP trigger: its routes, each to a component ready to answer.
pub struct HttpTrigger {
    router: Router<ComponentService>,
    on_drain: Option<Box<dyn Fn() + Send + Sync>>,
}

impl HttpTrigger {
    /// The trigger of `router`'s routes.
    pub fn new(router: Router<ComponentService>) -> HttpTrigger {
        HttpTrigger {
            router,
            on_drain: None,
        }
    }

    /// Calls `hook` when the server starts draining at SIGTERM: the app's other triggers
    /// drain at the same time.
    pub fn on_drain(self, hook: impl Fn() + Send + Sync + 'static) -> HttpTrigger {
        HttpTrigger {
            on_drain: Some(Box::new(hook)),
            ..self
        }
    }
}

impl Handler for HttpTrigger {
    type Body = ResponseBody;
    type BodyError = ResponseBodyError;

    fn draining(&self) {
        if let Some(hook) = &self.on_drain {
            hook();
        }
    }

    async fn handle(
        &self,
        request: hyper::Request<RequestBody>,
        admission: Admission,
    ) -> Result<hyper::Response<ResponseBody>, String> {
        let path = request.uri().path().to_string();
        if path == HEALTH_ROUTE {
            return Ok(fixed_response(200, "OK"));
        }
        if path.starts_with(WELL_KNOWN_PREFIX) {
            return Ok(fixed_response(404, ""));
        }
        let Some(matched) = self.router.route(&path) else {
            return Ok(fixed_response(404, ""));
        };
        let mut request = wasi_request(request);
        set_spin_headers(&mut request, &RouteInfo::of(&matched));
        matched.route.target.serve(request, Some(admission)).await
    }
}

/// What Spin's headers tell a component of the route its request took.
pub(crate) struct RouteInfo<'a> {
    /// The route as written (`spin-matched-route`).
    raw: &'a str,
    /// The route without its trailing wildcard (`spin-component-route`).
    component_route: &'a str,
    /// The path below the route's prefix (`spin-path-info`).
    path_info: &'a str,
    /// The named segments and what they matched (`spin-path-match-<name>`).
    named: &'a [(String, String)],
}

impl<'a> RouteInfo<'a> {
    /// The route of a request the router matched.
    pub(crate) fn of<T>(matched: &'a Match<'a, T>) -> RouteInfo<'a> {
        RouteInfo {
            raw: &matched.route.raw,
            component_route: matched.route.component_route(),
            path_info: &matched.path_info,
            named: &matched.named,
        }
    }

    /// The route of a request to `path` from another component, which Spin presents as if it
    /// had matched `/...`.
    pub(crate) fn chained(path: &'a str) -> RouteInfo<'a> {
        RouteInfo {
            raw: "/...",
            component_route: "",
            path_info: path,
            named: &[],
        }
    }
}

/// Sets the headers Spin adds to a request for its component.
pub(crate) fn set_spin_headers<B>(request: &mut hyper::Request<B>, route: &RouteInfo<'_>) {
    for (name, value) in spin_headers(request, route) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.headers_mut().insert(name, value);
        }
    }
}

/// The headers Spin adds to a request for its component, among them
/// `spin-path-match-<name>` for each named segment of the route. The seven fixed names are
/// static: parsing them at every request cost a tenth of the throughput (benches/README.md).
fn spin_headers<B>(
    request: &hyper::Request<B>,
    route: &RouteInfo<'_>,
) -> Vec<(HeaderName, String)> {
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = vec![
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", route.path_info.to_string()),
        ("spin-matched-route", route.raw.to_string()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", route.raw.to_string()),
        ("spin-component-route", route.component_route.to_string()),
    ];
    if let Some(ClientAddr(addr)) = request.extensions().get::<ClientAddr>() {
        headers.push(("spin-client-addr", addr.to_string()));
    }
    let named = route.named.iter().filter_map(|(name, value)| {
        let name = name.to_ascii_lowercase().replace('_', "-");
        let name = HeaderName::from_bytes(format!("spin-path-match-{name}").as_bytes()).ok()?;
        Some((name, value.clone()))
    });
    headers
        .into_iter()
        .map(|(name, value)| (HeaderName::from_static(name), value))
        .chain(named)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(route: &str, uri: &str) -> Vec<(HeaderName, String)> {
        let router = Router::build([("t".to_string(), route.to_string(), ())]).unwrap();
        let mut request = hyper::Request::builder()
            .uri(uri)
            .header("host", "example.test:8080")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(ClientAddr("10.0.0.7:4321".parse().unwrap()));
        let path = request.uri().path().to_string();
        let matched = router.route(&path).unwrap();
        spin_headers(&request, &RouteInfo::of(&matched))
    }

    fn get<'a>(headers: &'a [(HeaderName, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn a_wildcard_route_gives_the_path_below_it_and_its_prefix() {
        let h = headers("/foo/...", "/foo/bar?x=1");
        assert_eq!(
            get(&h, "spin-full-url"),
            "http://example.test:8080/foo/bar?x=1"
        );
        assert_eq!(get(&h, "spin-path-info"), "/bar");
        assert_eq!(get(&h, "spin-matched-route"), "/foo/...");
        assert_eq!(get(&h, "spin-raw-component-route"), "/foo/...");
        assert_eq!(get(&h, "spin-component-route"), "/foo");
        assert_eq!(get(&h, "spin-base-path"), "/");
        assert_eq!(get(&h, "spin-client-addr"), "10.0.0.7:4321");
    }

    #[test]
    fn the_root_wildcard_has_an_empty_component_route_and_the_whole_path() {
        let h = headers("/...", "/");
        assert_eq!(get(&h, "spin-component-route"), "");
        assert_eq!(get(&h, "spin-path-info"), "/");
    }

    #[test]
    fn an_exact_route_has_no_path_info() {
        let h = headers("/hello", "/hello");
        assert_eq!(get(&h, "spin-path-info"), "");
        assert_eq!(get(&h, "spin-component-route"), "/hello");
    }

    #[test]
    fn each_named_segment_gets_a_path_match_header() {
        let h = headers("/users/:user_id/posts/:post", "/users/42/posts/hello");
        assert_eq!(get(&h, "spin-path-match-user-id"), "42");
        assert_eq!(get(&h, "spin-path-match-post"), "hello");
        assert_eq!(
            get(&h, "spin-component-route"),
            "/users/:user_id/posts/:post"
        );
        assert_eq!(get(&h, "spin-path-info"), "");
    }

    #[test]
    fn a_chained_request_looks_as_if_it_matched_the_root_wildcard() {
        let request = hyper::Request::builder()
            .uri("http://backend.spin.internal/api/items?x=1")
            .body(())
            .unwrap();
        let h = spin_headers(&request, &RouteInfo::chained("/api/items"));
        assert_eq!(
            get(&h, "spin-full-url"),
            "http://backend.spin.internal/api/items?x=1"
        );
        assert_eq!(get(&h, "spin-path-info"), "/api/items");
        assert_eq!(get(&h, "spin-matched-route"), "/...");
        assert_eq!(get(&h, "spin-component-route"), "");
    }

    #[test]
    fn the_listen_address_defaults_to_port_80_and_follows_the_spin_variable() {
        assert_eq!(
            http_config(&[]).unwrap().addr,
            "0.0.0.0:80".parse().unwrap()
        );
        let env = [(
            "SPIN_HTTP_LISTEN_ADDR".to_string(),
            "127.0.0.1:3000".to_string(),
        )];
        assert_eq!(
            http_config(&env).unwrap().addr,
            "127.0.0.1:3000".parse().unwrap()
        );
    }

    #[test]
    fn the_instance_memory_limit_is_a_number_of_bytes() {
        let env = |v: &str| [(MAX_INSTANCE_MEMORY.to_string(), v.to_string())];
        assert_eq!(max_instance_memory(&[]), Ok(None));
        assert_eq!(max_instance_memory(&env("1048576")), Ok(Some(1 << 20)));
        assert!(max_instance_memory(&env("1Mi"))
            .unwrap_err()
            .starts_with("SPIN_MAX_INSTANCE_MEMORY=1Mi: "));
    }

    #[test]
    fn a_bad_listen_address_names_the_variable() {
        let env = [("SPIN_HTTP_LISTEN_ADDR".to_string(), "localhost".to_string())];
        assert!(http_config(&env)
            .unwrap_err()
            .starts_with("SPIN_HTTP_LISTEN_ADDR=localhost"));
    }
}
