//! The node-local compile cache.
//!
//! The first start of a module compiles it ahead of time ([`Engine::precompile`]) and stores
//! the result; later starts load it ([`Engine::load_precompiled`]) without compiling.
//!
//! - Location: `$KWASI_CACHE_DIR` or `/var/lib/kwasi/cache`, then one directory per engine and
//!   one per engine fingerprint (version and configuration): a new engine version or
//!   configuration never sees old entries.
//! - Key: the SHA-256 of the module's bytes (for a wasm layer, its digest), so the same module
//!   shipped in different images is compiled once.
//! - Entries are written to a temporary name and renamed into place, so a reader never sees
//!   a half-written entry and concurrent first starts at worst compile twice. Each entry
//!   ends with the length and CRC-32 of its payload: a corrupted or truncated entry is
//!   detected, removed and rebuilt, never loaded. (A checksum, not a cryptographic hash: it
//!   guards against damage, and checks 36 MB in a few milliseconds where SHA-256 took 20;
//!   whoever can write the cache directory is root on the node anyway.)
//!
//! - A stored entry is mapped, not read: its payload starts the file, so an engine that can
//!   map compiled code from a file ([`Engine::load_precompiled_file`]) runs it from the page
//!   cache, without copying it, and the containers of one module share its pages.
//!
//! The shim opens the cache directory; the container process, which compiles, reaches it
//! through that descriptor after `pivot_root`. For a module shipped in an image layer, the
//! zygote's worker looks the entry up first ([`CompileCache::lookup`]), before the layer is
//! read from containerd: on a hit the layer is never read, and the container process loads
//! the entry the worker found ([`CompileCache::load`]).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::engine::{Engine, EngineError, Scratch, WasmBytes};

/// The default cache root.
const DEFAULT_ROOT: &str = "/var/lib/kwasi/cache";
/// The environment variable that overrides it.
pub const CACHE_DIR_ENV: &str = "KWASI_CACHE_DIR";
/// The first bytes of every entry's trailer.
const MAGIC: &[u8; 8] = b"KWASIC3\n";

/// A cache directory for one engine, open in the shim and usable after `pivot_root`.
#[derive(Debug)]
pub struct CompileCache {
    dir: OwnedFd,
    path: PathBuf,
}

/// Where a module came from: the cache, or a fresh compile (stored or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded a stored entry.
    Hit,
    /// Compiled and stored.
    Stored,
    /// Compiled; the entry could not be stored (the reason is logged).
    NotStored,
}

