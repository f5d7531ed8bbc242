// vars: a Spin HTTP component in JavaScript that reads a variable through Spin's
// fermyon:spin/variables@2.0.0 interface (built with @spinframework/build-tools; the WIT of
// the import is in wit-spin/). GET /NAME answers `NAME=VALUE`, or 500 with the error's
// case (`undefined`, `invalid-name`, ...). Rebuild: tests/guests/spin/build.sh.
import { get } from 'fermyon:spin/variables@2.0.0';

addEventListener('fetch', (event) => {
  const name = new URL(event.request.url).pathname.split('/').pop();
  let response;
  try {
    response = new Response(`${name}=${get(name)}\n`, { status: 200 });
  } catch (err) {
    const tag = err && err.payload && err.payload.tag ? err.payload.tag : String(err);
    response = new Response(`error: ${tag}\n`, { status: 500 });
  }
  event.respondWith(response);
});
