// echo: a Spin HTTP component in JavaScript, built with Spin's JS SDK tooling
// (@spinframework/build-tools, wasi:http/incoming-handler@0.2.3). It answers every request
// with its method, path and the headers Spin sets, one `name=value` per line: the seven it
// always sets, then the `spin-path-match-*` ones of the route's named segments, sorted.
// Rebuild: tests/guests/spin/build.sh.
const SPIN_HEADERS = [
  'spin-full-url',
  'spin-path-info',
  'spin-matched-route',
  'spin-base-path',
  'spin-component-route',
  'spin-raw-component-route',
  'spin-client-addr',
];

addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  const lines = [`method=${request.method}`, `path=${url.pathname}`];
  for (const name of SPIN_HEADERS) {
    lines.push(`${name}=${request.headers.get(name) ?? ''}`);
  }
  const matches = [];
  request.headers.forEach((value, name) => {
    if (name.startsWith('spin-path-match-')) {
      matches.push(`${name}=${value}`);
    }
  });
  lines.push(...matches.sort());
  event.respondWith(
    new Response(lines.join('\n') + '\n', {
      status: 200,
      headers: { 'content-type': 'text/plain' },
    }),
  );
});
