// outbound: a Spin HTTP component in JavaScript that makes an outbound request with fetch,
// as Spin apps do (built with @spinframework/build-tools, outbound requests through
// wasi:http/outgoing-handler). `GET /?url=<u>` fetches <u> and answers `status=N` and the
// body it got; a fetch that fails (a host that allowed_outbound_hosts does not list, say)
// answers 502 `error=<message>`. Rebuild: tests/guests/spin/build.sh.
async function handle(request) {
  const target = new URL(request.url).searchParams.get('url');
  if (!target) {
    return new Response('give ?url=<url>\n', { status: 400 });
  }
  try {
    const response = await fetch(target);
    const body = await response.text();
    return new Response(`status=${response.status}\n${body}`, { status: 200 });
  } catch (err) {
    return new Response(`error=${err}\n`, { status: 502 });
  }
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
