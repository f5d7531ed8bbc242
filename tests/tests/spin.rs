//! Spin applications through containerd 2.x and `containerd-shim-spin-v2`
//! (`io.containerd.spin.v2`, SpinKube's runtime): an image whose rootfs holds a `spin.toml`,
//! and an image in the OCI layout `spin registry push` writes (made here by hand, byte for
//! byte as Spin 3.x writes it). The components are built with Spin's own SDK tooling
//! (`tests/guests/spin/build.sh`) and kwasi's C wasi:http guest.

use std::net::SocketAddr;
use std::time::Duration;

use kwasi_e2e::redis::Redis;
use kwasi_e2e::spin::{
    archive_layer, data_layer, echo_wasm, files_wasm, hello_wasm, import, import_three_components,
    wasm_layer,
};
use kwasi_e2e::{
    guests_dir, http, unique_id, Containerd, CtrOutput, RunningCtr, Shim, LISTEN_BOUND,
};
use serde_json::json;

/// A private containerd for the spin shim. The suite's containerds share one compile cache,
/// as a node's pods do: each app's components are compiled once per run, not once per test.
fn containerd() -> Containerd {
    Shim::SPIN.built().containerd_with_shared_cache().unwrap()
}

/// An app serving on a free loopback port of the host's network.
struct Served {
    c: Containerd,
    id: String,
    addr: SocketAddr,
    run: Option<RunningCtr>,
}

impl Served {
    /// Runs `image` (with `args`) with the spin shim and waits until it listens.
    fn start(c: Containerd, image: &str, args: &[&str]) -> Served {
        Served::start_with(c, Shim::SPIN, image, args, &[])
    }

    /// Runs `image` (with `args` and the `KEY=VALUE` variables of `env`) with `shim` and waits
    /// until it listens.
    fn start_with(c: Containerd, shim: Shim, image: &str, args: &[&str], env: &[&str]) -> Served {
        let addr = http::free_addr();
        let listen = format!("SPIN_HTTP_LISTEN_ADDR={addr}");
        let id = unique_id("spin");
        let mut flags = vec!["--net-host", "--env", listen.as_str()];
        for var in env {
            flags.extend(["--env", var]);
        }
        let mut run = c.spawn_run(shim.runtime, &flags, image, &id, args).unwrap();
        if let Err(err) = run.wait_listening(addr, LISTEN_BOUND) {
            panic!("the app did not listen: {err:#}\n{}", c.log());
        }
        Served {
            c,
            id,
            addr,
            run: Some(run),
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http::get(&http::client(), self.addr, path).unwrap()
    }

    /// Sends SIGTERM; checks that the app drained and left nothing behind.
    fn stop(self) {
        drop(self.stop_keeping_containerd());
    }

    /// [`Served::stop`], handing back the containerd for another task.
    fn stop_keeping_containerd(self) -> Containerd {
        self.stop_with_output().0
    }

    /// [`Served::stop`], handing back the containerd and what the task printed.
    fn stop_with_output(mut self) -> (Containerd, CtrOutput) {
        let out = stop(&self.c, self.run.take().unwrap(), &self.id);
        (self.c, out)
    }
}

/// The value of `name=` in the echo component's answer.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {body:?}"))
}

const ROUTES_TOML: &str = r#"spin_manifest_version = 2

[application]
name = "routes"
version = "0.1.0"

[[trigger.http]]
route = "/hello"
component = "hello"

[[trigger.http]]
route = "/api/..."
component = "api"

[[trigger.http]]
route = "/users/:user_id/posts/:post"
component = "hello"

[[trigger.http]]
route = "/users/me"
component = "api"

[component.hello]
source = "echo.wasm"

[component.api]
source = "http.wasm"
"#;

/// Builds an image whose rootfs holds `/app/spin.toml` with `toml`, and the components.
fn spin_toml_image(c: &Containerd, name: &str, toml: &str) -> String {
    spin_toml_image_with(c, name, toml, None, &[])
}

/// [`spin_toml_image`], with `/runtime-config.toml` holding `runtime_config`, and `extra`
/// files (path below `/app`, content).
fn spin_toml_image_with(
    c: &Containerd,
    name: &str,
    toml: &str,
    runtime_config: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let dir = c.dir();
    std::fs::write(dir.join("spin.toml"), toml).unwrap();
    std::fs::write(dir.join("echo.wasm"), echo_wasm()).unwrap();
    let file = |src: std::path::PathBuf, dest: &str| format!("{}:{dest}", src.display());
    let mut files = vec![
        file(dir.join("spin.toml"), "/app/spin.toml"),
        file(guests_dir().join("http.wasm"), "/app/http.wasm"),
        file(guests_dir().join("spin/vars.wasm"), "/app/vars.wasm"),
        file(guests_dir().join("spin/kv.wasm"), "/app/kv.wasm"),
        file(
            guests_dir().join("spin/outbound.wasm"),
            "/app/outbound.wasm",
        ),
        file(guests_dir().join("redis.wasm"), "/app/redis.wasm"),
        file(guests_dir().join("files.wasm"), "/app/files.wasm"),
        file(guests_dir().join("sqlite.wasm"), "/app/sqlite.wasm"),
        file(
            guests_dir().join("legacy-http.wasm"),
            "/app/legacy-http.wasm",
        ),
    ];
    // Only the apps that use them carry the 24 MB Python components.
    if toml.contains("py.wasm") {
        files.push(file(guests_dir().join("spin/py/app.wasm"), "/app/py.wasm"));
    }
    if toml.contains("py-redis.wasm") {
        files.push(file(
            guests_dir().join("spin/py/redis.wasm"),
            "/app/py-redis.wasm",
        ));
    }
    for (path, text) in extra {
        let local = dir.join("extra").join(path);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, text).unwrap();
        files.push(file(local, &format!("/app/{path}")));
    }
    if let Some(config) = runtime_config {
        std::fs::write(dir.join("runtime-config.toml"), config).unwrap();
        files.push(file(
            dir.join("runtime-config.toml"),
            "/runtime-config.toml",
        ));
    }
    let mut extra = vec!["--module-path", "/app/echo.wasm"];
    for f in &files {
        extra.extend(["--file", f.as_str()]);
    }
    c.import_wasm(name, &dir.join("echo.wasm"), &extra).unwrap()
}

