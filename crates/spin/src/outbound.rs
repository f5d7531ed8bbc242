//! Outbound HTTP, as Spin allows it: a component reaches only the destinations its
//! `allowed_outbound_hosts` lists, each `<scheme>://<host>[:<port>]` with `*` wildcards
//! (`https://*.example.com`, `http://localhost:*`, `*://10.0.0.0/8:8080..8090`), and its own
//! app through `self` (a relative URL, or the host `self.alt`), and its app's components through
//! service chaining (`http://<component>.spin.internal`, [`crate::chaining`]). Any other
//! request is refused with `wasi:http`'s `HTTP-request-denied`, and a line on the task's stderr
//! says which destination to allow.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hyper::header::{HeaderValue, HOST};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::chaining::{self, Chain, DOMAIN};

/// The destinations one component may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// `None` for `*`.
    scheme: Option<String>,
    host: HostPattern,
    ports: Ports,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, kept as `.example.com`.
    Subdomain(String),
    /// `self` or `self.alt`: the component's own app.
    ToSelf,
    Literal(url::Host),
    Network(ipnet::IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ports {
    Any,
    One(u16),
    /// `start..end`, the end excluded (as Spin reads it).
    Range(u16, u16),
}

/// The port a scheme implies when a URL or an allowed host gives none.
fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHosts {
    /// Reads `entries`, with their templates already expanded; an empty entry (a variable
    /// that expanded to nothing) allows nothing. The error names the entry and what is wrong.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedHosts, String> {
        let mut parsed = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            parsed.push(AllowedHost::parse(entry).map_err(|reason| {
                format!(
                    "allowed_outbound_hosts: {entry:?} {reason} (write <scheme>://<host>[:<port>], \
                     with * for any scheme, host or port)"
                )
            })?);
        }
        Ok(AllowedHosts { entries: parsed })
    }

    /// Whether a request to `scheme://host[:port]` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Ok(host) = url::Host::parse(host) else {
            return false;
        };
        let Some(port) = port.or_else(|| well_known_port(scheme)) else {
            return false;
        };
        self.entries
            .iter()
            .any(|e| e.allows_scheme(scheme) && e.host.allows(&host) && e.ports.allows(port))
    }

    /// Whether a request to the component's own app is allowed.
    pub fn allows_self(&self) -> bool {
        self.entries.iter().any(|e| {
            (e.allows_scheme("http") || e.allows_scheme("https"))
                && matches!(e.host, HostPattern::Any | HostPattern::ToSelf)
        })
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<AllowedHost, String> {
        let (scheme, host, port) = split_entry(entry)?;
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(s.to_ascii_lowercase())
            }
            s => return Err(format!("has scheme {s:?}; a scheme is letters, or *")),
        };
        let ports = match port {
            None => scheme
                .as_deref()
                .and_then(well_known_port)
                .map(Ports::One)
                .ok_or("has no port, and its scheme has no default one")?,
            Some("*") => Ports::Any,
            Some(port) => match port.split_once("..") {
                Some((start, end)) => Ports::Range(parse_port(start)?, parse_port(end)?),
                None => Ports::One(parse_port(port)?),
            },
        };
        Ok(AllowedHost {
            scheme,
            host: HostPattern::parse(host)?,
            ports,
        })
    }

    fn allows_scheme(&self, scheme: &str) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme)
    }
}

