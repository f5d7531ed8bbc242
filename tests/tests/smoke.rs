use kwasi_e2e::*;

#[test]
fn smoke() {
    let c = Containerd::start().unwrap();
    let img = c
        .import_wasm("kwasi.test/probe", &guests_dir().join("probe.wasm"), &[])
        .unwrap();
    let id = unique_id("smoke");
    let out = c.run(WASMTIME, &[], &img, &id, &["/app.wasm", "hello"]);
    println!("{out:?}");
    println!("{:?}", c.wait_no_leftovers(&id));
    println!("{}", c.log());
}