#[test]
fn a_spin_toml_in_the_rootfs_routes_each_request_to_its_component() {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-toml:v1", ROUTES_TOML);
    let app = Served::start(c, &image, &["/app/spin.toml"]);

    let (status, body) = app.get("/hello");
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "path"), "/hello");
    assert_eq!(field(&body, "spin-matched-route"), "/hello");
    assert_eq!(field(&body, "spin-path-info"), "");

    assert_eq!(
        app.get("/api/anything"),
        (200, "hello from kwasi\n".to_string())
    );
    assert_eq!(app.get("/nowhere").0, 404);
    assert_eq!(app.get("/.well-known/spin/health"), (200, "OK".to_string()));
    app.stop();
}

#[test]
fn a_named_route_segment_reaches_the_component_as_a_path_match_header() {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-named:v1", ROUTES_TOML);
    let app = Served::start(c, &image, &["/app/spin.toml"]);

    let (status, body) = app.get("/users/42/posts/hello");
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "spin-path-match-user-id"), "42");
    assert_eq!(field(&body, "spin-path-match-post"), "hello");
    assert_eq!(
        field(&body, "spin-matched-route"),
        "/users/:user_id/posts/:post"
    );
    assert_eq!(
        app.get("/users/me"),
        (200, "hello from kwasi\n".to_string()),
        "a literal segment beats a named one"
    );
    assert_eq!(app.get("/users/42").0, 404);
    app.stop();
}

#[test]
fn a_spin_oci_image_as_spin_registry_push_writes_it_serves_its_routes() {
    let c = containerd();
    let name = "kwasi.test/spin-three:v1";
    import_three_components(&c, name).unwrap();
    let app = Served::start(c, name, &[]);

    let (status, body) = app.get("/foo/bar?x=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "spin-matched-route"), "/...");
    assert_eq!(field(&body, "spin-path-info"), "/foo/bar");
    assert_eq!(field(&body, "spin-component-route"), "");
    assert_eq!(field(&body, "spin-base-path"), "/");
    assert_eq!(
        field(&body, "spin-full-url"),
        format!("http://{}/foo/bar?x=1", app.addr)
    );
    assert!(
        field(&body, "spin-client-addr").starts_with("127.0.0.1:"),
        "{body}"
    );

    let (_, body) = app.get("/exact");
    assert_eq!(field(&body, "spin-matched-route"), "/exact");
    assert_eq!(field(&body, "spin-component-route"), "/exact");

    assert_eq!(app.get("/api/v1"), (200, "hello from kwasi\n".to_string()));
    let (_, body) = app.get("/apiary");
    assert_eq!(field(&body, "spin-matched-route"), "/...");
    app.stop();
}

#[test]
fn an_app_packaged_by_kwasi_image_build_spin_runs() {
    let c = containerd();
    let dir = c.dir();
    let with_files = "[[trigger.http]]\nroute = \"/files/...\"\ncomponent = \"web\"\n\n\
                      [component.web]\nsource = \"files.wasm\"\nfiles = [\"static/*\"]\n";
    std::fs::write(
        dir.join("spin.toml"),
        format!("{ROUTES_TOML}\n{with_files}"),
    )
    .unwrap();
    std::fs::write(dir.join("echo.wasm"), echo_wasm()).unwrap();
    std::fs::write(dir.join("http.wasm"), hello_wasm()).unwrap();
    std::fs::write(dir.join("files.wasm"), files_wasm()).unwrap();
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::write(dir.join("static/page.html"), "<p>packaged</p>\n").unwrap();
    let (tar, image) = c
        .build_image(
            "kwasi.test/spin-packaged:v1",
            &dir.join("spin.toml"),
            &["--spin"],
        )
        .unwrap();
    c.import_without_unpacking(&tar).unwrap();
    let app = Served::start(c, &image, &[]);
    let (status, body) = app.get("/hello");
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "spin-matched-route"), "/hello");
    assert_eq!(app.get("/api/x"), (200, "hello from kwasi\n".to_string()));
    assert_eq!(
        app.get("/files/static/page.html"),
        (200, "<p>packaged</p>\n".to_string())
    );
    app.stop();
}