/// An `allowed_outbound_hosts` entry's scheme, host and port, as written.
fn split_entry(entry: &str) -> Result<(&str, &str, Option<&str>), String> {
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or("has no scheme, like http:// or *://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_host_port(rest)?;
    Ok((scheme, host, port))
}

/// The host an `allowed_outbound_hosts` entry names, as written (`*.example.com`, `self`,
/// `{{ host }}`), if the entry has the form of one.
pub fn entry_host(entry: &str) -> Option<&str> {
    split_entry(entry.trim()).ok().map(|(_, host, _)| host)
}

/// `host[:port]`, where host may be a bracketed IPv6 address or a network (`10.0.0.0/8`).
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if rest.contains(['?', '#']) {
        return Err("has a query; give only a scheme, a host and a port".into());
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (_, after) = bracketed
            .split_once(']')
            .ok_or("has an unclosed [ around its IPv6 address")?;
        let host = &rest[..rest.len() - after.len()];
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("has text after its ]")?),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if port.is_some_and(|p| p.contains('/')) {
        return Err("has a path; give only a scheme, a host and a port".into());
    }
    Ok((host, port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse()
        .map_err(|_| format!("has port {port:?}, which is not a number from 0 to 65535"))
}

impl HostPattern {
    fn parse(host: &str) -> Result<HostPattern, String> {
        match host {
            "" => return Err("has no host".into()),
            "*" => return Ok(HostPattern::Any),
            "self" | "self.alt" => return Ok(HostPattern::ToSelf),
            _ => {}
        }
        if let Ok(network) = host.parse::<ipnet::IpNet>() {
            return Ok(HostPattern::Network(network.trunc()));
        }
        if host.contains('/') {
            return Err("has a path; give only a scheme, a host and a port".into());
        }
        if let Some(domain) = host.strip_prefix("*.") {
            return match url::Host::parse(domain) {
                Ok(url::Host::Domain(domain)) if !domain.contains('*') => {
                    Ok(HostPattern::Subdomain(format!(".{domain}")))
                }
                _ => Err(format!("has host {host:?}; after *. comes a domain name")),
            };
        }
        if host.contains('*') {
            return Err(format!(
                "has host {host:?}; * stands for a whole host, or for subdomains as *.example.com"
            ));
        }
        url::Host::parse(host)
            .map(HostPattern::Literal)
            .map_err(|e| format!("has host {host:?}: {e}"))
    }

    fn allows(&self, host: &url::Host) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Subdomain(suffix), url::Host::Domain(domain)) => domain.ends_with(suffix),
            (HostPattern::Literal(literal), host) => literal == host,
            (HostPattern::Network(net), url::Host::Ipv4(ip)) => net.contains(&IpAddr::V4(*ip)),
            (HostPattern::Network(net), url::Host::Ipv6(ip)) => net.contains(&IpAddr::V6(*ip)),
            _ => false,
        }
    }
}

impl Ports {
    fn allows(&self, port: u16) -> bool {
        match *self {
            Ports::Any => true,
            Ports::One(p) => p == port,
            Ports::Range(start, end) => (start..end).contains(&port),
        }
    }
}

/// The hooks of one instance's outgoing requests: each goes out only if its component's
/// [`AllowedHosts`] allows it, a request to the app itself goes to the trigger's address, and
/// one to `<component>.spin.internal` goes to that component.
#[derive(Clone)]
pub struct Outbound {
    component: Arc<str>,
    allowed: Arc<AllowedHosts>,
    origin: SocketAddr,
    chain: Chain,
}

impl Outbound {
    /// The hooks of an instance of `component`, whose app listens on `listen`.
    pub fn new(component: Arc<str>, allowed: Arc<AllowedHosts>, listen: SocketAddr) -> Outbound {
        // The trigger listens on every address when it is given the unspecified one; a
        // request to itself then goes over loopback.
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Outbound {
            component,
            allowed,
            origin: SocketAddr::new(ip, listen.port()),
            chain: Chain::default(),
        }
    }

    /// These hooks, with requests to `<component>.spin.internal` sent through `chain`.
    pub fn with_chain(self, chain: Chain) -> Outbound {
        Outbound { chain, ..self }
    }

    /// Allows `request` or says why not; a request to the app itself is pointed at it.
    fn admit(&self, request: &mut hyper::Request<WasiBody>) -> Result<(), String> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or("");
        // wasi:http gives a relative URL an empty host; SDKs that need a host write self.alt.
        if host.is_empty() || host == "self.alt" {
            if !self.allowed.allows_self() {
                return Err("to its own app (self)".to_string());
            }
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let origin = self.origin.to_string();
            *request.uri_mut() = format!("http://{origin}{path}")
                .parse()
                .map_err(|e| format!("to its own app at {path}: {e}"))?;
            if let Ok(host) = HeaderValue::from_str(&origin) {
                request.headers_mut().insert(HOST, host);
            }
            return Ok(());
        }
        self.check(&scheme, host, uri.port_u16())
    }

    /// The component whose requests these hooks filter.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Whether the component may reach `scheme://host[:port]`; the error says what to add to
    /// its `allowed_outbound_hosts`.
    pub fn check(&self, scheme: &str, host: &str, port: Option<u16>) -> Result<(), String> {
        if self.allowed.allows(scheme, host, port) {
            return Ok(());
        }
        let authority = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Err(format!(
            "to {scheme}://{authority}; add \"{scheme}://{authority}\" to its allowed_outbound_hosts to allow it"
        ))
    }
}

/// What drives a response's connection.
type Io = Box<dyn Future<Output = Result<(), Error>> + Send>;