impl CompileCache {
    /// The cache root from the environment, or the default.
    pub fn root_from_env() -> PathBuf {
        std::env::var_os(CACHE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    }

    /// Opens (creating it) `<root>/<engine>`.
    pub fn open(root: &Path, engine: &str) -> std::io::Result<CompileCache> {
        let path = root.join(engine);
        std::fs::create_dir_all(&path)?;
        let dir = File::open(&path)?;
        Ok(CompileCache {
            dir: dir.into(),
            path,
        })
    }

    /// The stored entry for the module whose SHA-256 is `key` (hex), if `engine` has one and
    /// it is intact: what a shim checks before it reads the module at all (a module shipped in
    /// an image layer is not read from containerd when its compiled form is here). A damaged
    /// entry is removed.
    pub fn lookup<E: Engine>(&self, engine: &E, key: &str) -> Option<Stored> {
        let subdir = self.engine_dir(engine)?;
        let entry = read_entry(&subdir, key)?;
        Some(Stored {
            subdir,
            key: key.to_string(),
            entry,
        })
    }

    /// Loads `stored` with `engine` (which found it through [`CompileCache::lookup`]). An
    /// entry the engine refuses is removed: the next start compiles the module again.
    pub fn load<E: Engine>(&self, engine: &E, stored: &Stored) -> Result<E::Module, EngineError> {
        let key = &stored.key;
        // `/proc/self/fd/N` reaches the cache directory inside the sandbox too.
        let path = PathBuf::from(format!("/proc/self/fd/{}/{key}", stored.subdir.as_raw_fd()));
        // Mapping code from the file can fail where loading it from memory works (a cache on
        // a `noexec` mount): then the entry is still good.
        let payload = stored.entry.payload();
        engine
            .load_precompiled_file(&path, payload)
            .or_else(|err| {
                log::debug!("compile cache: entry {key} not mapped ({err}); loading a copy");
                engine.load_precompiled(payload)
            })
            .map_err(|err| {
                log::warn!("compile cache: dropping entry {key}: {err}");
                remove_at(&stored.subdir, key);
                EngineError::Other(format!(
                    "the compile cache's entry {key} could not be loaded and was removed (the \
                     next start compiles the module again): {err}"
                ))
            })
    }

    /// The compiled form of `wasm` for `engine`, from the cache or compiled now (and stored).
    pub fn load_or_compile<E: Engine>(
        &self,
        engine: &E,
        wasm: &WasmBytes,
    ) -> Result<(E::Module, Outcome), EngineError> {
        let Some(subdir) = self.engine_dir(engine) else {
            return Ok((engine.compile(wasm)?, Outcome::NotStored));
        };
        let key = wasm.sha256_hex();
        let subdir = match read_entry(&subdir, &key) {
            Some(entry) => {
                let stored = Stored {
                    subdir,
                    key: key.clone(),
                    entry,
                };
                if let Ok(module) = self.load(engine, &stored) {
                    return Ok((module, Outcome::Hit));
                }
                stored.subdir
            }
            None => subdir,
        };
        // `/proc/self/fd/N` reaches the cache directory inside the sandbox too.
        let scratch = Scratch::under(format!("/proc/self/fd/{}", subdir.as_raw_fd()));
        let compiled = match engine.precompile(wasm, &scratch) {
            Ok(compiled) => compiled,
            Err(err @ EngineError::InvalidModule(_)) => return Err(err),
            Err(err) => {
                // An engine whose ahead-of-time compiler fails here still runs the module.
                log::warn!("compile cache: cannot precompile {key}, running it uncached: {err}");
                return Ok((engine.compile(wasm)?, Outcome::NotStored));
            }
        };
        let outcome = match write_entry(&subdir, &key, &compiled) {
            Ok(()) => Outcome::Stored,
            Err(err) => {
                log::warn!(
                    "compile cache {}: storing {key}: {err}",
                    self.path.display()
                );
                Outcome::NotStored
            }
        };
        Ok((engine.load_precompiled(&compiled)?, outcome))
    }

    /// The directory of `engine`'s fingerprint; `None` when the engine has none (it does not
    /// precompile) or the directory cannot be made (logged).
    fn engine_dir<E: Engine>(&self, engine: &E) -> Option<OwnedFd> {
        let fingerprint = engine.fingerprint()?;
        self.subdir(&fingerprint)
            .inspect_err(|err| log::warn!("compile cache {}: {err}", self.path.display()))
            .ok()
    }

    fn subdir(&self, fingerprint: &str) -> std::io::Result<OwnedFd> {
        let name = sanitize(fingerprint);
        match mkdirat(
            Some(self.dir.as_raw_fd()),
            name.as_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(err) => return Err(err.into()),
        }
        open_at(
            &self.dir,
            &name,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map(OwnedFd::from)
    }
}

/// Opens `name` in directory `dir` (close-on-exec).
fn open_at(dir: &OwnedFd, name: &str, flags: OFlag, mode: Mode) -> std::io::Result<File> {
    let fd = openat(Some(dir.as_raw_fd()), name, flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes file `name` from directory `dir`; a missing file is fine.
fn remove_at(dir: &OwnedFd, name: &str) {
    let _ = nix::unistd::unlinkat(
        Some(dir.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

/// An intact entry of the cache, mapped, found by [`CompileCache::lookup`] and loaded by
/// [`CompileCache::load`] (in another process, possibly: a fork keeps the mapping and the
/// directory's descriptor).
#[derive(Debug)]
pub struct Stored {
    subdir: OwnedFd,
    key: String,
    entry: Entry,
}

/// A stored entry, mapped: its payload, then its trailer.
#[derive(Debug)]
struct Entry {
    map: memmap2::Mmap,
}

impl Entry {
    fn payload(&self) -> &[u8] {
        &self.map[..self.map.len() - TRAILER_LEN]
    }
}

/// Entry `key`, if present and intact; a damaged entry is removed.
fn read_entry(dir: &OwnedFd, key: &str) -> Option<Entry> {
    let file = open_at(dir, key, OFlag::O_RDONLY | OFlag::O_NOFOLLOW, Mode::empty()).ok()?;
    // SAFETY: entries are never written in place (they are written under another name and
    // renamed), so the mapped file does not change while it is mapped.
    let intact = unsafe { memmap2::Mmap::map(&file) }
        .ok()
        .filter(|map| map.len() >= TRAILER_LEN)
        .map(|map| Entry { map })
        .filter(|entry| entry.map[entry.map.len() - TRAILER_LEN..] == trailer(entry.payload())[..]);
    if intact.is_none() {
        log::warn!("compile cache: entry {key} is damaged or from an older kwasi; rebuilding it");
        remove_at(dir, key);
    }
    intact
}

/// The length of an entry's trailer: the magic, the payload's length (u64) and CRC-32 (u32),
/// little-endian.
const TRAILER_LEN: usize = MAGIC.len() + 8 + 4;

/// An entry's trailer for `payload`.
fn trailer(payload: &[u8]) -> Vec<u8> {
    let mut trailer = Vec::with_capacity(TRAILER_LEN);
    trailer.extend_from_slice(MAGIC);
    trailer.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    trailer.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    trailer
}

/// Writes entry `key` under a temporary name and renames it into place.
fn write_entry(dir: &OwnedFd, key: &str, payload: &[u8]) -> std::io::Result<()> {
    let tmp = crate::unique_name(&format!(".tmp-{key}"));
    let mut file = open_at(
        dir,
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        Mode::from_bits_truncate(0o600),
    )?;
    let written = file
        .write_all(payload)
        .and_then(|()| file.write_all(&trailer(payload)))
        .and_then(|()| file.sync_data());
    let renamed = written.and_then(|()| {
        renameat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            Some(dir.as_raw_fd()),
            key,
        )
        .map_err(Into::into)
    });
    if renamed.is_err() {
        remove_at(dir, &tmp);
    }
    renamed
}

/// A fingerprint as a single safe path component.
fn sanitize(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The payload of an entry whose trailer, length and checksum are right.
    fn verify(data: &[u8]) -> Option<&[u8]> {
        let payload = data.get(..data.len().checked_sub(TRAILER_LEN)?)?;
        (data[payload.len()..] == trailer(payload)[..]).then_some(payload)
    }

    /// An engine whose "compiled form" is the module reversed, counting compiles.
    #[derive(Clone, Default)]
    struct Fake {
        compiles: Arc<AtomicUsize>,
        version: &'static str,
        /// Compiles through a file in its scratch space, as WasmEdge's AOT compiler does.
        uses_files: bool,
        /// Refuses every compiled form it is handed.
        refuses_loads: bool,
    }

    impl Engine for Fake {
        type Module = Vec<u8>;
        fn name(&self) -> &'static str {
            "fake"
        }
        fn compile(&self, wasm: &WasmBytes) -> Result<Vec<u8>, EngineError> {
            Ok(wasm.bytes.clone())
        }
        fn exports_entry(&self, _: &Vec<u8>, _: &str) -> bool {
            true
        }
        fn run(&self, _: Vec<u8>, _: &crate::engine::Workload) -> Result<i32, EngineError> {
            Ok(0)
        }
        fn fingerprint(&self) -> Option<String> {
            Some(format!("fake/{}", self.version))
        }
        fn precompile(&self, wasm: &WasmBytes, scratch: &Scratch) -> Result<Vec<u8>, EngineError> {
            self.compiles.fetch_add(1, Ordering::SeqCst);
            if self.uses_files {
                std::fs::write(scratch.dir()?.join("object.o"), &wasm.bytes)
                    .map_err(|e| EngineError::Other(e.to_string()))?;
            }
            Ok(wasm.bytes.iter().rev().copied().collect())
        }
        fn load_precompiled(&self, compiled: &[u8]) -> Result<Vec<u8>, EngineError> {
            if self.refuses_loads {
                return Err(EngineError::Other("not a compiled module of mine".into()));
            }
            Ok(compiled.iter().rev().copied().collect())
        }
        /// Reads the compiled form from the file, as an engine that maps it does.
        fn load_precompiled_file(
            &self,
            path: &Path,
            compiled: &[u8],
        ) -> Result<Vec<u8>, EngineError> {
            let file = std::fs::read(path).map_err(|e| EngineError::Other(e.to_string()))?;
            self.load_precompiled(&file[..compiled.len()])
        }
    }

    fn wasm(bytes: &[u8]) -> WasmBytes {
        WasmBytes {
            origin: "/m.wasm".into(),
            sha256: None,
            bytes: bytes.to_vec(),
        }
    }

    fn entries(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in std::fs::read_dir(root.join("fake")).unwrap().flatten() {
            for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn the_second_start_loads_without_compiling() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(root.path(), "fake").unwrap();
        let engine = Fake::default();
        let (m, o) = cache.load_or_compile(&engine, &wasm(b"abc")).unwrap();
        assert_eq!((m.as_slice(), o), (&b"abc"[..], Outcome::Stored));
        let (m, o) = cache.load_or_compile(&engine, &wasm(b"abc")).unwrap();
        assert_eq!((m.as_slice(), o), (&b"abc"[..], Outcome::Hit));
        assert_eq!(engine.compiles.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stored_entry_starts_with_the_compiled_form_so_that_engines_can_map_it() {
        let (_root, _cache, _engine, entry) = one_entry();
        let bytes = std::fs::read(&entry).unwrap();
        assert!(bytes.starts_with(b"fedcba"), "{bytes:?}");
        assert_eq!(verify(&bytes), Some(&b"fedcba"[..]));
    }

    #[test]
    fn an_entry_that_cannot_be_mapped_is_loaded_from_memory_and_kept() {
        #[derive(Clone, Default)]
        struct Unmappable(Fake);
        impl Engine for Unmappable {
            type Module = Vec<u8>;
            fn name(&self) -> &'static str {
                self.0.name()
            }
            fn compile(&self, wasm: &WasmBytes) -> Result<Vec<u8>, EngineError> {
                self.0.compile(wasm)
            }
            fn exports_entry(&self, m: &Vec<u8>, entry: &str) -> bool {
                self.0.exports_entry(m, entry)
            }
            fn run(&self, m: Vec<u8>, w: &crate::engine::Workload) -> Result<i32, EngineError> {
                self.0.run(m, w)
            }
            fn fingerprint(&self) -> Option<String> {
                self.0.fingerprint()
            }
            fn precompile(&self, wasm: &WasmBytes, s: &Scratch) -> Result<Vec<u8>, EngineError> {
                self.0.precompile(wasm, s)
            }
            fn load_precompiled(&self, compiled: &[u8]) -> Result<Vec<u8>, EngineError> {
                self.0.load_precompiled(compiled)
            }
            fn load_precompiled_file(&self, _: &Path, _: &[u8]) -> Result<Vec<u8>, EngineError> {
                Err(EngineError::Other("the cache is on a noexec mount".into()))
            }
        }
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(root.path(), "fake").unwrap();
        let engine = Unmappable::default();
        cache.load_or_compile(&engine, &wasm(b"abc")).unwrap();
        let (m, o) = cache.load_or_compile(&engine, &wasm(b"abc")).unwrap();
        assert_eq!((m.as_slice(), o), (&b"abc"[..], Outcome::Hit));
        assert_eq!(engine.0.compiles.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_new_fingerprint_does_not_see_old_entries() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(root.path(), "fake").unwrap();
        let old = Fake {
            version: "1",
            ..Default::default()
        };
        let new = Fake {
            version: "2",
            ..Default::default()
        };
        cache.load_or_compile(&old, &wasm(b"abc")).unwrap();
        let (_, o) = cache.load_or_compile(&new, &wasm(b"abc")).unwrap();
        assert_eq!(o, Outcome::Stored);
    }

    /// A cache holding one entry (for `abcdef`), and that entry's path.
    fn one_entry() -> (tempfile::TempDir, CompileCache, Fake, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(root.path(), "fake").unwrap();
        let engine = Fake::default();
        cache.load_or_compile(&engine, &wasm(b"abcdef")).unwrap();
        let entry = entries(root.path()).pop().unwrap();
        (root, cache, engine, entry)
    }

    #[test]
    fn lookup_finds_an_entry_by_the_modules_sha256_and_load_loads_it() {
        let (_root, cache, engine, _entry) = one_entry();
        let stored = cache
            .lookup(&engine, &crate::sha256_hex(b"abcdef"))
            .expect("the entry");
        assert_eq!(cache.load(&engine, &stored).unwrap(), b"abcdef");
        assert_eq!(engine.compiles.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn lookup_of_a_module_never_compiled_finds_nothing() {
        let (_root, cache, engine, _entry) = one_entry();
        assert!(cache
            .lookup(&engine, &crate::sha256_hex(b"other"))
            .is_none());
    }

    #[test]
    fn lookup_of_a_damaged_entry_finds_nothing_and_removes_it() {
        let (root, cache, engine, entry) = one_entry();
        let bytes = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &bytes[..bytes.len() - 1]).unwrap();
        assert!(cache
            .lookup(&engine, &crate::sha256_hex(b"abcdef"))
            .is_none());
        assert_eq!(entries(root.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn an_intact_entry_the_engine_refuses_is_removed_and_the_error_says_so() {
        let (root, cache, engine, _entry) = one_entry();
        let refusing = Fake {
            refuses_loads: true,
            ..engine
        };
        let stored = cache
            .lookup(&refusing, &crate::sha256_hex(b"abcdef"))
            .expect("the entry");
        let err = cache.load(&refusing, &stored).unwrap_err().to_string();
        assert!(
            err.contains("could not be loaded and was removed (the next start compiles"),
            "{err}"
        );
        assert_eq!(entries(root.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_corrupted_entry_is_detected_removed_and_rebuilt() {
        let (_root, cache, engine, entry) = one_entry();
        let mut bytes = std::fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&entry, bytes).unwrap();
        let (m, o) = cache.load_or_compile(&engine, &wasm(b"abcdef")).unwrap();
        assert_eq!((m.as_slice(), o), (&b"abcdef"[..], Outcome::Stored));
        assert_eq!(engine.compiles.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_truncated_entry_is_rebuilt() {
        let (_root, cache, engine, entry) = one_entry();
        let bytes = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &bytes[..bytes.len() / 2]).unwrap();
        let (_, o) = cache.load_or_compile(&engine, &wasm(b"abcdef")).unwrap();
        assert_eq!(o, Outcome::Stored);
    }

    #[test]
    fn concurrent_first_starts_leave_one_whole_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = Arc::new(CompileCache::open(root.path(), "fake").unwrap());
        let engine = Fake::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, engine) = (Arc::clone(&cache), engine.clone());
                std::thread::spawn(move || cache.load_or_compile(&engine, &wasm(b"xyz")).unwrap().0)
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), b"xyz");
        }
        let files = entries(root.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(verify(&std::fs::read(&files[0]).unwrap()).is_some());
    }

    #[test]
    fn a_compiler_working_through_files_gets_scratch_space_that_is_removed_afterwards() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(root.path(), "fake").unwrap();
        let engine = Fake {
            uses_files: true,
            ..Default::default()
        };
        let (m, o) = cache.load_or_compile(&engine, &wasm(b"abc")).unwrap();
        assert_eq!((m.as_slice(), o), (&b"abc"[..], Outcome::Stored));
        let files = entries(root.path());
        assert_eq!(files.len(), 1, "only the entry remains: {files:?}");
        assert!(verify(&std::fs::read(&files[0]).unwrap()).is_some());
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(root.path(), "fake").unwrap();
        let engine = Fake::default();
        let sub = root.path().join("fake").join("fake_");
        std::fs::create_dir_all(&sub).unwrap();
        // A file where the fingerprint directory should be: nothing can be stored.
        std::fs::remove_dir(&sub).unwrap();
        std::fs::write(&sub, b"").unwrap();
        let (m, o) = cache.load_or_compile(&engine, &wasm(b"abc")).unwrap();
        assert_eq!((m.as_slice(), o), (&b"abc"[..], Outcome::NotStored));
    }
}