#[test]
fn the_wasmtime_shim_runs_a_spin_app_too() {
    let c = Shim::WASMTIME
        .on(kwasi_e2e::Release::V2)
        .containerd_with_shared_cache()
        .unwrap();
    let name = "kwasi.test/spin-three:v1";
    import_three_components(&c, name).unwrap();
    let app = Served::start_with(c, Shim::WASMTIME, name, &[], &[]);
    assert_eq!(app.get("/api/v1"), (200, "hello from kwasi\n".to_string()));
    let (_, body) = app.get("/exact");
    assert_eq!(field(&body, "spin-matched-route"), "/exact");
    app.stop();
}

#[test]
fn spin_components_to_retain_keeps_only_the_named_components_routes() {
    let c = containerd();
    let name = "kwasi.test/spin-retain:v1";
    import_three_components(&c, name).unwrap();
    let app = Served::start_with(c, Shim::SPIN, name, &[], &["SPIN_COMPONENTS_TO_RETAIN=api"]);
    assert_eq!(app.get("/api/v1"), (200, "hello from kwasi\n".to_string()));
    assert_eq!(app.get("/exact").0, 404);
    assert_eq!(app.get("/front").0, 404);
    app.stop();
}

#[test]
fn an_instance_past_spin_max_instance_memory_fails_its_request_and_the_app_goes_on() {
    let c = containerd();
    let name = "kwasi.test/spin-memory:v1";
    import_three_components(&c, name).unwrap();
    // The C component needs a few pages; the JavaScript engine needs far more than 4 MiB.
    let limit = ["SPIN_MAX_INSTANCE_MEMORY=4194304"];
    let app = Served::start_with(c, Shim::SPIN, name, &[], &limit);
    assert_eq!(app.get("/exact").0, 500);
    assert_eq!(app.get("/api/v1"), (200, "hello from kwasi\n".to_string()));
    app.stop();
}

/// A component that fetches the URL it is given, allowed to reach `allowed` only.
fn outbound_toml(allowed: &str) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "outbound"

[variables]
upstream = {{ default = "{allowed}" }}

[[trigger.http]]
route = "/..."
component = "out"

[[trigger.http]]
route = "/hello"
component = "hello"

[component.out]
source = "outbound.wasm"
allowed_outbound_hosts = ["{{{{ upstream }}}}", "http://self"]

[component.hello]
source = "http.wasm"
"#
    )
}

#[test]
fn an_outbound_request_to_an_allowed_host_goes_out_and_its_answer_comes_back() {
    let upstream = http::Upstream::start("upstream says hi\n").unwrap();
    let c = containerd();
    let toml = outbound_toml(&format!("http://{}", upstream.addr));
    let image = spin_toml_image(&c, "kwasi.test/spin-outbound:v1", &toml);
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    let (status, body) = app.get(&format!("/?url=http://{}/x", upstream.addr));
    assert_eq!(
        (status, body.as_str()),
        (200, "status=200\nupstream says hi\n")
    );
    app.stop();
}

#[test]
fn an_outbound_request_to_a_host_not_allowed_is_refused_and_the_log_says_what_to_allow() {
    let allowed = http::Upstream::start("allowed\n").unwrap();
    let other = http::Upstream::start("not allowed\n").unwrap();
    let c = containerd();
    let toml = outbound_toml(&format!("http://{}", allowed.addr));
    let image = spin_toml_image(&c, "kwasi.test/spin-outbound:v1", &toml);
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    let (status, body) = app.get(&format!("/?url=http://{}/x", other.addr));
    assert_eq!(status, 502, "{body}");
    assert!(body.starts_with("error="), "{body}");
    assert_eq!(
        other.connections(),
        0,
        "the refused request reached its host"
    );
    let (_, out) = app.stop_with_output();
    let hint = format!(
        "add \"http://{}\" to its allowed_outbound_hosts",
        other.addr
    );
    assert!(out.stderr.contains(&hint), "{out:?}");
}

#[test]
fn a_request_to_self_reaches_the_apps_own_routes() {
    let c = containerd();
    let image = spin_toml_image(
        &c,
        "kwasi.test/spin-outbound:v1",
        &outbound_toml("http://example.invalid"),
    );
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    assert_eq!(
        app.get("/?url=http://self.alt/hello"),
        (200, "status=200\nhello from kwasi\n".to_string())
    );
    app.stop();
}

/// Component `out` fetches the URL it is given and may chain to `echo`, whose route is
/// private, and to `nobody`, which the app lacks; `hello` has a public route.
const CHAINING_TOML: &str = r#"spin_manifest_version = 2

[application]
name = "chaining"

[[trigger.http]]
route = "/out"
component = "out"

[[trigger.http]]
route = { private = true }
component = "echo"

[[trigger.http]]
route = "/hello"
component = "hello"

[component.out]
source = "outbound.wasm"
allowed_outbound_hosts = ["http://echo.spin.internal", "http://nobody.spin.internal"]

[component.echo]
source = "echo.wasm"

[component.hello]
source = "http.wasm"
"#;

fn serve_chaining() -> Served {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-chaining:v1", CHAINING_TOML);
    Served::start(c, &image, &["/app/spin.toml"])
}