type Sent = wasmtime_wasi_http::Result<(hyper::Response<WasiBody>, Io)>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Io,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        if let Err(refused) = self.admit(&mut request) {
            eprintln!(
                "component {}: outbound request refused {refused}",
                self.component
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        if let Some(target) = request.uri().host().and_then(chaining::target) {
            let (chain, caller, target) = (
                self.chain.clone(),
                Arc::clone(&self.component),
                target.to_string(),
            );
            return Box::new(async move {
                match chain.send(&target, request).await {
                    Ok(response) => Ok((response, Box::new(async { Ok(()) }) as Io)),
                    Err(err) => {
                        eprintln!("component {caller}: request to {target}.{DOMAIN}: {err}");
                        Err(err.code())
                    }
                }
            });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let response = response.map(http_body_util::BodyExt::boxed_unsync);
            Ok((response, Box::new(io) as Io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    #[test]
    fn an_exact_host_allows_its_scheme_and_default_port_only() {
        let hosts = allowed(&["https://example.com"]);
        assert!(hosts.allows("https", "example.com", None));
        assert!(hosts.allows("https", "EXAMPLE.com", Some(443)));
        assert!(!hosts.allows("http", "example.com", None));
        assert!(!hosts.allows("https", "example.com", Some(8443)));
        assert!(!hosts.allows("https", "api.example.com", None));
    }

    #[test]
    fn wildcards_stand_for_any_scheme_subdomain_or_port() {
        let hosts = allowed(&["*://*.example.com:*"]);
        assert!(hosts.allows("http", "api.example.com", Some(8080)));
        assert!(hosts.allows("https", "a.b.example.com", None));
        assert!(!hosts.allows("https", "example.com", None));
        assert!(!hosts.allows("https", "badexample.com", None));
        assert!(allowed(&["*://*:*"]).allows("http", "10.1.2.3", Some(1)));
    }

    #[test]
    fn a_port_range_excludes_its_end() {
        let hosts = allowed(&["http://localhost:8080..8082"]);
        assert!(hosts.allows("http", "localhost", Some(8081)));
        assert!(!hosts.allows("http", "localhost", Some(8082)));
    }

    #[test]
    fn a_network_allows_the_addresses_in_it() {
        let hosts = allowed(&["http://10.0.0.0/8:80", "http://[::1]:8080"]);
        assert!(hosts.allows("http", "10.200.0.1", None));
        assert!(!hosts.allows("http", "11.0.0.1", None));
        assert!(!hosts.allows("http", "ten.example", None));
        assert!(hosts.allows("http", "[::1]", Some(8080)));
    }

    #[test]
    fn nothing_is_allowed_without_entries() {
        assert!(!AllowedHosts::default().allows("https", "example.com", None));
        assert!(!AllowedHosts::default().allows_self());
        assert!(!allowed(&[""]).allows_self());
    }

    #[test]
    fn self_allows_the_app_and_nothing_else() {
        let hosts = allowed(&["http://self"]);
        assert!(hosts.allows_self());
        assert!(!hosts.allows("http", "localhost", None));
        assert!(allowed(&["*://*:*"]).allows_self());
    }

    #[test]
    fn malformed_entries_are_named_with_what_is_wrong() {
        for (entry, reason) in [
            ("example.com", "has no scheme"),
            ("*://example.com", "has no port"),
            ("http://example.com:http", "has port \"http\""),
            ("http://example.com/path", "has a path"),
            (
                "http://ex*mple.com",
                "has host \"ex*mple.com\"; * stands for a whole host",
            ),
            ("h2c+tls://example.com:1", "has scheme"),
        ] {
            let err = AllowedHosts::parse(&[entry]).unwrap_err();
            assert!(
                err.starts_with(&format!("allowed_outbound_hosts: {entry:?} {reason}")),
                "{entry}: {err}"
            );
        }
    }

    fn request(uri: &str) -> hyper::Request<WasiBody> {
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        hyper::Request::builder().uri(uri).body(body).unwrap()
    }

    fn outbound(entries: &[&str]) -> Outbound {
        Outbound::new(
            Arc::from("front"),
            Arc::new(allowed(entries)),
            "0.0.0.0:3000".parse().unwrap(),
        )
    }

    #[test]
    fn a_refused_request_says_what_to_allow() {
        let err = outbound(&["http://localhost:8080"])
            .admit(&mut request("http://example.com:81/x"))
            .unwrap_err();
        assert_eq!(
            err,
            "to http://example.com:81; add \"http://example.com:81\" to its allowed_outbound_hosts to allow it"
        );
    }

    #[test]
    fn a_request_to_self_goes_to_the_trigger_over_loopback() {
        let mut req = request("http://self.alt/api/x?y=1");
        outbound(&["http://self"]).admit(&mut req).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:3000/api/x?y=1");
        assert_eq!(req.headers()[HOST], "127.0.0.1:3000");
        assert!(outbound(&["http://localhost:3000"])
            .admit(&mut request("http://self.alt/"))
            .is_err());
    }
}
