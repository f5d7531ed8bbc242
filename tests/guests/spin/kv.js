// kv: a Spin HTTP component in JavaScript that counts its requests in the `default`
// key-value store, through Spin's fermyon:spin/key-value@2.0.0 interface (built with
// @spinframework/build-tools; the WIT of the import is in wit-spin/). Each request answers
// `count=N`, N one more than the last. Rebuild: tests/guests/spin/build.sh.
import { Store } from 'fermyon:spin/key-value@2.0.0';

addEventListener('fetch', (event) => {
  const store = Store.open('default');
  const before = store.get('count');
  const count = before ? Number(new TextDecoder().decode(before)) + 1 : 1;
  store.set('count', new TextEncoder().encode(String(count)));
  event.respondWith(new Response(`count=${count}\n`, { status: 200 }));
});