#[test]
fn a_private_component_is_reached_by_service_chaining_as_if_it_matched_the_root_wildcard() {
    let app = serve_chaining();
    let (status, body) = app.get("/out?url=http://echo.spin.internal/api/x");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("status=200\nmethod=GET\npath=/api/x\n"),
        "{body}"
    );
    for line in [
        "spin-full-url=http://echo.spin.internal/api/x",
        "spin-path-info=/api/x",
        "spin-matched-route=/...",
        "spin-component-route=\n",
        "spin-client-addr=0.0.0.0:0",
    ] {
        assert!(body.contains(line), "{line:?} in {body}");
    }
    assert_eq!(app.get("/api/x").0, 404, "a private route was served");
    app.stop();
}

#[test]
fn service_chaining_to_a_component_not_allowed_is_refused_and_the_log_says_what_to_allow() {
    let app = serve_chaining();
    let (status, body) = app.get("/out?url=http://hello.spin.internal/hello");
    assert_eq!(status, 502, "{body}");
    let (_, out) = app.stop_with_output();
    assert!(
        out.stderr
            .contains("add \"http://hello.spin.internal\" to its allowed_outbound_hosts"),
        "{out:?}"
    );
}

#[test]
fn service_chaining_to_a_component_the_app_lacks_fails_the_request_naming_it() {
    let app = serve_chaining();
    let (status, body) = app.get("/out?url=http://nobody.spin.internal/");
    assert_eq!(status, 502, "{body}");
    assert_eq!(app.get("/hello").0, 200, "the app stopped serving");
    let (_, out) = app.stop_with_output();
    assert!(
        out.stderr.contains(
            "component out: request to nobody.spin.internal: the app has no component nobody behind an HTTP trigger"
        ),
        "{out:?}"
    );
}

#[test]
fn a_malformed_allowed_outbound_host_fails_create_naming_it() {
    let c = containerd();
    let image = spin_toml_image(
        &c,
        "kwasi.test/spin-outbound-bad:v1",
        &outbound_toml("example.com"),
    );
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "component out: allowed_outbound_hosts: \"example.com\" has no scheme",
    );
}

const FILES_TOML: &str = r#"spin_manifest_version = 2

[application]
name = "files"

[[trigger.http]]
route = "/files/..."
component = "web"

[component.web]
source = "files.wasm"
files = ["static/**/*", { source = "notes.txt", destination = "/etc/notes.txt" }]
exclude_files = ["static/private/*"]
"#;

#[test]
fn a_component_sees_its_files_read_only_at_its_root_and_nothing_else() {
    let c = containerd();
    let extra = [
        ("static/index.html", "<h1>hello</h1>\n"),
        ("static/private/key", "secret\n"),
        ("notes.txt", "notes\n"),
    ];
    let image = spin_toml_image_with(&c, "kwasi.test/spin-files:v1", FILES_TOML, None, &extra);
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    assert_eq!(
        app.get("/files/static/index.html"),
        (200, "<h1>hello</h1>\n".to_string())
    );
    assert_eq!(
        app.get("/files/etc/notes.txt"),
        (200, "notes\n".to_string())
    );
    assert_eq!(app.get("/files/static/private/key").0, 404);
    assert_eq!(app.get("/files/app/spin.toml").0, 404);
    let (status, body) =
        http::put(&http::client(), app.addr, "/files/static/new.txt", b"x").unwrap();
    assert_eq!(status, 403, "{body}");
    app.stop();
}

#[test]
fn component_files_come_from_data_archive_and_inline_content_of_a_spin_oci_image() {
    let c = containerd();
    let wasm = wasm_layer(files_wasm());
    let data = data_layer(b"<h1>from a data layer</h1>\n");
    let archived: &[u8] = b"from an archive layer\n";
    let archive = archive_layer(&[("docs/readme.txt", archived)]).unwrap();
    let archived_digest = kwasi_e2e::layout::Part {
        media_type: "",
        bytes: archived.to_vec(),
    }
    .digest();
    let locked = json!({
        "spin_lock_version": 0,
        "metadata": {"name": "files", "trigger": {"type": "http"}},
        "triggers": [{"id": "web-http-trigger", "trigger_type": "http",
                      "trigger_config": {"component": "web", "route": "/files/..."}}],
        "components": [{
            "id": "web",
            "source": {"content_type": "application/wasm", "digest": wasm.digest()},
            "files": [
                {"digest": data.digest(), "path": "static/index.html"},
                {"digest": archived_digest, "path": "docs/readme.txt"},
                {"inline": "c21hbGwK", "digest": "sha256:0", "path": "small.txt"},
            ],
        }],
    });
    let name = "kwasi.test/spin-oci-files:v1";
    import(&c, name, vec![wasm, data, archive], &locked).unwrap();
    let app = Served::start(c, name, &[]);
    assert_eq!(
        app.get("/files/static/index.html"),
        (200, "<h1>from a data layer</h1>\n".to_string())
    );
    assert_eq!(
        app.get("/files/docs/readme.txt"),
        (200, "from an archive layer\n".to_string())
    );
    assert_eq!(app.get("/files/small.txt"), (200, "small\n".to_string()));
    app.stop();
}

/// An app whose component `listener` is called with the messages of channel `messages` (a
/// variable's default) on `redis`, and may reach the servers `allowed` lists.
fn redis_toml(redis: &Redis, allowed: &str) -> String {
    let url = redis.url();
    format!(
        r#"spin_manifest_version = 2

[application]
name = "listener"

[application.trigger.redis]
address = "{url}"

[variables]
channel = {{ default = "messages" }}

[[trigger.redis]]
channel = "{{{{ channel }}}}"
component = "listener"

[component.listener]
source = "redis.wasm"
environment = {{ REDIS_ADDRESS = "{url}" }}
allowed_outbound_hosts = [{allowed}]
"#
    )
}

