//! The legacy HTTP interface, `fermyon:spin/inbound-http`, that Spin 1's SDKs built
//! components with: the component gets each request whole, as a record, in a fresh instance,
//! and answers a record.

use http_body_util::BodyExt;
use kwasi_engine_wasmtime::{fixed_response, Host, LinkedComponent, ResponseBody};
use wasmtime_wasi_http::{Error as ErrorCode, WasiBody};

use crate::host::{SpinHost, SpinState};

/// The bindings of `fermyon:spin/inbound-http` (`crates/spin/spin-wit`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "spin-wit",
        world: "kwasi:spin-wit/inbound-http",
        exports: { default: async },
    });
}

use bindings::fermyon::spin::http_types::{Method, Request};

/// A component that exports `fermyon:spin/inbound-http`, ready to answer requests.
#[derive(Clone)]
pub struct InboundHttp {
    linked: LinkedComponent<SpinHost>,
    pre: bindings::InboundHttpPre<Host<SpinState>>,
}

impl InboundHttp {
    /// The service of `linked`, which must export `fermyon:spin/inbound-http`.
    pub fn new(linked: LinkedComponent<SpinHost>) -> Result<InboundHttp, String> {
        let pre = bindings::InboundHttpPre::new(linked.instance_pre().clone())
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?;
        Ok(InboundHttp { linked, pre })
    }

    /// Answers `request` (the Spin headers already set) in a fresh instance.
    pub async fn handle(
        &self,
        request: hyper::Request<WasiBody>,
    ) -> Result<hyper::Response<ResponseBody>, String> {
        let Some(method) = method(request.method()) else {
            return Ok(fixed_response(405, ""));
        };
        let uri = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().to_string(), |p| p.to_string());
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes().to_vec(),
            Err(ErrorCode::HttpRequestBodySize(Some(limit))) => {
                return Ok(fixed_response(
                    413,
                    format!("request body larger than {limit} bytes\n"),
                ))
            }
            Err(e) => return Err(format!("reading the request body: {e}")),
        };
        let request = Request {
            method,
            uri,
            headers,
            params: Vec::new(),
            body: Some(body),
        };
        let mut store = self.linked.new_store()?;
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("instantiating: {e:#}"))?;
        let response = instance
            .fermyon_spin_inbound_http()
            .call_handle_request(&mut store, &request)
            .await
            .map_err(|trap| format!("{trap:#}"))?;
        if !(100..=599).contains(&response.status) {
            return Err(format!(
                "the component answered with status {}, which is not an HTTP status",
                response.status
            ));
        }
        let mut answer = fixed_response(response.status, response.body.unwrap_or_default());
        for (name, value) in response.headers.unwrap_or_default() {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes());
            let value = hyper::header::HeaderValue::from_str(&value);
            if let (Ok(name), Ok(value)) = (name, value) {
                answer.headers_mut().append(name, value);
            }
        }
        Ok(answer)
    }
}

/// The method of the legacy interface, which knows seven.
fn method(method: &hyper::Method) -> Option<Method> {
    Some(match *method {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::PUT => Method::Put,
        hyper::Method::DELETE => Method::Delete,
        hyper::Method::PATCH => Method::Patch,
        hyper::Method::HEAD => Method::Head,
        hyper::Method::OPTIONS => Method::Options,
        _ => return None,
    })
}