/// Runs the Redis app `image` and waits until it has subscribed to `messages`.
fn start_subscribed(c: &Containerd, redis: &Redis, image: &str, id: &str) -> RunningCtr {
    let run = c
        .spawn_run(
            Shim::SPIN.runtime,
            &["--net-host"],
            image,
            id,
            &["/app/spin.toml"],
        )
        .unwrap();
    let mut run = run;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let subscribed = loop {
        let subscribed = redis.wait_for(
            &["PUBSUB", "NUMSUB", "messages"],
            "messages\n1",
            Duration::from_secs(1),
        );
        if subscribed.is_ok() || !run.is_running() || std::time::Instant::now() > deadline {
            break subscribed;
        }
    };
    if let Err(err) = subscribed {
        let out = run.wait(Duration::from_secs(5));
        panic!(
            "the app did not subscribe: {err:#}; ctr: {out:?}\n{}",
            c.log()
        );
    }
    run
}

/// Stops task `id` and returns what it printed; checks that it exited 0 and left nothing.
fn stop(c: &Containerd, run: RunningCtr, id: &str) -> CtrOutput {
    let kill = c.ctr(&["task", "kill", id]);
    assert_eq!(kill.status, 0, "{kill:?}");
    let out = run.wait(Duration::from_secs(60)).unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let left = c.wait_no_leftovers(id);
    assert!(left.is_empty(), "left behind: {left:#?}");
    out
}

/// A Redis app running, subscribed: its server, its containerd, its `ctr run` and task id.
struct Listening {
    redis: Redis,
    c: Containerd,
    run: RunningCtr,
    id: String,
}

/// Runs the Redis app with `source` as its listener: a component that writes each message
/// back as `last-message` and counts them in `messages`, refusing the message `fail`.
fn start_listener(source: &str) -> Listening {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = redis_toml(&redis, &format!("\"{}\"", redis.url()))
        .replace("source = \"redis.wasm\"", &format!("source = \"{source}\""));
    let image = spin_toml_image(&c, "kwasi.test/spin-redis:v1", &toml);
    let id = unique_id("spin-redis");
    let run = start_subscribed(&c, &redis, &image, &id);
    Listening { redis, c, run, id }
}

/// Publishes `hello`, `fail` and `again` to the listener `source`, checks what it wrote, and
/// returns what it printed.
fn publish_to_listener(source: &str) -> CtrOutput {
    let Listening { redis, c, run, id } = start_listener(source);
    let wait = Duration::from_secs(60);
    redis.cli(&["PUBLISH", "messages", "hello"]).unwrap();
    redis
        .wait_for(&["GET", "last-message"], "hello", wait)
        .unwrap();
    redis.cli(&["PUBLISH", "messages", "fail"]).unwrap();
    redis.cli(&["PUBLISH", "messages", "again"]).unwrap();
    redis
        .wait_for(&["GET", "last-message"], "again", wait)
        .unwrap();
    assert_eq!(redis.cli(&["GET", "messages"]).unwrap(), "2");
    stop(&c, run, &id)
}

#[test]
fn at_sigterm_the_redis_trigger_lets_the_components_called_with_messages_finish() {
    let Listening { redis, c, run, id } = start_listener("py-redis.wasm");
    redis.cli(&["PUBLISH", "messages", "slow"]).unwrap();
    redis
        .wait_for(&["GET", "started"], "slow", Duration::from_secs(60))
        .unwrap();
    let out = stop(&c, run, &id);
    assert_eq!(
        redis.cli(&["GET", "last-message"]).unwrap(),
        "slow",
        "the call was cut: {out:?}"
    );
}

#[test]
fn at_sigterm_an_app_with_both_triggers_stops_taking_messages_while_its_requests_drain() {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = redis_toml(&redis, &format!("\"{}\"", redis.url()))
        + "\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n\
           [component.web]\nsource = \"http.wasm\"\n";
    let image = spin_toml_image(&c, "kwasi.test/spin-both:v1", &toml);
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    redis
        .wait_for(
            &["PUBSUB", "NUMSUB", "messages"],
            "messages\n1",
            Duration::from_secs(60),
        )
        .unwrap();
    let addr = app.addr;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(http::get(&http::client(), addr, "/slow?ms=6000"));
    });
    // The request is in flight once the server has taken it: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let kill = app.c.ctr(&["task", "kill", &app.id]);
    assert_eq!(kill.status, 0, "{kill:?}");
    // The subscription ends while the request is still running, not after its drain.
    redis
        .wait_for(
            &["PUBSUB", "NUMSUB", "messages"],
            "messages\n0",
            Duration::from_secs(4),
        )
        .unwrap();
    assert!(
        finished.try_recv().is_err(),
        "the request ended before the Redis trigger stopped"
    );
    let answer = finished.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(answer.unwrap().0, 200);
    let mut app = app;
    let out = app
        .run
        .take()
        .unwrap()
        .wait(Duration::from_secs(60))
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let left = app.c.wait_no_leftovers(&app.id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_redis_triggered_component_gets_each_message_and_writes_back_through_outbound_redis() {
    let out = publish_to_listener("redis.wasm");
    assert!(
        out.stderr.contains(
            "component listener: a message on channel messages: the component returned an error"
        ),
        "{out:?}"
    );
}

#[test]
fn a_python_component_of_spin_redis_inbound_redis_3_gets_each_message_and_writes_back() {
    let out = publish_to_listener("py-redis.wasm");
    assert!(
        out.stderr.contains(
            "component listener: a message on channel messages: the component returned an error: refusing the message fail"
        ),
        "{out:?}"
    );
}

#[test]
fn outbound_redis_to_a_server_not_allowed_is_refused_and_the_log_says_what_to_allow() {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = redis_toml(&redis, "");
    let image = spin_toml_image(&c, "kwasi.test/spin-redis-refused:v1", &toml);
    let id = unique_id("spin-redis");
    let mut run = start_subscribed(&c, &redis, &image, &id);
    redis.cli(&["PUBLISH", "messages", "hello"]).unwrap();
    let hint = format!("add \"{}\" to its allowed_outbound_hosts", redis.url());
    run.wait_for_stderr(&hint, Duration::from_secs(30)).unwrap();
    stop(&c, run, &id);
    assert_eq!(redis.cli(&["EXISTS", "last-message"]).unwrap(), "0");
}

/// The Redis app of [`redis_toml`] with the SQLite component, which lists `databases`.
fn sqlite_toml(redis: &Redis, databases: &str) -> String {
    redis_toml(redis, &format!("\"{}\"", redis.url())).replace(
        "source = \"redis.wasm\"",
        &format!("source = \"sqlite.wasm\"\nsqlite_databases = [{databases}]"),
    )
}

#[test]
fn a_component_keeps_rows_in_its_default_sqlite_database_across_instances() {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = sqlite_toml(&redis, "\"default\"");
    let image = spin_toml_image(&c, "kwasi.test/spin-sqlite:v1", &toml);
    let id = unique_id("spin-sqlite");
    let run = start_subscribed(&c, &redis, &image, &id);
    let wait = Duration::from_secs(30);
    redis.cli(&["PUBLISH", "messages", "first"]).unwrap();
    redis.wait_for(&["GET", "rows"], "1", wait).unwrap();
    redis.cli(&["PUBLISH", "messages", "second"]).unwrap();
    redis.wait_for(&["GET", "rows"], "2", wait).unwrap();
    stop(&c, run, &id);
}

#[test]
fn a_component_that_does_not_list_a_database_cannot_open_it() {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = sqlite_toml(&redis, "");
    let image = spin_toml_image(&c, "kwasi.test/spin-sqlite-denied:v1", &toml);
    let id = unique_id("spin-sqlite");
    let mut run = start_subscribed(&c, &redis, &image, &id);
    redis.cli(&["PUBLISH", "messages", "first"]).unwrap();
    run.wait_for_stderr(
        "component listener: a message on channel messages: the component returned an error",
        Duration::from_secs(30),
    )
    .unwrap();
    stop(&c, run, &id);
    assert_eq!(redis.cli(&["EXISTS", "rows"]).unwrap(), "0");
}

#[test]
fn a_redis_trigger_without_an_address_fails_create() {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = redis_toml(&redis, "").replace(&format!("address = \"{}\"", redis.url()), "");
    let image = spin_toml_image(&c, "kwasi.test/spin-redis-no-address:v1", &toml);
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "trigger listener-redis-trigger: has no address",
    );
}

#[test]
fn a_redis_trigger_whose_component_does_not_export_the_handler_fails_create() {
    let redis = Redis::start().unwrap();
    let c = containerd();
    let toml = redis_toml(&redis, "").replace("source = \"redis.wasm\"", "source = \"echo.wasm\"");
    let image = spin_toml_image(&c, "kwasi.test/spin-redis-no-export:v1", &toml);
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "component listener: exports neither fermyon:spin/inbound-redis nor spin:redis/inbound-redis@3.0.0",
    );
}

const LEGACY_TOML: &str = r#"spin_manifest_version = 2

[application]
name = "legacy"

[[trigger.http]]
route = "/legacy/..."
component = "legacy"

[component.legacy]
source = "legacy-http.wasm"
"#;

#[test]
fn a_component_of_the_legacy_inbound_http_interface_gets_the_whole_request() {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-legacy:v1", LEGACY_TOML);
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    let (status, body) = app.get("/legacy/x?y=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body, "method=0\nuri=/legacy/x?y=1\nspin-path-info=/x\nbody=\n",
        "GET"
    );
    let (status, body) = http::post(&http::client(), app.addr, "/legacy/", b"hi").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "method=1\nuri=/legacy/\nspin-path-info=/\nbody=hi\n"
    );
    app.stop();
}

const VARIABLES_TOML: &str = r#"spin_manifest_version = 2

[application]
name = "variables"

[variables]
greeting = { default = "hi" }
api_key = { required = true, secret = true }

[[trigger.http]]
route = "/vars/..."
component = "vars"

[component.vars]
source = "vars.wasm"
variables = { message = "{{ greeting }} from kwasi", key = "{{ api_key }}" }
"#;

#[test]
fn a_component_reads_its_variables_with_values_from_the_environment_and_defaults() {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-vars:v1", VARIABLES_TOML);
    let env = ["SPIN_VARIABLE_API_KEY=s3cret"];
    let app = Served::start_with(c, Shim::SPIN, &image, &["/app/spin.toml"], &env);
    assert_eq!(
        app.get("/vars/message"),
        (200, "message=hi from kwasi\n".to_string())
    );
    assert_eq!(app.get("/vars/key"), (200, "key=s3cret\n".to_string()));
    assert_eq!(
        app.get("/vars/nope"),
        (500, "error: undefined\n".to_string())
    );
    app.stop();
}

#[test]
fn a_required_variable_without_a_value_fails_create_naming_its_environment_variable() {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-novar:v1", VARIABLES_TOML);
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "set SPIN_VARIABLE_API_KEY in the container's environment",
    );
}

const KV_TOML: &str = r#"spin_manifest_version = 2

[application]
name = "counter"

[[trigger.http]]
route = "/count"
component = "kv"

[component.kv]
source = "kv.wasm"
key_value_stores = ["default"]
"#;

#[test]
fn a_key_value_store_keeps_its_values_across_requests() {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-kv-count:v1", KV_TOML);
    let app = Served::start(c, &image, &["/app/spin.toml"]);
    for n in 1..=3 {
        assert_eq!(app.get("/count"), (200, format!("count={n}\n")));
    }
    app.stop();
}

#[test]
fn a_runtime_config_keeps_the_default_store_on_a_volume_across_containers() {
    let c = containerd();
    let volume = c.dir().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let config = "[key_value_store.default]\ntype = \"spin\"\npath = \"/data/kv.db\"\n";
    let image = spin_toml_image_with(
        &c,
        "kwasi.test/spin-kv-volume:v1",
        KV_TOML,
        Some(config),
        &[],
    );
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        volume.display()
    );
    let run = |c: Containerd| {
        let addr = http::free_addr();
        let listen = format!("SPIN_HTTP_LISTEN_ADDR={addr}");
        let id = unique_id("spin-kv");
        let flags = [
            "--net-host",
            "--mount",
            mount.as_str(),
            "--env",
            listen.as_str(),
        ];
        let mut run = c
            .spawn_run(Shim::SPIN.runtime, &flags, &image, &id, &["/app/spin.toml"])
            .unwrap();
        run.wait_listening(addr, LISTEN_BOUND).unwrap();
        Served {
            c,
            id,
            addr,
            run: Some(run),
        }
    };
    let first = run(c);
    assert_eq!(first.get("/count"), (200, "count=1\n".to_string()));
    assert_eq!(first.get("/count"), (200, "count=2\n".to_string()));
    let c = first.stop_keeping_containerd();
    assert!(volume.join("kv.db").is_file());
    let second = run(c);
    assert_eq!(second.get("/count"), (200, "count=3\n".to_string()));
    second.stop();
}

#[test]
fn a_runtime_config_kwasi_does_not_support_fails_create_naming_it() {
    let c = containerd();
    let config = "[sqlite_database.default]\ntype = \"libsql\"\nurl = \"https://db.example\"\n";
    let image = spin_toml_image_with(&c, "kwasi.test/spin-rc:v1", KV_TOML, Some(config), &[]);
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "/runtime-config.toml: SQLite database \"default\" has type \"libsql\"; kwasi supports type \"spin\"",
    );
}

/// Runs `image` expecting `create` to fail with `reason`; checks that nothing is left.
fn assert_refused(c: &Containerd, image: &str, args: &[&str], reason: &str) {
    let id = unique_id("spin-bad");
    let out: CtrOutput = c.run(Shim::SPIN.runtime, &[], image, &id, args);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains(reason),
        "expected {reason:?} in {out:?}"
    );
    assert!(!c.log().contains("panicked"), "{}", c.log());
    let left = c.wait_no_leftovers(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_locked_app_that_references_a_missing_layer_fails_create() {
    let c = containerd();
    let hello = wasm_layer(hello_wasm());
    let missing = format!("sha256:{}", "0".repeat(64));
    let locked = kwasi_e2e::spin::three_components(&missing, &hello.digest());
    import(&c, "kwasi.test/spin-missing:v1", vec![hello], &locked).unwrap();
    let reason = format!("component front: its wasm {missing} is not a layer of the image");
    assert_refused(&c, "kwasi.test/spin-missing:v1", &[], &reason);
}

#[test]
fn two_triggers_on_the_same_route_fail_create() {
    let c = containerd();
    let toml = ROUTES_TOML.replace("route = \"/api/...\"", "route = \"/hello\"");
    let image = spin_toml_image(&c, "kwasi.test/spin-clash:v1", &toml);
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "triggers hello-http-trigger and api-http-trigger both have route /hello",
    );
}

#[test]
fn a_malformed_spin_toml_fails_create() {
    let c = containerd();
    let toml = ROUTES_TOML.replace("[component.api]", "[component.api");
    let image = spin_toml_image(&c, "kwasi.test/spin-malformed:v1", &toml);
    assert_refused(
        &c,
        &image,
        &["/app/spin.toml"],
        "/app/spin.toml: invalid manifest at byte",
    );
}

/// A component that imports Spin's key-value interface, which kwasi does not provide yet.
const BLOB_COMPONENT: &str = r#"(component
  (import "wasi:blobstore/blobstore@0.2.0-draft-2024-09-01" (instance
    (export "exists" (func (param "key" string) (result bool)))
  ))
)"#;

#[test]
fn a_component_importing_an_interface_kwasi_lacks_fails_create_naming_it() {
    let c = containerd();
    let blob = wasm_layer(wat::parse_str(BLOB_COMPONENT).unwrap());
    let locked = json!({
        "spin_lock_version": 0,
        "triggers": [{"id": "blob", "trigger_type": "http",
                      "trigger_config": {"component": "blob", "route": "/..."}}],
        "components": [{"id": "blob", "source": {"content_type": "application/wasm",
                                                  "digest": blob.digest()}}],
    });
    import(&c, "kwasi.test/spin-blob:v1", vec![blob], &locked).unwrap();
    assert_refused(
        &c,
        "kwasi.test/spin-blob:v1",
        &[],
        "wasi:blobstore/blobstore@0.2.0-draft-2024-09-01",
    );
}

/// The Python app (tests/guests/spin/py): one component of Spin's Python SDK 5, which
/// exports `wasi:http/handler@0.3.0` and imports every interface of Spin's platform. It may
/// reach `upstream`, and any Redis server on the loopback address.
fn python_toml(upstream: &str) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "python"

[variables]
greeting = {{ default = "hello" }}

[[trigger.http]]
route = "/py/..."
component = "py"

[component.py]
source = "py.wasm"
key_value_stores = ["default"]
sqlite_databases = ["default"]
allowed_outbound_hosts = ["{upstream}", "redis://127.0.0.1:*"]
variables = {{ greeting = "{{{{ greeting }}}} from Python" }}
"#
    )
}

/// Serves the Python app, allowed to reach `upstream`, with the `KEY=VALUE` variables of `env`.
fn serve_python(upstream: &str, env: &[&str]) -> Served {
    let c = containerd();
    let image = spin_toml_image(&c, "kwasi.test/spin-python:v1", &python_toml(upstream));
    Served::start_with(c, Shim::SPIN, &image, &["/app/spin.toml"], env)
}

#[test]
fn a_spin_sdk_5_python_app_answers_through_wasi_http_0_3() {
    let app = serve_python("http://127.0.0.1:1", &[]);
    assert_eq!(
        app.get("/py/hello"),
        (200, "Hello from Python at /py/hello".to_string())
    );
    assert_eq!(app.get("/nowhere").0, 404);
    app.stop();
}

#[test]
fn a_python_app_keeps_key_value_across_requests_and_reads_variables_through_spin_3_interfaces() {
    let app = serve_python("http://127.0.0.1:1", &["SPIN_VARIABLE_GREETING=howdy"]);
    for n in 1..=3 {
        assert_eq!(app.get("/py/count"), (200, format!("count {n}")));
    }
    assert_eq!(app.get("/py/var"), (200, "howdy from Python".to_string()));
    assert_eq!(
        app.get("/py/config"),
        (200, "howdy from Python".to_string())
    );
    app.stop();
}

#[test]
fn a_python_app_reaches_an_allowed_host_through_wasi_http_0_3_and_is_refused_another() {
    let allowed = http::Upstream::start("upstream says hi").unwrap();
    let other = http::Upstream::start("not allowed").unwrap();
    let app = serve_python(&format!("http://{}", allowed.addr), &[]);
    assert_eq!(
        app.get(&format!("/py/fetch?url=http://{}/x", allowed.addr)),
        (200, "fetched 200: upstream says hi".to_string())
    );
    let (status, body) = app.get(&format!("/py/fetch?url=http://{}/x", other.addr));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        other.connections(),
        0,
        "the refused request reached its host"
    );
    app.stop();
}

#[test]
fn a_python_app_counts_batches_and_swaps_through_wasi_keyvalue() {
    let app = serve_python("http://127.0.0.1:1", &[]);
    for n in 1..=2 {
        assert_eq!(
            app.get("/py/wasi-kv"),
            (200, format!("hits {n}, batch a=1,b=2,c=-, swapped"))
        );
    }
    app.stop();
}

#[test]
fn a_python_app_keeps_rows_in_its_default_database_through_spin_sqlite_3_1() {
    let app = serve_python("http://127.0.0.1:1", &[]);
    for n in 1..=3 {
        assert_eq!(
            app.get("/py/sqlite"),
            (200, format!("rows {n}, last id {n}"))
        );
    }
    app.stop();
}

#[test]
fn a_python_app_sends_commands_to_an_allowed_redis_server_through_spin_redis_3() {
    let redis = Redis::start().unwrap();
    let app = serve_python("http://127.0.0.1:1", &[]);
    let path = format!("/py/redis?addr={}", redis.addr);
    assert_eq!(app.get(&path), (200, "hits 1, read back 1".to_string()));
    assert_eq!(app.get(&path), (200, "hits 2, read back 2".to_string()));
    assert_eq!(redis.cli(&["GET", "hits"]).unwrap(), "2");
    app.stop();
}

#[test]
fn a_call_to_a_spin_interface_kwasi_does_not_provide_fails_the_request_naming_it() {
    let app = serve_python("http://127.0.0.1:1", &[]);
    assert_eq!(app.get("/py/mysql").0, 500);
    assert_eq!(app.get("/py/hello").0, 200, "the app stopped serving");
    let (_, out) = app.stop_with_output();
    assert!(
        out.stderr
            .contains("spin:mysql/mysql@3.0.0#[static]connection.open is not provided by kwasi"),
        "{out:?}"
    );
}
